"""Job rows for background work: created running, finished done or failed with the reason.

Every background job the application runs (proposals, exports, synthesis) keeps a ``Job`` row so
coordinators can watch it (``/jobs``) and retry one that failed. A job interrupted by a crash is
found still "running" when the bot starts again and is marked failed then, so it can be retried.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.db.models import Job, JobStatus
from bot.db.types import utcnow

logger = logging.getLogger(__name__)

INTERRUPTED = "interrupted: the bot stopped while this job ran; retry it from /jobs"


@dataclass
class JobHandle:
    """The running job's id, and a way to report progress."""

    id: int
    sessionmaker: async_sessionmaker[AsyncSession]

    async def progress(self, done: int, total: int | None = None) -> None:
        """Record how far the job got."""
        async with self.sessionmaker() as session:
            job = await session.get_one(Job, self.id)
            job.done = done
            if total is not None:
                job.total = total
            await session.commit()


@asynccontextmanager
async def tracked(
    sessionmaker: async_sessionmaker[AsyncSession],
    kind: str,
    campaign_id: int | None,
    *,
    total: int | None = None,
    **params: Any,
) -> AsyncIterator[JobHandle]:
    """A ``Job`` row around a block: running inside it, then done, or failed with the error."""
    async with sessionmaker() as session:
        job = Job(
            kind=kind,
            status=JobStatus.RUNNING,
            campaign_id=campaign_id,
            params=params,
            total=total,
            started_at=utcnow(),
        )
        session.add(job)
        await session.commit()
        assert job.id is not None
        handle = JobHandle(job.id, sessionmaker)
    try:
        yield handle
    except BaseException as error:
        async with sessionmaker() as session:
            job = await session.get_one(Job, handle.id)
            job.status, job.error, job.finished_at = JobStatus.FAILED, repr(error)[:4000], utcnow()
            await session.commit()
        raise
    async with sessionmaker() as session:
        job = await session.get_one(Job, handle.id)
        job.status, job.finished_at = JobStatus.DONE, utcnow()
        await session.commit()


async def fail_interrupted(session: AsyncSession) -> int:
    """Mark jobs left running by a process that died as failed; returns how many.

    Call it when the (single) bot process starts, before it starts any job of its own.
    """
    rows = (await session.exec(select(Job).where(col(Job.status) == JobStatus.RUNNING))).all()
    for job in rows:
        job.status, job.error, job.finished_at = JobStatus.FAILED, INTERRUPTED, utcnow()
    if rows:
        logger.warning("%d interrupted job(s) marked failed", len(rows))
    return len(rows)
