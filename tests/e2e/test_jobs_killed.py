"""Batch jobs killed with SIGKILL mid-way resume where they stopped, with nothing done twice.

The proposals job (``medcrowd propose``) writes each batch as it comes, so a rerun proposes only
for the crops still without one; the synthesis job (``medcrowd synthesize``) checkpoints training
and stores its pairs in one transaction at the end, so a rerun resumes training from the last
checkpoint and the killed run leaves no pair behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlmodel import col, func, select

from bot.campaign.services import Services
from bot.db import migrate
from bot.db.models import Job, JobStatus, Proposal, SyntheticPair, Task
from bot.jobs.proposals import LocalRunner, ProposerSpec
from bot.settings import Settings
from tests.helpers.campaigns import finish_crops, phantom_campaign


def _medcrowd(settings: Settings, *args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MEDCROWD_DATA_DIR": str(settings.data_dir),
        "MEDCROWD_DATABASE_URL": settings.resolved_database_url,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _tail(log: Path) -> str:
    return log.read_text()[-2000:]


async def _kill_when(
    process: subprocess.Popen[bytes], ready: Callable[[], Awaitable[bool]], log: Path
) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds (within two minutes)."""
    deadline = time.monotonic() + 120.0
    while time.monotonic() < deadline:
        assert process.poll() is None, f"finished before the kill:\n{_tail(log)}"
        if await ready():
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait)
            return
        await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError(f"never ready:\n{_tail(log)}")


async def test_a_killed_proposals_job_resumes_and_proposes_no_crop_twice(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'db'}")
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    services = Services.from_settings(settings)
    try:
        await phantom_campaign(services.sessionmaker, services.store, tmp_path / "ph", n=24)

        async def proposed() -> int:
            async with services.sessionmaker() as session:
                return int((await session.exec(select(func.count()).select_from(Proposal))).one())

        async def some_proposed() -> bool:
            return await proposed() > 0

        log = tmp_path / "propose.log"
        args = ("propose", "--project", "phantoms", "--model", "tiny", "--workers", "0")
        await _kill_when(_medcrowd(settings, *args, log=log), some_proposed, log)
        before = await proposed()
        async with services.sessionmaker() as session:
            tasks = int((await session.exec(select(func.count()).select_from(Task))).one())
        assert 0 < before < tasks, "the kill came too late to test anything"
        rerun = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bot", "propose", *args[1:]],
            env={
                **os.environ,
                "MEDCROWD_DATA_DIR": str(settings.data_dir),
                "MEDCROWD_DATABASE_URL": settings.resolved_database_url,
            },
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"{tasks - before} proposals written" in rerun.stdout
        async with services.sessionmaker() as session:
            per_task = (
                await session.exec(
                    select(Proposal.task_id, func.count()).group_by(col(Proposal.task_id))
                )
            ).all()
        assert len(per_task) == tasks
        assert all(n == 1 for _, n in per_task)  # no crop proposed twice
    finally:
        await services.close()


async def test_a_killed_synthesis_job_resumes_training_and_leaves_no_pair(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'db'}")
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    services = Services.from_settings(settings)
    try:
        campaign = await phantom_campaign(
            services.sessionmaker, services.store, tmp_path / "ph", n=6
        )
        await run_proposals_now(services, campaign)
        await finish_crops(services.sessionmaker, 8)
        checkpoints = settings.data_dir / "synthesis" / "phantoms"

        async def checkpointed() -> bool:
            return any(checkpoints.rglob("latest.pt"))

        log = tmp_path / "synthesize.log"
        args = ("synthesize", "--project", "phantoms", "--preset", "tiny", "--steps", "150")
        await _kill_when(_medcrowd(settings, *args, "--n", "8", log=log), checkpointed, log)
        async with services.sessionmaker() as session:
            assert (await session.exec(select(SyntheticPair))).all() == []  # nothing half-stored
            killed = (await session.exec(select(Job).where(Job.kind == "synthesis"))).one()
        assert killed.status == JobStatus.RUNNING  # what a crash leaves; the bot fails it on start
        rerun = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bot", *args, "--n", "8"],
            env={
                **os.environ,
                "MEDCROWD_DATA_DIR": str(settings.data_dir),
                "MEDCROWD_DATABASE_URL": settings.resolved_database_url,
            },
            capture_output=True,
            text=True,
            check=True,
        )
        resumed = int(rerun.stdout.split("(resumed from ")[1].split(")")[0])
        assert 0 < resumed < 150  # training went on from the killed run's checkpoint
        assert "to step 150" in rerun.stdout
        async with services.sessionmaker() as session:
            pairs = (await session.exec(select(SyntheticPair))).all()
        indices = [p.provenance["index"] for p in pairs]
        assert len(indices) == len(set(indices))
    finally:
        await services.close()


async def run_proposals_now(services: Services, campaign: object) -> None:
    from bot.campaign.proposals import run_proposals

    await run_proposals(
        services.sessionmaker,
        services.store,
        campaign,  # type: ignore[arg-type]
        ProposerSpec(),
        LocalRunner(0),
    )
