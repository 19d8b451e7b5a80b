"""Job rows: a running job beats; only a job whose heartbeat stopped is marked interrupted."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import jobrecords
from bot.db.models import Job, JobStatus

NOW = dt.datetime(2026, 11, 27, 21, tzinfo=dt.UTC)


async def test_only_jobs_whose_heartbeat_stopped_are_marked_interrupted(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    ago = NOW - dt.timedelta(minutes=3)
    async with sessionmaker() as session:
        session.add(Job(kind="dead", status=JobStatus.RUNNING, started_at=ago, heartbeat_at=ago))
        session.add(  # another process runs it right now (a bot worker, a CLI command)
            Job(kind="alive", status=JobStatus.RUNNING, started_at=ago, heartbeat_at=NOW)
        )
        session.add(Job(kind="older", status=JobStatus.RUNNING, started_at=ago))  # no heartbeat
        session.add(Job(kind="done", status=JobStatus.DONE, started_at=ago, heartbeat_at=ago))
        await session.commit()
        assert await jobrecords.fail_interrupted(session, now=NOW) == 2
        await session.commit()
        status = {j.kind: (j.status, j.error) for j in (await session.exec(select(Job))).all()}
    assert status["dead"] == (JobStatus.FAILED, jobrecords.INTERRUPTED)
    assert status["older"] == (JobStatus.FAILED, jobrecords.INTERRUPTED)
    assert status["alive"] == (JobStatus.RUNNING, None)
    assert status["done"] == (JobStatus.DONE, None)


async def test_a_running_job_keeps_beating_and_stops_when_it_ends(
    sessionmaker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobrecords, "HEARTBEAT_SECONDS", 0.05)
    async with jobrecords.tracked(sessionmaker, "synthesis", None) as job:
        async with sessionmaker() as session:
            first = (await session.get_one(Job, job.id)).heartbeat_at
        await asyncio.sleep(0.4)  # the job's work, in this process
        async with sessionmaker() as session:
            row = await session.get_one(Job, job.id)
            assert first is not None
            assert row.heartbeat_at is not None
            assert row.heartbeat_at > first
            # a sweep from any process leaves it alone: it is alive
            assert await jobrecords.fail_interrupted(session, stale_after=0.3) == 0
    beats = {t.get_name() for t in asyncio.all_tasks() if "heartbeat" in t.get_name()}
    assert beats == set()
    async with sessionmaker() as session:
        row = await session.get_one(Job, job.id)
        assert row.status == JobStatus.DONE
        stopped_at = row.heartbeat_at

    with pytest.raises(RuntimeError):
        async with jobrecords.tracked(sessionmaker, "proposals", None) as failing:
            raise RuntimeError("the proposer broke")
    await asyncio.sleep(0.2)
    async with sessionmaker() as session:
        row = await session.get_one(Job, failing.id)
        assert row.status == JobStatus.FAILED
        assert "the proposer broke" in (row.error or "")
        done = await session.get_one(Job, job.id)
        assert done.heartbeat_at == stopped_at  # no beat after the end
