"""The proposals job on a local Ray instance gives exactly the local path's results."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import pool
from sqlmodel import delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.proposals import run_proposals
from bot.db import migrate
from bot.db.engine import make_engine, make_sessionmaker
from bot.db.models import Proposal
from bot.jobs.proposals import LocalRunner, ProposerSpec, RayRunner
from bot.store.files import FileStore
from inference.predictor import InferenceConfig
from tests.helpers.campaigns import phantom_campaign


async def _proposals(session: AsyncSession) -> dict[int, tuple[object, ...]]:
    rows = (await session.exec(select(Proposal))).all()
    return {p.task_id: (p.mask_key, p.prob_key, p.candidates, p.predicted_iou) for p in rows}


async def test_ray_results_equal_local_pool(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ray.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    engine = make_engine(url, poolclass=pool.NullPool)
    sessionmaker = make_sessionmaker(engine)
    store = FileStore(tmp_path / "store")
    # Each path gets its own embedding cache: a second run reading the first's fp16 embeddings
    # would differ in the last bits, which is the cache's documented precision, not the runner's.
    spec = ProposerSpec("tiny", config=InferenceConfig(), cache_dir=tmp_path / "local-cache")
    ray_spec = ProposerSpec("tiny", config=InferenceConfig(), cache_dir=tmp_path / "ray-cache")
    try:
        campaign = await phantom_campaign(sessionmaker, store, tmp_path / "ph", n=3)
        local = LocalRunner(workers=1)
        try:
            await run_proposals(sessionmaker, store, campaign, spec, local, batch_size=2)
        finally:
            local.close()
        async with sessionmaker() as session:
            expected = await _proposals(session)
            await session.exec(delete(Proposal))
            await session.commit()
        ray_runner = RayRunner("local", actors=2)
        try:
            run = await run_proposals(
                sessionmaker, store, campaign, ray_spec, ray_runner, batch_size=2
            )
        finally:
            ray_runner.close()
        async with sessionmaker() as session:
            got = await _proposals(session)
    finally:
        await engine.dispose()
    assert run.written == len(expected) > 0
    assert got == expected
    assert list((tmp_path / "ray-cache").rglob("*.npz"))


async def test_a_lost_ray_worker_is_restarted_and_its_batches_run_again(tmp_path: Path) -> None:
    import os
    import signal

    from sqlmodel import col, func

    from bot.db.models import Task

    url = f"sqlite+aiosqlite:///{tmp_path / 'ray.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    engine = make_engine(url, poolclass=pool.NullPool)
    sessionmaker = make_sessionmaker(engine)
    store = FileStore(tmp_path / "store")
    killed: list[int] = []
    try:
        campaign = await phantom_campaign(sessionmaker, store, tmp_path / "ph", n=8)
        runner = RayRunner("local", actors=1)

        after: list[int] = []

        def lose_a_worker(done: int, total: int) -> None:
            if not killed and done < total:  # mid-job: the worker's process dies
                pid = runner.worker_pids()[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            elif killed and not after:
                after.extend(runner.worker_pids())

        try:
            run = await run_proposals(
                sessionmaker,
                store,
                campaign,
                ProposerSpec(),
                runner,
                batch_size=2,
                progress=lose_a_worker,
            )
            assert killed
            assert after
            assert after != killed  # Ray restarted the actor in a new process
        finally:
            runner.close()
        async with sessionmaker() as session:
            tasks = (await session.exec(select(func.count()).select_from(Task))).one()
            per_task = (
                await session.exec(
                    select(Proposal.task_id, func.count()).group_by(col(Proposal.task_id))
                )
            ).all()
    finally:
        await engine.dispose()
    assert run.written == run.pending == tasks
    assert len(per_task) == tasks
    assert all(n == 1 for _, n in per_task)  # no crop proposed twice
