from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.leaderboard import (
    VolunteerNotFound,
    display_name,
    leaderboard,
    mark_notified,
    pending_digests,
    profile,
)
from bot.campaign.scoring import credit_answers, record_answer
from bot.db.models import (
    Answer,
    Campaign,
    GoldScore,
    Image,
    Task,
    TaskKind,
    Verdict,
    Volunteer,
    VolunteerDay,
)

DAY = dt.date(2026, 3, 10)  # a Tuesday
NOW = dt.datetime(2026, 3, 12, 12, 0, tzinfo=dt.UTC)  # Thursday of the week from 2026-03-09


async def _tasks(session: AsyncSession, n: int, *, kind: TaskKind = TaskKind.REAL) -> list[Task]:
    campaign = Campaign(name=f"c-{kind}-{n}")
    session.add(campaign)
    await session.flush()
    assert campaign.id is not None
    image = Image(
        campaign_id=campaign.id,
        content_hash=f"{kind}{n}".ljust(64, "a"),
        file_key="images/x.png",
        source_name="x.png",
        width=10,
        height=10,
    )
    session.add(image)
    await session.flush()
    assert image.id is not None
    tasks = [
        Task(
            campaign_id=campaign.id,
            image_id=image.id,
            kind=kind,
            crop_x0=0,
            crop_y0=0,
            crop_side=10,
            crop_out=10,
            crop_key=f"crops/{i}.png",
            crop_hash=f"{i}".ljust(64, "b"),
            box_x0=1,
            box_y0=1,
            box_x1=5,
            box_y1=5,
        )
        for i in range(n)
    ]
    session.add_all(tasks)
    await session.flush()
    return tasks


async def _volunteer(session: AsyncSession, tg: int, **fields: Any) -> Volunteer:
    volunteer = Volunteer(telegram_user_id=tg, **fields)
    session.add(volunteer)
    await session.flush()
    return volunteer


def _id(row: Volunteer | Task | Answer) -> int:
    assert row.id is not None
    return row.id


async def _answers(
    session: AsyncSession,
    volunteer: Volunteer,
    tasks: list[Task],
    verdict: Verdict = Verdict.ACCEPT,
    seconds_taken: float | None = 5.0,
) -> list[Answer]:
    answers = [
        Answer(
            task_id=_id(task),
            volunteer_id=_id(volunteer),
            verdict=verdict,
            seconds_taken=seconds_taken,
        )
        for task in tasks
    ]
    session.add_all(answers)
    await session.flush()
    return answers


async def _record(
    session: AsyncSession, volunteer: Volunteer, day: dt.date, n: int, gold: float | None = None
) -> list[bool]:
    return [
        await record_answer(session, volunteer=volunteer, day=day, daily_goal=3, gold_dice=gold)
        for _ in range(n)
    ]


# record_answer: quality-gated streaks


async def test_record_answer_streak_grows_on_consecutive_days(session: AsyncSession) -> None:
    volunteer = await _volunteer(session, 1)
    assert await _record(session, volunteer, DAY, 4) == [False, False, True, False]
    assert (volunteer.streak_days, volunteer.last_active_on) == (1, DAY)
    assert await _record(session, volunteer, DAY + dt.timedelta(days=1), 3) == [False, False, True]
    assert await _record(session, volunteer, DAY + dt.timedelta(days=2), 3) == [False, False, True]
    assert volunteer.streak_days == 3
    assert volunteer.last_active_on == DAY + dt.timedelta(days=2)
    days = (await session.exec(select(VolunteerDay).order_by(col(VolunteerDay.day)))).all()
    assert [(d.day, d.answers) for d in days] == [
        (DAY, 4),
        (DAY + dt.timedelta(days=1), 3),
        (DAY + dt.timedelta(days=2), 3),
    ]


async def test_record_answer_gap_resets_streak(session: AsyncSession) -> None:
    volunteer = await _volunteer(session, 1)
    await _record(session, volunteer, DAY, 3)
    await _record(session, volunteer, DAY + dt.timedelta(days=1), 3)
    assert volunteer.streak_days == 2
    await _record(session, volunteer, DAY + dt.timedelta(days=2), 2)  # below the goal
    assert volunteer.streak_days == 2
    assert await _record(session, volunteer, DAY + dt.timedelta(days=3), 3) == [False, False, True]
    assert volunteer.streak_days == 1
    assert volunteer.last_active_on == DAY + dt.timedelta(days=3)


async def test_record_answer_day_below_own_gold_level_does_not_count(
    session: AsyncSession,
) -> None:
    volunteer = await _volunteer(session, 1)
    await _record(session, volunteer, DAY, 3, gold=0.9)  # history: mean 0.9
    assert volunteer.streak_days == 1
    next_day = DAY + dt.timedelta(days=1)
    assert await _record(session, volunteer, next_day, 4, gold=0.7) == [False] * 4
    assert volunteer.streak_days == 1
    assert volunteer.last_active_on == DAY
    row = (await session.exec(select(VolunteerDay).where(VolunteerDay.day == next_day))).one()
    assert (row.answers, row.gold_answers) == (4, 4)
    assert row.gold_dice_sum == pytest.approx(2.8)


async def test_record_answer_gold_at_own_level_counts(session: AsyncSession) -> None:
    volunteer = await _volunteer(session, 1)
    await _record(session, volunteer, DAY, 3, gold=0.7)  # newcomer: passes, history 0.7
    assert volunteer.streak_days == 1
    next_day = DAY + dt.timedelta(days=1)
    assert await _record(session, volunteer, next_day, 3, gold=0.66) == [False, False, True]
    assert volunteer.streak_days == 2


# credit_answers: delayed credit


async def test_credit_answers_pays_once_and_updates_volunteer(session: AsyncSession) -> None:
    volunteer = await _volunteer(session, 1)
    tasks = await _tasks(session, 4)
    adjusts = await _answers(session, volunteer, tasks[:3], Verdict.ADJUST)
    fast = await _answers(session, volunteer, tasks[3:], Verdict.ACCEPT, seconds_taken=0.5)
    agreements = {_id(a): 1.0 for a in [*adjusts, *fast]}
    credited = await credit_answers(
        session, agreements=agreements, difficulty=0.5, floor_seconds=1.5, now=NOW
    )
    assert [a.points for a in credited] == [45, 45, 45, 0]
    assert all(a.credited_at == NOW and a.agreement == 1.0 for a in credited)
    assert volunteer.points == 135
    assert volunteer.level == 2
    assert volunteer.badges == ["first-answer"]
    again = await credit_answers(
        session, agreements=agreements, difficulty=1.0, floor_seconds=0.0, now=NOW
    )
    assert again == []
    await session.refresh(volunteer)
    assert volunteer.points == 135
    assert volunteer.badges == ["first-answer"]


async def test_credit_answers_scales_points_by_trust(session: AsyncSession) -> None:
    honest = await _volunteer(session, 11)
    clicker = await _volunteer(session, 12)  # fusion found their accepts independent of truth
    tasks = await _tasks(session, 2)
    mine = await _answers(session, honest, tasks[:1])
    theirs = await _answers(session, clicker, tasks[1:])
    agreements = {_id(mine[0]): 1.0, _id(theirs[0]): 1.0}
    credited = await credit_answers(
        session,
        agreements=agreements,
        difficulty=0.0,
        floor_seconds=0.0,
        now=NOW,
        trust={_id(honest): 1.0, _id(clicker): 0.1},
    )
    assert [a.points for a in credited] == [10, 1]
    assert [a.agreement for a in credited] == [1.0, 1.0]  # agreement itself stays unscaled


async def test_credit_answers_awards_gold_and_fixer_badges(session: AsyncSession) -> None:
    volunteer = await _volunteer(session, 1)
    tasks = await _tasks(session, 10)
    answers = await _answers(session, volunteer, tasks, Verdict.ADJUST)
    session.add(
        GoldScore(
            answer_id=_id(answers[0]),
            task_id=_id(tasks[0]),
            volunteer_id=_id(volunteer),
            dice=0.93,
            iou=0.87,
        )
    )
    await session.flush()
    await credit_answers(
        session,
        agreements={_id(a): 0.95 for a in answers[:9]},
        difficulty=0.0,
        floor_seconds=1.5,
        now=NOW,
    )
    assert volunteer.badges == ["first-answer", "first-gold"]
    await credit_answers(
        session, agreements={_id(answers[9]): 0.9}, difficulty=0.0, floor_seconds=1.5, now=NOW
    )
    assert volunteer.badges == ["first-answer", "first-gold", "fixer"]
    assert volunteer.points == 9 * 29 + 27  # 3 * 0.95 * 10 = 28.5 -> 29; 3 * 0.9 * 10 = 27


async def test_credit_answers_rejects_bad_agreement_without_changes(
    session: AsyncSession,
) -> None:
    volunteer = await _volunteer(session, 1)
    answers = await _answers(session, volunteer, await _tasks(session, 1))
    with pytest.raises(ValueError, match="agreement"):
        await credit_answers(
            session, agreements={_id(answers[0]): 1.5}, difficulty=0, floor_seconds=0, now=NOW
        )
    assert answers[0].credited_at is None
    assert volunteer.points == 0


# digests


async def test_pending_digests_groups_per_volunteer_and_mark_notified(
    session: AsyncSession,
) -> None:
    ada = await _volunteer(session, 101)
    bob = await _volunteer(session, 102)
    paused = await _volunteer(session, 103, paused=True)
    gone = await _volunteer(session, 104, forgotten=True)
    tasks = await _tasks(session, 3)
    ada_answers = await _answers(session, ada, tasks)
    bob_answers = await _answers(session, bob, tasks[:1], Verdict.ADJUST)
    quiet = [*await _answers(session, paused, tasks[:1]), *await _answers(session, gone, tasks[:1])]
    agreements = {
        _id(ada_answers[0]): 0.95,
        _id(ada_answers[1]): 0.5,
        _id(bob_answers[0]): 0.8,
        **{_id(a): 1.0 for a in quiet},
    }
    await credit_answers(session, agreements=agreements, difficulty=0, floor_seconds=0, now=NOW)

    digests = await pending_digests(session)
    assert [(d.telegram_user_id, d.answers, d.matched, d.points) for d in digests] == [
        (101, 2, 1, 15),  # 10 * 0.95 -> 10 (9.5 rounds up), 10 * 0.5 = 5; the third is uncredited
        (102, 1, 1, 24),
    ]
    assert [d.new_badges for d in digests] == [["first-answer"], ["first-answer"]]
    assert digests[0].answer_ids == (_id(ada_answers[0]), _id(ada_answers[1]))

    # credited after the digest was built: waits for the next one
    await credit_answers(
        session, agreements={_id(ada_answers[2]): 1.0}, difficulty=0, floor_seconds=0, now=NOW
    )
    assert (
        await mark_notified(
            session, volunteer_id=digests[0].volunteer_id, answer_ids=digests[0].answer_ids
        )
        == 2
    )
    assert await mark_notified(session, volunteer_id=digests[1].volunteer_id) == 1
    digests = await pending_digests(session)
    assert [(d.telegram_user_id, d.answers, d.points, d.new_badges) for d in digests] == [
        (101, 1, 10, [])
    ]
    assert await mark_notified(session, volunteer_id=_id(ada)) == 1
    assert await pending_digests(session) == []


# leaderboard and profile


async def _scored(
    session: AsyncSession, tasks: list[Task], points: dict[int, tuple[int, dt.datetime]]
) -> dict[int, Volunteer]:
    """Volunteers (by telegram id) with one credited answer each worth ``points`` at a time."""
    volunteers = {}
    for i, (tg, (earned, when)) in enumerate(points.items()):
        volunteer = await _volunteer(session, tg, points=earned)
        session.add(
            Answer(
                task_id=_id(tasks[i]),
                volunteer_id=_id(volunteer),
                verdict=Verdict.ACCEPT,
                points=earned,
                agreement=1.0,
                credited_at=when,
            )
        )
        volunteers[tg] = volunteer
    await session.flush()
    return volunteers


async def test_leaderboard_all_time_ties_names_and_own_rank(session: AsyncSession) -> None:
    tasks = await _tasks(session, 6)
    volunteers = await _scored(
        session,
        tasks,
        {1: (50, NOW), 2: (30, NOW), 3: (30, NOW), 4: (20, NOW), 5: (10, NOW), 6: (0, NOW)},
    )
    volunteers[1].nickname = "Ada"
    forgotten = await _volunteer(session, 7, points=999, forgotten=True)
    session.add_all([volunteers[1], forgotten])
    await session.flush()

    board = await leaderboard(
        session, period="all", volunteer_id=_id(volunteers[5]), limit=3, now=NOW
    )
    assert [(r.rank, r.points) for r in board.rows] == [(1, 50), (2, 30), (2, 30)]
    assert board.rows[0].name == "Ada"
    assert board.rows[1].name == display_name(volunteer_id=_id(volunteers[2]), nickname=None)
    assert board.rows[1].name.startswith("anonymous #")
    assert board.you is not None
    assert (board.you.rank, board.you.points, board.you.is_you) == (5, 10, True)

    full = await leaderboard(session, period="all", volunteer_id=_id(volunteers[2]), now=NOW)
    assert [(r.rank, r.points) for r in full.rows] == [(1, 50), (2, 30), (2, 30), (4, 20), (5, 10)]
    assert [r.is_you for r in full.rows] == [False, True, False, False, False]
    assert full.you == full.rows[1]

    zero = await leaderboard(session, period="all", volunteer_id=_id(volunteers[6]), now=NOW)
    assert zero.you is None


async def test_leaderboard_week_counts_from_monday_utc(session: AsyncSession) -> None:
    tasks = await _tasks(session, 8)
    monday = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
    volunteers = await _scored(
        session,
        tasks,
        {
            1: (40, monday - dt.timedelta(seconds=1)),  # last week
            2: (30, monday),
            3: (20, NOW),
            4: (25, monday + dt.timedelta(days=7)),  # next week
        },
    )
    session.add(
        Answer(
            task_id=_id(tasks[7]),
            volunteer_id=_id(volunteers[3]),
            verdict=Verdict.ADJUST,
            points=15,
            agreement=1.0,
            credited_at=monday + dt.timedelta(hours=1),
        )
    )
    await session.flush()
    board = await leaderboard(
        session, period="week", volunteer_id=_id(volunteers[1]), limit=10, now=NOW
    )
    assert board.since == monday
    assert [(r.rank, r.points) for r in board.rows] == [(1, 35), (2, 30)]
    assert board.you is None
    sunday = await leaderboard(
        session, period="week", volunteer_id=None, now=monday - dt.timedelta(minutes=1)
    )
    assert [r.points for r in sunday.rows] == [40]


async def test_profile_numbers(session: AsyncSession) -> None:
    tasks = await _tasks(session, 4)
    gold = await _tasks(session, 2, kind=TaskKind.GOLD)
    leader = await _volunteer(session, 1, points=500)
    volunteer = await _volunteer(
        session, 2, nickname="Bea", streak_days=4, last_active_on=DAY, badges=["first-answer"]
    )
    answers = await _answers(session, volunteer, [*tasks, *gold], Verdict.ADJUST)
    await credit_answers(
        session,
        agreements={_id(a): 1.0 for a in answers[:3]},
        difficulty=0.0,
        floor_seconds=0.0,
        now=NOW,
    )
    session.add_all(
        GoldScore(
            answer_id=_id(a), task_id=a.task_id, volunteer_id=_id(volunteer), dice=dice, iou=dice
        )
        for a, dice in zip(answers[4:], (0.8, 0.9), strict=True)
    )
    await session.flush()

    me = await profile(session, volunteer_id=_id(volunteer))
    assert (me.nickname, me.name, me.points, me.level, me.next_level_at) == (
        "Bea",
        "Bea",
        90,
        1,
        100,
    )
    assert me.streak_days == 4
    assert me.gold_accuracy == pytest.approx(0.85)
    assert (me.gold_answers, me.answers, me.credited_answers) == (2, 6, 3)
    assert me.rank == 2
    assert me.badges == ["first-answer", "streak-3"]  # credit found the streak of 4
    later = await profile(session, volunteer_id=_id(volunteer), today=DAY + dt.timedelta(days=2))
    assert later.streak_days == 0

    newcomer = await profile(session, volunteer_id=_id(await _volunteer(session, 3)))
    assert (newcomer.rank, newcomer.gold_accuracy, newcomer.answers) == (None, None, 0)
    assert newcomer.name.startswith("anonymous #")
    assert _id(leader) != _id(volunteer)
    with pytest.raises(VolunteerNotFound):
        await profile(session, volunteer_id=10**6)
