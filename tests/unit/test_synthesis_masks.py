from __future__ import annotations

import numpy as np
import pytest

from synthesis.config import SamplerConfig
from synthesis.masks import (
    MaskPlausibility,
    MaskSampler,
    ShapeModel,
    compactness,
    crowd_threshold,
    sdf_blend,
    signed_distance,
)
from tests.helpers.synthesis import toy_pairs, toy_probabilities


@pytest.fixture(scope="module")
def masks() -> np.ndarray:
    return toy_pairs(16, 32, seed=0)[0]


def test_masks_same_seed_gives_same_masks(masks: np.ndarray) -> None:
    a = MaskSampler().fit(masks, toy_probabilities(masks)).sample(12, seed=5)
    b = MaskSampler().fit(masks, toy_probabilities(masks)).sample(12, seed=5)
    c = MaskSampler().fit(masks, toy_probabilities(masks)).sample(12, seed=6)
    assert [(s.strategy, s.index) for s in a] == [(s.strategy, s.index) for s in b]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.mask, y.mask) for x, y in zip(a, c, strict=True))


def test_masks_one_draw_is_reproducible_from_its_provenance(masks: np.ndarray) -> None:
    sampler = MaskSampler().fit(masks, toy_probabilities(masks))
    series = sampler.sample(6, seed=3)
    last = series[-1]
    again = MaskSampler().fit(masks, toy_probabilities(masks)).sample(1, seed=3, start=last.index)
    assert again[0].index == last.index
    assert np.array_equal(again[0].mask, last.mask)


def test_masks_every_accepted_mask_passes_the_filter_and_tally_counts_draws(
    masks: np.ndarray,
) -> None:
    sampler = MaskSampler().fit(masks, toy_probabilities(masks))
    out = sampler.sample(30, seed=1)
    assert len(out) == 30
    assert all(sampler.plausibility_.check(s.mask) == "ok" for s in out)
    assert {s.strategy for s in out} <= set(sampler.strategies_)
    draws = sum(sum(c.values()) for c in sampler.tally_.values())
    accepted = sum(c["ok"] for c in sampler.tally_.values())
    rejected = sum(sum(r.values()) for r in sampler.rejections().values())
    assert accepted == 30
    assert draws == accepted + rejected == out[-1].index + 1


def test_masks_aggressive_deformation_is_rejected_and_tallied(masks: np.ndarray) -> None:
    cfg = SamplerConfig(weights=(("elastic", 1.0),), elastic_alpha=0.1, elastic_grid=12)
    sampler = MaskSampler(cfg).fit(masks)
    sampler.sample(5, seed=0)
    assert sum(sampler.rejections()["elastic"].values()) > 0
    assert set(sampler.rejections()["elastic"]) <= {
        "area",
        "components",
        "compactness",
        "near-copy",
    }


def test_masks_sampler_gives_up_with_the_tally_when_nothing_passes(masks: np.ndarray) -> None:
    cfg = SamplerConfig(weights=(("blend", 1.0),), max_iou_to_train=0.0, max_tries_per_mask=3)
    sampler = MaskSampler(cfg).fit(masks)
    with pytest.raises(RuntimeError, match="near-copy"):
        sampler.sample(2, seed=0)


def test_masks_crowd_strategy_needs_probabilities(masks: np.ndarray) -> None:
    assert "crowd" not in MaskSampler().fit(masks).strategies_
    assert "crowd" in MaskSampler().fit(masks, toy_probabilities(masks)).strategies_
    with pytest.raises(ValueError, match="unknown"):
        MaskSampler(SamplerConfig(weights=(("magic", 1.0),))).fit(masks)


def test_masks_plausibility_rejects_copies_specks_and_ragged_shapes(masks: np.ndarray) -> None:
    filt = MaskPlausibility(SamplerConfig()).fit(masks)
    assert filt.check(masks[0]) == "near-copy"
    speck = np.zeros_like(masks[0])
    speck[5, 5] = True
    assert filt.check(speck) == "area"
    two = masks[0].copy()
    two[:2, :2] = True  # a second component, same area range
    assert filt.check(two) == "components"
    comb = np.zeros_like(masks[0])
    comb[4:28, 4:28:2] = True
    comb[4, 4:28] = True  # one ragged component
    assert filt.check(comb) in {"compactness", "area"}
    assert compactness(comb) > compactness(masks[0])


def test_masks_shape_tools_behave_at_the_extremes(masks: np.ndarray) -> None:
    a, b = masks[0], masks[1]
    assert np.array_equal(sdf_blend(a, b, 0.0, keep=1), a)
    assert np.array_equal(sdf_blend(a, b, 1.0, keep=1), b)
    sdf = signed_distance(a)
    assert (sdf[a] <= 0).all()
    assert (sdf[~a] > 0).all()
    prob = toy_probabilities(masks[:1])[0]
    assert crowd_threshold(prob, 0.3, 1).sum() >= crowd_threshold(prob, 0.7, 1).sum()
    model = ShapeModel().fit(masks)
    sample = model.sample(np.random.default_rng(0), keep=1)
    assert sample.shape == a.shape
    assert sample.any()
