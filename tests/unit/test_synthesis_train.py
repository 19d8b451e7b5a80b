from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from synthesis.config import ModelConfig, SynthesisConfig, TrainConfig
from synthesis.generator import Pix2Pix
from synthesis.train import PairData, Trainer, TrainingDiverged, discriminator_collapsed
from tests.helpers.synthesis import one_thread, toy_pairs


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


# 64^2 and 6 levels, so one decoder level has dropout (torch RNG) and jitter/flips use NumPy's
RESUME_CFG = SynthesisConfig.tiny(
    model=ModelConfig(size=64, n_down=6, ngf=8, ndf=8, gemm_max_pixels=16),
    train=TrainConfig(steps=10, batch_size=2, jitter=1.125, hflip=True, checkpoint_every=100),
)


def _trainer(cfg: SynthesisConfig, seed: int = 0) -> Trainer:
    masks, images = toy_pairs(8, cfg.model.size, seed=1)
    return Trainer(
        cfg, Pix2Pix(cfg.model, cfg.train, seed=seed), PairData.from_arrays(masks, images)
    )


def _assert_same_state(a: Trainer, b: Trainer) -> None:
    assert a.step == b.step
    ga, gb = a.generator, b.generator
    assert isinstance(ga, Pix2Pix)
    assert isinstance(gb, Pix2Pix)
    for p, q in zip(ga.parameters(), gb.parameters(), strict=True):
        assert torch.equal(p, q)
    for opt_a, opt_b in ((ga.opt_g, gb.opt_g), (ga.opt_d, gb.opt_d)):
        sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
        assert sa.keys() == sb.keys()
        for k in sa:
            for name in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(sa[k][name], sb[k][name]), (k, name)
    assert ga.sched_g.state_dict() == gb.sched_g.state_dict()
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


def test_train_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = _trainer(RESUME_CFG)
    straight.fit(until=10)

    first = _trainer(RESUME_CFG)
    first.fit(until=4, checkpoint_dir=tmp_path)
    torch.manual_seed(1234)  # a fresh process: other global RNG, other initial weights
    resumed = _trainer(RESUME_CFG, seed=99)
    assert resumed.resume(tmp_path)
    assert resumed.step == 4
    resumed.fit(until=10)
    _assert_same_state(straight, resumed)
    assert [h["loss_l1"] for h in straight.history.losses] == [
        h["loss_l1"] for h in resumed.history.losses
    ]
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files


def test_train_refuses_a_checkpoint_of_another_config(tmp_path: Path) -> None:
    cfg = SynthesisConfig.tiny(train=dataclasses.replace(SynthesisConfig.tiny().train, steps=2))
    _trainer(cfg).fit(checkpoint_dir=tmp_path)
    other = dataclasses.replace(cfg, seed=7)
    with pytest.raises(ValueError, match="another config"):
        _trainer(other).resume(tmp_path)
    assert not _trainer(cfg).resume(tmp_path / "empty")


def test_train_config_round_trips_through_json() -> None:
    cfg = RESUME_CFG
    assert SynthesisConfig.from_dict(cfg.to_dict()) == cfg
    assert SynthesisConfig.from_dict(cfg.to_dict()).digest() == cfg.digest()
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(size=48, n_down=5)


def test_train_jitter_resizes_masks_by_nearest_neighbour() -> None:
    trainer = _trainer(RESUME_CFG)
    masks, images = trainer.batch()
    assert masks.shape == images.shape == (2, 1, 64, 64)
    assert set(torch.unique(masks).tolist()) <= {-1.0, 1.0}


class _Scripted:
    """A ConditionalGenerator that replays given losses (the trainer's watchdogs under test)."""

    def __init__(self, losses: list[dict[str, float]]) -> None:
        self.losses = losses
        self.calls = 0

    def train_step(self, mask: torch.Tensor, image: torch.Tensor) -> dict[str, float]:
        self.calls += 1
        return self.losses[min(self.calls - 1, len(self.losses) - 1)]

    def generate(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(mask)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def test_train_raises_a_clear_error_on_nan() -> None:
    cfg = SynthesisConfig.tiny()
    masks, images = toy_pairs(4, 32)
    ok = {"loss_d": 0.7, "loss_g_gan": 0.7, "loss_l1": 0.2}
    gen = _Scripted([ok, ok, {**ok, "loss_l1": float("nan")}])
    trainer = Trainer(cfg, gen, PairData.from_arrays(masks, images))
    with pytest.raises(TrainingDiverged, match="step 3"):
        trainer.fit(until=10)
    assert trainer.step == 2


def test_train_flags_discriminator_collapse() -> None:
    assert discriminator_collapsed([0.01] * 10, list(np.linspace(1, 5, 10)), floor=0.05)
    assert not discriminator_collapsed([0.5] * 10, list(np.linspace(1, 5, 10)), floor=0.05)
    assert not discriminator_collapsed([0.01] * 10, list(np.linspace(5, 1, 10)), floor=0.05)
    cfg = SynthesisConfig.tiny(
        train=dataclasses.replace(SynthesisConfig.tiny().train, collapse_window=10)
    )
    masks, images = toy_pairs(4, 32)
    losses = [{"loss_d": 0.01, "loss_g_gan": 1.0 + i, "loss_l1": 0.1} for i in range(30)]
    trainer = Trainer(cfg, _Scripted(losses), PairData.from_arrays(masks, images))
    trainer.fit(until=20)
    assert trainer.history.collapsed_at == 10


def test_train_generator_learns_the_mask_to_image_mapping() -> None:
    cfg = SynthesisConfig.tiny()  # 32^2, ngf 8, batch 4
    masks, images = toy_pairs(24, 32, seed=0)
    train = PairData.from_arrays(masks[:16], images[:16])
    held_out = PairData.from_arrays(masks[16:], images[16:])
    trainer = Trainer(cfg, Pix2Pix(cfg.model, cfg.train, seed=0), train)
    before = trainer.validate(held_out)["l1"]
    trainer.fit(until=100)
    after = trainer.validate(held_out)["l1"]
    assert after < 0.4 * before, (before, after)
    assert after < 0.1
