from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from synthesis.config import GateConfig, SynthesisConfig
from synthesis.gate import QualityGate
from synthesis.generate import file_sha256, generate_pairs
from synthesis.generator import Pix2Pix
from synthesis.masks import MaskSampler
from synthesis.train import save_atomic
from tests.helpers.synthesis import one_thread, toy_pairs, toy_probabilities

Pair = tuple[np.ndarray, np.ndarray]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def perfect_judge(images: np.ndarray) -> np.ndarray:
    return images > 0.5  # the toy lesion is brighter than mid-grey, the background darker


def empty_judge(images: np.ndarray) -> np.ndarray:
    return np.zeros(images.shape, dtype=bool)


@pytest.fixture(scope="module")
def real() -> Pair:
    return toy_pairs(24, 32, seed=0)


def _gate(judge: Any, real: Pair) -> QualityGate:
    masks, images = real
    return QualityGate(GateConfig(), judge).fit(images[16:], masks[16:], images[:16])


def test_gate_accepts_faithful_pairs_with_a_perfect_judge(real: Pair) -> None:
    gate = _gate(perfect_judge, real)
    assert gate.dice_threshold_ > 0.9
    masks, images = toy_pairs(8, 32, seed=42)  # new pairs drawn by the true mask -> image rule
    scores = gate.score(images, masks)
    assert all(s.accepted for s in scores), scores
    assert all(s.dice > 0.9 for s in scores)


def test_gate_rejects_everything_with_an_empty_judge(real: Pair) -> None:
    gate = _gate(empty_judge, real)
    assert gate.dice_threshold_ == GateConfig().min_dice  # the judge's own quantile is 0
    masks, images = toy_pairs(8, 32, seed=42)
    scores = gate.score(images, masks)
    assert not any(s.accepted for s in scores)
    assert all(s.failed == ("dice",) for s in scores)


def test_gate_rejects_copies_and_wrong_intensities(real: Pair) -> None:
    masks, images = real
    gate = _gate(perfect_judge, real)
    copy = gate.score(images[:1], masks[:1])[0]
    assert "near-copy" in copy.failed
    assert copy.max_correlation == pytest.approx(1.0)
    new_masks, new_images = toy_pairs(2, 32, seed=7)
    washed = 0.55 + 0.45 * new_images  # same shapes, intensities squeezed into the bright end
    scores = gate.score(washed, new_masks)
    assert all("intensity" in s.failed for s in scores)


class ToyRuleGenerator:
    """A perfect generator for the toy data: draws the image the toy rule draws for a mask."""

    def train_step(self, mask: torch.Tensor, image: torch.Tensor) -> dict[str, float]:
        return {}

    def generate(self, mask: torch.Tensor) -> torch.Tensor:
        m = (mask > 0).float()
        size = mask.shape[-1]
        yy, xx = torch.meshgrid(torch.arange(size) / size, torch.arange(size) / size, indexing="ij")
        image = 0.25 + 0.5 * m + 0.05 * torch.sin(20 * xx + 7 * yy)
        return image * 2 - 1

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def test_generate_pairs_records_scores_and_provenance(real: Pair, tmp_path: Path) -> None:
    masks, _ = real
    ckpt = tmp_path / "latest.pt"
    save_atomic({"weights": torch.zeros(3)}, ckpt)
    sha = file_sha256(ckpt)
    calls: list[tuple[int, int, int]] = []

    def run() -> Any:
        sampler = MaskSampler().fit(masks[:16], toy_probabilities(masks[:16]))
        return generate_pairs(
            ToyRuleGenerator(),
            sampler,
            _gate(perfect_judge, real),
            10,
            seed=3,
            checkpoint_sha256=sha,
            config_digest="abc",
            batch_size=4,
            progress=lambda *a: calls.append(a),
        )

    out = run()
    assert len(out.kept) + len(out.rejected) == 10
    assert out.acceptance > 0.7
    assert [c[:2] for c in calls] == [(4, 10), (8, 10), (10, 10)]
    for pair in out.kept:
        assert pair.scores.accepted
        assert pair.image.shape == pair.mask.shape == (32, 32)
        assert 0.0 <= pair.image.min() <= pair.image.max() <= 1.0
        assert pair.provenance.checkpoint_sha256 == sha
        assert pair.provenance.config_digest == "abc"
        assert pair.provenance.seed == 3
        assert pair.provenance.strategy in {"elastic", "shape_model", "blend", "crowd"}
    again = run()
    assert [p.provenance for p in again.kept] == [p.provenance for p in out.kept]
    assert set(out.thresholds) == {"dice", "intensity_distance", "max_correlation"}


def test_generate_pairs_runs_with_pix2pix(real: Pair) -> None:
    masks, _ = real
    cfg = SynthesisConfig.tiny()
    out = generate_pairs(
        Pix2Pix(cfg.model, cfg.train, seed=0),
        MaskSampler().fit(masks[:16]),
        _gate(perfect_judge, real),
        3,
        seed=0,
        checkpoint_sha256="0" * 64,
    )
    pairs = out.kept + out.rejected
    assert len(pairs) == 3
    assert all(np.isfinite(p.image).all() for p in pairs)
