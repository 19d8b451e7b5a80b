"""A small phantom campaign, ingested, for tests that need tasks."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.boxes import parse_boxes
from bot.campaign.ingest import IngestOptions, index_masks, ingest
from bot.campaign.projects import ensure_campaign
from bot.campaign.sources import ArchiveLimits
from bot.db.models import Campaign
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
