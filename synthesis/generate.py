"""Sample masks -> generate images -> gate: synthetic pairs with their scores and provenance.

Every pair carries what is needed to trust or reproduce it: the sha256 of the generator
checkpoint, the config digest, the sampler strategy, seed and draw index (one mask is
re-drawn from ``Generator([seed, index])``), and all gate scores. Rejected pairs are returned too
(scores and provenance), so the caller can log the acceptance rate; a rate below ~30 % means the
generator or the sampler needs attention (research/synthesis.md §4.5).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from synthesis.gate import GateScores, QualityGate
from synthesis.generator import ConditionalGenerator
from synthesis.masks import MaskSampler, stack
from synthesis.train import to_signed, to_unit

logger = logging.getLogger(__name__)
Progress = Callable[[int, int, int], None]  # (candidates done, candidates total, kept so far)


@dataclass(frozen=True)
class Provenance:
    """Where a synthetic pair came from."""

    checkpoint_sha256: str
    config_digest: str
    strategy: str
    seed: int
    index: int


@dataclass(frozen=True)
class SyntheticPair:
    """A generated image (S, S) in [0, 1], its conditioning mask (S, S), scores and provenance."""

    image: npt.NDArray[np.float32]
    mask: npt.NDArray[np.bool_]
    scores: GateScores
    provenance: Provenance


@dataclass
class Generation:
    """The outcome of one ``generate_pairs`` call."""

    kept: list[SyntheticPair] = field(default_factory=list)
    rejected: list[SyntheticPair] = field(default_factory=list)
    sampler_rejections: dict[str, dict[str, int]] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def acceptance(self) -> float:
        """Share of generated candidates the gate kept."""
        total = len(self.kept) + len(self.rejected)
        return len(self.kept) / total if total else 0.0


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (the checkpoint's identity in provenance)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def generate_pairs(
    generator: ConditionalGenerator,
    sampler: MaskSampler,
    gate: QualityGate,
    n: int,
    *,
    seed: int,
    checkpoint_sha256: str,
    config_digest: str = "",
    batch_size: int = 16,
    start: int = 0,
    progress: Progress | None = None,
) -> Generation:
    """Draw ``n`` plausible masks, generate an image for each, gate them.

    Args:
        generator: a trained generator (eval mode is its own business: ``generate``).
        sampler: a fitted ``MaskSampler``.
        gate: a fitted ``QualityGate``.
        n: number of candidates (masks) to generate; at most ``n`` pairs are kept.
        seed: the sampler seed.
        checkpoint_sha256: the generator checkpoint's sha256, recorded in every pair.
        config_digest: the run config's digest, recorded in every pair.
        start: the first draw index (continue a series of draws from where it stopped).
        batch_size: masks per generator call.
        progress: called after each batch with (done, n, kept so far).
    """
    out = Generation(thresholds=gate.thresholds())
    index = start
    done = 0
    while done < n:
        count = min(batch_size, n - done)
        sampled = sampler.sample(count, seed=seed, start=index)
        index = sampled[-1].index + 1
        masks = stack(sampled)  # (B, S, S) bool
        with torch.inference_mode():
            images = to_unit(generator.generate(to_signed(masks)))  # (B, S, S) in [0, 1]
        for s, image, scores in zip(sampled, images, gate.score(images, masks), strict=True):
            prov = Provenance(checkpoint_sha256, config_digest, s.strategy, s.seed, s.index)
            pair = SyntheticPair(image, s.mask, scores, prov)
            (out.kept if scores.accepted else out.rejected).append(pair)
        done += count
        if progress is not None:
            progress(done, n, len(out.kept))
    out.sampler_rejections = sampler.rejections()
    logger.info(
        "generated %d candidates, kept %d (%.0f%%); sampler rejections %s",
        n,
        len(out.kept),
        100 * out.acceptance,
        out.sampler_rejections,
    )
    if n and out.acceptance < 0.3:
        logger.warning("gate acceptance %.0f%% is below 30%%", 100 * out.acceptance)
    return out
