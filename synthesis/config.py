"""Configuration of the synthesis pipeline: frozen dataclasses, passed in, never read from the env.

Like nanoGPT's ``GPTConfig``: one object says everything a run did, goes into every checkpoint
(so a resume can refuse a changed config) and hashes to a stable run id (``digest``).
``SynthesisConfig()`` is the reference pix2pix at 256x256 with the project's deviations;
``SynthesisConfig.tiny()`` is the unit-test size (32x32, ngf 8: a training step in milliseconds).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Norm = Literal["batch", "instance", "none"]


@dataclass(frozen=True)
class SamplerConfig:
    """How new masks are drawn (research/synthesis.md §4.2) and what counts as plausible.

    ``weights`` is the strategy mixture; a strategy without its input (``crowd`` without vote
    maps) drops out and the others are renormalised. Sizes (``elastic_alpha``, ``max_shift``) are
    fractions of the image side so a setting means the same at 32 and 256 pixels.
    """

    weights: tuple[tuple[str, float], ...] = (
        ("elastic", 0.4),
        ("shape_model", 0.3),
        ("blend", 0.2),
        ("crowd", 0.1),
    )
    elastic_alpha: float = 0.04
    elastic_grid: int = 8
    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_shift: float = 0.05
    shape_var_kept: float = 0.95
    shape_clip: float = 20.0
    shape_max_sigma: float = 2.0
    blend_range: tuple[float, float] = (0.3, 0.7)
    crowd_range: tuple[float, float] = (0.3, 0.7)
    # plausibility filter, fitted on the real masks
    quantiles: tuple[float, float] = (0.01, 0.99)
    slack: float = 0.1
    max_iou_to_train: float = 0.95
    max_tries_per_mask: int = 50


@dataclass(frozen=True)
class ModelConfig:
    """The pix2pix networks. ``n_down`` 8 is ``unet_256`` (size 256), 7 ``unet_128``."""

    size: int = 256
    n_down: int = 8
    ngf: int = 64
    ndf: int = 64
    n_layers_d: int = 3
    norm: Norm = "instance"
    dropout: float = 0.5
    gemm_max_pixels: int = 64  # small convolutions as matrix products (CPU speed); 0 = off

    def __post_init__(self) -> None:
        if self.size % 2**self.n_down:
            raise ValueError(f"size {self.size} must be divisible by 2**n_down = {2**self.n_down}")


@dataclass(frozen=True)
class TrainConfig:
    """The pix2pix objective and schedule, plus the project's engineering options.

    ``steps`` counts optimiser steps; the learning rate is constant for the first
    ``1 - decay_fraction`` of them and decays linearly to 0 over the rest (the reference's
    100 + 100 epochs). ``jitter`` is the reference's 286/256 resize-and-crop (image bilinear, mask
    nearest). Flips are off by default: left and right are not interchangeable in most anatomy.
    """

    steps: int = 200_000
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_l1: float = 100.0
    decay_fraction: float = 0.5
    jitter: float = 286 / 256
    hflip: bool = False
    vflip: bool = False
    bf16: bool = False
    channels_last: bool = False
    fused_adam: bool = True
    val_every: int = 1000
    checkpoint_every: int = 1000
    collapse_d_loss: float = 0.05
    collapse_window: int = 200


@dataclass(frozen=True)
class GateConfig:
    """Quality gate thresholds (research/synthesis.md §4.5).

    The judge's Dice threshold is the ``dice_quantile`` of its Dice on real validation images less
    ``dice_margin``, but never below ``min_dice`` (a judge that fails on real images must not wave
    everything through).
    """

    dice_quantile: float = 0.1
    # Below that quantile, by this much: with few validation images the quantile is their
    # minimum, which a judge that segments them perfectly puts at 1.0 (nothing would pass).
    dice_margin: float = 0.05
    min_dice: float = 0.5
    intensity_quantile: float = 0.99
    intensity_slack: float = 1.5
    histogram_bins: int = 32
    max_correlation: float = 0.95


@dataclass(frozen=True)
class SegmenterConfig:
    """The small U-Net used as the gate's judge and for the downstream evaluation."""

    width: int = 16
    depth: int = 3
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    hflip: bool = False


@dataclass(frozen=True)
class SynthesisConfig:
    """Everything one synthesis run does; ``seed`` drives every random choice in it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    judge: SegmenterConfig = field(default_factory=SegmenterConfig)
    seed: int = 0
    threads: int | None = None
    device: Literal["cpu", "cuda"] = "cpu"

    @classmethod
    def tiny(cls, **overrides: Any) -> SynthesisConfig:
        """The unit-test size: 32x32, 5 levels, ngf = ndf = 8 (G 260,945 / D 44,521 params)."""
        base = cls(
            model=ModelConfig(size=32, n_down=5, ngf=8, ndf=8, gemm_max_pixels=0),
            train=TrainConfig(
                steps=100, batch_size=4, jitter=1.0, val_every=25, checkpoint_every=25
            ),
            judge=SegmenterConfig(width=8, depth=2, steps=150, batch_size=8, lr=3e-3),
            threads=1,  # tiny ops: a second (spinning) OpenMP thread only adds overhead
        )
        return dataclasses.replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthesisConfig:
        """Inverse of ``to_dict``."""
        sections = {
            "model": ModelConfig,
            "train": TrainConfig,
            "sampler": SamplerConfig,
            "gate": GateConfig,
            "judge": SegmenterConfig,
        }
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections:
                kwargs[key] = sections[key](**_tuples(value))
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def digest(self) -> str:
        """Stable sha256 of the config (the run id a checkpoint is bound to)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _tuples(section: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; the frozen dataclasses want them back (hashable)."""

    def fix(value: Any) -> Any:
        if isinstance(value, list):
            return tuple(fix(v) for v in value)
        return value

    return {key: fix(value) for key, value in section.items()}
