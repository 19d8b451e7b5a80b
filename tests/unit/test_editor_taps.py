"""How the editor's taps move a box-only model's prompt box, and how taps are validated."""

from __future__ import annotations

import pytest

from bot.campaign.editor import MAX_POINTS, TAP_PAD, box_for_taps, parse_points
from bot.campaign.errors import InvalidInput

BOX = (10.0, 10.0, 30.0, 30.0)
HW = (64, 64)


def test_a_positive_tap_outside_grows_the_box_to_include_it() -> None:
    assert box_for_taps(BOX, [(40.0, 20.0, 1)], HW, shrink=True) == (10.0, 10.0, 40 + TAP_PAD, 30.0)
    assert box_for_taps(BOX, [(20.0, 20.0, 1)], HW, shrink=True) == BOX  # inside: no change
    assert box_for_taps(BOX, [(63.5, 63.5, 1)], HW, shrink=True)[2:] == (64.0, 64.0)  # clipped


def test_a_negative_tap_inside_pulls_the_nearest_edge_in_only_for_box_only_models() -> None:
    assert box_for_taps(BOX, [(12.0, 20.0, 0)], HW, shrink=True) == (13.0, 10.0, 30.0, 30.0)
    assert box_for_taps(BOX, [(20.0, 28.0, 0)], HW, shrink=True) == (10.0, 10.0, 30.0, 27.0)
    assert box_for_taps(BOX, [(12.0, 20.0, 0)], HW, shrink=False) == BOX  # points do that job
    assert box_for_taps(BOX, [(50.0, 50.0, 0)], HW, shrink=True) == BOX  # outside already


def test_parse_points_accepts_taps_in_the_crop_only() -> None:
    assert parse_points([[1, 2.5, 1], [3, 4, 0]], HW) == [(1.0, 2.5, 1), (3.0, 4.0, 0)]
    for bad in (
        [],
        "1,2,1",
        [[1, 2]],
        [[1, 2, 2]],
        [[1, 2, True]],
        [[-1, 2, 1]],
        [[1, 65, 1]],
        [["1", 2, 1]],
        [[float("nan"), 2, 1]],
        [[1, 1, 1]] * (MAX_POINTS + 1),
    ):
        with pytest.raises(InvalidInput):
            parse_points(bad, HW)
