"""A ready campaign for load tests and the demo: phantoms ingested and proposed, truths known."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlmodel import select

from bot.campaign.boxes import gold_for_box, parse_boxes
from bot.campaign.crops import CropTransform, mask_to_crop
from bot.campaign.ingest import IngestOptions, index_masks, ingest
from bot.campaign.projects import ensure_campaign
from bot.campaign.proposals import run_proposals
from bot.campaign.services import Services
from bot.db.models import Campaign, Image, Task
from bot.jobs.proposals import LocalRunner, ProposerSpec
from bot.sim.phantom import write_phantoms
from bot.store import codecs

Mask = npt.NDArray[np.bool_]


async def phantom_world(
    services: Services,
    folder: Path,
    *,
    n: int,
    seed: int = 0,
    size: int = 128,
    name: str = "phantoms",
    rules: dict[str, Any] | None = None,
) -> Campaign:
    """Write ``n`` phantoms, ingest them as campaign ``name``, propose (fallback), set rules."""
    write_phantoms(folder, n=n, style="mixed", seed=seed, size=size, gold_fraction=0.2)
    masks, _ = index_masks([folder / "gold"], services.limits)
    boxes = parse_boxes((folder / "boxes.json").read_bytes(), "boxes.json")
    async with services.sessionmaker() as session:
        campaign = await ensure_campaign(session, name, structure="lesion")
    await ingest(
        services.sessionmaker,
        services.store,
        campaign,
        [folder / "images"],
        IngestOptions(masks, boxes),
        services.limits,
    )
    await run_proposals(
        services.sessionmaker, services.store, campaign, ProposerSpec(), LocalRunner(0)
    )
    async with services.sessionmaker() as session:
        row = await session.get_one(Campaign, campaign.id)
        for key, value in (rules or {}).items():
            setattr(row, key, value)
        session.add(row)
        await session.commit()
        return row


async def task_truths(services: Services, truth_dir: Path, campaign_id: int) -> dict[int, Mask]:
    """The phantom truth of every task of a campaign, in its crop's frame."""
    out: dict[int, Mask] = {}
    images: dict[str, Mask] = {}
    async with services.sessionmaker() as session:
        rows = (
            await session.exec(
                select(Task, Image)
                .join(Image, Image.id == Task.image_id)  # type: ignore[arg-type]
                .where(Task.campaign_id == campaign_id)
            )
        ).all()
    for task, image in rows:
        assert task.id is not None
        if image.source_name not in images:
            images[image.source_name] = codecs.decode_mask(
                (truth_dir / image.source_name).read_bytes()
            )
        box = (task.box_x0, task.box_y0, task.box_x1, task.box_y1)
        t = CropTransform(task.crop_x0, task.crop_y0, task.crop_side, task.crop_out)
        out[task.id] = mask_to_crop(gold_for_box(images[image.source_name], box), t)
    return out
