"""Where training labels come from, and what each source is worth to a downstream segmenter.

``compare_label_sources`` trains the same small U-Net on the same images with masks from each
source (the phantom truth, fusion's crowd consensus, the raw proposals, ...) and scores it on an
untouched real test set: the pipeline's value in the unit that matters, test Dice. It takes
arrays, so the demo can pass the consensus its bot run produced.

For the standalone evaluation, ``simulate_label_sources`` makes the two non-truth sources
honestly from the phantom crops, without the bot: the raw proposals are the labelled fallback
proposer's masks (``inference.fallback.FallbackProposer``, what the bot proposes without a MedSAM
checkpoint), and the consensus is ``fusion``'s ``ProposalAwareFusion`` over answers of simulated
volunteers drawn from fusion's own crowd model (``fusion.simulate``: the same profiles, verdict
and correction behaviour, and the default profile mix), each volunteer answering a few crops and
two gold crops, as the bot's onboarding asks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fusion.paf import ProposalAwareFusion
from fusion.simulate import Answer, Scenario, signed_distance
from fusion.simulate import _answer as volunteer_answer
from fusion.simulate import _volunteer as draw_volunteer
from inference.fallback import FallbackProposer
from synthesis.config import SegmenterConfig
from synthesis.evaluate import evaluate_downstream
from synthesis.segmenter import dice

Images = npt.NDArray[np.floating[Any]]
Masks = npt.NDArray[np.bool_]
Progress = Callable[[str], None]
FUSION_MEAN_RADIUS = 38.5  # px: mean lesion radius of fusion's simulator at 256 px crops


@dataclass(frozen=True)
class SourceResult:
    """One label source: how close its masks are to the truth and what a model learns from them.

    ``label_dice`` is the mean Dice of the source's training masks against the truth;
    ``dice_per_seed`` the downstream model's test Dice for each seed.
    """

    source: str
    label_dice: float
    seeds: tuple[int, ...]
    dice_per_seed: tuple[float, ...]

    @property
    def dice_mean(self) -> float:
        """Mean test Dice over seeds."""
        return float(np.mean(self.dice_per_seed))

    @property
    def dice_std(self) -> float:
        """Seed-to-seed standard deviation of the test Dice."""
        return float(np.std(self.dice_per_seed))


def compare_label_sources(
    images: Images,
    truth_masks: Masks,
    other_sources: Mapping[str, Masks],
    test_images: Images,
    test_masks: Masks,
    *,
    seeds: Sequence[int],
    cfg: SegmenterConfig,
    truth_name: str = "phantom truth",
    progress: Progress | None = None,
) -> list[SourceResult]:
    """Train on ``images`` with each source's masks; test Dice on the real test set.

    Args:
        images: (N, S, S) training images in [0, 1], shared by every source.
        truth_masks: (N, S, S) bool truth for ``images`` (a source itself, and the yardstick of
            ``label_dice``).
        other_sources: name -> (N, S, S) bool masks for the same images.
        test_images: (M, S, S) images of the untouched real test set.
        test_masks: (M, S, S) bool truth of the test set.
        seeds: one downstream training per seed and source (same seeds for every source, so
            sources differ only in their masks).
        cfg: the downstream segmenter.
        truth_name: the truth's name in the results.
        progress: called with the source name after each training.
    """
    sources = {truth_name: truth_masks, **other_sources}
    for name, masks in sources.items():
        if masks.shape != images.shape:
            raise ValueError(f"source {name!r}: masks {masks.shape} != images {images.shape}")
    results = []
    for name, masks in sources.items():
        label = float(np.mean([dice(m, t) for m, t in zip(masks, truth_masks, strict=True)]))
        scores = []
        for seed in seeds:
            run = evaluate_downstream(images, masks, test_images, test_masks, cfg, seed)
            scores.append(run.dice_mean)
            if progress is not None:
                progress(name)
        results.append(SourceResult(name, label, tuple(seeds), tuple(scores)))
    return results


def propose_masks(images: Images, boxes: npt.NDArray[np.float64]) -> Masks:
    """The fallback proposer's mask for each (S, S) crop and its xyxy box (crop pixels)."""
    proposer = FallbackProposer()
    out = [
        proposer.propose(image, tuple(float(v) for v in box)).mask  # type: ignore[arg-type]
        for image, box in zip(images, boxes, strict=True)
    ]
    return np.stack(out).astype(bool)


@dataclass(frozen=True)
class CrowdSetup:
    """The simulated crowd: how many volunteers, answers per crop, gold share, profile mix."""

    volunteers: int = 20
    answers_per_crop: int = 5
    gold_fraction: float = 0.1
    mix: tuple[tuple[str, float], ...] = tuple(Scenario().volunteer_mix.items())


def simulate_consensus(
    truth: Masks, proposals: Masks, seed: int, setup: CrowdSetup | None = None
) -> tuple[Masks, int]:
    """Fusion's consensus over simulated volunteers' answers: ((N, S, S) masks, answers given).

    Volunteers come from fusion's crowd model with boundary errors scaled to these lesions
    (fusion's profiles are defined for lesions of mean radius ~38 px in 256 px crops). Gold crops
    (``gold_fraction``) are answered by every volunteer first and clamp fusion to their truth, as
    the bot's gold does; every other crop gets ``answers_per_crop`` answers.
    """
    setup = setup or CrowdSetup()
    n = len(truth)
    rng = np.random.default_rng([seed, 11])
    radius = float(np.mean([math.sqrt(m.sum() / math.pi) for m in truth]))
    scale = radius / FUSION_MEAN_RADIUS
    names = [name for name, _ in setup.mix]
    shares = np.array([share for _, share in setup.mix])
    profiles = rng.choice(names, size=setup.volunteers, p=shares / shares.sum())
    volunteers = [
        _scaled(draw_volunteer(rng, str(p), Scenario(crop_size=256)), scale) for p in profiles
    ]
    quality = np.array([dice(p, t) for p, t in zip(proposals, truth, strict=True)])
    n_gold = min(max(1, round(n * setup.gold_fraction)), n - 1)
    gold = set(rng.choice(n, size=n_gold, replace=False).tolist())
    pairs: list[tuple[int, int]] = []
    for v in range(setup.volunteers):  # onboarding: two gold crops each
        pairs += [(int(c), v) for c in rng.choice(sorted(gold), size=min(2, n_gold), replace=False)]
    k = min(setup.answers_per_crop, setup.volunteers)
    for crop in range(n):
        if crop not in gold:
            pairs += [(crop, int(v)) for v in rng.choice(setup.volunteers, size=k, replace=False)]
    answers = []
    for crop, v in pairs:
        distance = signed_distance(truth[crop])
        verdict, mask = volunteer_answer(
            rng, volunteers[v], truth[crop], distance, float(quality[crop])
        )
        answers.append(Answer(crop, v, verdict, mask))
    model = ProposalAwareFusion().fit(
        {i: proposals[i] for i in range(n)}, answers, {i: truth[i] for i in gold}
    )
    consensus = np.stack([model.result(i).mask for i in range(n)])
    return consensus, len(answers)


def _scaled(volunteer: Any, scale: float) -> Any:
    """A volunteer whose boundary offset and noise are scaled to other lesion sizes."""
    return dataclasses.replace(volunteer, bias=volunteer.bias * scale, amp=volunteer.amp * scale)


def simulate_label_sources(
    images: Images,
    truth: Masks,
    boxes: npt.NDArray[np.float64],
    seed: int,
    setup: CrowdSetup | None = None,
) -> tuple[dict[str, Masks], dict[str, float]]:
    """The raw proposals and the crowd consensus for phantom crops, and what they cost.

    Returns:
        ({"crowd consensus": masks, "raw proposals": masks}, {"answers": ..., "seconds": ...}).
    """
    import time

    start = time.perf_counter()
    proposals = propose_masks(images, boxes)
    proposed = time.perf_counter()
    consensus, answers = simulate_consensus(truth, proposals, seed, setup)
    info = {
        "answers": float(answers),
        "answers_per_crop": answers / len(truth),
        "proposal_seconds": proposed - start,
        "fusion_seconds": time.perf_counter() - proposed,
    }
    return {"crowd consensus": consensus, "raw proposals": proposals}, info
