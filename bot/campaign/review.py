"""Expert review of escalated crops: the crowd could not settle them, an expert does.

The expert sees the crowd's candidates side by side (fusion's consensus, the AI proposal and the
distinct masks volunteers drew) and either picks one or sends a mask of their own. The chosen mask
becomes the crop's gold: the export uses it instead of the consensus (which is kept, so
``/status`` still measures the crowd against the expert), future volunteers meet the
crop as a gold task, and the campaign's crowd model is refitted with it, so every volunteer who
answered the crop is judged against the expert.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageDraw
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import arrays
from bot.campaign.coordination import PRIVILEGED, audit, require
from bot.campaign.crowd import Crowd, proposal_of
from bot.campaign.errors import InvalidInput
from bot.campaign.render import as_rgb, load_font, outline, resize_nearest
from bot.db.models import (
    Answer,
    Consensus,
    Role,
    Task,
    TaskKind,
    TaskStatus,
    Verdict,
    Volunteer,
)
from bot.store import codecs
from bot.store.files import FileStore

logger = logging.getLogger(__name__)

REVIEWERS = (Role.EXPERT, *PRIVILEGED)
MAX_CANDIDATES = 6
SAME_IOU = 0.95  # masks this alike are shown once
PANEL = 256
COLOURS = [
    (255, 64, 64),
    (64, 160, 255),
    (255, 200, 0),
    (0, 220, 120),
    (220, 80, 255),
    (0, 230, 230),
]

Mask = npt.NDArray[np.bool_]


@dataclass
class Candidate:
    """One mask the expert may pick, with where it came from."""

    label: str
    mask: Mask


@dataclass
class ReviewItem:
    """An escalated crop, its candidates and how many more wait."""

    task: Task
    crop: npt.NDArray[np.uint8]
    candidates: list[Candidate]
    waiting: int


def iou(a: Mask, b: Mask) -> float:
    """Intersection over union (1.0 for two empty masks)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def distinct(candidates: Iterable[Candidate], limit: int = MAX_CANDIDATES) -> list[Candidate]:
    """The first of each group of near-identical masks, at most ``limit``, none empty."""
    kept: list[Candidate] = []
    for c in candidates:
        if c.mask.any() and all(iou(c.mask, k.mask) < SAME_IOU for k in kept):
            kept.append(c)
        if len(kept) == limit:
            break
    return kept


async def escalated(session: AsyncSession, campaign_id: int | None) -> list[Task]:
    """A campaign's escalated crops (every campaign's with None), oldest first."""
    query = select(Task).where(Task.status == TaskStatus.ESCALATED)
    if campaign_id is not None:
        query = query.where(Task.campaign_id == campaign_id)
    return list((await session.exec(query.order_by(col(Task.id)))).all())


async def next_item(
    session: AsyncSession,
    store: FileStore,
    actor: Volunteer,
    admins: Iterable[int],
    *,
    skip: Iterable[int] = (),
) -> ReviewItem | None:
    """The oldest escalated crop not in ``skip``, with its candidates; None when none waits.

    The scope is the actor's working campaign when they chose one, else every campaign.
    """
    require(actor, admins, *REVIEWERS)
    skipped = set(skip)
    found = await escalated(session, actor.current_campaign_id)
    waiting = [t for t in found if t.id not in skipped]
    if not waiting:
        return None
    task = waiting[0]
    assert task.id is not None
    return ReviewItem(
        task,
        arrays.image(store, task.crop_key),
        await candidates(session, store, task),
        len(waiting),
    )


async def candidates(session: AsyncSession, store: FileStore, task: Task) -> list[Candidate]:
    """Consensus, proposal, then the volunteers' masks by how many drew the same."""
    assert task.id is not None
    found: list[Candidate] = []
    row = (await session.exec(select(Consensus).where(Consensus.task_id == task.id))).first()
    if row is not None:
        found.append(Candidate("crowd consensus", arrays.mask(store, row.mask_key)))
    proposal = await proposal_of(session, task_id=task.id)
    if proposal is not None:
        found.append(Candidate("AI proposal", arrays.mask(store, proposal.mask_key)))
    drawn = await session.exec(
        select(Answer.mask_key).where(
            Answer.task_id == task.id,
            Answer.verdict == Verdict.ADJUST,
            col(Answer.mask_key).is_not(None),
        )
    )
    counts: dict[str, int] = {}
    for key in drawn.all():
        assert key is not None
        counts[key] = counts.get(key, 0) + 1
    for key, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        found.append(Candidate(f"drawn by {n} volunteer{'s' * (n > 1)}", arrays.mask(store, key)))
    return distinct(found)


def sheet(item: ReviewItem) -> bytes:
    """One PNG with a numbered panel per candidate (outline in the panel's colour)."""
    rgb = resize_nearest(as_rgb(item.crop), (PANEL, PANEL))
    n = max(len(item.candidates), 1)
    columns = min(n, 3)
    rows = (n + columns - 1) // columns
    canvas = PILImage.new("RGB", (columns * (PANEL + 4) + 4, rows * (PANEL + 4) + 4), (30, 30, 30))
    font = load_font(28)
    for i, candidate in enumerate(item.candidates or [Candidate("", np.zeros((1, 1), bool))]):
        panel = rgb.copy()
        if candidate.mask.size > 1:
            edge = outline(resize_nearest(candidate.mask, (PANEL, PANEL)), 2)
            panel[edge] = COLOURS[i % len(COLOURS)]
        image = PILImage.fromarray(panel)
        if candidate.label:
            ImageDraw.Draw(image).text(
                (8, 4), str(i + 1), fill=COLOURS[i % len(COLOURS)], font=font, stroke_width=2
            )
        canvas.paste(image, (4 + (i % columns) * (PANEL + 4), 4 + (i // columns) * (PANEL + 4)))
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


async def settle(
    session: AsyncSession,
    store: FileStore,
    crowd: Crowd,
    actor: Volunteer,
    admins: Iterable[int],
    task_id: int,
    mask: Mask,
    *,
    source: str,
) -> Task:
    """Make ``mask`` the escalated crop's gold (the caller commits)."""
    require(actor, admins, *REVIEWERS)
    task = await session.get(Task, task_id)
    if task is None or task.status != TaskStatus.ESCALATED:
        raise InvalidInput("this crop is no longer waiting for review")
    if mask.shape != (task.crop_out, task.crop_out):
        raise InvalidInput(
            f"the mask must be {task.crop_out}x{task.crop_out} pixels, the crop's size; "
            f"got {mask.shape[1]}x{mask.shape[0]}"
        )
    if not mask.any():
        raise InvalidInput("the mask is empty: white (non-zero) pixels mark the structure")
    key, _ = store.put("masks", codecs.encode_mask(mask.astype(bool)), "png")
    task.gold_mask_key = key
    task.kind = TaskKind.GOLD
    task.status = TaskStatus.RETIRED
    session.add(task)
    await audit(session, actor, "review", task.campaign_id, task_id=task_id, source=source)
    # Refit the crowd model from the database on its next use: the new gold teaches it who
    # was right about this crop.
    crowd.models.pop(task.campaign_id, None)
    logger.info("crop %s settled by an expert (%s)", task_id, source)
    return task
