"""Alerts to coordinators when fusion judges a volunteer's answers worthless or adversarial.

Fusion already down-weights such volunteers; a person should still look, and can ``/ban``
them. Each volunteer is alerted about once per campaign (remembered on their row, so a restart
does not repeat it); banned volunteers are not alerted about.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.leaderboard import display_name
from bot.db.models import Role, Volunteer
from fusion.paf import VolunteerReport

# Evidence (masks + verdicts) fusion must hold before a judgement is worth a person's time.
MIN_EVIDENCE = 10
# Spammer score at or above which answers look independent of the truth.
SPAMMER_SCORE = 0.9


@dataclass(frozen=True)
class CollapseAlert:
    """A volunteer whose reliability collapsed, as coordinators are told."""

    volunteer_id: int
    name: str
    evidence: int
    adversary: bool
    spammer_score: float


def collapsed(reports: Iterable[VolunteerReport]) -> list[VolunteerReport]:
    """The volunteers fusion has seen enough of to call adversarial or spamming."""
    return [
        r
        for r in reports
        if r.masks + r.verdicts >= MIN_EVIDENCE
        and (r.adversary or r.spammer_score >= SPAMMER_SCORE)
    ]


async def new_alerts(
    session: AsyncSession, campaign_id: int, reports: Iterable[VolunteerReport]
) -> list[CollapseAlert]:
    """Alerts for collapsed volunteers not yet reported in this campaign; marks them reported.

    The caller commits (with the answer that triggered the refit).
    """
    alerts = []
    for report in collapsed(reports):
        volunteer = await session.get(Volunteer, report.volunteer)
        if volunteer is None or volunteer.banned or volunteer.id is None:
            continue
        reported = list(volunteer.reliability.get("alerted_campaigns", []))
        if campaign_id in reported:
            continue
        volunteer.reliability = {
            **volunteer.reliability,
            "alerted_campaigns": [*reported, campaign_id],
        }
        session.add(volunteer)
        alerts.append(
            CollapseAlert(
                volunteer_id=volunteer.id,
                name=display_name(volunteer_id=volunteer.id, nickname=volunteer.nickname),
                evidence=report.masks + report.verdicts,
                adversary=report.adversary,
                spammer_score=report.spammer_score,
            )
        )
    return alerts


async def coordinator_chats(session: AsyncSession, admins: Iterable[int]) -> list[int]:
    """Telegram ids of everyone an alert goes to: coordinators, stored admins and ``admins``."""
    rows = await session.exec(
        select(Volunteer.telegram_user_id).where(
            col(Volunteer.role).in_([Role.COORDINATOR, Role.ADMIN]),
            col(Volunteer.forgotten).is_(False),
        )
    )
    return sorted({int(r) for r in rows.all()} | set(admins))
