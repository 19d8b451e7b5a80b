from __future__ import annotations

import io
import itertools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image as PILImage

from bot.campaign.cards import (
    AGREED,
    EXTRA,
    MISSED,
    TRUTH,
    Augment,
    apply_image,
    apply_mask,
    gold_feedback,
    invert_mask,
    profile_card,
    random_augment,
)
from bot.campaign.render import (
    CONTOUR,
    GRID,
    LOOSER_LEVELS,
    SELECTED,
    TIGHTER_LEVELS,
    box_from_cells,
    cell_labels,
    grid_overlay,
    output_hw,
    overlay,
    threshold_mask,
)

Mask = npt.NDArray[np.bool_]


def decode(png: bytes) -> npt.NDArray[np.uint8]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with PILImage.open(io.BytesIO(png)) as image:
        assert image.mode == "RGB"
        return np.asarray(image, dtype=np.uint8)


def is_color(pixels: npt.NDArray[np.uint8], color: tuple[int, int, int]) -> Mask:
    return np.asarray(np.all(pixels == np.asarray(color, dtype=np.uint8), axis=-1), dtype=bool)


def square_crop() -> tuple[npt.NDArray[np.uint8], Mask]:
    """An 8x8 grey ramp with a 4x4 square mask at rows/cols 2..5."""
    crop = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 2 + 40).astype(np.uint8)
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    return crop, mask


# --- overlay -----------------------------------------------------------------------------------


def test_overlay_contour_is_the_square_outline_at_output_scale() -> None:
    crop, mask = square_crop()
    pixels = decode(overlay(crop, mask, scale_to=64))  # 8x upscale
    assert pixels.shape == (64, 64, 3)
    red = is_color(pixels, CONTOUR)
    expected = np.zeros((64, 64), dtype=bool)
    expected[16:48, 16:48] = True
    expected[17:47, 17:47] = False
    np.testing.assert_array_equal(red, expected)
    upscaled = np.kron(crop, np.ones((8, 8), dtype=np.uint8))
    keep = ~expected
    for channel in range(3):  # interior and background keep the crop's grey values
        np.testing.assert_array_equal(pixels[..., channel][keep], upscaled[keep])


def test_overlay_width_two_draws_a_two_pixel_ring() -> None:
    crop, mask = square_crop()
    red = is_color(decode(overlay(crop, mask, width=2, scale_to=64)), CONTOUR)
    expected = np.zeros((64, 64), dtype=bool)
    expected[16:48, 16:48] = True
    expected[18:46, 18:46] = False
    np.testing.assert_array_equal(red, expected)


def test_overlay_empty_mask_has_no_contour() -> None:
    crop, _ = square_crop()
    pixels = decode(overlay(crop, np.zeros((8, 8), dtype=bool)))
    assert pixels.shape == (512, 512, 3)
    assert not is_color(pixels, CONTOUR).any()


def test_overlay_is_deterministic_and_takes_rgb() -> None:
    crop, mask = square_crop()
    assert overlay(crop, mask) == overlay(crop.copy(), mask.copy())
    rgb = np.stack([crop, crop // 2, 255 - crop], axis=-1)
    assert decode(overlay(rgb, mask, scale_to=16)).shape == (16, 16, 3)


@pytest.mark.parametrize(
    ("shape_hw", "scale_to", "expected"),
    [
        ((8, 8), 512, (512, 512)),
        ((30, 60), 512, (256, 512)),
        ((600, 600), 512, (600, 600)),  # never shrinks a larger crop
        ((2000, 1000), 512, (1280, 640)),  # capped
        ((8, 8), 5000, (1280, 1280)),
    ],
)
def test_output_hw_is_phone_sized(
    shape_hw: tuple[int, int], scale_to: int, expected: tuple[int, int]
) -> None:
    assert output_hw(shape_hw, scale_to) == expected


@pytest.mark.parametrize(
    ("crop", "mask", "match"),
    [
        (np.zeros((4, 4), dtype=np.float32), np.zeros((4, 4), dtype=bool), "crop"),
        (np.zeros((4, 4, 4), dtype=np.uint8), np.zeros((4, 4), dtype=bool), "crop"),
        (np.zeros((4, 4), dtype=np.uint8), np.zeros((4, 5), dtype=bool), "mask"),
        (np.zeros((4, 4), dtype=np.uint8), np.zeros((4, 4), dtype=np.float64), "mask"),
    ],
)
def test_overlay_rejects_bad_arrays_naming_them(
    crop: npt.NDArray[np.generic], mask: npt.NDArray[np.generic], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        overlay(crop, mask)  # type: ignore[arg-type]


def test_overlay_rejects_bad_width_and_scale() -> None:
    crop, mask = square_crop()
    with pytest.raises(ValueError, match="width"):
        overlay(crop, mask, width=0)
    with pytest.raises(ValueError, match="scale_to"):
        overlay(crop, mask, scale_to=0)


# --- grid --------------------------------------------------------------------------------------


def test_cell_labels_rows_are_letters_columns_digits() -> None:
    labels = cell_labels()
    assert len(labels) == GRID * GRID == 36
    assert labels[:7] == ["A1", "A2", "A3", "A4", "A5", "A6", "B1"]
    assert labels[-1] == "F6"
    assert cell_labels(2) == ["A1", "A2", "B1", "B2"]


@pytest.mark.parametrize(
    ("selected", "expected"),
    [
        ({"A1"}, (0.0, 0.0, 10.0, 10.0)),
        ({"A1", "B2"}, (0.0, 0.0, 20.0, 20.0)),
        ({"A6"}, (50.0, 0.0, 60.0, 10.0)),  # top-right
        ({"F1"}, (0.0, 50.0, 10.0, 60.0)),  # bottom-left
        ({"B3", "D2"}, (10.0, 10.0, 30.0, 40.0)),
        (["F6", "F6"], (50.0, 50.0, 60.0, 60.0)),
    ],
)
def test_box_from_cells_on_a_60px_crop(
    selected: set[str] | list[str], expected: tuple[float, float, float, float]
) -> None:
    assert box_from_cells(selected, (60, 60)) == expected


def test_box_from_cells_on_a_non_square_crop_uses_fractional_edges() -> None:
    assert box_from_cells({"A1"}, (30, 50), cells=3) == pytest.approx((0.0, 0.0, 50 / 3, 10.0))


@pytest.mark.parametrize("selected", [{"G1"}, {"A7"}, {"a1"}, {"A1", "Z9"}, {""}])
def test_box_from_cells_rejects_unknown_labels(selected: set[str]) -> None:
    with pytest.raises(ValueError, match="selected"):
        box_from_cells(selected, (60, 60))


def test_box_from_cells_rejects_empty_selection() -> None:
    with pytest.raises(ValueError, match="selected"):
        box_from_cells(set(), (60, 60))


def test_grid_overlay_tints_selected_cells_only() -> None:
    crop = np.full((60, 60), 100, dtype=np.uint8)
    mask = np.zeros((60, 60), dtype=bool)
    plain = decode(grid_overlay(crop, mask, scale_to=360))
    tinted = decode(grid_overlay(crop, mask, selected={"F6"}, scale_to=360))
    assert plain.shape == tinted.shape == (360, 360, 3)
    changed = np.any(plain != tinted, axis=-1)
    assert changed[330:360, 301:360].all()  # F6, below its label
    assert not changed[:300, :].any()
    assert not changed[:, :300].any()
    expected = np.rint(100 * 0.65 + np.asarray(SELECTED) * 0.35)
    np.testing.assert_array_equal(tinted[340, 340], expected)


def test_grid_overlay_draws_labels_lines_and_contour() -> None:
    crop = np.full((60, 60), 100, dtype=np.uint8)
    mask = np.zeros((60, 60), dtype=bool)
    mask[20:40, 20:40] = True
    pixels = decode(grid_overlay(crop, mask, scale_to=360))
    assert pixels.shape == (360, 360, 3)
    assert is_color(pixels, CONTOUR).sum() >= 4 * 118  # the square's 120 px outline
    line = np.rint(100 * 0.5 + 255 * 0.5)
    assert (pixels[30, 60] == line).all()  # vertical grid line between columns 1 and 2
    assert (pixels[60, 30] == line).all()
    corner = pixels[:20, :20, 0]  # "A1": light glyphs on a dark backing in the cell's corner
    assert (corner > 200).any()
    assert (corner < 60).any()
    assert grid_overlay(crop, mask) == grid_overlay(crop, mask)


def test_grid_overlay_rejects_unknown_selected_label() -> None:
    with pytest.raises(ValueError, match="selected"):
        grid_overlay(np.zeros((6, 6), np.uint8), np.zeros((6, 6), bool), selected={"Q1"})


# --- tighter / looser --------------------------------------------------------------------------

PROB = np.array(
    [
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
        [0.00, 0.20, 0.40, 0.40, 0.40, 0.20, 0.00, 0.35],
        [0.00, 0.40, 0.60, 0.75, 0.60, 0.40, 0.00, 0.35],
        [0.00, 0.40, 0.75, 0.95, 0.75, 0.40, 0.00, 0.00],
        [0.00, 0.40, 0.60, 0.75, 0.60, 0.40, 0.00, 0.00],
        [0.00, 0.20, 0.40, 0.40, 0.40, 0.20, 0.00, 0.00],
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.80],
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    ]
)
PROB_FRAGMENTED = np.array(
    [
        [0.6, 0.9, 0.6, 0.6, 0.6, 0.75],
        [0.6, 0.6, 0.6, 0.6, 0.6, 0.6],
    ]
)


def test_threshold_mask_levels_nest_tighter_inside_looser() -> None:
    levels = sorted((*TIGHTER_LEVELS, 0.5, *LOOSER_LEVELS), reverse=True)
    masks = [threshold_mask(PROB, level) for level in levels]
    for tighter, looser in itertools.pairwise(masks):
        assert not (tighter & ~looser).any()
    assert [int(m.sum()) for m in masks] == [1, 4 + 1 + 1, 9 + 1, 21 + 1, 25 + 1]


def test_threshold_mask_proposal_level_is_the_proposal() -> None:
    np.testing.assert_array_equal(threshold_mask(PROB, 0.5), PROB >= 0.5)


def test_threshold_mask_looser_drops_islands_that_miss_the_proposal() -> None:
    looser = threshold_mask(PROB, 0.3)
    assert not looser[1:3, 7].any()  # 0.35 island touches no proposal pixel
    assert looser[6, 7]  # a proposal component of its own is kept
    np.testing.assert_array_equal(looser[1:6, 1:6], PROB[1:6, 1:6] >= 0.3)


def test_threshold_mask_tighter_keeps_the_core_not_fragments() -> None:
    tight = threshold_mask(PROB_FRAGMENTED, 0.7)
    expected = np.zeros_like(tight)
    expected[0, 1] = True  # the 0.75 fragment far from the peak is dropped
    np.testing.assert_array_equal(tight, expected)
    assert not threshold_mask(PROB_FRAGMENTED, 0.95).any()


def test_threshold_mask_empty_proposal_gives_empty_mask() -> None:
    assert not threshold_mask(np.full((4, 4), 0.4), 0.3).any()


@pytest.mark.parametrize(
    ("prob", "level", "match"),
    [
        (np.zeros((2, 2), dtype=np.uint8), 0.5, "prob"),
        (np.zeros((2, 2, 2)), 0.5, "prob"),
        (np.full((2, 2), 1.5), 0.5, "prob"),
        (np.full((2, 2), np.nan), 0.5, "prob"),
        (np.zeros((2, 2)), 0.0, "level"),
        (np.zeros((2, 2)), 1.2, "level"),
    ],
)
def test_threshold_mask_rejects_bad_input(
    prob: npt.NDArray[np.floating], level: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        threshold_mask(prob, level)


# --- gold feedback -----------------------------------------------------------------------------


def test_gold_feedback_counts_and_colours() -> None:
    crop = np.full((3, 4), 90, dtype=np.uint8)
    answer = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=bool)
    truth = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    png, verdict = gold_feedback(crop, answer, truth, scale_to=40)
    assert (verdict.agreed, verdict.missed, verdict.extra) == (2, 2, 3)
    assert verdict.dice == pytest.approx(2 * 2 / (5 + 4))
    pixels = decode(png)
    assert pixels.shape == (30, 40, 3)

    def fill(color: tuple[int, int, int]) -> list[int]:
        return [round(90 * 0.55 + c * 0.45) for c in color]

    assert pixels[25, 35].tolist() == fill(EXTRA)  # the lone extra pixel, no truth edge
    assert pixels[5, 5].tolist() == fill(EXTRA)  # answered, not truth
    assert pixels[0, 15].tolist() == list(TRUTH)  # truth's outline over an agreed pixel
    assert pixels[5, 10].tolist() == list(TRUTH)
    assert pixels[15, 15].tolist() == fill(AGREED)  # inside truth's outline
    assert pixels[15, 25].tolist() == fill(MISSED)
    assert pixels[25, 5].tolist() == [90, 90, 90]  # neither


def test_gold_feedback_dice_of_two_empty_masks_is_one() -> None:
    empty = np.zeros((5, 5), dtype=bool)
    png, verdict = gold_feedback(np.zeros((5, 5), np.uint8), empty, empty)
    assert (verdict.dice, verdict.agreed, verdict.missed, verdict.extra) == (1.0, 0, 0, 0)
    assert decode(png).shape == (512, 512, 3)


def test_gold_feedback_names_the_bad_mask() -> None:
    crop = np.zeros((5, 5), np.uint8)
    with pytest.raises(ValueError, match="truth"):
        gold_feedback(crop, np.zeros((5, 5), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="answer_mask"):
        gold_feedback(crop, np.zeros((5, 4), bool), np.zeros((5, 5), bool))


# --- gold augmentation -------------------------------------------------------------------------


def test_apply_image_geometry_and_intensity() -> None:
    crop = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)
    np.testing.assert_array_equal(apply_image(Augment(), crop), crop)
    np.testing.assert_array_equal(apply_image(Augment(flip_h=True), crop), crop[:, ::-1])
    np.testing.assert_array_equal(apply_image(Augment(rot90=1), crop), np.rot90(crop))
    shifted = apply_image(Augment(shift_yx=(0, 1)), crop)  # edge padding on the left
    np.testing.assert_array_equal(shifted, [[10, 10, 20], [40, 40, 50]])
    bright = apply_image(Augment(gain=2.0, bias=100.0), crop)
    np.testing.assert_array_equal(bright, [[120, 140, 160], [180, 200, 220]])
    assert apply_image(Augment(gain=5.0), crop).max() == 255
    assert apply_image(Augment(bias=-50.0), crop).min() == 0


def test_apply_mask_shift_pads_with_false() -> None:
    mask = np.ones((3, 3), dtype=bool)
    moved = apply_mask(Augment(shift_yx=(-1, 0)), mask)
    np.testing.assert_array_equal(moved, [[1, 1, 1], [1, 1, 1], [0, 0, 0]])


def test_augment_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="rot90"):
        Augment(rot90=4)
    with pytest.raises(ValueError, match="gain"):
        Augment(gain=0.0)


def test_random_augment_stays_in_its_ranges() -> None:
    rng = np.random.default_rng(0)
    augments = [random_augment(rng, (100, 100)) for _ in range(200)]
    assert {a.rot90 for a in augments} == {0, 1, 2, 3}
    assert {a.flip_h for a in augments} == {False, True}
    assert all(0.85 <= a.gain <= 1.15 and -15 <= a.bias <= 15 for a in augments)
    assert all(max(abs(a.shift_yx[0]), abs(a.shift_yx[1])) <= 6 for a in augments)
    again = [random_augment(np.random.default_rng(0), (100, 100))]
    assert again[0] == augments[0]


augments = st.builds(
    Augment,
    flip_h=st.booleans(),
    flip_v=st.booleans(),
    rot90=st.integers(0, 3),
    gain=st.floats(0.85, 1.15),
    bias=st.floats(-15, 15),
    shift_yx=st.tuples(st.integers(-3, 3), st.integers(-3, 3)),
)
masks = hnp.arrays(bool, st.tuples(st.integers(1, 9), st.integers(1, 9)))


@settings(max_examples=200, deadline=None)
@given(aug=augments, mask=masks)
def test_invert_mask_undoes_apply_mask_in_frame(aug: Augment, mask: Mask) -> None:
    moved = apply_mask(aug, mask)
    assert moved.shape == (mask.shape if aug.rot90 % 2 == 0 else mask.shape[::-1])
    back = invert_mask(aug, moved)
    assert back.shape == mask.shape
    stayed = invert_mask(aug, apply_mask(aug, np.ones_like(mask)))
    h, w = moved.shape
    dy, dx = aug.shift_yx
    assert int(stayed.sum()) == max(h - abs(dy), 0) * max(w - abs(dx), 0)
    np.testing.assert_array_equal(back, mask & stayed)


@settings(max_examples=200, deadline=None)
@given(aug=augments, shape=st.tuples(st.integers(1, 9), st.integers(1, 9)), data=st.data())
def test_single_pixel_round_trips_or_leaves_the_frame(
    aug: Augment, shape: tuple[int, int], data: st.DataObject
) -> None:
    y = data.draw(st.integers(0, shape[0] - 1))
    x = data.draw(st.integers(0, shape[1] - 1))
    mask = np.zeros(shape, dtype=bool)
    mask[y, x] = True
    moved = apply_mask(aug, mask)
    assert int(moved.sum()) <= 1
    expected = mask if moved.any() else np.zeros_like(mask)
    np.testing.assert_array_equal(invert_mask(aug, moved), expected)


@settings(max_examples=50, deadline=None)
@given(aug=augments)
def test_apply_image_moves_pixels_as_apply_mask_moves_masks(aug: Augment) -> None:
    crop = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    mask = crop > 100
    plain = Augment(aug.flip_h, aug.flip_v, aug.rot90, 1.0, 0.0, aug.shift_yx)
    moved_image = apply_image(plain, crop)
    moved_mask = apply_mask(aug, mask)
    np.testing.assert_array_equal(moved_image[moved_mask] > 100, True)


# --- profile card ------------------------------------------------------------------------------


def card_kwargs(**overrides: object) -> dict[str, object]:
    kwargs: dict[str, object] = {
        "nickname": "lung_scout",
        "points": 12345,
        "level": 4,
        "streak_days": 3,
        "accuracy": 0.913,
        "rank": 7,
        "badges": ["first answer", "gold x10"],
        "answers": 321,
    }
    kwargs.update(overrides)
    return kwargs


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"nickname": None, "accuracy": None, "rank": None, "badges": []},
        {"nickname": "Zoë 🧠 " + "x" * 200, "points": 10**12},
        {"badges": [f"badge number {i}" for i in range(40)]},
        {"badges": ["🏅", "a" * 300]},
    ],
)
def test_profile_card_renders_at_800x420(overrides: dict[str, object]) -> None:
    png = profile_card(**card_kwargs(**overrides))  # type: ignore[arg-type]
    assert decode(png).shape == (420, 800, 3)
    assert png == profile_card(**card_kwargs(**overrides))  # type: ignore[arg-type]


def test_profile_card_anonymous_matches_unprintable_nickname() -> None:
    anonymous = profile_card(**card_kwargs(nickname=None))  # type: ignore[arg-type]
    assert profile_card(**card_kwargs(nickname="🧠🧠")) == anonymous  # type: ignore[arg-type]
    assert profile_card(**card_kwargs()) != anonymous  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"points": -1}, "points"),
        ({"streak_days": -2}, "streak_days"),
        ({"accuracy": 1.5}, "accuracy"),
        ({"rank": 0}, "rank"),
    ],
)
def test_profile_card_rejects_bad_numbers(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        profile_card(**card_kwargs(**overrides))  # type: ignore[arg-type]
