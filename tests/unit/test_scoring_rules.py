from __future__ import annotations

import datetime as dt

import pytest

from bot.campaign.leaderboard import display_name, week_start
from bot.campaign.scoring import (
    BADGES,
    LEVEL_THRESHOLDS,
    VolunteerStats,
    award_badges,
    current_streak,
    day_counts,
    level_for,
    next_level_at,
    points_for,
)
from bot.db.models import Verdict, Volunteer


def _points(
    verdict: Verdict = Verdict.ACCEPT,
    agreement: float = 1.0,
    difficulty: float = 0.0,
    seconds_taken: float | None = 5.0,
    floor_seconds: float = 1.5,
) -> int:
    return points_for(
        verdict=verdict,
        agreement=agreement,
        difficulty=difficulty,
        seconds_taken=seconds_taken,
        floor_seconds=floor_seconds,
    )


def test_points_for_literal_values() -> None:
    assert _points(Verdict.ACCEPT) == 10
    assert _points(Verdict.REJECT) == 10
    assert _points(Verdict.ADJUST) == 30
    assert _points(Verdict.ADJUST, difficulty=1.0) == 60
    assert _points(Verdict.ADJUST, agreement=0.9, difficulty=0.5) == 41  # 3 * 1.5 * 0.9 * 10 = 40.5
    assert _points(Verdict.ACCEPT, agreement=0.25) == 3  # 2.5 rounds half up
    assert _points(Verdict.ACCEPT, agreement=0.0) == 0


def test_points_for_adjust_worth_more_than_accept() -> None:
    assert _points(Verdict.ADJUST, agreement=0.8) > _points(Verdict.ACCEPT, agreement=0.8)


@pytest.mark.parametrize("verdict", [Verdict.UNSURE, Verdict.SKIP])
def test_points_for_unsure_and_skip_score_nothing(verdict: Verdict) -> None:
    assert _points(verdict, difficulty=1.0) == 0


def test_points_for_answer_below_floor_scores_nothing() -> None:
    assert _points(Verdict.ADJUST, seconds_taken=1.4, floor_seconds=1.5) == 0
    assert _points(Verdict.ADJUST, seconds_taken=1.5, floor_seconds=1.5) == 30
    assert _points(Verdict.ADJUST, seconds_taken=None, floor_seconds=1.5) == 30


@pytest.mark.parametrize(
    ("agreement", "difficulty", "name"),
    [(1.1, 0.0, "agreement"), (float("nan"), 0.0, "agreement"), (1.0, -0.1, "difficulty")],
)
def test_points_for_rejects_out_of_range(agreement: float, difficulty: float, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        _points(agreement=agreement, difficulty=difficulty)


def test_level_for_thresholds() -> None:
    assert LEVEL_THRESHOLDS[:6] == (0, 100, 300, 700, 1500, 3100)
    assert [level_for(p) for p in (0, 99, 100, 299, 300, 700, 1499, 1500, 3100)] == [
        1, 1, 2, 2, 3, 4, 4, 5, 6,
    ]  # fmt: skip
    assert next_level_at(0) == 100
    assert next_level_at(100) == 300
    assert next_level_at(1499) == 1500
    assert next_level_at(LEVEL_THRESHOLDS[-1]) is None
    assert level_for(10**9) == len(LEVEL_THRESHOLDS)
    with pytest.raises(ValueError, match="points"):
        level_for(-1)


def _day(
    answers: int = 10,
    gold_answers: int = 0,
    gold_dice_sum: float = 0.0,
    baseline_dice: float | None = None,
) -> bool:
    return day_counts(
        answers=answers,
        gold_answers=gold_answers,
        gold_dice_sum=gold_dice_sum,
        daily_goal=10,
        baseline_dice=baseline_dice,
    )


def test_day_counts_needs_the_daily_goal() -> None:
    assert not _day(answers=9)
    assert _day(answers=10)


def test_day_counts_without_gold_ignores_the_baseline() -> None:
    assert _day(answers=12, baseline_dice=0.95)


def test_day_counts_newcomer_with_gold_passes() -> None:
    assert _day(gold_answers=2, gold_dice_sum=0.4, baseline_dice=None)


def test_day_counts_gold_at_own_level() -> None:
    # baseline 0.85: the day's mean gold Dice must be at least 0.80
    assert _day(gold_answers=2, gold_dice_sum=1.62, baseline_dice=0.85)  # 0.81
    assert not _day(gold_answers=2, gold_dice_sum=1.56, baseline_dice=0.85)  # 0.78
    # a weaker volunteer is held to their own level, not the strong one's
    assert _day(gold_answers=1, gold_dice_sum=0.6, baseline_dice=0.62)
    assert not _day(gold_answers=1, gold_dice_sum=0.6, baseline_dice=0.7)


def test_current_streak_breaks_after_a_missed_day() -> None:
    volunteer = Volunteer(telegram_user_id=1, streak_days=4, last_active_on=dt.date(2026, 3, 10))
    assert current_streak(volunteer, today=dt.date(2026, 3, 10)) == 4
    assert current_streak(volunteer, today=dt.date(2026, 3, 11)) == 4
    assert current_streak(volunteer, today=dt.date(2026, 3, 12)) == 0
    assert current_streak(Volunteer(telegram_user_id=2), today=dt.date(2026, 3, 12)) == 0


def test_award_badges_by_rule() -> None:
    volunteer = Volunteer(telegram_user_id=1)
    assert award_badges(volunteer, VolunteerStats()) == []
    assert award_badges(volunteer, VolunteerStats(answers=1)) == ["first-answer"]
    assert award_badges(
        volunteer, VolunteerStats(answers=1, gold_answers=1, gold_mean=0.91, gold_best=0.91)
    ) == ["first-answer", "first-gold"]
    sharp = VolunteerStats(answers=10, gold_answers=10, gold_mean=0.9, gold_best=0.97)
    assert "sharp-eye" in award_badges(volunteer, sharp)
    dull = VolunteerStats(answers=20, gold_answers=20, gold_mean=0.89, gold_best=0.97)
    assert "sharp-eye" not in award_badges(volunteer, dull)
    assert award_badges(volunteer, VolunteerStats(streak_days=7)) == ["streak-3", "streak-7"]
    assert award_badges(volunteer, VolunteerStats(answers=150, credited=99)) == ["first-answer"]
    assert "helper-100" in award_badges(volunteer, VolunteerStats(answers=150, credited=100))
    assert "fixer" in award_badges(volunteer, VolunteerStats(answers=10, good_adjusts=10))
    assert set(award_badges(volunteer, VolunteerStats(answers=10, good_adjusts=9))) == {
        "first-answer"
    }


def test_award_badges_never_twice() -> None:
    volunteer = Volunteer(telegram_user_id=1, badges=["first-answer", "streak-3"])
    stats = VolunteerStats(answers=5, streak_days=3)
    assert award_badges(volunteer, stats) == []
    stats = VolunteerStats(answers=5, streak_days=7)
    assert award_badges(volunteer, stats) == ["streak-7"]


def test_badges_have_descriptions() -> None:
    assert all(isinstance(text, str) and text.endswith(".") for text in BADGES.values())
    assert {"first-answer", "first-gold", "sharp-eye", "streak-3", "streak-7"} <= set(BADGES)
    assert {"helper-100", "fixer"} <= set(BADGES)


def test_display_name_nickname_or_stable_pseudonym() -> None:
    assert display_name(volunteer_id=7, nickname="Ada") == "Ada"
    anonymous = display_name(volunteer_id=7, nickname=None)
    assert anonymous.startswith("anonymous #")
    assert len(anonymous) == len("anonymous #") + 6
    assert anonymous == display_name(volunteer_id=7, nickname="")
    assert anonymous != display_name(volunteer_id=8, nickname=None)


def test_week_start_is_monday_midnight_utc() -> None:
    sunday_late = dt.datetime(2026, 3, 15, 23, 59, tzinfo=dt.UTC)
    assert week_start(sunday_late) == dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
    monday = dt.datetime(2026, 3, 16, 0, 0, tzinfo=dt.UTC)
    assert week_start(monday) == monday
    # Monday 01:00 in UTC+3 is still Sunday in UTC
    plus3 = dt.datetime(2026, 3, 16, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    assert week_start(plus3) == dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="aware"):
        week_start(dt.datetime(2026, 3, 16))  # noqa: DTZ001
