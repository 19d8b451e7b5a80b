"""Does synthesis help? Downstream Dice with and without synthetic pairs, on phantom crops.

The acceptance protocol of research/synthesis.md §4.6 and issue 7, made runnable: for each share
of the real labelled pairs (10, 25, 50, 100 %) and each seed, take that seeded subset, train
pix2pix on it alone, fit the mask sampler on its masks, train the gate's judge on it (a held-out
quarter sets the gate's thresholds), generate and gate synthetic pairs, then train the same small
downstream U-Net on real only, real + synthetic 1:1 and 1:2, and synthetic only, and score each on
a real test set cut from other phantom images. Every training of one (fraction, seed) uses the
same seed, so the modes differ only in their data; every downstream model gets the same number of
steps, so more data is not more compute.

Everything here is CPU-sized (32 px crops, small networks): the question is whether the
*direction* of the effect survives the seed spread, not what a 256 px model would reach.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from bot.sim.enhancement_report import MODES, EnhancementResult, RunRecord
from bot.sim.label_sources import (
    CrowdSetup,
    SourceResult,
    compare_label_sources,
    simulate_label_sources,
)
from bot.sim.phantom_crops import CropSet, build_phantom_crops, split_by_image
from synthesis.config import ModelConfig, SegmenterConfig, SynthesisConfig, TrainConfig
from synthesis.evaluate import evaluate_downstream, label_subset
from synthesis.gate import QualityGate
from synthesis.generate import Generation, generate_pairs
from synthesis.generator import Pix2Pix
from synthesis.masks import MaskSampler
from synthesis.segmenter import train_segmenter
from synthesis.train import PairData, Trainer

logger = logging.getLogger(__name__)
Progress = Callable[[str], None]  # called with a short description after each unit of work


def _synthesis(size: int, ngf: int, steps: int) -> SynthesisConfig:
    """pix2pix sized for a CPU: ``size`` px, one level per halving down to 1 px."""
    n_down = int(np.log2(size))
    return SynthesisConfig(
        model=ModelConfig(size=size, n_down=n_down, ngf=ngf, ndf=ngf, gemm_max_pixels=0),
        train=TrainConfig(
            steps=steps,
            batch_size=4,
            jitter=1.125,
            hflip=True,  # ultrasound phantoms are left-right symmetric
            val_every=10**9,
            checkpoint_every=10**9,
            collapse_window=max(steps // 4, 4),
        ),
        judge=SegmenterConfig(width=8, depth=3, steps=150, batch_size=8, lr=3e-3, hflip=True),
    )


@dataclass(frozen=True)
class EnhancementConfig:
    """One evaluation: the data, the grid, the networks (all CPU-sized) and the crowd.

    ``synthetic_ratio`` synthetic pairs are wanted per real pair (2 serves 1:1 and 1:2);
    generation stops after ``max_candidates`` candidates per wanted pair. ``gate_holdout`` of
    the subset (at least 2 pairs) is held out of the judge's training to fit the gate.
    """

    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    style: str = "ultrasound"
    n_images: int = 120
    test_fraction: float = 0.4
    crop_size: int = 32
    data_seed: int = 0
    synthesis: SynthesisConfig = field(default_factory=lambda: _synthesis(32, 16, 800))
    segmenter: SegmenterConfig = field(
        default_factory=lambda: SegmenterConfig(
            width=8, depth=3, steps=150, batch_size=8, lr=3e-3, hflip=True
        )
    )
    synthetic_ratio: int = 2
    max_candidates: float = 4.0
    gate_holdout: float = 0.25
    label_sources: bool = True
    crowd: CrowdSetup = field(default_factory=CrowdSetup)
    threads: int | None = 1

    def __post_init__(self) -> None:
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"fractions must be in (0, 1], got {list(self.fractions)}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if self.synthesis.model.size != self.crop_size:
            raise ValueError(
                f"pix2pix size {self.synthesis.model.size} != crop size {self.crop_size}"
            )

    @classmethod
    def quick(cls, **overrides: object) -> EnhancementConfig:
        """About a minute on one core: fewer images, two fractions, one seed, short training."""
        base = cls(
            fractions=(0.25, 1.0),
            seeds=(0,),
            n_images=40,
            synthesis=_synthesis(32, 8, 150),
            segmenter=SegmenterConfig(width=8, depth=2, steps=60, batch_size=8, lr=3e-3),
        )
        base = dataclasses.replace(
            base, synthesis=dataclasses.replace(base.synthesis, judge=base.segmenter)
        )
        return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@dataclass
class PhantomData:
    """The labelled pool and the untouched real test set."""

    pool: CropSet
    test: CropSet


def phantom_data(cfg: EnhancementConfig) -> PhantomData:
    """Build the crops of ``cfg`` and split them by source image."""
    crops = build_phantom_crops(
        cfg.n_images, style=cfg.style, size=cfg.crop_size, seed=cfg.data_seed
    )
    pool, test = split_by_image(crops, cfg.test_fraction, cfg.data_seed)
    return PhantomData(pool, test)


def _generate(
    cfg: EnhancementConfig, subset: CropSet, seed: int, seconds: dict[str, float]
) -> Generation:
    """pix2pix + sampler + judge + gate trained on ``subset`` only; the kept pairs."""
    scfg = dataclasses.replace(cfg.synthesis, seed=seed)
    n = len(subset)
    start = time.perf_counter()
    generator = Pix2Pix(scfg.model, scfg.train, seed=seed)
    Trainer(scfg, generator, PairData.from_arrays(subset.masks, subset.images)).fit()
    seconds["pix2pix"] = time.perf_counter() - start
    start = time.perf_counter()
    order = np.random.default_rng([seed, 5]).permutation(n)
    n_val = min(max(2, round(n * cfg.gate_holdout)), n - 2)
    val, fit = order[:n_val], order[n_val:]
    judge = train_segmenter(subset.images[fit], subset.masks[fit], scfg.judge, seed)
    gate = QualityGate(scfg.gate, judge).fit(
        subset.images[val], subset.masks[val], subset.images[fit]
    )
    sampler = MaskSampler(scfg.sampler).fit(subset.masks)
    seconds["judge"] = time.perf_counter() - start
    start = time.perf_counter()
    wanted = cfg.synthetic_ratio * n
    budget = int(np.ceil(cfg.max_candidates * wanted))
    out = Generation(thresholds=gate.thresholds())
    index = 0
    while len(out.kept) < wanted and len(out.kept) + len(out.rejected) < budget:
        todo = min(max(wanted - len(out.kept), 8), budget - len(out.kept) - len(out.rejected))
        try:
            batch = generate_pairs(
                generator, sampler, gate, todo, seed=seed, checkpoint_sha256="", start=index
            )
        except RuntimeError as error:  # the sampler found no more plausible masks
            logger.warning("fraction %d pairs, seed %d: %s", n, seed, error)
            break
        out.kept += batch.kept
        out.rejected += batch.rejected
        index = max(p.provenance.index for p in batch.kept + batch.rejected) + 1
    out.kept = out.kept[:wanted]
    seconds["generate"] = time.perf_counter() - start
    return out


def run_cell(cfg: EnhancementConfig, data: PhantomData, fraction: float, seed: int) -> RunRecord:
    """One (fraction, seed): subset, synthesis, and the four downstream trainings."""
    subset = data.pool.take(label_subset(len(data.pool), fraction, seed))
    if len(subset) < 4:
        raise ValueError(
            f"{fraction:.0%} of {len(data.pool)} pool crops is {len(subset)} pairs; pix2pix, "
            "the judge and the gate need at least 4: use more images or a larger fraction"
        )
    seconds: dict[str, float] = {}
    generation = _generate(cfg, subset, seed, seconds)
    syn_images = np.stack([p.image for p in generation.kept]) if generation.kept else None
    syn_masks = np.stack([p.mask for p in generation.kept]) if generation.kept else None
    n = len(subset)
    training = {MODES[0]: (subset.images, subset.masks)}
    if syn_images is not None and syn_masks is not None:
        for mode, k in ((MODES[1], n), (MODES[2], 2 * n)):
            training[mode] = (
                np.concatenate([subset.images, syn_images[:k]]),
                np.concatenate([subset.masks, syn_masks[:k]]),
            )
        training[MODES[3]] = (syn_images, syn_masks)
    start = time.perf_counter()
    dice = {
        mode: evaluate_downstream(
            images, masks, data.test.images, data.test.masks, cfg.segmenter, seed
        ).dice_mean
        for mode, (images, masks) in training.items()
    }
    seconds["downstream"] = time.perf_counter() - start
    failures = Counter(f for p in generation.rejected for f in p.scores.failed)
    return RunRecord(
        fraction=fraction,
        seed=seed,
        n_real=n,
        candidates=len(generation.kept) + len(generation.rejected),
        kept=len(generation.kept),
        dice=dice,
        n_train={mode: len(images) for mode, (images, _) in training.items()},
        gate_thresholds=generation.thresholds,
        gate_failures=dict(failures),
        seconds=seconds,
    )


def run_enhancement(
    cfg: EnhancementConfig, data: PhantomData | None = None, progress: Progress | None = None
) -> EnhancementResult:
    """The whole evaluation: every (fraction, seed) run, then the label-source comparison.

    ``progress`` is called after each (fraction, seed) run and each label-source training;
    ``total_steps(cfg)`` says how many calls to expect.
    """
    start = time.perf_counter()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        data = data or phantom_data(cfg)
        runs = []
        for fraction in cfg.fractions:
            for seed in cfg.seeds:
                runs.append(run_cell(cfg, data, fraction, seed))
                if progress is not None:
                    progress(f"{fraction:.0%} seed {seed}")
        sources: list[SourceResult] = []
        crowd_info: dict[str, float] = {}
        if cfg.label_sources:
            pool = data.pool
            other, crowd_info = simulate_label_sources(
                pool.images, pool.masks, pool.boxes, cfg.data_seed, cfg.crowd
            )
            sources = compare_label_sources(
                pool.images,
                pool.masks,
                other,
                data.test.images,
                data.test.masks,
                seeds=cfg.seeds,
                cfg=cfg.segmenter,
                progress=(lambda name: progress(f"labels: {name}")) if progress else None,
            )
    finally:
        torch.set_num_threads(threads)
    info = {
        "config": dataclasses.asdict(cfg),
        "pool": len(data.pool),
        "test": len(data.test),
        "pool_images": len(np.unique(data.pool.sources)),
        "test_images": len(np.unique(data.test.sources)),
        "crowd": crowd_info,
        "seconds": time.perf_counter() - start,
        "torch_threads": cfg.threads or threads,
    }
    return EnhancementResult(runs, sources, info)


def total_steps(cfg: EnhancementConfig) -> int:
    """How many times ``run_enhancement`` calls its progress callback."""
    sources = 3 * len(cfg.seeds) if cfg.label_sources else 0
    return len(cfg.fractions) * len(cfg.seeds) + sources
