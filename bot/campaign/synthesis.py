"""The synthesis job: pix2pix trained on a campaign's finished crops, gated synthetic pairs stored.

Training pairs are the crops whose label is final: a retired (or escalated) crop with fusion's
consensus, or a gold crop with the expert's mask. The crowd's probability maps feed the mask
sampler's "crowd" strategy. Training resumes from the campaign's checkpoint for the same
configuration (``<data_dir>/synthesis/<campaign>/<config digest>/latest.pt``), so a killed job
picks up where it stopped and a second run only generates. Every kept pair is stored with all its
gate scores and its provenance; draws continue where the previous run's stopped, so no two runs
produce the same pair.

The heavy work runs in a worker thread: a bot keeps serving volunteers while it trains.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image as PILImage
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import arrays, jobrecords
from bot.campaign.errors import InvalidInput
from bot.db.models import Campaign, Consensus, SyntheticPair, Task, TaskKind, TaskStatus
from bot.store import codecs
from bot.store.files import FileStore
from synthesis.config import ModelConfig, SegmenterConfig, SynthesisConfig, TrainConfig
from synthesis.gate import QualityGate
from synthesis.generate import Generation, file_sha256, generate_pairs
from synthesis.generator import Pix2Pix
from synthesis.masks import MaskSampler
from synthesis.segmenter import train_segmenter
from synthesis.train import PairData, Trainer

logger = logging.getLogger(__name__)

MIN_PAIRS = 4  # fewer finished crops than this cannot train (nor validate) anything
# Configurations by name: "cpu" finishes in minutes on a laptop, "gpu" is the reference size.
PRESETS: dict[str, SynthesisConfig] = {
    "tiny": SynthesisConfig.tiny(),
    "demo": SynthesisConfig(
        model=ModelConfig(size=64, n_down=6, ngf=16, ndf=16, gemm_max_pixels=0),
        train=TrainConfig(steps=250, batch_size=4, jitter=1.0, val_every=125, checkpoint_every=125),
        judge=SegmenterConfig(width=8, depth=3, steps=150, batch_size=8, lr=3e-3),
        threads=1,
    ),
    "cpu": SynthesisConfig(
        model=ModelConfig(size=64, n_down=6, ngf=32, ndf=32),
        train=TrainConfig(steps=3000, batch_size=4, val_every=500, checkpoint_every=250),
        judge=SegmenterConfig(width=16, depth=3, steps=800, batch_size=8),
        # One thread: OpenMP's spinning waits make two threads erratic beside a busy event loop.
        threads=1,
    ),
    "gpu": SynthesisConfig(
        train=TrainConfig(steps=40_000, batch_size=16, bf16=True, channels_last=True),
        device="cuda",
    ),
}


@dataclass(frozen=True)
class SynthesisOptions:
    """One run: how many candidates to generate, which configuration, which seed."""

    n: int = 64
    preset: str = "cpu"
    steps: int | None = None  # override the preset's training steps
    seed: int = 0

    def config(self) -> SynthesisConfig:
        """The run's library configuration."""
        if self.preset not in PRESETS:
            raise InvalidInput(f"unknown synthesis preset {self.preset!r}; one of {list(PRESETS)}")
        cfg = dataclasses.replace(PRESETS[self.preset], seed=self.seed)
        if self.steps is not None:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=self.steps))
        return cfg


@dataclass
class TrainingPairs:
    """(N, S, S) images in [0, 1], bool masks, the crowd's probabilities, and their tasks."""

    images: npt.NDArray[np.float32]
    masks: npt.NDArray[np.bool_]
    probabilities: npt.NDArray[np.float64] | None
    task_ids: list[int]


@dataclass
class SynthesisRun:
    """What one run did."""

    job_id: int
    trained_on: int
    steps: int
    resumed_from: int
    candidates: int
    kept: list[int] = field(default_factory=list)  # SyntheticPair ids
    acceptance: float = 0.0
    sampler_rejections: dict[str, dict[str, int]] = field(default_factory=dict)
    checkpoint_sha256: str = ""


def _grey(crop: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if crop.ndim == 2:
        return crop
    rgb = crop[..., :3].astype(np.float32)
    return np.asarray(rgb @ np.array([0.299, 0.587, 0.114], np.float32), dtype=np.uint8)


def _resize(array: npt.NDArray[Any], size: int, *, nearest: bool) -> npt.NDArray[Any]:
    method = PILImage.Resampling.NEAREST if nearest else PILImage.Resampling.BILINEAR
    if array.dtype == bool:
        image = PILImage.fromarray(array.astype(np.uint8) * 255).resize((size, size), method)
        return np.asarray(image) > 127
    image = PILImage.fromarray(array.astype(np.float32), mode="F").resize((size, size), method)
    return np.asarray(image, dtype=np.float32)


async def training_pairs(
    session: AsyncSession, store: FileStore, campaign: Campaign, size: int
) -> TrainingPairs:
    """The campaign's finished crops at ``size`` x ``size``: consensus or expert masks."""
    images, masks, probs, ids = [], [], [], []
    rows = (
        await session.exec(
            select(Task, Consensus)
            .join(Consensus, col(Consensus.task_id) == col(Task.id), isouter=True)
            .where(Task.campaign_id == campaign.id)
            .order_by(col(Task.id))
        )
    ).all()
    for task, consensus in rows:
        assert task.id is not None
        if task.kind != TaskKind.REAL and task.gold_mask_key:
            mask, prob = arrays.mask(store, task.gold_mask_key), None
        elif consensus is not None and task.status in (TaskStatus.RETIRED, TaskStatus.ESCALATED):
            mask = arrays.mask(store, consensus.mask_key)
            prob = arrays.prob(store, consensus.prob_key) if consensus.prob_key else None
        else:
            continue
        crop = _grey(arrays.image(store, task.crop_key)).astype(np.float32) / 255.0
        images.append(_resize(crop, size, nearest=False))
        masks.append(_resize(mask, size, nearest=True))
        if prob is not None:
            probs.append(_resize(prob.astype(np.float32), size, nearest=False))
        ids.append(task.id)
    if not ids:
        empty = np.zeros((0, size, size))
        return TrainingPairs(empty.astype(np.float32), empty.astype(bool), None, [])
    return TrainingPairs(
        np.clip(np.stack(images), 0, 1).astype(np.float32),
        np.stack(masks).astype(bool),
        np.stack(probs).astype(np.float64) if probs else None,
        ids,
    )


Report = Callable[[str, int, int], None]  # (phase, done, total)


def train_and_generate(
    pairs: TrainingPairs,
    cfg: SynthesisConfig,
    n: int,
    checkpoint_dir: Path,
    *,
    start: int = 0,
    report: Report | None = None,
) -> tuple[Generation, int, int, str]:
    """Train (or resume) pix2pix, fit the judge, gate and sampler, generate ``n`` candidates.

    Returns the generation, the step training resumed from, the final step and the checkpoint's
    sha256. Runs synchronously (call it in a worker thread).
    """
    count = len(pairs.task_ids)
    val = np.arange(count) % 5 == 4  # every fifth pair is held out for validation and the gate
    val[-1] = True  # (at least one)
    train = ~val
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = PairData.from_arrays(pairs.masks[train], pairs.images[train])
    held_out = PairData.from_arrays(pairs.masks[val], pairs.images[val])
    generator = Pix2Pix(cfg.model, cfg.train, device=cfg.device, seed=cfg.seed)
    trainer = Trainer(cfg, generator, data)
    resumed = trainer.step if trainer.resume(checkpoint_dir) else 0
    total = cfg.train.steps

    def on_step(step: int, _losses: dict[str, float]) -> None:
        if report is not None and (step % 10 == 0 or step == total):
            report("training", step, total)

    trainer.fit(until=total, checkpoint_dir=checkpoint_dir, validation=held_out, on_step=on_step)
    if report is not None:
        report("judge", 0, 1)
    judge = train_segmenter(pairs.images[train], pairs.masks[train], cfg.judge, cfg.seed)
    gate = QualityGate(cfg.gate, judge).fit(
        pairs.images[val], pairs.masks[val], pairs.images[train]
    )
    sampler = MaskSampler(cfg.sampler).fit(pairs.masks[train], pairs.probabilities)
    sha = file_sha256(checkpoint_dir / "latest.pt")
    generation = generate_pairs(
        generator,
        sampler,
        gate,
        n,
        seed=cfg.seed,
        checkpoint_sha256=sha,
        config_digest=cfg.digest(),
        start=start,
        progress=(lambda done, of, _kept: report("generating", done, of)) if report else None,
    )
    return generation, resumed, trainer.step, sha


async def run_synthesis(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    campaign: Campaign,
    options: SynthesisOptions,
    data_dir: Path,
    *,
    report: Report | None = None,
) -> SynthesisRun:
    """The job: collect pairs, train or resume, generate, gate, store the kept pairs."""
    assert campaign.id is not None
    cfg = options.config()
    checkpoint_dir = data_dir / "synthesis" / campaign.name / cfg.digest()[:16]
    async with jobrecords.tracked(
        sessionmaker,
        "synthesis",
        campaign.id,
        total=cfg.train.steps + options.n,
        n=options.n,
        preset=options.preset,
        steps=cfg.train.steps,
        seed=options.seed,
    ) as job:
        async with sessionmaker() as session:
            pairs = await training_pairs(session, store, campaign, cfg.model.size)
            start = await _next_draw(session, campaign, cfg.digest())
        if len(pairs.task_ids) < MIN_PAIRS:
            raise InvalidInput(
                f"synthesis needs at least {MIN_PAIRS} finished crops; {campaign.name} has "
                f"{len(pairs.task_ids)} so far"
            )
        done = [0]

        def progress(phase: str, count: int, total: int) -> None:  # in the worker thread
            if report is not None:
                report(phase, count, total)
            done[0] = count if phase == "training" else cfg.train.steps + count

        finished = asyncio.Event()

        async def keep_job_current() -> None:  # the job row, once a second, from this loop
            shown = 0
            while not finished.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), timeout=1.0)
                if done[0] != shown:
                    shown = done[0]
                    await job.progress(shown)

        ticker = asyncio.create_task(keep_job_current())
        try:
            generation, resumed, steps, sha = await asyncio.to_thread(
                train_and_generate,
                pairs,
                cfg,
                options.n,
                checkpoint_dir,
                start=start,
                report=progress,
            )
        finally:
            finished.set()
            await ticker
        run = SynthesisRun(
            job.id,
            len(pairs.task_ids),
            steps,
            resumed,
            options.n,
            acceptance=generation.acceptance,
            sampler_rejections=generation.sampler_rejections,
            checkpoint_sha256=sha,
        )
        async with sessionmaker() as session:
            run.kept = await _store(session, store, campaign, generation, pairs.task_ids)
            await session.commit()
        await job.progress(cfg.train.steps + options.n)
    logger.info(
        "synthesis for %s: kept %d of %d candidates (%.0f%%)",
        campaign.name,
        len(run.kept),
        options.n,
        100 * run.acceptance,
    )
    return run


async def _next_draw(session: AsyncSession, campaign: Campaign, digest: str) -> int:
    """The first sampler draw not used by an earlier run of this configuration."""
    rows = (
        await session.exec(
            select(SyntheticPair.provenance).where(SyntheticPair.campaign_id == campaign.id)
        )
    ).all()
    used = [int(p.get("index", -1)) for p in rows if p.get("config_digest") == digest]
    return max(used, default=-1) + 1


async def _store(
    session: AsyncSession,
    store: FileStore,
    campaign: Campaign,
    generation: Generation,
    sources: list[int],
) -> list[int]:
    assert campaign.id is not None
    files = store.batch()
    rows = []
    try:
        for pair in generation.kept:
            image = np.clip(np.round(pair.image * 255), 0, 255).astype(np.uint8)
            row = SyntheticPair(
                campaign_id=campaign.id,
                image_key=files.put("images", codecs.encode_png(image)),
                mask_key=files.put("masks", codecs.encode_mask(pair.mask)),
                generator_id=f"pix2pix@{pair.provenance.checkpoint_sha256[:16]}",
                seed=pair.provenance.seed,
                gate_score=float(pair.scores.dice),
                source_task_ids=sources,
                scores={
                    "dice": float(pair.scores.dice),
                    "intensity_distance": float(pair.scores.intensity_distance),
                    "max_correlation": float(pair.scores.max_correlation),
                    "thresholds": generation.thresholds,
                },
                provenance=dataclasses.asdict(pair.provenance),
            )
            session.add(row)
            rows.append(row)
        await session.flush()
    except BaseException:
        files.discard()
        raise
    return [r.id for r in rows if r.id is not None]
