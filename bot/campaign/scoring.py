"""Points, levels, quality-gated streaks, badges, delayed credit and digests.

Status rewards quality, not volume (Zooniverse staff warn that count-based status "can encourage
quick and sloppy classification"): points are paid only when a crop's consensus (or its gold) is
known, in proportion to how much the answer told us and how well it agreed; a day counts toward a
streak only if the volunteer's gold answers that day were as good as their own past work.
The pure rules come first; the database steps below them only gather numbers and apply the rules.
Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.db.models import Answer, GoldScore, Verdict, Volunteer, VolunteerDay

logger = logging.getLogger(__name__)

# How much one answer tells the crowd: a drawn mask carries pixels, a verdict one bit.
INFO_VALUE: dict[Verdict, int] = {
    Verdict.ADJUST: 3,
    Verdict.ACCEPT: 1,
    Verdict.REJECT: 1,
    Verdict.UNSURE: 0,
    Verdict.SKIP: 0,
}
POINTS_SCALE = 10
# Points needed for levels 1, 2, 3, ...: 100 * (2**(level - 1) - 1), so each step doubles.
LEVEL_THRESHOLDS: tuple[int, ...] = tuple(100 * (2**k - 1) for k in range(12))
GOLD_TOLERANCE = 0.05  # a day's gold Dice may fall this far below the volunteer's own mean
MATCH_AGREEMENT = 0.8  # an answer "matched" the consensus at or above this agreement
GOOD_DICE = 0.9  # a gold or adjust this close to the truth is "sharp"

BADGES: dict[str, str] = {
    "first-answer": "Gave a first answer.",
    "first-gold": f"Matched an expert's mask with Dice of at least {GOOD_DICE}.",
    "sharp-eye": f"10 gold answers with a mean Dice of at least {GOOD_DICE}.",
    "streak-3": "Met the daily goal, with care, 3 days in a row.",
    "streak-7": "Met the daily goal, with care, 7 days in a row.",
    "streak-30": "Met the daily goal, with care, 30 days in a row.",
    "helper-100": "100 answers credited against the crowd's consensus.",
    "fixer": f"10 adjusted masks that agreed at least {GOOD_DICE} with the consensus.",
}


def points_for(
    *,
    verdict: Verdict,
    agreement: float,
    difficulty: float,
    seconds_taken: float | None,
    floor_seconds: float,
) -> int:
    """Points one answer earns once its crop's consensus (or gold) is known.

    ``round(info_value * (1 + difficulty) * agreement * 10)``, rounding halves up, where the
    information value is 3 for an adjust (a drawn mask), 1 for accept or reject and 0 for unsure
    or skip. An answer given faster than ``floor_seconds`` earns 0: too fast to have looked (the
    Toloka "fast responses" rule, without a ban). An unknown ``seconds_taken`` is not penalised.
    So an adjust that fully agrees on the hardest crop earns 60, an agreeing accept on an easy
    crop 10.

    Args:
        verdict: the answer's verdict.
        agreement: agreement with the consensus or gold in [0, 1] (e.g. Dice).
        difficulty: how hard the crop was, in [0, 1].
        seconds_taken: time from showing the crop to the answer; None when unknown.
        floor_seconds: the campaign's ``answer_floor_seconds``.

    Returns:
        Non-negative points.

    Raises:
        ValueError: ``agreement`` or ``difficulty`` outside [0, 1], or a negative floor.
    """
    if not 0.0 <= agreement <= 1.0:  # also rejects NaN
        raise ValueError(f"agreement must be in [0, 1], got {agreement}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    if not floor_seconds >= 0.0:
        raise ValueError(f"floor_seconds must be >= 0, got {floor_seconds}")
    if seconds_taken is not None and seconds_taken < floor_seconds:
        return 0
    raw = INFO_VALUE[verdict] * (1.0 + difficulty) * agreement * POINTS_SCALE
    return math.floor(raw + 0.5 + 1e-9)  # half up, so 3 * 0.95 * 10 = 28.4999... pays 29


def level_for(points: int) -> int:
    """The level ``points`` reach: 1 from 0, 2 from 100, then 300, 700, 1500, 3100, ..."""
    if points < 0:
        raise ValueError(f"points must be >= 0, got {points}")
    return sum(1 for threshold in LEVEL_THRESHOLDS if points >= threshold)


def next_level_at(points: int) -> int | None:
    """Points at which the next level starts; None at the top level."""
    level = level_for(points)
    return LEVEL_THRESHOLDS[level] if level < len(LEVEL_THRESHOLDS) else None


def day_counts(
    *,
    answers: int,
    gold_answers: int,
    gold_dice_sum: float,
    daily_goal: int,
    baseline_dice: float | None,
) -> bool:
    """Whether one UTC day counts toward a streak.

    It counts when the volunteer gave at least ``daily_goal`` answers and, if some were gold,
    their mean gold Dice that day is at least ``baseline_dice - 0.05``, their own level. A
    newcomer without gold history (``baseline_dice`` None) passes.

    Args:
        answers: answers given that day.
        gold_answers: how many of them were on gold crops.
        gold_dice_sum: the sum of those gold answers' Dice.
        daily_goal: the campaign's ``daily_goal``.
        baseline_dice: the volunteer's mean gold Dice before that day; None without history.
    """
    if answers < daily_goal:
        return False
    if gold_answers == 0 or baseline_dice is None:
        return True
    return gold_dice_sum / gold_answers >= baseline_dice - GOLD_TOLERANCE


def current_streak(volunteer: Volunteer, *, today: dt.date) -> int:
    """The streak as it stands ``today``: 0 once a whole day has passed without counting."""
    last = volunteer.last_active_on
    if last is None or (today - last).days > 1:
        return 0
    return volunteer.streak_days


@dataclass(frozen=True)
class VolunteerStats:
    """What a volunteer has done, as the badge rules see it."""

    answers: int = 0
    credited: int = 0
    good_adjusts: int = 0  # credited adjusts with agreement >= GOOD_DICE
    gold_answers: int = 0
    gold_mean: float | None = None
    gold_best: float | None = None
    streak_days: int = 0


def earned_badges(stats: VolunteerStats) -> set[str]:
    """Every badge whose rule ``stats`` meet, earned before or not."""
    rules = {
        "first-answer": stats.answers >= 1,
        "first-gold": stats.gold_best is not None and stats.gold_best >= GOOD_DICE,
        "sharp-eye": stats.gold_answers >= 10
        and stats.gold_mean is not None
        and stats.gold_mean >= GOOD_DICE,
        "streak-3": stats.streak_days >= 3,
        "streak-7": stats.streak_days >= 7,
        "streak-30": stats.streak_days >= 30,
        "helper-100": stats.credited >= 100,
        "fixer": stats.good_adjusts >= 10,
    }
    return {name for name, met in rules.items() if met}


def award_badges(volunteer: Volunteer, stats: VolunteerStats) -> list[str]:
    """Badges newly earned: met by ``stats`` and not yet held, in ``BADGES`` order.

    Pure: the caller appends them to ``volunteer.badges``, so none is ever given twice.
    """
    earned = earned_badges(stats)
    return [name for name in BADGES if name in earned and name not in volunteer.badges]


async def record_answer(
    session: AsyncSession,
    *,
    volunteer: Volunteer,
    day: dt.date,
    daily_goal: int,
    gold_dice: float | None,
) -> bool:
    """Count one answer in the volunteer's day and advance the streak when the day starts counting.

    The day row is upserted atomically (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``), so
    concurrent answers never break the unique (volunteer, day) constraint and exactly one of them
    sees the day cross into counting. The streak then grows by one if the previous counting day was
    yesterday and restarts at 1 otherwise. A day never counts twice: a day on or before
    ``volunteer.last_active_on`` leaves the streak alone, and a counted day is not taken back.

    Args:
        session: the caller's session (not committed here).
        volunteer: the volunteer who answered, attached to ``session``.
        day: the UTC day of the answer.
        daily_goal: the campaign's ``daily_goal``.
        gold_dice: the answer's Dice against the gold mask; None for a non-gold crop.

    Returns:
        Whether the day just started counting toward the streak.
    """
    assert volunteer.id is not None, "volunteer must be flushed"
    baseline = await _gold_baseline(session, volunteer_id=volunteer.id, before=day)
    gold = 0 if gold_dice is None else 1
    dice = 0.0 if gold_dice is None else gold_dice
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = insert(VolunteerDay).values(
        volunteer_id=volunteer.id, day=day, answers=1, gold_answers=gold, gold_dice_sum=dice
    )
    statement = values.on_conflict_do_update(
        index_elements=["volunteer_id", "day"],
        set_={
            "answers": col(VolunteerDay.answers) + values.excluded.answers,
            "gold_answers": col(VolunteerDay.gold_answers) + values.excluded.gold_answers,
            "gold_dice_sum": col(VolunteerDay.gold_dice_sum) + values.excluded.gold_dice_sum,
        },
    ).returning(
        col(VolunteerDay.answers), col(VolunteerDay.gold_answers), col(VolunteerDay.gold_dice_sum)
    )
    answers, gold_answers, gold_dice_sum = (await session.exec(statement)).one()
    counts_now = day_counts(
        answers=answers,
        gold_answers=gold_answers,
        gold_dice_sum=gold_dice_sum,
        daily_goal=daily_goal,
        baseline_dice=baseline,
    )
    counted_before = day_counts(
        answers=answers - 1,
        gold_answers=gold_answers - gold,
        gold_dice_sum=gold_dice_sum - dice,
        daily_goal=daily_goal,
        baseline_dice=baseline,
    )
    last = volunteer.last_active_on
    if not counts_now or counted_before or (last is not None and last >= day):
        return False
    yesterday = day - dt.timedelta(days=1)
    volunteer.streak_days = volunteer.streak_days + 1 if last == yesterday else 1
    volunteer.last_active_on = day
    session.add(volunteer)
    await session.flush()
    logger.info("volunteer %s: day %s counts, streak %d", volunteer.id, day, volunteer.streak_days)
    return True


async def _gold_baseline(
    session: AsyncSession, *, volunteer_id: int, before: dt.date
) -> float | None:
    """The volunteer's mean gold Dice over the days before ``before``; None without gold."""
    result = await session.exec(
        select(func.sum(VolunteerDay.gold_answers), func.sum(VolunteerDay.gold_dice_sum)).where(
            VolunteerDay.volunteer_id == volunteer_id, col(VolunteerDay.day) < before
        )
    )
    n, total = result.one()
    return None if not n else float(total) / int(n)


async def volunteer_stats(
    session: AsyncSession, *, volunteer_ids: Iterable[int], notified_only: bool = False
) -> dict[int, VolunteerStats]:
    """Badge statistics for several volunteers in two grouped queries.

    Args:
        session: the session.
        volunteer_ids: whose statistics to gather; unknown ids are left out.
        notified_only: count only answers a digest has already announced (what the volunteer
            knew at the last digest); the streak is always the current one.
    """
    ids = sorted(set(volunteer_ids))
    if not ids:
        return {}
    good_adjust = sa.case(
        (
            sa.and_(
                col(Answer.verdict).in_([Verdict.ADJUST]),
                col(Answer.credited_at).is_not(None),
                col(Answer.agreement) >= GOOD_DICE,
            ),
            1,
        ),
        else_=0,
    )
    answered = (
        select(
            Answer.volunteer_id,
            func.count(col(Answer.id)),
            func.count(col(Answer.credited_at)),
            func.sum(good_adjust),
        )
        .where(col(Answer.volunteer_id).in_(ids), _notified(notified_only))
        .group_by(col(Answer.volunteer_id))
    )
    gold = (
        select(
            GoldScore.volunteer_id,
            func.count(),
            func.avg(GoldScore.dice),
            func.max(GoldScore.dice),
        )
        .join(Answer, col(Answer.id) == GoldScore.answer_id)
        .where(col(GoldScore.volunteer_id).in_(ids), _notified(notified_only))
        .group_by(col(GoldScore.volunteer_id))
    )
    streaks = select(Volunteer.id, Volunteer.streak_days).where(col(Volunteer.id).in_(ids))
    counts = {
        vid: (int(n), int(credited), int(adjusts))
        for vid, n, credited, adjusts in await session.exec(answered)
    }
    golds: dict[int, tuple[int, float | None, float | None]] = {
        vid: (int(n), float(mean), float(best)) for vid, n, mean, best in await session.exec(gold)
    }
    stats: dict[int, VolunteerStats] = {}
    for vid, streak in await session.exec(streaks):
        assert vid is not None
        n, credited, adjusts = counts.get(vid, (0, 0, 0))
        n_gold, mean, best = golds.get(vid, (0, None, None))
        stats[vid] = VolunteerStats(
            answers=n,
            credited=credited,
            good_adjusts=adjusts,
            gold_answers=n_gold,
            gold_mean=mean,
            gold_best=best,
            streak_days=streak,
        )
    return stats


def _notified(only: bool) -> sa.ColumnElement[bool]:
    return col(Answer.notified).is_(True) if only else sa.true()


async def credit_answers(
    session: AsyncSession,
    *,
    agreements: dict[int, float],
    difficulty: float,
    floor_seconds: float,
    now: dt.datetime,
    trust: dict[int, float] | None = None,
) -> list[Answer]:
    """Pay the delayed credit of answers whose crop's consensus (or gold) is now known.

    Sets each answer's ``agreement``, ``points`` (``points_for``) and ``credited_at``, adds the
    points to its volunteer, recomputes the level and awards new badges. Answers already credited
    are skipped, so calling it again (a retried job) changes nothing; rows are locked
    (``FOR UPDATE`` on PostgreSQL) so two concurrent calls cannot both pay.

    Args:
        session: the caller's session (not committed here).
        agreements: answer id -> agreement with the consensus or gold, in [0, 1].
        difficulty: how hard the crop was, in [0, 1].
        floor_seconds: the campaign's ``answer_floor_seconds``.
        now: the credit time, timezone-aware.
        trust: volunteer id -> how far fusion believes their answers depend on the truth, in
            [0, 1] (1 - spammer score); points are scaled by it, so an "always accept" clicker
            who agrees by chance earns little. The stored ``agreement`` stays unscaled.

    Returns:
        The answers credited by this call, by id.

    Raises:
        ValueError: an agreement or ``difficulty`` outside [0, 1]; nothing is changed then.
    """
    if not agreements:
        return []
    result = await session.exec(
        select(Answer)
        .where(col(Answer.id).in_(sorted(agreements)), col(Answer.credited_at).is_(None))
        .order_by(col(Answer.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    answers = list(result.all())
    if not answers:
        return []
    trust = trust or {}
    points = [
        points_for(
            verdict=answer.verdict,
            agreement=agreements[answer.id or 0]
            * min(max(trust.get(answer.volunteer_id, 1.0), 0.0), 1.0),
            difficulty=difficulty,
            seconds_taken=answer.seconds_taken,
            floor_seconds=floor_seconds,
        )
        for answer in answers
    ]
    gained: dict[int, int] = {}
    for answer, earned in zip(answers, points, strict=True):
        answer.agreement = agreements[answer.id or 0]
        answer.points = earned
        answer.credited_at = now
        gained[answer.volunteer_id] = gained.get(answer.volunteer_id, 0) + earned
        session.add(answer)
    volunteers = await session.exec(
        select(Volunteer)
        .where(col(Volunteer.id).in_(sorted(gained)))
        .order_by(col(Volunteer.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    volunteers_by_id = {v.id: v for v in volunteers.all()}
    for vid, extra in gained.items():
        volunteer = volunteers_by_id[vid]
        volunteer.points += extra
        volunteer.level = level_for(volunteer.points)
    await session.flush()
    stats = await volunteer_stats(session, volunteer_ids=gained)
    for vid in gained:
        volunteer = volunteers_by_id[vid]
        new = award_badges(volunteer, stats[vid])
        if new:
            volunteer.badges = [*volunteer.badges, *new]  # a new list, so the JSON column saves
            logger.info("volunteer %s earned %s", vid, ", ".join(new))
        session.add(volunteer)
    await session.flush()
    logger.info("credited %d answers of %d volunteers", len(answers), len(gained))
    return answers
