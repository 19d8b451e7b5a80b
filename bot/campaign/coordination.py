"""Coordinator use cases: roles, the audit log, campaigns' rules and status.

Admins come from the settings (numeric Telegram ids); admins grant and revoke the coordinator
(and expert) role. Every privileged use case checks the actor's role itself, whatever button or
command led there, and writes an audit entry with the actor.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import cache
from bot.campaign.errors import CampaignNotFound, InvalidInput, NotAllowed
from bot.campaign.leaderboard import display_name
from bot.campaign.volunteers import volunteer_for
from bot.db.models import (
    Answer,
    AuditEntry,
    Campaign,
    CampaignStatus,
    GoldScore,
    Job,
    JobStatus,
    Role,
    Task,
    Volunteer,
)

logger = logging.getLogger(__name__)

PRIVILEGED = (Role.COORDINATOR, Role.ADMIN)
RETRYABLE = ("proposals", "export", "synthesis")  # job kinds the chat can start again
# What /rules may change: name -> (type, lowest, highest).
RULES: dict[str, tuple[type, float, float]] = {
    "min_answers": (int, 1, 50),
    "max_answers": (int, 1, 100),
    "retire_confidence": (float, 0.5, 1.0),
    "gold_rate": (float, 0.0, 0.9),
    "crop_size": (int, 64, 2048),
    "tutorial_tasks": (int, 0, 20),
    "daily_goal": (int, 1, 500),
    "daily_cap": (int, 1, 10000),
    "lease_seconds": (int, 10, 86400),
    "answer_floor_seconds": (float, 0.0, 30.0),
}


def role_of(volunteer: Volunteer, admins: Iterable[int]) -> Role:
    """The volunteer's effective role (admins by settings outrank any stored role)."""
    if volunteer.telegram_user_id in set(admins):
        return Role.ADMIN
    return volunteer.role


def require(volunteer: Volunteer, admins: Iterable[int], *roles: Role) -> None:
    """Raise ``NotAllowed`` unless the volunteer has one of ``roles`` (admins always pass)."""
    role = role_of(volunteer, admins)
    if role != Role.ADMIN and role not in roles:
        raise NotAllowed("this is for coordinators only")


async def audit(
    session: AsyncSession,
    actor: Volunteer,
    action: str,
    campaign_id: int | None = None,
    **detail: Any,
) -> None:
    """Write one audit entry (the caller commits)."""
    session.add(
        AuditEntry(
            actor_telegram_id=actor.telegram_user_id,
            action=action,
            campaign_id=campaign_id,
            detail=detail,
        )
    )
    logger.info("audit: %s by %s %s", action, actor.telegram_user_id, detail)


async def set_role(
    session: AsyncSession, actor: Volunteer, admins: Iterable[int], target: int, role: Role
) -> Volunteer:
    """Admins only: give the Telegram user ``target`` a role (volunteer revokes)."""
    require(actor, admins)  # admins only
    if role == Role.ADMIN:
        raise InvalidInput("admins are set in the settings (MEDCROWD_ADMINS), not granted")
    person = await volunteer_for(session, telegram_user_id=target)
    person.role = role
    session.add(person)
    await audit(session, actor, "set_role", target=target, role=role.value)
    return person


async def campaigns(session: AsyncSession) -> list[Campaign]:
    """Every campaign, oldest first."""
    return list((await session.exec(select(Campaign).order_by(col(Campaign.id)))).all())


async def use(
    session: AsyncSession, actor: Volunteer, admins: Iterable[int], campaign_id: int
) -> Campaign:
    """Make a campaign the coordinator's working campaign."""
    require(actor, admins, *PRIVILEGED)
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignNotFound(f"no campaign #{campaign_id}")
    actor.current_campaign_id = campaign.id
    session.add(actor)
    await audit(session, actor, "use", campaign.id)
    return campaign


async def working(session: AsyncSession, actor: Volunteer, admins: Iterable[int]) -> Campaign:
    """The coordinator's working campaign (the only one, if they never chose)."""
    require(actor, admins, *PRIVILEGED)
    if actor.current_campaign_id is not None:
        campaign = await session.get(Campaign, actor.current_campaign_id)
        if campaign is not None:
            return campaign
    every = await campaigns(session)
    if len(every) == 1:
        return every[0]
    raise InvalidInput("choose a campaign first: /projects")


def rules_of(campaign: Campaign) -> dict[str, Any]:
    """The campaign's current rules."""
    return {name: getattr(campaign, name) for name in RULES}


async def set_rules(
    session: AsyncSession,
    actor: Volunteer,
    admins: Iterable[int],
    campaign: Campaign,
    changes: dict[str, str],
) -> dict[str, Any]:
    """Change rules from ``name=value`` strings; all or nothing, each validated.

    Raises:
        InvalidInput: an unknown rule, a value of the wrong type or out of range, or
            ``min_answers`` above ``max_answers``.
    """
    require(actor, admins, *PRIVILEGED)
    parsed: dict[str, Any] = {}
    for name, raw in changes.items():
        if name not in RULES:
            raise InvalidInput(f"unknown rule {name!r}; rules: {', '.join(RULES)}")
        kind, lowest, highest = RULES[name]
        try:
            value = kind(raw)
        except ValueError:
            raise InvalidInput(f"{name} must be a {kind.__name__}, got {raw!r}") from None
        if not lowest <= value <= highest:
            raise InvalidInput(f"{name} must be between {lowest:g} and {highest:g}, got {raw}")
        parsed[name] = value
    merged = {**rules_of(campaign), **parsed}
    if merged["min_answers"] > merged["max_answers"]:
        raise InvalidInput("min_answers cannot exceed max_answers")
    for name, value in parsed.items():
        setattr(campaign, name, value)
    session.add(campaign)
    await audit(session, actor, "set_rules", campaign.id, **parsed)
    cache.clear()  # every process reads the new rules at once (this one) or within seconds
    return merged


async def set_status(
    session: AsyncSession,
    actor: Volunteer,
    admins: Iterable[int],
    campaign: Campaign,
    status: CampaignStatus,
) -> None:
    """Pause, resume (active) or close a campaign."""
    require(actor, admins, *PRIVILEGED)
    if campaign.status == CampaignStatus.CLOSED and status != CampaignStatus.CLOSED:
        raise InvalidInput("a closed campaign stays closed")
    campaign.status = status
    session.add(campaign)
    await audit(session, actor, "set_status", campaign.id, status=status.value)
    cache.clear()


@dataclass(frozen=True)
class VolunteerLine:
    """One volunteer as a coordinator sees them (never their Telegram name)."""

    volunteer_id: int
    name: str
    answers: int
    gold_answers: int
    gold_accuracy: float | None
    points: int
    banned: bool
    paused: bool


async def volunteer_lines(
    session: AsyncSession, actor: Volunteer, admins: Iterable[int], campaign: Campaign
) -> list[VolunteerLine]:
    """Everyone who answered in the campaign, most accurate on gold first (no gold: last)."""
    require(actor, admins, *PRIVILEGED)
    rows = (
        await session.exec(
            select(Volunteer, func.count(col(Answer.id)))
            .join(Answer, col(Answer.volunteer_id) == col(Volunteer.id))
            .join(Task, col(Task.id) == Answer.task_id)
            .where(Task.campaign_id == campaign.id)
            .group_by(col(Volunteer.id))
        )
    ).all()
    gold = {
        v: (int(n), float(mean))
        for v, n, mean in (
            await session.exec(
                select(GoldScore.volunteer_id, func.count(), func.avg(GoldScore.dice))
                .join(Task, col(Task.id) == GoldScore.task_id)
                .where(Task.campaign_id == campaign.id)
                .group_by(col(GoldScore.volunteer_id))
            )
        ).all()
    }
    lines = []
    for volunteer, answers in rows:
        assert volunteer.id is not None
        n, mean = gold.get(volunteer.id, (0, None))
        lines.append(
            VolunteerLine(
                volunteer.id,
                display_name(volunteer_id=volunteer.id, nickname=volunteer.nickname),
                int(answers),
                n,
                mean,
                volunteer.points,
                volunteer.banned,
                volunteer.paused,
            )
        )
    return sorted(lines, key=lambda v: (v.gold_accuracy is None, -(v.gold_accuracy or 0.0)))


async def set_banned(
    session: AsyncSession, actor: Volunteer, admins: Iterable[int], volunteer_id: int, banned: bool
) -> Volunteer:
    """Ban (no more crops; answers stay) or unban a volunteer by row id."""
    require(actor, admins, *PRIVILEGED)
    target = await session.get(Volunteer, volunteer_id)
    if target is None:
        raise InvalidInput(f"no volunteer #{volunteer_id}")
    target.banned = banned
    session.add(target)
    await audit(session, actor, "ban" if banned else "unban", volunteer=volunteer_id)
    return target


async def broadcast_targets(
    session: AsyncSession, actor: Volunteer, admins: Iterable[int], campaign: Campaign
) -> list[int]:
    """Telegram ids of the campaign's volunteers who may be messaged (not paused or banned)."""
    require(actor, admins, *PRIVILEGED)
    rows = (
        await session.exec(
            select(Volunteer.telegram_user_id)
            .join(Answer, col(Answer.volunteer_id) == col(Volunteer.id))
            .join(Task, col(Task.id) == Answer.task_id)
            .where(
                Task.campaign_id == campaign.id,
                col(Volunteer.paused).is_(False),
                col(Volunteer.banned).is_(False),
                col(Volunteer.forgotten).is_(False),
            )
            .distinct()
        )
    ).all()
    return sorted(int(r) for r in rows if r > 0)


async def use_by_name(
    session: AsyncSession, actor: Volunteer, admins: Iterable[int], name: str
) -> Campaign:
    """``use`` by the campaign's name."""
    require(actor, admins, *PRIVILEGED)
    found = await session.exec(select(Campaign).where(Campaign.name == name))
    campaign = found.first()
    if campaign is None:
        raise CampaignNotFound(f"no campaign named {name!r}; see /projects")
    assert campaign.id is not None
    return await use(session, actor, admins, campaign.id)


async def jobs(
    session: AsyncSession, actor: Volunteer, admins: Iterable[int], limit: int = 10
) -> list[Job]:
    """The latest background jobs, newest first."""
    require(actor, admins, *PRIVILEGED)
    result = await session.exec(select(Job).order_by(col(Job.id).desc()).limit(limit))
    return list(result.all())


async def retry(session: AsyncSession, actor: Volunteer, admins: Iterable[int], job_id: int) -> Job:
    """Check that a failed job may be retried and mark it retried (the caller starts it again)."""
    require(actor, admins, *PRIVILEGED)
    job = await session.get(Job, job_id)
    if job is None:
        raise InvalidInput(f"no job #{job_id}")
    if job.status != JobStatus.FAILED:
        raise InvalidInput(f"job #{job_id} is {job.status.value}: only failed jobs are retried")
    if job.params.get("retried"):
        raise InvalidInput(f"job #{job_id} was retried already: see /jobs")
    if job.kind not in RETRYABLE:
        raise InvalidInput(f"a {job.kind} job cannot be retried from the chat")
    job.params = {**job.params, "retried": True}
    session.add(job)
    await audit(session, actor, "retry_job", job.campaign_id, job_id=job_id, kind=job.kind)
    return job


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{2,79}")


async def create_campaign(
    session: AsyncSession,
    actor: Volunteer,
    admins: Iterable[int],
    *,
    name: str,
    structure: str,
    instructions: str = "",
) -> Campaign:
    """A new campaign with default rules, which becomes the coordinator's working campaign.

    Raises:
        InvalidInput: a name that is not 3-80 of ``A-Z a-z 0-9 _ . -`` or is taken, or an
            empty structure.
    """
    require(actor, admins, *PRIVILEGED)
    if not NAME.fullmatch(name):
        raise InvalidInput("a campaign name is 3-80 letters, digits, '_', '.' or '-', no spaces")
    structure = " ".join(structure.split())
    if not 1 <= len(structure) <= 80:
        raise InvalidInput("name the structure to segment (1-80 characters), e.g. liver lesion")
    taken = await session.exec(select(Campaign.id).where(Campaign.name == name))
    if taken.first() is not None:
        raise InvalidInput(f"a campaign named {name!r} exists; choose another name")
    campaign = Campaign(name=name, structure=structure, instructions=instructions[:4000])
    session.add(campaign)
    await session.flush()
    actor.current_campaign_id = campaign.id
    session.add(actor)
    await audit(session, actor, "create_campaign", campaign.id, name=name)
    cache.clear()
    return campaign
