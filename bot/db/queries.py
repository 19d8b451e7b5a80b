"""Small keyword-only queries; the session is always passed in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from bot.db.models import Answer, Campaign, Image, Task, TaskKind, TaskStatus, Volunteer


async def campaign_by_name(session: AsyncSession, *, name: str) -> Campaign | None:
    """The campaign called ``name``, if any."""
    result = await session.exec(select(Campaign).where(Campaign.name == name))
    return result.first()


async def image_by_hash(
    session: AsyncSession, *, campaign_id: int, content_hash: str
) -> Image | None:
    """The image of a campaign with these pixels, if already ingested."""
    result = await session.exec(
        select(Image).where(Image.campaign_id == campaign_id, Image.content_hash == content_hash)
    )
    return result.first()


async def image_by_volume(
    session: AsyncSession, *, campaign_id: int, volume_hash: str
) -> Image | None:
    """A slice of the campaign's volume with this hash, if that volume was ingested."""
    result = await session.exec(
        select(Image).where(Image.campaign_id == campaign_id, Image.volume_hash == volume_hash)
    )
    return result.first()


async def count_images(session: AsyncSession, *, campaign_id: int) -> int:
    """How many images a campaign has."""
    result = await session.exec(
        select(func.count()).select_from(Image).where(Image.campaign_id == campaign_id)
    )
    return int(result.one())


async def count_tasks_by(
    session: AsyncSession, *, campaign_id: int
) -> dict[tuple[TaskKind, TaskStatus], int]:
    """Task counts of a campaign by (kind, status)."""
    result = await session.exec(
        select(Task.kind, Task.status, func.count())
        .where(Task.campaign_id == campaign_id)
        .group_by(col(Task.kind), col(Task.status))
    )
    return {(TaskKind(kind), TaskStatus(status)): int(n) for kind, status, n in result.all()}


def counted_answers(task_id: Any) -> SelectOfScalar[int]:
    """SELECT the number of answers a crop holds that count: a banned volunteer's do not.

    ``task_id`` is a crop id, or a column (``Task.id``) for a correlated subquery.
    """
    return (
        select(func.count())
        .select_from(Answer)
        .join(Volunteer, col(Volunteer.id) == Answer.volunteer_id)
        .where(Answer.task_id == task_id, col(Volunteer.banned).is_(False))
    )
