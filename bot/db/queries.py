"""Small keyword-only queries; the session is always passed in."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.db.models import Campaign, Image, Task, TaskKind, TaskStatus


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
