"""A small phantom campaign, ingested, for tests that need tasks."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.boxes import parse_boxes
from bot.campaign.ingest import IngestOptions, index_masks, ingest
from bot.campaign.projects import ensure_campaign
from bot.campaign.proposals import run_proposals
from bot.campaign.sources import ArchiveLimits
from bot.db.models import Campaign, Consensus, Proposal, Task, TaskKind, TaskStatus
from bot.jobs.proposals import LocalRunner, ProposerSpec
from bot.sim.phantom import write_phantoms
from bot.store.files import FileStore


async def phantom_campaign(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    folder: Path,
    *,
    n: int = 4,
    style: str = "ct",
    name: str = "phantoms",
) -> Campaign:
    write_phantoms(folder, n=n, style=style, seed=11, size=96, gold_fraction=0.25)
    limits = ArchiveLimits()
    masks, _ = index_masks([folder / "gold"], limits)
    boxes = parse_boxes((folder / "boxes.json").read_bytes(), "boxes.json")
    async with sessionmaker() as session:
        campaign = await ensure_campaign(session, name)
    report = await ingest(
        sessionmaker, store, campaign, [folder / "images"], IngestOptions(masks, boxes), limits
    )
    assert report.counts()["ingested"] == n
    return campaign


async def finish_crops(sessionmaker: async_sessionmaker[AsyncSession], count: int) -> None:
    """Retire the first ``count`` proposed real crops with their proposal as the consensus."""
    async with sessionmaker() as session:
        rows = (
            await session.exec(
                select(Task, Proposal)
                .join(Proposal, col(Proposal.task_id) == col(Task.id))
                .where(Task.kind == TaskKind.REAL)
                .order_by(col(Task.id))
                .limit(count)
            )
        ).all()
        for task, proposal in rows:
            assert task.id is not None
            task.status = TaskStatus.RETIRED
            session.add(task)
            session.add(
                Consensus(
                    task_id=task.id,
                    mask_key=proposal.mask_key,
                    prob_key=proposal.prob_key,
                    confidence=0.95,
                    answers_used=3,
                    method_version="test",
                )
            )
        await session.commit()


async def proposed_campaign(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    folder: Path,
    *,
    n: int,
    **rules: object,
) -> Campaign:
    """A phantom campaign with fallback proposals, its rules set to ``rules``."""
    campaign = await phantom_campaign(sessionmaker, store, folder, n=n)
    await run_proposals(sessionmaker, store, campaign, ProposerSpec(), LocalRunner(workers=0))
    async with sessionmaker() as session:
        row = await session.get_one(Campaign, campaign.id)
        for key, value in rules.items():
            setattr(row, key, value)
        session.add(row)
        await session.commit()
        return row
