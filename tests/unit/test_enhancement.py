from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator

import numpy as np
import pytest

from bot.sim.enhancement import EnhancementConfig, PhantomData, phantom_data, run_enhancement
from bot.sim.enhancement_report import MODES
from bot.sim.label_sources import compare_label_sources, simulate_label_sources
from bot.sim.phantom_crops import build_phantom_crops, split_by_image
from synthesis.config import SegmenterConfig
from tests.helpers.synthesis import one_thread

SEGMENTER = SegmenterConfig(width=8, depth=2, steps=40, batch_size=8, lr=3e-3)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def _tiny() -> EnhancementConfig:
    quick = EnhancementConfig.quick()
    synthesis = dataclasses.replace(
        quick.synthesis,
        train=dataclasses.replace(quick.synthesis.train, steps=60, collapse_window=15),
        judge=dataclasses.replace(SEGMENTER, steps=40),
    )
    return dataclasses.replace(
        quick,
        n_images=16,
        fractions=(0.5, 1.0),
        synthesis=synthesis,
        segmenter=dataclasses.replace(SEGMENTER, steps=15),
        label_sources=False,
    )


def test_phantom_crops_split_is_disjoint_and_deterministic() -> None:
    crops = build_phantom_crops(12, size=32, image_size=64, seed=3)
    again = build_phantom_crops(12, size=32, image_size=64, seed=3)
    assert np.array_equal(crops.images, again.images)
    assert np.array_equal(crops.masks, again.masks)
    assert crops.images.shape == crops.masks.shape == (len(crops), 32, 32)
    assert crops.images.dtype == np.float32
    assert crops.images.min() >= 0.0
    assert crops.images.max() <= 1.0
    assert all(m.sum() >= 4 for m in crops.masks)
    assert (crops.boxes[:, :2] >= 0).all()
    assert (crops.boxes[:, 2:] <= 32).all()
    pool, test = split_by_image(crops, 0.4, seed=1)
    pool2, test2 = split_by_image(crops, 0.4, seed=1)
    assert np.array_equal(pool.sources, pool2.sources)
    assert np.array_equal(test.sources, test2.sources)
    assert not set(pool.sources.tolist()) & set(test.sources.tolist())
    assert len(pool) + len(test) == len(crops)
    assert len(np.unique(test.sources)) == round(12 * 0.4)
    other, _ = split_by_image(crops, 0.4, seed=2)
    assert not np.array_equal(other.sources, pool.sources)


def test_phantom_crops_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="style"):
        build_phantom_crops(4, style="mri")
    with pytest.raises(ValueError, match="n_images"):
        build_phantom_crops(1)
    crops = build_phantom_crops(4, size=32, image_size=64)
    with pytest.raises(ValueError, match="test_fraction"):
        split_by_image(crops, 1.0, seed=0)


def test_run_enhancement_tiny_fills_every_cell_and_is_deterministic() -> None:
    cfg = _tiny()
    data = phantom_data(cfg)
    calls: list[str] = []
    result = run_enhancement(cfg, data, progress=calls.append)
    # the same cell alone: seeded and independent of the cells run before it
    again = run_enhancement(dataclasses.replace(cfg, fractions=(0.5,)), data)
    assert len(calls) == 2
    assert result.runs[0].dice == again.runs[0].dice
    assert [(r.fraction, r.seed) for r in result.runs] == [(0.5, 0), (1.0, 0)]
    for run in result.runs:
        assert run.n_real == len(data.pool) if run.fraction == 1.0 else run.n_real < len(data.pool)
        assert set(run.dice) == set(MODES), run  # the gate kept something at every fraction
        assert all(math.isfinite(d) and 0.0 <= d <= 1.0 for d in run.dice.values())
        assert run.n_train["real + synthetic 1:2"] <= 3 * run.n_real
        assert 0.0 < run.acceptance <= 1.0
    rows = result.table()
    assert len(rows) == 2 * len(MODES)
    body = json.loads(result.to_json())
    assert body["info"]["test"] == len(data.test)
    assert set(body["summary"]["real_plus_synthetic_1to2_beats_real"]) == {"0.5", "1"}
    assert result.plot_png().startswith(b"\x89PNG")
    assert "real + synthetic 1:2" in result.format_table()


def test_run_enhancement_refuses_a_subset_too_small() -> None:
    cfg = dataclasses.replace(_tiny(), fractions=(0.1,))
    with pytest.raises(ValueError, match="at least 4"):
        run_enhancement(cfg, phantom_data(cfg))


def _data() -> PhantomData:
    crops = build_phantom_crops(30, size=32, image_size=96, seed=1)
    pool, test = split_by_image(crops, 0.4, seed=1)
    return PhantomData(pool, test)


def test_compare_label_sources_gives_truth_more_than_corrupted_masks() -> None:
    data = _data()
    shifted = np.roll(data.pool.masks, (7, 7), axis=(1, 2))  # labels off by ~10 px diagonally
    results = compare_label_sources(
        data.pool.images,
        data.pool.masks,
        {"shifted": shifted},
        data.test.images,
        data.test.masks,
        seeds=(0, 1),
        cfg=SEGMENTER,
    )
    truth, bad = results
    assert (truth.source, bad.source) == ("phantom truth", "shifted")
    assert truth.label_dice == pytest.approx(1.0)
    assert bad.label_dice < 0.6
    assert min(truth.dice_per_seed) > max(bad.dice_per_seed) + 0.1, results


def test_compare_label_sources_checks_shapes() -> None:
    data = _data()
    with pytest.raises(ValueError, match="source 'short'"):
        compare_label_sources(
            data.pool.images,
            data.pool.masks,
            {"short": data.pool.masks[:-1]},
            data.test.images,
            data.test.masks,
            seeds=(0,),
            cfg=SEGMENTER,
        )


def test_simulated_label_sources_are_seeded_and_plausible() -> None:
    data = _data()
    pool = data.pool
    sources, info = simulate_label_sources(pool.images, pool.masks, pool.boxes, seed=0)
    again, _ = simulate_label_sources(pool.images, pool.masks, pool.boxes, seed=0)
    assert set(sources) == {"crowd consensus", "raw proposals"}
    for name, masks in sources.items():
        assert masks.shape == pool.masks.shape
        assert masks.dtype == bool
        assert np.array_equal(masks, again[name])
    assert info["answers_per_crop"] >= 4
    inter = [
        (m & t).sum() * 2 / (m.sum() + t.sum())
        for m, t in zip(sources["crowd consensus"], pool.masks, strict=True)
    ]
    assert np.mean(inter) > 0.8  # the crowd's consensus is close to the truth
