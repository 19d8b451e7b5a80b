"""Which crop a volunteer sees next, under a lease.

Never one they answered, never a retired one. A volunteer still holding an unexpired lease gets
that crop back (a double "next" hands out nothing new). New volunteers first do the campaign's
tutorial (gold crops with instant feedback); after that gold is mixed in at a rate that starts
high and decays toward the campaign's ``gold_rate`` as their gold record grows. Real crops are
ranked by priority (fusion's uncertainty about the crop and how close it is to retiring), with
hard crops steered to volunteers whose gold record is strong and easy ones to newcomers. A crop is
leased to no more volunteers than its next decision needs (``min_answers`` at first, then one at a
time) while other crops have such room, so a crop that retires wastes no one's work; and never to
more than ``max_answers``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, case, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import cache
from bot.campaign.errors import NoConsent, NoWork, StaleTask
from bot.db import queries
from bot.db.models import (
    Answer,
    Assignment,
    Campaign,
    GoldScore,
    Task,
    TaskKind,
    TaskStatus,
    Volunteer,
    VolunteerDay,
)
from bot.db.types import utcnow

logger = logging.getLogger(__name__)

NEWCOMER_GOLD_RATE = 0.5
GOLD_DECAY_ANSWERS = 5.0
CANDIDATES = 25
FAST_STREAK = 5  # this many answers in a row under the campaign's floor ...
FAST_COOL_DOWN = dt.timedelta(seconds=60)  # ... and no new crop for this long after the last


def gold_rate(base: float, gold_answers: int, tutorial: int) -> float:
    """Chance that the next crop is gold: 0.5 after the tutorial, decaying to ``base``.

    A campaign without gold mixing (``base`` 0) mixes none in, newcomers included.
    """
    if base <= 0:
        return 0.0
    extra = max(gold_answers - tutorial, 0)
    return base + (max(NEWCOMER_GOLD_RATE, base) - base) * math.exp(-extra / GOLD_DECAY_ANSWERS)


def skill_of(gold_dice: float | None) -> float:
    """A volunteer's skill in [0, 1] from their mean gold Dice (0.5 with no gold yet)."""
    if gold_dice is None:
        return 0.5
    return float(np.clip((gold_dice - 0.7) / 0.3, 0.0, 1.0))


async def active_campaign(session: AsyncSession) -> Campaign | None:
    """The oldest campaign that hands out crops (cached for a few seconds)."""
    return await cache.active_campaign(session)


async def open_assignment(
    session: AsyncSession, *, volunteer_id: int, now: dt.datetime
) -> Assignment | None:
    """The volunteer's unexpired, unanswered assignment on a still-open crop, if any."""
    result = await session.exec(
        select(Assignment)
        .join(Task, col(Task.id) == Assignment.task_id)
        .where(
            Assignment.volunteer_id == volunteer_id,
            col(Assignment.closed_at).is_(None),
            Assignment.lease_expires_at > now,
            Task.status == TaskStatus.OPEN,
        )
        .order_by(col(Assignment.id).desc())
    )
    return result.first()


async def assignment_by_token(session: AsyncSession, *, token: str) -> Assignment:
    """The assignment a button names.

    Raises:
        StaleTask: no such token.
    """
    result = await session.exec(select(Assignment).where(Assignment.token == token))
    assignment = result.first()
    if assignment is None:
        raise StaleTask("that crop is no longer available")
    return assignment


async def _gold_record(session: AsyncSession, volunteer_id: int) -> tuple[int, float | None]:
    result = await session.exec(
        select(func.count(), func.avg(GoldScore.dice)).where(GoldScore.volunteer_id == volunteer_id)
    )
    count, mean = result.one()
    return int(count), None if mean is None else float(mean)


def _not_answered_by(volunteer_id: int) -> ColumnElement[bool]:
    answered = select(Answer.task_id).where(Answer.volunteer_id == volunteer_id)
    return col(Task.id).not_in(answered)


async def _gold_task(
    session: AsyncSession, campaign: Campaign, volunteer_id: int, rng: np.random.Generator
) -> Task | None:
    result = await session.exec(
        select(Task)
        .where(
            Task.campaign_id == campaign.id,
            col(Task.kind).in_([TaskKind.GOLD, TaskKind.TUTORIAL]),
            _not_answered_by(volunteer_id),
        )
        .order_by(col(Task.kind).desc(), col(Task.id))  # tutorial crops first
        .limit(CANDIDATES)
    )
    tasks = list(result.all())
    if not tasks:
        return None
    tutorial = [t for t in tasks if t.kind == TaskKind.TUTORIAL]
    return tutorial[0] if tutorial else tasks[int(rng.integers(len(tasks)))]


async def _real_task(
    session: AsyncSession, campaign: Campaign, volunteer_id: int, skill: float, now: dt.datetime
) -> Task | None:
    leased = (
        select(func.count())
        .select_from(Assignment)
        .where(
            Assignment.task_id == Task.id,
            col(Assignment.closed_at).is_(None),
            Assignment.lease_expires_at > now,
        )
        .scalar_subquery()
    )
    # a banned volunteer's answers no longer count, so they free their places
    answered = queries.counted_answers(Task.id).scalar_subquery()
    room: tuple[Any, ...] = (  # SQL conditions
        Task.campaign_id == campaign.id,
        Task.kind == TaskKind.REAL,
        Task.status == TaskStatus.OPEN,
        _not_answered_by(volunteer_id),
        leased + answered < campaign.max_answers,
    )
    # No more volunteers at once than the crop's next decision needs (min_answers at first,
    # then one at a time), so a crop that retires leaves no one's work wasted; only when no
    # crop has such room is a crop shared further, up to max_answers, rather than no work.
    needed = leased + answered < case(
        (answered < campaign.min_answers, campaign.min_answers), else_=answered + 1
    )
    for where in ((*room, needed), room):
        task = await _first_free(session, where, skill)
        if task is not None:
            return task
    return None


async def _first_free(session: AsyncSession, where: tuple[Any, ...], skill: float) -> Task | None:
    """The best crop meeting ``where`` that no concurrent lease is taking (None: none)."""
    result = await session.exec(
        select(Task)
        .where(*where)
        .order_by(col(Task.priority).desc(), col(Task.id))
        .limit(CANDIDATES)
    )
    tasks = list(result.all())
    # Priority first; among close calls, a crop whose difficulty suits the volunteer's skill.
    tasks.sort(key=lambda t: t.priority - 0.5 * abs(t.priority - skill), reverse=True)
    if session.get_bind().dialect.name != "postgresql":
        return tasks[0] if tasks else None  # SQLite: BEGIN IMMEDIATE serialises leasing
    # PostgreSQL: two volunteers leased at once must not both take a crop's last place. Lock
    # the chosen crop (skipping one another lease holds) and check its room again.
    for task in tasks:
        locked = await session.exec(
            select(Task.id)
            .where(Task.id == task.id, *where)
            .with_for_update(skip_locked=True, key_share=True)
        )
        if locked.first() is not None:
            return task
    return None


async def _check_pace(
    session: AsyncSession, campaign: Campaign, volunteer_id: int, now: dt.datetime
) -> None:
    """Refuse a new crop past the daily cap, or to someone answering faster than anyone looks.

    Raises:
        NoWork: the volunteer reached the campaign's ``daily_cap`` today (UTC), or their last
            ``FAST_STREAK`` answers all came under the campaign's ``answer_floor_seconds``
            (then for ``FAST_COOL_DOWN`` after the last of them).
    """
    day = await session.exec(
        select(VolunteerDay.answers).where(
            VolunteerDay.volunteer_id == volunteer_id, VolunteerDay.day == now.date()
        )
    )
    today = day.first() or 0
    if today >= campaign.daily_cap:
        raise NoWork(
            f"that is {today} answers today, the most a day holds: thank you! "
            "New crops wait for you tomorrow"
        )
    if campaign.answer_floor_seconds <= 0:
        return
    recent = (
        await session.exec(
            select(Answer.seconds_taken, Answer.created_at)
            .where(Answer.volunteer_id == volunteer_id)
            .order_by(col(Answer.id).desc())
            .limit(FAST_STREAK)
        )
    ).all()
    too_fast = len(recent) == FAST_STREAK and all(
        seconds is not None and seconds < campaign.answer_floor_seconds for seconds, _ in recent
    )
    if too_fast and now - recent[0][1] < FAST_COOL_DOWN:
        wait = math.ceil((FAST_COOL_DOWN - (now - recent[0][1])).total_seconds())
        raise NoWork(
            f"your last {FAST_STREAK} answers came faster than a crop can be looked at: "
            f"take a breath, and look closely at the next one (in {wait} s)"
        )


async def next_assignment(
    session: AsyncSession,
    *,
    volunteer: Volunteer,
    rng: np.random.Generator,
    now: dt.datetime | None = None,
    augment: Callable[[np.random.Generator, tuple[int, int]], Any] | None = None,
) -> Assignment:
    """Lease the volunteer's next crop (or hand back the one they hold).

    Args:
        session: the open session (the caller commits).
        volunteer: who asks.
        rng: draws the gold mix and augmentations.
        now: the time (default: now, UTC).
        augment: draws a gold crop's augmentation (a dataclass) from ``rng`` and the crop's
            (H, W); gold crops are shown plain when None.

    Raises:
        NoConsent: the volunteer has not agreed to the terms.
        NoWork: nothing is open for them, or they must slow down or stop for today.
    """
    assert volunteer.id is not None
    if volunteer.consent_at is None or volunteer.forgotten:
        raise NoConsent("please agree to the terms first: send /start")
    if volunteer.banned:
        raise NoWork("your account is paused by the coordinators; no more crops, sorry")
    now = now or utcnow()
    held = await open_assignment(session, volunteer_id=volunteer.id, now=now)
    if held is not None:
        return held
    campaign = await active_campaign(session)
    if campaign is None:
        raise NoWork("no campaign is running right now")
    await _check_pace(session, campaign, volunteer.id, now)
    gold_done, gold_dice = await _gold_record(session, volunteer.id)
    task = None
    if gold_done < campaign.tutorial_tasks or rng.random() < gold_rate(
        campaign.gold_rate, gold_done, campaign.tutorial_tasks
    ):
        task = await _gold_task(session, campaign, volunteer.id, rng)
    if task is None:
        task = await _real_task(session, campaign, volunteer.id, skill_of(gold_dice), now)
    if task is None:
        task = await _gold_task(session, campaign, volunteer.id, rng)
    if task is None:
        raise NoWork("you have seen every open crop: thank you! New ones come soon")
    assert task.id is not None
    drawn = None
    if task.kind != TaskKind.REAL and augment is not None:
        drawn = asdict(augment(rng, (task.crop_out, task.crop_out)))
    assignment = Assignment(
        token=secrets.token_urlsafe(9),
        task_id=task.id,
        volunteer_id=volunteer.id,
        lease_expires_at=now + dt.timedelta(seconds=campaign.lease_seconds),
        augment=drawn,
        created_at=now,
    )
    session.add(assignment)
    await session.flush()
    logger.debug("volunteer %s leased task %s", volunteer.id, task.id)
    return assignment
