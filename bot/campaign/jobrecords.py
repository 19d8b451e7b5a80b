"""Job rows for background work: created running, finished done or failed with the reason.

Every background job the application runs (proposals, exports, synthesis) keeps a ``Job`` row so
coordinators can watch it (``/jobs``) and retry one that failed. The process running a job
refreshes its heartbeat every ``HEARTBEAT_SECONDS``; a job still "running" whose heartbeat is
older than ``STALE_SECONDS`` died with its process and is marked failed (``fail_interrupted``:
when the bot starts, and every minute in its front process), so it can be retried. A job that
another live process runs (a bot worker, a CLI command) keeps beating and is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
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

INTERRUPTED = "interrupted: the process running this job stopped; retry it from /jobs"
HEARTBEAT_SECONDS = 20.0
STALE_SECONDS = 120.0  # six missed heartbeats: the job's process is gone


@dataclass
class JobHandle:
    """The running job's id, and a way to report progress."""

    id: int
    sessionmaker: async_sessionmaker[AsyncSession]

    async def progress(self, done: int, total: int | None = None) -> None:
        """Record how far the job got (a heartbeat too)."""
        await self.beat(done=done, **({} if total is None else {"total": total}))

    async def beat(self, **changes: Any) -> None:
        """Say the job's process is alive, storing ``changes`` to the job's row with it."""
        async with self.sessionmaker() as session:
            job = await session.get_one(Job, self.id)
            for name, value in changes.items():
                setattr(job, name, value)
            job.heartbeat_at = utcnow()
            await session.commit()


async def _keep_beating(handle: JobHandle, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=HEARTBEAT_SECONDS)
        if not stop.is_set():
            try:
                await handle.beat()
            except Exception:  # a database hiccup: the next beat tries again
                logger.warning("job %s: heartbeat not stored", handle.id, exc_info=True)


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
            heartbeat_at=utcnow(),
        )
        session.add(job)
        await session.commit()
        assert job.id is not None
        handle = JobHandle(job.id, sessionmaker)
    stop = asyncio.Event()
    heart = asyncio.create_task(_keep_beating(handle, stop), name=f"job {handle.id} heartbeat")
    try:
        try:
            yield handle
        finally:  # no beat after the job's last word
            stop.set()
            await asyncio.gather(heart, return_exceptions=True)
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


async def fail_interrupted(
    session: AsyncSession, *, now: dt.datetime | None = None, stale_after: float | None = None
) -> int:
    """Mark failed the running jobs whose process died (no heartbeat for ``stale_after`` s).

    Returns how many. Jobs that a live process runs, whichever it is, keep beating and stay.
    """
    cutoff = (now or utcnow()) - dt.timedelta(
        seconds=STALE_SECONDS if stale_after is None else stale_after
    )
    rows = (await session.exec(select(Job).where(col(Job.status) == JobStatus.RUNNING))).all()
    dead = [job for job in rows if (job.heartbeat_at or job.started_at or job.created_at) < cutoff]
    for job in dead:
        job.status, job.error, job.finished_at = JobStatus.FAILED, INTERRUPTED, utcnow()
        session.add(job)
    if dead:
        logger.warning("%d interrupted job(s) marked failed", len(dead))
    return len(dead)
