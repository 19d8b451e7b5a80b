"""Campaigns: create, find, summarise."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.errors import CampaignNotFound, InvalidInput
from bot.db import queries
from bot.db.models import Campaign, TaskKind, TaskStatus


async def get_campaign(session: AsyncSession, name: str) -> Campaign:
    """The campaign called ``name``; raises ``CampaignNotFound``."""
    campaign = await queries.campaign_by_name(session, name=name)
    if campaign is None:
        raise CampaignNotFound(f"no campaign named {name!r}")
    return campaign


async def ensure_campaign(
    session: AsyncSession, name: str, *, structure: str | None = None
) -> Campaign:
    """The campaign called ``name``, created with default rules if it does not exist."""
    name = name.strip()
    if not name or len(name) > 80:
        raise InvalidInput("a campaign name must be 1 to 80 characters")
    campaign = await queries.campaign_by_name(session, name=name)
    if campaign is None:
        campaign = Campaign(name=name, structure=structure or "lesion")
        session.add(campaign)
        await session.commit()
        await session.refresh(campaign)
    return campaign


@dataclass(frozen=True)
class CampaignSummary:
    """Counts a coordinator wants at a glance."""

    name: str
    images: int
    tasks: dict[str, dict[str, int]]  # kind -> status -> count

    @property
    def total_tasks(self) -> int:
        """All tasks of every kind and status."""
        return sum(sum(v.values()) for v in self.tasks.values())


async def summarise(session: AsyncSession, campaign: Campaign) -> CampaignSummary:
    """Image and task counts of a campaign."""
    assert campaign.id is not None
    counts = await queries.count_tasks_by(session, campaign_id=campaign.id)
    tasks = {k.value: {s.value: counts.get((k, s), 0) for s in TaskStatus} for k in TaskKind}
    images = await queries.count_images(session, campaign_id=campaign.id)
    return CampaignSummary(name=campaign.name, images=images, tasks=tasks)
