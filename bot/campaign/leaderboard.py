"""What volunteers see of their standing: digests, leaderboards and their profile.

Names on a board are opt-in nicknames or a pseudonym derived from the volunteer row, never a
Telegram name or id. Forgotten and banned volunteers never appear.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select

from bot.campaign.errors import MedCrowdError
from bot.campaign.scoring import (
    MATCH_AGREEMENT,
    current_streak,
    earned_badges,
    level_for,
    next_level_at,
    volunteer_stats,
)
from bot.db.models import Answer, GoldScore, Volunteer

Period = Literal["week", "all"]


class VolunteerNotFound(MedCrowdError):
    """No volunteer with that id."""


@dataclass(frozen=True)
class Digest:
    """One batched message: what a volunteer's answers earned since the last digest."""

    volunteer_id: int
    telegram_user_id: int
    answers: int
    matched: int  # answers with agreement >= MATCH_AGREEMENT
    points: int
    new_badges: list[str]
    answer_ids: tuple[int, ...]  # pass to mark_notified once the message is sent


async def pending_digests(session: AsyncSession) -> list[Digest]:
    """One digest per volunteer with credited answers not yet announced.

    Paused, forgotten and banned volunteers get none (their answers wait, unannounced).
    ``new_badges`` are the held badges that the announced answers alone did not earn, i.e. the
    ones these answers brought; streak badges follow the streak, not answers, and are not listed.
    """
    result = await session.exec(
        select(Answer.id, Answer.volunteer_id, Answer.agreement, Answer.points)
        .join(Volunteer, col(Volunteer.id) == Answer.volunteer_id)
        .where(
            col(Answer.credited_at).is_not(None),
            col(Answer.notified).is_(False),
            col(Volunteer.paused).is_(False),
            col(Volunteer.forgotten).is_(False),
            col(Volunteer.banned).is_(False),
        )
        .order_by(col(Answer.volunteer_id), col(Answer.id))
    )
    pending: dict[int, list[tuple[int, float | None, int]]] = {}
    for answer_id, vid, agreement, earned in result.all():
        assert answer_id is not None
        pending.setdefault(vid, []).append((answer_id, agreement, earned))
    if not pending:
        return []
    volunteers = await session.exec(select(Volunteer).where(col(Volunteer.id).in_(pending)))
    by_id = {v.id: v for v in volunteers.all()}
    now_stats = await volunteer_stats(session, volunteer_ids=pending)
    known_stats = await volunteer_stats(session, volunteer_ids=pending, notified_only=True)
    digests = []
    for vid, rows in pending.items():
        volunteer = by_id[vid]
        assert volunteer.id is not None
        now_earned = earned_badges(now_stats[vid])
        known = earned_badges(known_stats[vid])
        digests.append(
            Digest(
                volunteer_id=volunteer.id,
                telegram_user_id=volunteer.telegram_user_id,
                answers=len(rows),
                matched=sum(1 for _, a, _ in rows if a is not None and a >= MATCH_AGREEMENT),
                points=sum(p for _, _, p in rows),
                new_badges=[
                    b
                    for b in volunteer.badges
                    if b in now_earned and b not in known and not b.startswith("streak-")
                ],
                answer_ids=tuple(a for a, _, _ in rows),
            )
        )
    return digests


async def mark_notified(
    session: AsyncSession, *, volunteer_id: int, answer_ids: Collection[int] | None = None
) -> int:
    """Mark a volunteer's credited answers as announced; returns how many were marked.

    Args:
        session: the caller's session (not committed here).
        volunteer_id: whose answers.
        answer_ids: only these (a ``Digest.answer_ids``), so answers credited after the digest
            was built wait for the next one; all pending answers when None.
    """
    statement = (
        update(Answer)
        .where(
            col(Answer.volunteer_id) == volunteer_id,
            col(Answer.credited_at).is_not(None),
            col(Answer.notified).is_(False),
        )
        .values(notified=True)
    )
    if answer_ids is not None:
        statement = statement.where(col(Answer.id).in_(list(answer_ids)))
    result = await session.exec(statement)
    return int(result.rowcount)


def display_name(*, volunteer_id: int, nickname: str | None) -> str:
    """The nickname, or ``anonymous #<6 hex>`` derived from the row id (stable, not the id)."""
    if nickname:
        return nickname
    tag = hashlib.blake2b(f"volunteer:{volunteer_id}".encode(), digest_size=3).hexdigest()
    return f"anonymous #{tag}"


def week_start(now: dt.datetime) -> dt.datetime:
    """Monday 00:00 UTC of the week ``now`` (timezone-aware) falls in."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    day = now.astimezone(dt.UTC).date() - dt.timedelta(days=now.astimezone(dt.UTC).weekday())
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


@dataclass(frozen=True)
class LeaderboardRow:
    """One place on a board; ``rank`` is shared by ties (1, 2, 2, 4)."""

    rank: int
    name: str
    points: int
    is_you: bool = False


@dataclass(frozen=True)
class Leaderboard:
    """The top of a board, and the asking volunteer's own place wherever it is."""

    period: Period
    since: dt.datetime | None  # start of the week; None for all time
    rows: list[LeaderboardRow]
    you: LeaderboardRow | None  # None when the volunteer has no points in the period


def _ranked(*, since: dt.datetime | None) -> sa.Subquery:
    """(volunteer_id, nickname, points, rank) of every visible volunteer with points.

    All-time points when ``since`` is None, else points credited in the week from ``since``.
    """
    visible = (col(Volunteer.forgotten).is_(False), col(Volunteer.banned).is_(False))
    inner: sa.Subquery
    if since is None:
        inner = (
            select(
                col(Volunteer.id).label("volunteer_id"),
                col(Volunteer.nickname).label("nickname"),
                col(Volunteer.points).label("points"),
            )
            .where(*visible, col(Volunteer.points) > 0)
            .subquery()
        )
    else:
        total = func.sum(Answer.points)
        inner = (
            select(
                col(Volunteer.id).label("volunteer_id"),
                col(Volunteer.nickname).label("nickname"),
                total.label("points"),
            )
            .join(Answer, col(Answer.volunteer_id) == Volunteer.id)
            .where(
                *visible,
                col(Answer.credited_at) >= since,
                col(Answer.credited_at) < since + dt.timedelta(days=7),
            )
            .group_by(col(Volunteer.id), col(Volunteer.nickname))
            .having(total > 0)
            .subquery()
        )
    rank = func.rank().over(order_by=inner.c.points.desc())
    return select(
        inner.c.volunteer_id, inner.c.nickname, inner.c.points, rank.label("rank")
    ).subquery()


def _board(ranked: sa.Subquery) -> Select[Any, Any, Any, Any]:
    """SELECT (volunteer_id, nickname, points, rank) FROM ``ranked``."""
    c = ranked.c
    return select(c.volunteer_id, c.nickname, c.points, c.rank)


async def leaderboard(
    session: AsyncSession,
    *,
    period: Period,
    volunteer_id: int | None,
    limit: int = 10,
    now: dt.datetime,
) -> Leaderboard:
    """The top ``limit`` volunteers by points, with competition ranking (ties share a rank).

    Args:
        session: the session.
        period: ``"week"``: points of answers credited since Monday 00:00 UTC of ``now``'s week
            (and before the next Monday); ``"all"``: all-time points.
        volunteer_id: who asks; their own row is returned even outside the top. None for nobody.
        limit: how many rows; ties at the cut are broken by join order (volunteer id).
        now: the time the board is for, timezone-aware.

    Raises:
        ValueError: ``limit`` below 1 or a naive ``now``.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    since = week_start(now) if period == "week" else None
    ranked = _ranked(since=since)
    top = await session.exec(
        _board(ranked).order_by(ranked.c.rank, ranked.c.volunteer_id).limit(limit)
    )
    rows = [_row(r, volunteer_id) for r in top.all()]
    you = next((row for row in rows if row.is_you), None)
    if you is None and volunteer_id is not None:
        own = await session.exec(_board(ranked).where(ranked.c.volunteer_id == volunteer_id))
        found = own.first()
        you = None if found is None else _row(found, volunteer_id)
    return Leaderboard(
        period=period,
        since=since,
        rows=rows,
        you=you,
    )


def _row(row: tuple[int, str | None, int, int], asking: int | None) -> LeaderboardRow:
    vid, nickname, points, rank = row
    return LeaderboardRow(
        rank=int(rank),
        name=display_name(volunteer_id=vid, nickname=nickname),
        points=int(points),
        is_you=vid == asking,
    )


@dataclass(frozen=True)
class Profile:
    """A volunteer's own standing, for /me."""

    volunteer_id: int
    name: str
    nickname: str | None
    points: int
    level: int
    next_level_at: int | None
    streak_days: int
    gold_accuracy: float | None  # mean Dice over gold answers; None without any
    gold_answers: int
    answers: int
    credited_answers: int
    rank: int | None  # all-time; None without points (or when forgotten)
    badges: list[str]


async def profile(
    session: AsyncSession, *, volunteer_id: int, today: dt.date | None = None
) -> Profile:
    """The volunteer's points, level, streak, gold accuracy, answers, rank and badges.

    Args:
        session: the session.
        volunteer_id: whose profile.
        today: the current UTC day; when given, a streak whose last counting day is before
            yesterday shows as 0 (it is broken, though not yet reset in the table).

    Raises:
        VolunteerNotFound: no volunteer with that id.
    """
    volunteer = await session.get(Volunteer, volunteer_id)
    if volunteer is None:
        raise VolunteerNotFound(f"no volunteer {volunteer_id}")
    stats = (await volunteer_stats(session, volunteer_ids=[volunteer_id]))[volunteer_id]
    gold = await session.exec(
        select(func.avg(GoldScore.dice)).where(GoldScore.volunteer_id == volunteer_id)
    )
    accuracy = gold.one()
    ranked = _ranked(since=None)
    rank = (
        await session.exec(select(ranked.c.rank).where(ranked.c.volunteer_id == volunteer_id))
    ).first()
    return Profile(
        volunteer_id=volunteer_id,
        name=display_name(volunteer_id=volunteer_id, nickname=volunteer.nickname),
        nickname=volunteer.nickname,
        points=volunteer.points,
        level=level_for(volunteer.points),
        next_level_at=next_level_at(volunteer.points),
        streak_days=(
            volunteer.streak_days if today is None else current_streak(volunteer, today=today)
        ),
        gold_accuracy=None if accuracy is None else float(accuracy),
        gold_answers=stats.gold_answers,
        answers=stats.answers,
        credited_answers=stats.credited,
        rank=None if rank is None else int(rank),
        badges=list(volunteer.badges),
    )
