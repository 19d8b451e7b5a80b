from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from synthesis.config import GateConfig, SegmenterConfig
from synthesis.evaluate import evaluate_downstream, label_subset
from synthesis.gate import QualityGate
from synthesis.segmenter import dice, train_segmenter
from tests.helpers.synthesis import one_thread, toy_pairs

TINY = SegmenterConfig(width=8, depth=2, steps=60, batch_size=8, lr=3e-3)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def test_evaluate_downstream_is_seeded_and_learns() -> None:
    masks, images = toy_pairs(24, 32, seed=0)
    a = evaluate_downstream(images[:16], masks[:16], images[16:], masks[16:], TINY, seed=1)
    b = evaluate_downstream(images[:16], masks[:16], images[16:], masks[16:], TINY, seed=1)
    assert a == b
    assert a.n_train == 16
    assert len(a.dice_per_image) == 8
    assert a.dice_mean > 0.8, a


def test_evaluate_label_subset_is_seeded_and_sized() -> None:
    assert np.array_equal(label_subset(40, 0.25, seed=3), label_subset(40, 0.25, seed=3))
    assert len(label_subset(40, 0.25, seed=3)) == 10
    assert len(label_subset(3, 0.1, seed=0)) == 1
    with pytest.raises(ValueError, match="fraction"):
        label_subset(10, 0.0, seed=0)


def test_evaluate_trained_judge_drives_the_gate() -> None:
    masks, images = toy_pairs(32, 32, seed=0)
    judge = train_segmenter(images[:16], masks[:16], TINY, seed=0)
    gate = QualityGate(GateConfig(), judge).fit(images[16:24], masks[16:24], images[:16])
    assert gate.dice_threshold_ > 0.7
    scores = gate.score(images[24:], masks[24:])
    assert sum(s.accepted for s in scores) >= 6
    wrong = gate.score(images[24:], masks[24:][::-1].copy())  # images paired with other masks
    assert sum(s.accepted for s in wrong) <= 2


def test_evaluate_dice_edge_cases() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    full = np.ones((4, 4), dtype=bool)
    assert dice(empty, empty) == pytest.approx(1.0)
    assert dice(full, empty) == pytest.approx(0.0, abs=1e-6)
    assert dice(full, full) == pytest.approx(1.0)
