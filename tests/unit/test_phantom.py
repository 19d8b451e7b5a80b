from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from bot.sim.phantom import STYLES, jittered_boxes, make_phantom, write_phantoms


@pytest.mark.parametrize("style", STYLES)
def test_phantom_has_foreground_and_contrast(style: str) -> None:
    for seed in range(3):
        phantom = make_phantom(style, np.random.default_rng(seed), 128)
        assert phantom.image.shape == phantom.mask.shape == (128, 128)
        assert phantom.image.dtype == np.uint8
        assert 16 <= phantom.mask.sum() < phantom.mask.size // 2
        inside = phantom.image[phantom.mask].mean()
        around = ndimage.binary_dilation(phantom.mask, iterations=6) & ~phantom.mask
        ring = phantom.image[around].mean()
        assert abs(inside - ring) > 3, "the structure must be visible against its background"


def test_phantoms_vary_between_seeds_and_repeat_for_a_seed() -> None:
    a = make_phantom("ct", np.random.default_rng(1), 96)
    b = make_phantom("ct", np.random.default_rng(2), 96)
    again = make_phantom("ct", np.random.default_rng(1), 96)
    assert not np.array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.image, again.image)


def test_phantom_rejects_unknown_style_and_small_size() -> None:
    with pytest.raises(ValueError, match="style must be one of"):
        make_phantom("xray", np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least 64"):
        make_phantom("ct", np.random.default_rng(0), 32)


def test_jittered_boxes_contain_their_component() -> None:
    phantom = make_phantom("histology", np.random.default_rng(5), 128)
    boxes = jittered_boxes(np.random.default_rng(0), phantom.mask)
    assert len(boxes) >= 5
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= 128
        assert 0 <= y0 < y1 <= 128


def test_write_phantoms_layout_and_gold_subset(tmp_path: Path) -> None:
    manifest = write_phantoms(tmp_path, n=8, style="mixed", seed=3, size=96, gold_fraction=0.25)
    images = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert len(images) == 8
    assert {n.split("_")[0] for n in images} == set(STYLES)
    assert sorted(p.name for p in (tmp_path / "truth").iterdir()) == images
    assert len(list((tmp_path / "gold").iterdir())) == 2 == manifest["gold"]
    boxes = json.loads((tmp_path / "boxes.json").read_text())
    assert set(boxes) == set(images)
    assert all(boxes[n] for n in images)
    assert json.loads((tmp_path / "manifest.json").read_text())["seed"] == 3
