from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.proposals import model_id_of, pending_tasks, run_proposals
from bot.db.models import Job, JobStatus, Proposal, Task
from bot.jobs.proposals import LocalRunner, ProposalResult, ProposerSpec, WorkItem
from bot.store import codecs
from bot.store.files import FileStore
from inference.fallback import FALLBACK_ID
from tests.helpers.campaigns import phantom_campaign


async def _count(session: AsyncSession, model: type) -> int:
    return int((await session.exec(select(func.count()).select_from(model))).one())


async def test_proposals_cover_every_task_once(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    campaign = await phantom_campaign(sessionmaker, store, tmp_path / "ph")
    run = await run_proposals(sessionmaker, store, campaign, ProposerSpec(), LocalRunner(workers=0))
    async with sessionmaker() as session:
        n_tasks = await _count(session, Task)
        proposals = list((await session.exec(select(Proposal))).all())
        job = await session.get_one(Job, run.job_id)
    assert run.model_id == FALLBACK_ID
    assert run.written == run.pending == n_tasks == len(proposals)
    assert job.status is JobStatus.DONE
    assert job.done == job.total == n_tasks
    for proposal in proposals:
        mask = codecs.decode_mask(store.get(proposal.mask_key))
        assert proposal.prob_key is not None
        assert codecs.decode_prob(store.get(proposal.prob_key)).shape == mask.shape
        assert proposal.candidates[0]["source"] == "proposal"
        assert all(store.exists(c["key"]) for c in proposal.candidates)
        assert proposal.stability is not None
    again = await run_proposals(
        sessionmaker, store, campaign, ProposerSpec(), LocalRunner(workers=0)
    )
    assert (again.pending, again.written) == (0, 0)


class _DiesAfterOneBatch:
    """A runner that is killed after its first batch, like a worker lost mid-job."""

    def __init__(self) -> None:
        self.inner = LocalRunner(workers=0)

    def run(
        self, spec: ProposerSpec, batches: Iterator[list[WorkItem]]
    ) -> Iterator[list[ProposalResult]]:
        for i, results in enumerate(self.inner.run(spec, batches)):
            if i == 1:
                raise RuntimeError("worker lost")
            yield results

    def close(self) -> None:
        self.inner.close()


async def test_proposals_resume_after_a_crash(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    campaign = await phantom_campaign(sessionmaker, store, tmp_path / "ph", n=6)
    assert campaign.id is not None
    with pytest.raises(RuntimeError, match="worker lost"):
        await run_proposals(
            sessionmaker, store, campaign, ProposerSpec(), _DiesAfterOneBatch(), batch_size=2
        )
    async with sessionmaker() as session:
        first = await _count(session, Proposal)
        failed = (await session.exec(select(Job).where(Job.status == JobStatus.FAILED))).one()
        remaining = await pending_tasks(session, campaign_id=campaign.id, model_id=FALLBACK_ID)
    assert first == 2
    assert failed.error is not None
    assert "worker lost" in failed.error
    resumed = await run_proposals(
        sessionmaker, store, campaign, ProposerSpec(), LocalRunner(workers=0)
    )
    assert resumed.pending == len(remaining) == resumed.written
    async with sessionmaker() as session:
        assert await _count(session, Proposal) == await _count(session, Task)


def test_model_id_of_names_checkpoint_weights(tmp_path: Path) -> None:
    import torch

    from inference.backend import build_tiny_sam

    path = tmp_path / "w.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    assert model_id_of(ProposerSpec()) == FALLBACK_ID
    assert model_id_of(ProposerSpec("tiny")) == "tiny:seed0"
    assert model_id_of(ProposerSpec("tiny", path)).startswith("tiny@")
    with pytest.raises(ValueError, match="model must be"):
        ProposerSpec("vit_h")


async def test_a_worker_killed_mid_job_is_replaced_and_no_crop_is_proposed_twice(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    import os
    import signal

    campaign = await phantom_campaign(sessionmaker, store, tmp_path / "ph", n=8)
    runner = LocalRunner(workers=1)
    killed: list[int] = []

    def kill_a_worker(done: int, total: int) -> None:
        if not killed and done < total:  # after the first batch, mid-job
            pid = runner.worker_pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    try:
        run = await run_proposals(
            sessionmaker,
            store,
            campaign,
            ProposerSpec(),
            runner,
            batch_size=2,
            progress=kill_a_worker,
        )
        assert killed
        assert killed[0] not in runner.worker_pids()  # a new worker took over
    finally:
        runner.close()
    assert run.written == run.pending
    async with sessionmaker() as session:
        assert await _count(session, Proposal) == await _count(session, Task)
        per_task = (
            await session.exec(
                select(Proposal.task_id, func.count()).group_by(col(Proposal.task_id))
            )
        ).all()
        assert all(n == 1 for _, n in per_task)
        job = (await session.exec(select(Job).where(Job.kind == "proposals"))).one()
        assert job.status == JobStatus.DONE
