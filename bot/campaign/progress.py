"""A campaign's progress for coordinators: numbers and one chart image (``/status``)."""

from __future__ import annotations

import datetime as dt
import io
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import arrays
from bot.campaign.crowd import proposal_of
from bot.campaign.render import load_font
from bot.db.models import Answer, Campaign, Consensus, Task, TaskKind, TaskStatus
from bot.db.types import utcnow
from bot.store.files import FileStore
from inference.prediction import dice

DAYS = 14


@dataclass
class Progress:
    """What ``/status`` shows."""

    campaign: str
    tasks: dict[str, int]
    answers_per_day: list[tuple[dt.date, int]]
    answers_per_finished_crop: float | None
    confidence: list[float]
    proposal_dice_on_gold: float | None
    consensus_dice_on_gold: float | None
    active_volunteers: int
    extra: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        """A short summary."""

        def show(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        per_crop = self.answers_per_finished_crop
        return "\n".join(
            [
                f"📊 {self.campaign}",
                f"crops: {self.tasks.get('open', 0)} open, {self.tasks.get('retired', 0)} retired, "
                f"{self.tasks.get('escalated', 0)} escalated",
                f"answers in the last {DAYS} days: {sum(n for _, n in self.answers_per_day)}; "
                f"per finished crop: {'n/a' if per_crop is None else f'{per_crop:.1f}'}",
                f"on gold: consensus Dice {show(self.consensus_dice_on_gold)}, "
                f"AI proposal {show(self.proposal_dice_on_gold)}",
                f"active volunteers (7 days): {self.active_volunteers}",
            ]
        )


@dataclass
class GoldQuality:
    """How the AI proposal and the crowd's consensus score against the experts' gold crops."""

    tasks: list[Task]
    proposal_dice: list[float]
    consensus_dice: list[float]
    model_ids: set[str]


def mean_or_none(values: list[float]) -> float | None:
    """The mean, or None for no values."""
    return float(np.mean(values)) if values else None


async def gold_quality(session: AsyncSession, store: FileStore, campaign: Campaign) -> GoldQuality:
    """Dice of each gold crop's proposal and (where fusion wrote one) consensus, vs the expert."""
    tasks = list(
        (
            await session.exec(
                select(Task).where(
                    Task.campaign_id == campaign.id,
                    col(Task.kind) != TaskKind.REAL,
                    col(Task.gold_mask_key).is_not(None),
                )
            )
        ).all()
    )
    quality = GoldQuality(tasks, [], [], set())
    for task in tasks:
        assert task.id is not None
        assert task.gold_mask_key is not None
        truth = arrays.mask(store, task.gold_mask_key)
        proposal = await proposal_of(session, task_id=task.id)
        if proposal is not None:
            quality.model_ids.add(proposal.model_id)
            quality.proposal_dice.append(dice(arrays.mask(store, proposal.mask_key), truth))
        found = await session.exec(select(Consensus).where(Consensus.task_id == task.id))
        row = found.first()
        if row is not None:
            quality.consensus_dice.append(dice(arrays.mask(store, row.mask_key), truth))
    return quality


async def progress(session: AsyncSession, store: FileStore, campaign: Campaign) -> Progress:
    """Gather a campaign's numbers."""
    now = utcnow()
    statuses = Counter(
        TaskStatus(s).value
        for s in (
            await session.exec(
                select(Task.status).where(
                    Task.campaign_id == campaign.id, Task.kind == TaskKind.REAL
                )
            )
        ).all()
    )
    since = now - dt.timedelta(days=DAYS)
    stamps = (
        await session.exec(
            select(Answer.created_at)
            .join(Task, col(Task.id) == Answer.task_id)
            .where(Task.campaign_id == campaign.id, Answer.created_at >= since)
        )
    ).all()
    per_day = Counter(s.date() for s in stamps)
    days = [(now.date() - dt.timedelta(days=d)) for d in range(DAYS - 1, -1, -1)]
    finished = (
        await session.exec(
            select(Consensus)
            .join(Task, col(Task.id) == Consensus.task_id)
            .where(
                Task.campaign_id == campaign.id,
                col(Task.status).in_([TaskStatus.RETIRED, TaskStatus.ESCALATED]),
            )
        )
    ).all()
    active = (
        await session.exec(
            select(func.count(func.distinct(Answer.volunteer_id)))
            .join(Task, col(Task.id) == Answer.task_id)
            .where(
                Task.campaign_id == campaign.id,
                Answer.created_at >= now - dt.timedelta(days=7),
            )
        )
    ).one()
    quality = await gold_quality(session, store, campaign)
    return Progress(
        campaign=campaign.name,
        tasks=dict(statuses),
        answers_per_day=[(d, per_day.get(d, 0)) for d in days],
        answers_per_finished_crop=(
            float(np.mean([c.answers_used for c in finished])) if finished else None
        ),
        confidence=[float(c.confidence) for c in finished],
        proposal_dice_on_gold=mean_or_none(quality.proposal_dice),
        consensus_dice_on_gold=mean_or_none(quality.consensus_dice),
        active_volunteers=int(active),
    )


def chart(p: Progress) -> bytes:
    """A 960x420 PNG: crops by status, answers per day, consensus confidence histogram."""
    image = PILImage.new("RGB", (960, 420), (250, 250, 252))
    draw = ImageDraw.Draw(image)
    title, small = load_font(22), load_font(14)
    draw.text((20, 12), f"{p.campaign}: progress", fill=(20, 20, 30), font=title)
    _bars(
        draw,
        (20, 60, 300, 380),
        [
            ("open", p.tasks.get("open", 0)),
            ("retired", p.tasks.get("retired", 0)),
            ("escalated", p.tasks.get("escalated", 0)),
        ],
        "crops",
        small,
        (70, 130, 200),
    )
    _bars(
        draw,
        (330, 60, 640, 380),
        [(d.strftime("%d"), n) for d, n in p.answers_per_day],
        f"answers per day ({DAYS} days)",
        small,
        (60, 160, 100),
    )
    counts, _ = (
        np.histogram(p.confidence, bins=5, range=(0.5, 1.0))
        if p.confidence
        else (
            np.zeros(5, dtype=int),
            None,
        )
    )
    _bars(
        draw,
        (670, 60, 940, 380),
        [(f".{5 + i}", int(n)) for i, n in enumerate(counts)],
        "consensus confidence",
        small,
        (200, 120, 60),
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _bars(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    values: list[tuple[str, int]],
    label: str,
    font: object,
    color: tuple[int, int, int],
) -> None:
    x0, y0, x1, y1 = box
    draw.text((x0, y0), label, fill=(40, 40, 50), font=font)  # type: ignore[arg-type]
    top, bottom = y0 + 46, y1 - 22  # room for the title and the tallest bar's value
    highest = max([v for _, v in values] + [1])
    width = (x1 - x0) / max(len(values), 1)
    for i, (name, value) in enumerate(values):
        left = x0 + i * width + 3
        height = (bottom - top) * value / highest
        draw.rectangle((left, bottom - height, left + width - 6, bottom), fill=color)
        draw.text((left, bottom + 4), name, fill=(60, 60, 70), font=font)  # type: ignore[arg-type]
        if value:
            draw.text((left, bottom - height - 16), str(value), fill=(30, 30, 30), font=font)  # type: ignore[arg-type]
