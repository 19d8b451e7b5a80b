"""Volunteers: sign-up, consent, nickname, pause and forget. Identified by Telegram id only."""

from __future__ import annotations

import logging
import re

from sqlalchemy import func
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import inbox
from bot.campaign.errors import InvalidInput
from bot.db.models import Assignment, Volunteer, VolunteerDay
from bot.db.types import utcnow

logger = logging.getLogger(__name__)

NICKNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{1,22}[A-Za-z0-9_]")


async def volunteer_for(session: AsyncSession, *, telegram_user_id: int) -> Volunteer:
    """The volunteer with this Telegram id, created on first contact (nothing else is stored)."""
    if telegram_user_id <= 0:
        raise InvalidInput("a Telegram user id is positive")
    found = await session.exec(
        select(Volunteer).where(Volunteer.telegram_user_id == telegram_user_id)
    )
    volunteer = found.first()
    if volunteer is None:
        volunteer = Volunteer(telegram_user_id=telegram_user_id)
        session.add(volunteer)
        await session.flush()
    return volunteer


async def give_consent(session: AsyncSession, *, volunteer: Volunteer) -> None:
    """Record that the volunteer agreed to the terms (idempotent)."""
    if volunteer.consent_at is None:
        volunteer.consent_at = utcnow()
        session.add(volunteer)


async def set_nickname(
    session: AsyncSession, *, volunteer: Volunteer, nickname: str | None
) -> None:
    """Set (or with None, clear) the opt-in leaderboard nickname.

    Raises:
        InvalidInput: not 3-24 letters, digits, spaces, ``_.-``, or taken by someone else.
    """
    if nickname is None:
        volunteer.nickname = None
        session.add(volunteer)
        return
    nickname = " ".join(nickname.split())
    if not NICKNAME.fullmatch(nickname):
        raise InvalidInput(
            "a nickname is 3-24 characters: letters, digits, spaces, '_', '.' or '-'"
        )
    taken = await session.exec(
        select(Volunteer.id).where(
            func.lower(Volunteer.nickname) == nickname.lower(), Volunteer.id != volunteer.id
        )
    )
    if taken.first() is not None:
        raise InvalidInput(f"the nickname {nickname!r} is taken; try another")
    volunteer.nickname = nickname
    session.add(volunteer)


async def set_paused(session: AsyncSession, *, volunteer: Volunteer, paused: bool) -> None:
    """Stop (or resume) pushes to the volunteer: digests and reminders."""
    volunteer.paused = paused
    session.add(volunteer)


async def forget(session: AsyncSession, *, volunteer: Volunteer) -> None:
    """Delete the volunteer's personal data; their answers stay, anonymous, for the science.

    The Telegram id is replaced by a negative placeholder (so the same person starting again
    is a new volunteer), the nickname, consent, daily activity and their stored updates are
    deleted, and open assignments are closed.
    """
    assert volunteer.id is not None
    now = utcnow()
    await inbox.forget_user(session, user_id=volunteer.telegram_user_id)
    volunteer.telegram_user_id = -volunteer.id
    volunteer.nickname = None
    volunteer.consent_at = None
    volunteer.paused = True
    volunteer.forgotten = True
    volunteer.last_active_on = None
    volunteer.streak_days = 0
    session.add(volunteer)
    await session.exec(
        update(Assignment)
        .where(col(Assignment.volunteer_id) == volunteer.id, col(Assignment.closed_at).is_(None))
        .values(closed_at=now, chat_id=None, message_id=None)
    )
    days = await session.exec(select(VolunteerDay).where(VolunteerDay.volunteer_id == volunteer.id))
    for day in days.all():
        await session.delete(day)
    logger.info("volunteer %s forgotten", volunteer.id)
