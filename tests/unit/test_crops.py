from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.campaign.crops import (
    CropTransform,
    cut_crop,
    mask_to_crop,
    mask_to_image,
    plan_crop,
    validate_box,
)
from bot.campaign.errors import InvalidBox


def test_plan_crop_centres_box_with_margin_inside_image() -> None:
    t = plan_crop((100, 100, 140, 120), 512, 512, margin=0.25, max_out=512, min_side=32)
    assert t.side == 60  # 40 * 1.5
    assert (t.x0, t.y0) == (90, 80)
    assert t.out == t.side


def test_plan_crop_shifts_region_to_stay_inside_image() -> None:
    t = plan_crop((0, 0, 20, 20), 256, 256, margin=0.5, max_out=512, min_side=64)
    assert (t.x0, t.y0, t.side) == (0, 0, 64)
    t = plan_crop((236, 236, 256, 256), 256, 256, margin=0.5, max_out=512, min_side=64)
    assert (t.x0 + t.side, t.y0 + t.side) == (256, 256)


def test_plan_crop_larger_than_image_is_centred_and_padded() -> None:
    image = np.full((40, 50), 200, dtype=np.uint8)
    t = plan_crop((5, 5, 45, 35), 50, 40, margin=0.3, max_out=512)
    assert t.side > 50
    crop = cut_crop(image, t)
    assert crop.shape == (t.side, t.side)
    assert crop.min() == 0
    assert crop.max() == 200
    back = mask_to_image(mask_to_crop(np.ones((40, 50), bool), t), t, 50, 40)
    assert back.all()


def test_plan_crop_downscales_to_crop_size() -> None:
    t = plan_crop((0, 0, 900, 900), 1000, 1000, margin=0.0, max_out=300)
    assert t.side == 900
    assert t.out == 300
    assert t.scale == 3.0
    crop = cut_crop(np.zeros((1000, 1000), dtype=np.uint8), t)
    assert crop.shape == (300, 300)


@pytest.mark.parametrize(
    "box",
    [(0, 0, 0, 10), (5, 5, 4, 10), (-1, 0, 5, 5), (0, 0, 101, 5), (float("nan"), 0, 5, 5)],
)
def test_validate_box_rejects_bad_boxes(box: tuple[float, float, float, float]) -> None:
    with pytest.raises(InvalidBox):
        validate_box(box, 100, 100)


@settings(max_examples=60, deadline=None)
@given(
    x0=st.integers(0, 150),
    y0=st.integers(0, 150),
    w=st.integers(1, 100),
    h=st.integers(1, 100),
    margin=st.floats(0, 1),
    max_out=st.integers(32, 300),
)
def test_crop_transform_round_trips_boxes_exactly(
    x0: int, y0: int, w: int, h: int, margin: float, max_out: int
) -> None:
    box = (float(x0), float(y0), float(min(x0 + w, 256)), float(min(y0 + h, 256)))
    t = plan_crop(box, 256, 256, margin=margin, max_out=max_out)
    back = t.to_image(t.to_crop(box))
    assert back == pytest.approx(box, abs=1e-9)
    # The box lies inside the crop.
    cx0, cy0, cx1, cy1 = t.to_crop(box)
    assert cx0 >= -1e-9
    assert cy0 >= -1e-9
    assert cx1 <= t.out + 1e-9
    assert cy1 <= t.out + 1e-9


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), x0=st.integers(0, 60), y0=st.integers(0, 60))
def test_mask_round_trip_is_exact_at_native_resolution(seed: int, x0: int, y0: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((128, 128)) > 0.5
    t = CropTransform(x0=x0, y0=y0, side=64, out=64)
    back = mask_to_image(mask_to_crop(mask, t), t, 128, 128)
    region = np.zeros_like(mask)
    region[y0 : y0 + 64, x0 : x0 + 64] = True
    np.testing.assert_array_equal(back, mask & region)


def test_mask_round_trip_after_integer_downscale_keeps_shape() -> None:
    yy, xx = np.mgrid[0:400, 0:400]
    mask = (yy - 200) ** 2 + (xx - 210) ** 2 < 90**2
    t = CropTransform(x0=50, y0=50, side=300, out=100)
    back = mask_to_image(mask_to_crop(mask, t), t, 400, 400)
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou > 0.97


def test_cut_crop_keeps_rgb_channels() -> None:
    image = np.zeros((80, 80, 3), dtype=np.uint8)
    image[..., 1] = 255
    crop = cut_crop(image, CropTransform(10, 10, 40, 20))
    assert crop.shape == (20, 20, 3)
    assert (crop[..., 1] == 255).all()


def test_crop_transform_rejects_upscaling() -> None:
    with pytest.raises(ValueError, match="out <= side"):
        CropTransform(0, 0, 10, 20)
