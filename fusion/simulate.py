"""A crowd simulator for the bot protocol: truth masks, MedSAM-like proposals, volunteers.

A scenario is a JSON object, so a new scenario needs no code::

    {"seed": 0, "n_crops": 200, "crop_size": 256, "pool_size": 100,
     "answers_per_crop": [5, 15], "gold_fraction": 0.1,
     "volunteer_mix": {"good": 0.3, "noisy": 0.2, "over-segmenter": 0.1, "under-segmenter": 0.1,
                       "lazy": 0.15, "random": 0.1, "adversarial": 0.05},
     "proposal_modes": {"good": 0.4, "biased-boundary": 0.25, "leak": 0.175, "missing-part": 0.175},
     "adjust_probability": [0.4, 0.8]}

Volunteers have persistent profiles and answer accept / adjust (with a mask) / reject as the bot
lets them; how many tasks each does is long-tailed; every volunteer answers two gold crops when
they start and gold is mixed into their later tasks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

ACCEPT, ADJUST, REJECT, UNSURE, SKIP = 0, 1, 2, 3, 4
VERDICTS = ("accept", "adjust", "reject", "unsure", "skip")
PROFILES = ("good", "noisy", "over-segmenter", "under-segmenter", "lazy", "random", "adversarial")
PROPOSAL_MODES = ("good", "biased-boundary", "leak", "missing-part")
ACCEPTABLE_DICE = 0.90  # a proposal is "acceptable" when its Dice with the truth is at least this

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Scenario:
    """A crowd scenario (see the module docstring for the JSON form)."""

    seed: int = 0
    n_crops: int = 200
    crop_size: int = 256
    pool_size: int = 100
    answers_per_crop: tuple[int, int] = (5, 15)
    gold_fraction: float = 0.1
    volunteer_mix: dict[str, float] = field(
        default_factory=lambda: {
            "good": 0.3, "noisy": 0.2, "over-segmenter": 0.1, "under-segmenter": 0.1,
            "lazy": 0.15, "random": 0.1, "adversarial": 0.05,
        }
    )  # fmt: skip
    proposal_modes: dict[str, float] = field(
        default_factory=lambda: {
            "good": 0.4, "biased-boundary": 0.25, "leak": 0.175, "missing-part": 0.175,
        }
    )  # fmt: skip
    adjust_probability: tuple[float, float] = (0.4, 0.8)

    def __post_init__(self) -> None:
        _check_shares("volunteer_mix", self.volunteer_mix, PROFILES)
        _check_shares("proposal_modes", self.proposal_modes, PROPOSAL_MODES)
        lo, hi = self.answers_per_crop
        if not 1 <= lo <= hi:
            raise ValueError(
                f"answers_per_crop must be [min, max] with 1 <= min <= max, got {[lo, hi]}"
            )
        if hi > self.pool_size:
            raise ValueError(f"answers_per_crop max {hi} exceeds pool_size {self.pool_size}")
        if not 0 <= self.gold_fraction < 1:
            raise ValueError(f"gold_fraction must be in [0, 1), got {self.gold_fraction}")
        if self.crop_size < 64:
            raise ValueError(f"crop_size must be at least 64, got {self.crop_size}")
        if self.n_crops < 2:
            raise ValueError(f"n_crops must be at least 2, got {self.n_crops}")
        a, b = self.adjust_probability
        if not 0 <= a <= b <= 1:
            raise ValueError(f"adjust_probability must be [min, max] within [0, 1], got {[a, b]}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        """Build a scenario from parsed JSON; unknown keys are an error."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown scenario keys: {sorted(unknown)}")
        values = dict(data)
        for key in ("answers_per_crop", "adjust_probability"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def from_json(cls, path: Path) -> Scenario:
        """Read a scenario file."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a scenario must be a JSON object")  # noqa: TRY004
        return cls.from_dict(data)


def _check_shares(name: str, shares: dict[str, float], allowed: tuple[str, ...]) -> None:
    unknown = set(shares) - set(allowed)
    if unknown:
        raise ValueError(f"{name}: unknown names {sorted(unknown)}; allowed: {', '.join(allowed)}")
    if any(v < 0 for v in shares.values()) or not math.isclose(
        sum(shares.values()), 1.0, abs_tol=1e-6
    ):
        raise ValueError(f"{name}: shares must be non-negative and sum to 1, got {shares}")


@dataclass(frozen=True)
class Answer:
    """One volunteer's answer on one crop; ``mask`` only with ``ADJUST``.

    ``drawn``: the mask is the volunteer's own outline. False for a tool's outline that they
    only chose (a model re-run on their taps, a one-tap option): it carries no drawing bias.
    """

    crop: int
    volunteer: int
    verdict: int
    mask: Mask | None = None
    drawn: bool = True


@dataclass
class Campaign:
    """A simulated campaign: what the bot stores, plus the hidden truth for scoring.

    ``truth``/``proposals``: (N, S, S) bool; ``gold``: (N,) bool, crops whose truth the model may
    see; ``answers``: in arrival order; ``profiles``/``volunteers``: each volunteer's hidden
    profile and parameters.
    """

    scenario: Scenario
    truth: npt.NDArray[np.bool_]
    proposals: npt.NDArray[np.bool_]
    proposal_modes: list[str]
    gold: npt.NDArray[np.bool_]
    profiles: list[str]
    answers: list[Answer]
    volunteers: list[Volunteer] = field(default_factory=list)

    def acceptable(self) -> npt.NDArray[np.bool_]:
        """Whether each proposal is good enough to accept (Dice >= 0.90 with the truth)."""
        return np.array(
            [dice(p, t) >= ACCEPTABLE_DICE for p, t in zip(self.proposals, self.truth, strict=True)]
        )


def dice(a: Mask, b: Mask) -> float:
    """Dice of two masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def bounding_box(mask: Mask, margin: int = 0) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of a mask's bounding box grown by ``margin`` inside the frame, or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (
        max(0, int(rows[0]) - margin),
        min(h, int(rows[-1]) + 1 + margin),
        max(0, int(cols[0]) - margin),
        min(w, int(cols[-1]) + 1 + margin),
    )


def signed_distance(mask: Mask) -> npt.NDArray[np.float64]:
    """Signed distance of each pixel centre to the mask's boundary in pixels, positive inside.

    The boundary lies half a pixel outside the outermost mask pixels, so ``signed_distance(m) > 0``
    is ``m`` again and shifting the threshold by ``d`` grows the mask by ``d`` pixels.
    """
    if not mask.any():
        return -np.full(mask.shape, float(max(mask.shape)))
    if mask.all():
        return np.full(mask.shape, float(max(mask.shape)))
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return np.asarray(np.where(mask, inside - 0.5, 0.5 - outside), dtype=np.float64)


def smooth_field(rng: np.random.Generator, size: int, grid: int) -> npt.NDArray[np.float64]:
    """A smooth random field of unit standard deviation with about ``grid`` bumps per side."""
    noise = ndimage.gaussian_filter(
        rng.standard_normal((size, size)), size / grid / 2.0, mode="wrap"
    )
    return np.asarray(noise / (noise.std() + 1e-12), dtype=np.float64)


def blob(rng: np.random.Generator, size: int, cy: float, cx: float, ry: float, rx: float) -> Mask:
    """An ellipse at (cy, cx) with radii (ry, rx), its border modulated by 2nd-4th harmonics."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = np.arctan2(y - cy, x - cx)
    r = np.hypot((y - cy) / ry, (x - cx) / rx)
    border = 1.0 + sum(
        rng.uniform(0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)
    )
    return np.asarray(r <= border, dtype=bool)


def _truth(rng: np.random.Generator, size: int) -> Mask:
    scale = size / 256
    c = size / 2
    radius = rng.uniform(22, 55) * scale
    aspect = rng.uniform(0.7, 1.4)
    cy, cx = c + rng.uniform(-20, 20) * scale, c + rng.uniform(-20, 20) * scale
    mask = blob(rng, size, cy, cx, radius * aspect**0.5, radius / aspect**0.5)
    if rng.random() < 0.3:  # a second lobe
        angle = rng.uniform(0, 2 * np.pi)
        d = radius * rng.uniform(0.7, 1.0)
        r2 = radius * rng.uniform(0.4, 0.7)
        mask |= blob(rng, size, cy + d * np.sin(angle), cx + d * np.cos(angle), r2, r2)
    return mask


def _proposal(rng: np.random.Generator, truth: Mask, mode: str) -> Mask:
    size = truth.shape[0]
    s = signed_distance(truth)
    if mode == "good":
        return (s + 1.5 * smooth_field(rng, size, 8)) > 0
    if mode == "biased-boundary":
        bias = float(rng.choice([-1, 1])) * rng.uniform(3, 8) * size / 256
        return np.asarray((s + bias + smooth_field(rng, size, 8)) > 0, dtype=bool)
    if mode == "leak":
        ys, xs = np.nonzero(truth ^ ndimage.binary_erosion(truth))
        k = int(rng.integers(ys.size))
        r = rng.uniform(10, 22) * size / 256
        neighbour = blob(
            rng, size, ys[k] + rng.uniform(-r, r) / 2, xs[k] + rng.uniform(-r, r) / 2, r, r
        )
        return ((s + smooth_field(rng, size, 8)) > 0) | neighbour
    if mode == "missing-part":
        ys, xs = np.nonzero(truth)
        angle = rng.uniform(0, 2 * np.pi)
        proj = (ys - ys.mean()) * np.sin(angle) + (xs - xs.mean()) * np.cos(angle)
        cut = np.quantile(proj, rng.uniform(0.6, 0.8))
        y, x = np.mgrid[0:size, 0:size]
        keep = ((y - ys.mean()) * np.sin(angle) + (x - xs.mean()) * np.cos(angle)) <= cut
        return np.asarray(((s + smooth_field(rng, size, 8)) > 0) & keep, dtype=bool)
    raise ValueError(f"unknown proposal mode {mode!r}")


@dataclass(frozen=True)
class Volunteer:
    """A simulated volunteer's hidden parameters (for scoring and diagnostics, never for fusion).

    ``bias``: boundary offset in pixels (+ over-segments); ``amp``/``grid``: amplitude and
    smoothness of their boundary noise; ``tau``/``perception``: they accept a proposal whose
    Dice plus Gaussian perception noise reaches ``tau``; ``adjust``: chance they correct rather
    than reject.
    """

    profile: str
    bias: float
    amp: float
    grid: int
    tau: float
    perception: float
    adjust: float


def _volunteer(rng: np.random.Generator, profile: str, scenario: Scenario) -> Volunteer:
    scale = scenario.crop_size / 256
    adjust = rng.uniform(*scenario.adjust_probability)
    if profile == "good":
        return Volunteer(
            profile, rng.normal(0, 1) * scale, rng.uniform(1.5, 3) * scale, 8, 0.90, 0.03, adjust
        )
    if profile == "noisy":
        return Volunteer(
            profile, rng.normal(0, 1) * scale, rng.uniform(4, 7) * scale, 24, 0.90, 0.08, adjust
        )
    if profile == "over-segmenter":
        return Volunteer(
            profile, rng.uniform(3, 8) * scale, rng.uniform(1.5, 3) * scale, 8, 0.85, 0.03, adjust
        )
    if profile == "under-segmenter":
        return Volunteer(
            profile, -rng.uniform(3, 8) * scale, rng.uniform(1.5, 3) * scale, 8, 0.95, 0.03, adjust
        )
    return Volunteer(profile, 0.0, 2.0 * scale, 16, 0.90, 0.03, adjust)


def _answer(
    rng: np.random.Generator, v: Volunteer, truth: Mask, s: npt.NDArray[np.float64], quality: float
) -> tuple[int, Mask | None]:
    size = truth.shape[0]
    if v.profile == "lazy":
        return ACCEPT, None
    if v.profile == "random":
        verdict = int(rng.integers(3))
        if verdict != ADJUST:
            return verdict, None
        r = rng.uniform(15, 50, 2) * size / 256
        return ADJUST, blob(rng, size, *rng.uniform(0.25 * size, 0.75 * size, 2), *r)
    ok = quality + rng.normal(0, v.perception) >= v.tau
    if v.profile == "adversarial":
        if not ok:
            return ACCEPT, None
        if rng.random() < 0.3:
            return ADJUST, ~((s + smooth_field(rng, size, 16)) > 0)
        return REJECT, None
    if ok:
        return ACCEPT, None
    if rng.random() < v.adjust:
        return ADJUST, (s + v.bias + v.amp * smooth_field(rng, size, v.grid)) > 0
    return REJECT, None


def simulate(scenario: Scenario) -> Campaign:
    """Draw a campaign for ``scenario`` (deterministic for its seed)."""
    rng = np.random.default_rng(scenario.seed)
    n, size = scenario.n_crops, scenario.crop_size
    truth = np.stack([_truth(rng, size) for _ in range(n)])
    names = list(scenario.proposal_modes)
    modes = list(rng.choice(names, size=n, p=[scenario.proposal_modes[m] for m in names]))
    proposals = np.stack([_proposal(rng, t, str(m)) for t, m in zip(truth, modes, strict=True)])
    quality = np.array([dice(p, t) for p, t in zip(proposals, truth, strict=True)])
    n_gold = max(1, round(n * scenario.gold_fraction)) if scenario.gold_fraction > 0 else 0
    gold = np.zeros(n, dtype=bool)
    gold[rng.choice(n, size=n_gold, replace=False)] = True
    profile_names = list(scenario.volunteer_mix)
    profiles = [
        str(p)
        for p in rng.choice(
            profile_names,
            size=scenario.pool_size,
            p=[scenario.volunteer_mix[k] for k in profile_names],
        )
    ]
    volunteers = [_volunteer(rng, p, scenario) for p in profiles]
    activity = rng.pareto(1.5, scenario.pool_size) + 1.0  # long-tailed number of tasks
    start = rng.uniform(0, 0.5, scenario.pool_size)  # when each volunteer joins
    events: list[tuple[float, int, int]] = []  # (time, crop, volunteer)
    gold_ids = np.flatnonzero(gold)
    lo, hi = scenario.answers_per_crop
    for real_crop in np.flatnonzero(~gold):
        k = int(rng.integers(lo, hi + 1))
        chosen = rng.choice(scenario.pool_size, size=k, replace=False, p=activity / activity.sum())
        for v in chosen:
            events.append((start[v] + rng.uniform(0.01, 1.0), int(real_crop), int(v)))
            if gold_ids.size and rng.random() < 0.1:  # gold mixed into later work
                events.append(
                    (start[v] + rng.uniform(0.01, 1.0), int(rng.choice(gold_ids)), int(v))
                )
    seen: set[tuple[int, int]] = set()
    for v in range(scenario.pool_size):
        if gold_ids.size == 0:
            break
        onboarding = rng.choice(gold_ids, size=min(2, gold_ids.size), replace=False)
        for j, gold_crop in enumerate(onboarding):
            events.append((start[v] + 0.001 * j, int(gold_crop), v))  # onboarding gold comes first
    events.sort()
    distance = [signed_distance(t) for t in truth]
    answers = []
    for _, crop_id, volunteer_id in events:
        crop, v = int(crop_id), int(volunteer_id)
        if (crop, v) in seen:  # one answer per crop and volunteer, as the bot enforces
            continue
        seen.add((crop, v))
        verdict, mask = _answer(
            rng, volunteers[v], truth[crop], distance[crop], float(quality[crop])
        )
        answers.append(Answer(crop, v, verdict, mask))
    return Campaign(
        scenario, truth, proposals, [str(m) for m in modes], gold, profiles, answers, volunteers
    )
