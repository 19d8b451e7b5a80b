"""Proposal-aware fusion (PAF): reliability-weighted consensus for the bot's answers.

The model (after research/fusion.md):

* every volunteer ``v`` has persistent parameters shared across all crops: pixel sensitivity
  ``p_v`` and specificity ``q_v`` of their corrected masks, a boundary offset ``d_v`` in pixels
  (positive = they draw too large), their boundary spread (how far their outline strays from the
  truth's; near their own outline their pixels count for little), and a 2x3 confusion matrix
  ``pi_v[A, verdict]`` of their accept/adjust/reject verdicts given whether the proposal is
  acceptable (``A``); each is shrunk toward the community's values while a volunteer has few
  answers;
* each crop has a latent mask ``T`` and a latent "proposal acceptable" flag ``A``; the proposal is
  one more rater whose sensitivity and specificity depend on ``A``;
* gold crops clamp ``T`` (and ``A``) to the expert's truth; unsure and skip carry no evidence;
* volunteers whose masks or verdicts anti-correlate with the truth (adversaries) are neutralised:
  their answers weigh nothing.

``fit`` runs batch EM over a whole campaign; ``add`` folds one new answer in, re-estimating only
its crop and the sufficient statistics it touches; ``decide`` says retire, continue or escalate.
All arrays are NumPy; the state is plain data (``state_dict``/``from_state``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from fusion.simulate import (
    ACCEPT,
    ADJUST,
    REJECT,
    Answer,
    bounding_box,
    dice,
    signed_distance,
)

Mask = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
Distance = npt.NDArray[np.float32]  # signed distance maps, px
Decision = Literal["retire", "continue", "escalate"]
METHOD_VERSION = "paf-1"
_EPS = 1e-4


@dataclass(frozen=True)
class PAFConfig:
    """Hyperparameters.

    Attributes:
        n_iter: most EM iterations of a batch fit.
        tol: a batch fit stops once an iteration changes the consensus of fewer pixels than this
            share of the campaign's consensus area.
        roi_margin: pixels around the union of proposal and masks where the crop is modelled.
        smoothing: Gaussian sigma (px) applied to the pixel log-odds.
        mask_prior: shrinkage of a volunteer's sensitivity/specificity, in masks.
        offset_prior: shrinkage of a volunteer's boundary offset toward 0, in masks.
        vote_prior: shrinkage of a volunteer's verdict confusion matrix, in answers.
        acceptable_dice: Dice of a gold proposal above which it counts as acceptable.
        adversary_margin: a volunteer is an adversary when ``p + q - 1`` (masks) or their
            accept-rate difference (verdicts) is below minus this.
    """

    n_iter: int = 12
    tol: float = 0.005
    roi_margin: int = 12
    smoothing: float = 1.0
    mask_prior: float = 0.5
    offset_prior: float = 0.5
    vote_prior: float = 3.0
    acceptable_dice: float = 0.90
    adversary_margin: float = 0.1


@dataclass
class _Crop:
    """What the model keeps for one crop (everything cropped to its ROI)."""

    proposal: Mask  # full size
    roi: tuple[int, int, int, int]  # y0, y1, x0, x1
    gold: Mask | None = None  # full size
    answers: dict[int, tuple[int, Mask | None, Distance | None]] = field(default_factory=dict)
    # volunteer -> (verdict, ROI mask, ROI signed distance of the mask)
    windows: dict[int, tuple[tuple[int, int, int, int], Distance]] = field(default_factory=dict)
    # volunteer -> (window around their mask, its signed distance there): kept so that widening
    # the ROI re-places distance maps instead of recomputing them
    prob: FloatArray | None = None  # ROI
    accept: float = 0.5
    contributions: dict[int, tuple[float, float, float, float, float, float]] = field(
        default_factory=dict
    )  # volunteer -> (has_mask, sensitivity, specificity, offset, P(A), spread), last estimate
    applied: dict[int, int] = field(default_factory=dict)  # volunteer -> verdict counted
    tools: set[int] = field(default_factory=set)  # volunteers whose mask is a tool's outline
    stack: tuple[list[int], Distance, FloatArray] | None = None
    # (volunteers with a mask, their (K, h, w) signed distances, their mask areas): a cache


@dataclass
class CropResult:
    """Fusion's answer for one crop: consensus (full size), probabilities, confidence."""

    mask: Mask
    prob: npt.NDArray[np.float32]
    confidence: float
    accept_probability: float
    answers: int
    masks: int


@dataclass(frozen=True)
class VolunteerReport:
    """What the model has learned about one volunteer."""

    volunteer: int
    sensitivity: float
    specificity: float
    offset_px: float
    spread_px: float  # mean distance of their outline from the consensus outline
    reliability: float  # p + q - 1 of their masks (0 without masks: unknown)
    vote_skill: float  # P(accept | acceptable) - P(accept | not acceptable)
    spammer_score: float  # 1 = answers independent of the truth
    adversary: bool
    masks: int
    verdicts: int


def _perimeter(mask: Mask) -> float:
    """Euclidean boundary length estimate: pixel edges between inside and outside, times pi/4."""
    edges = np.count_nonzero(mask[1:, :] != mask[:-1, :]) + np.count_nonzero(
        mask[:, 1:] != mask[:, :-1]
    )
    return float(edges) * math.pi / 4


# px: beyond this outside a mask, every distance reads -DISTANCE_BAND. Wider than any boundary
# offset plus spread the simulator's over- and under-segmenters show (3-8 px plus 2-4 px).
DISTANCE_BAND = 16.0


def _banded_distance(mask: Mask) -> tuple[tuple[int, int, int, int], Distance]:
    """(window, signed distance in it) of a mask, clipped below at ``-DISTANCE_BAND``.

    The window is the mask's bounding box plus the band (inside the frame), so the distances in
    it are those of the whole frame; an empty mask gets an empty window.
    """
    window = bounding_box(mask, int(DISTANCE_BAND))
    if window is None:
        return (0, 0, 0, 0), np.zeros((0, 0), dtype=np.float32)
    y0, y1, x0, x1 = window
    distance = np.maximum(signed_distance(mask[y0:y1, x0:x1]), -DISTANCE_BAND)
    return window, distance.astype(np.float32)


class ProposalAwareFusion:
    """Batch and online proposal-aware fusion; see the module docstring."""

    def __init__(self, config: PAFConfig | None = None) -> None:
        self.config = config or PAFConfig()
        self.crops: dict[int, _Crop] = {}
        self.sums: dict[
            int, FloatArray
        ] = {}  # volunteer -> [n_masks, Σsens, Σspec, Σoffset, votes(2x3)]
        self.community = np.array([0.9, 0.9])  # mean sensitivity, specificity
        self.community_votes = np.array([[0.2, 0.5, 0.3], [0.8, 0.1, 0.1]])
        self.proposal_rates = np.array([[0.85, 0.85], [0.95, 0.97]])  # [A] -> (sens, spec)
        self.prior_accept = 0.5
        self.gamma = 0.3
        self.community_spread = 2.0  # px between a typical outline and the truth's
        self.loss_history_: list[float] = []

    # -- data ----------------------------------------------------------------------------------

    def add_crop(self, crop: int, proposal: Mask, gold: Mask | None = None) -> None:
        """Register a crop with its proposal (and the expert's mask for a gold crop)."""
        if proposal.ndim != 2:
            raise ValueError(f"proposal must be (H, W), got shape {proposal.shape}")
        if gold is not None and gold.shape != proposal.shape:
            raise ValueError(f"gold mask {gold.shape} does not match the proposal {proposal.shape}")
        self.crops[crop] = _Crop(
            proposal.astype(bool), (0, 0, 0, 0), None if gold is None else gold.astype(bool)
        )
        self._set_roi(crop)

    def _bounds(self, mask: Mask) -> tuple[int, int, int, int] | None:
        """(y0, y1, x0, x1) of a mask's bounding box plus the ROI margin, or None if empty."""
        return bounding_box(mask, self.config.roi_margin)

    def _set_roi(self, crop: int) -> None:
        c = self.crops[crop]
        union = c.proposal if c.gold is None else c.proposal | c.gold
        h, w = union.shape
        c.roi = self._bounds(union) or (0, h, 0, w)

    def _grow_roi(self, crop: int, mask: Mask) -> None:
        """Widen a crop's ROI to hold a new mask, re-cropping what it already holds."""
        c = self.crops[crop]
        bounds = self._bounds(mask)
        if bounds is None:
            return
        y0, y1, x0, x1 = c.roi
        new = (min(y0, bounds[0]), max(y1, bounds[1]), min(x0, bounds[2]), max(x1, bounds[3]))
        if new == c.roi:
            return
        full = {
            v: (r, self._uncrop(c, roi_mask) if roi_mask is not None else None)
            for v, (r, roi_mask, _) in c.answers.items()
        }
        c.roi = new
        c.prob = None
        c.stack = None
        for v, (r, full_mask) in full.items():
            c.answers[v] = self._prepared(c, v, r, full_mask)

    def _uncrop(self, c: _Crop, roi_mask: Mask) -> Mask:
        y0, y1, x0, x1 = c.roi
        full = np.zeros(c.proposal.shape, dtype=bool)
        full[y0:y1, x0:x1] = roi_mask
        return full

    def _prepared(
        self, c: _Crop, volunteer: int, verdict: int, mask: Mask | None
    ) -> tuple[int, Mask | None, Distance | None]:
        """An answer as the E-step uses it: its mask and signed distance cut to the ROI.

        The signed distance is computed once per answer, in a window reaching ``DISTANCE_BAND``
        pixels beyond the mask, and is ``-DISTANCE_BAND`` further out: a function of the mask
        alone, so a batch fit and a stream of online updates see the same numbers.
        """
        if mask is None:
            c.windows.pop(volunteer, None)
            return verdict, None, None
        if volunteer not in c.windows:
            c.windows[volunteer] = _banded_distance(mask)
        (wy0, wy1, wx0, wx1), window = c.windows[volunteer]
        y0, y1, x0, x1 = c.roi
        distance = np.full((y1 - y0, x1 - x0), -DISTANCE_BAND, dtype=np.float32)
        iy0, iy1, ix0, ix1 = max(y0, wy0), min(y1, wy1), max(x0, wx0), min(x1, wx1)
        if iy0 < iy1 and ix0 < ix1:
            distance[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = window[
                iy0 - wy0 : iy1 - wy0, ix0 - wx0 : ix1 - wx0
            ]
        return verdict, mask[y0:y1, x0:x1].copy(), distance

    def _add_answer(self, answer: Answer) -> None:
        if answer.crop not in self.crops:
            raise KeyError(f"crop {answer.crop} was not added (add_crop first)")
        c = self.crops[answer.crop]
        if answer.verdict not in (ACCEPT, ADJUST, REJECT):
            return  # unsure and skip carry no evidence
        mask = answer.mask
        if answer.verdict == ADJUST:
            if mask is None or mask.shape != c.proposal.shape:
                raise ValueError(f"an adjust answer needs a {c.proposal.shape} mask")
            self._grow_roi(answer.crop, mask)
        else:
            mask = None
        c.windows.pop(answer.volunteer, None)  # a new answer replaces the volunteer's last
        c.answers[answer.volunteer] = self._prepared(c, answer.volunteer, answer.verdict, mask)
        if mask is not None and not answer.drawn:
            c.tools.add(answer.volunteer)
        else:
            c.tools.discard(answer.volunteer)
        c.stack = None
        self.sums.setdefault(answer.volunteer, np.zeros(11))

    # -- parameters ----------------------------------------------------------------------------

    def _shrunk(self, v: int) -> tuple[float, float, float, float, FloatArray, FloatArray]:
        """A volunteer's raw estimates, shrunk toward the community by the configured priors.

        Returns ``(p, q, offset, spread, votes[2, 3], pi[2, 3])``, before neutralisation and caps.
        """
        s = self.sums.get(v)
        if s is None:
            s = np.zeros(11)
        k, kv = self.config.mask_prior, self.config.vote_prior
        n = float(s[0])
        p = (float(s[1]) + k * float(self.community[0])) / (n + k)
        q = (float(s[2]) + k * float(self.community[1])) / (n + k)
        offset = float(s[3]) / (n + self.config.offset_prior)
        spread = (float(s[10]) + k * self.community_spread) / (n + k)
        votes = s[4:10].reshape(2, 3)
        pi = (votes + kv * self.community_votes) / (votes.sum(axis=1, keepdims=True) + kv)
        return p, q, offset, spread, votes, pi

    def _volunteer_params(self, v: int) -> tuple[float, float, float, FloatArray, float]:
        """(p, q, offset, pi[2, 3], boundary spread) of a volunteer, as the E-step uses them.

        Adversaries come back neutral (p = q = 0.5, equal verdict rows).
        """
        p, q, offset, spread, _, pi = self._shrunk(v)
        # Neutralise adversaries smoothly (a hard switch makes EM oscillate): evidence fades to
        # nothing as a volunteer's skill falls from +margin to 0 and stays nothing below.
        margin = self.config.adversary_margin
        fade = min(1.0, max(0.0, (p + q - 1) / margin))
        p, q = 0.5 + fade * (p - 0.5), 0.5 + fade * (q - 0.5)
        skill = float(pi[1, ACCEPT] - pi[0, ACCEPT])
        vote_fade = min(1.0, max(0.0, skill / margin))
        if vote_fade < 1.0:
            mean = pi.mean(axis=0, keepdims=True)
            pi = mean + vote_fade * (pi - mean)
        # No single volunteer's pixel may weigh more than log(0.98 / 0.02) ~ 3.9.
        p, q = min(0.98, max(0.02, p)), min(0.98, max(0.02, q))
        return p, q, offset, np.maximum(pi, _EPS), max(spread, 0.5)

    # -- E-step for one crop -------------------------------------------------------------------

    def _stack(self, c: _Crop) -> tuple[list[int], Distance, FloatArray]:
        """The crop's masks as arrays: volunteers, (K, h, w) signed distances, (K,) areas."""
        if c.stack is None:
            voters = [v for v in sorted(c.answers) if c.answers[v][1] is not None]
            y0, y1, x0, x1 = c.roi
            distances = np.zeros((len(voters), y1 - y0, x1 - x0), dtype=np.float32)
            areas = np.zeros(len(voters))
            for k, v in enumerate(voters):
                _, roi_mask, distance = c.answers[v]
                assert roi_mask is not None
                assert distance is not None
                distances[k] = distance
                areas[k] = float(roi_mask.sum())
            c.stack = (voters, distances, areas)
        return c.stack

    def _estimate(self, crop: int) -> None:
        """Re-estimate one crop and replace its answers' contributions to the volunteer sums."""
        c = self.crops[crop]
        y0, y1, x0, x1 = c.roi
        proposal = c.proposal[y0:y1, x0:x1]
        params = {v: self._volunteer_params(v) for v in sorted(c.answers)}
        voters, distances, areas = self._stack(c)
        p = np.array([params[v][0] for v in voters])
        q = np.array([params[v][1] for v in voters])
        # A tool's outline carries none of the volunteer's drawing bias: nothing to undo.
        offsets = np.array(
            [0.0 if v in c.tools else params[v][2] for v in voters], dtype=np.float32
        )
        spreads = np.array([params[v][4] for v in voters], dtype=np.float32)
        shifted = distances - offsets[:, None, None]  # > 0: inside the offset-corrected mask
        corrected = shifted > 0
        if c.gold is not None:
            truth = c.gold[y0:y1, x0:x1]
            prob = truth.astype(np.float64)
            accept = float(dice(c.proposal, c.gold) >= self.config.acceptable_dice)
        else:
            lam = math.log(self.prior_accept / (1 - self.prior_accept))
            for v in sorted(c.answers):
                verdict = c.answers[v][0]
                pi = params[v][3]
                lam += math.log(pi[1, verdict] / pi[0, verdict])
            accept = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, lam))))
            evidence = np.zeros(proposal.shape)
            if voters:
                # A rater's pixels count fully only beyond its boundary spread: near its own
                # outline, a wobbly rater says little.
                ramp = np.minimum(np.abs(shifted) / spreads[:, None, None], 1.0)
                inside = np.log(p / (1 - q)).astype(np.float32)[:, None, None]
                outside = np.log((1 - p) / q).astype(np.float32)[:, None, None]
                evidence = (ramp * np.where(corrected, inside, outside)).sum(
                    axis=0, dtype=np.float64
                )
            # Only the volunteers' evidence is smoothed (it is noisy pixel by pixel); smoothing
            # the asymmetric prior and proposal terms would shift the boundary.
            if self.config.smoothing > 0 and evidence.any():
                evidence = ndimage.gaussian_filter(evidence, self.config.smoothing)
            logit = evidence + math.log(self.gamma / (1 - self.gamma))
            # The proposal is one more rater, its quality a mixture over "acceptable".
            (pp0, pq0), (pp1, pq1) = self.proposal_rates
            pp = accept * pp1 + (1 - accept) * pp0
            pq = accept * pq1 + (1 - accept) * pq0
            logit += np.where(proposal, math.log(pp / (1 - pq)), math.log((1 - pp) / pq))
            prob = 1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))
        c.prob, c.accept = prob, accept
        # Contributions of this crop's answers to each volunteer's sufficient statistics.
        for v, old in c.contributions.items():
            self._apply(v, -1.0, *old, c.applied.get(v))  # the verdict it was counted with
        c.contributions, c.applied = {}, {}
        measured: dict[int, tuple[float, float, float, float, float, float]] = {}
        if voters:
            consensus = prob > 0.5
            consensus_area = float(consensus.sum())
            perimeter = max(_perimeter(consensus), 1.0)
            flat = corrected.reshape(len(voters), -1)
            reference = prob.reshape(-1)
            fg = max(float(reference.sum()), _EPS)
            bg = max(float((1 - reference).sum()), _EPS)
            sens = (flat @ reference) / fg
            spec = (~flat @ (1 - reference)) / bg
            # How far out the drawn boundary lies on average, from the extra area over the
            # consensus: Steiner's formula A(b) = A + P b + pi b^2 solved for b.
            root = np.sqrt(np.maximum(perimeter**2 + 4 * math.pi * (areas - consensus_area), 0))
            drawn = (root - perimeter) / (2 * math.pi)
            # Mean distance between the corrected outline and the consensus outline.
            strays = (flat != consensus.reshape(-1)).sum(axis=1) / perimeter
            for k, v in enumerate(voters):
                measured[v] = (
                    1.0,
                    float(sens[k]),
                    float(spec[k]),
                    # a tool's outline says nothing of how they draw: it leaves the offset be
                    params[v][2] if v in c.tools else float(drawn[k]),
                    accept,
                    float(strays[k]),
                )
        for v in sorted(c.answers):
            contribution = measured.get(v, (0.0, 0.0, 0.0, 0.0, accept, 0.0))
            c.contributions[v] = contribution
            c.applied[v] = c.answers[v][0]
            self._apply(v, 1.0, *contribution, c.answers[v][0])

    def _apply(
        self,
        v: int,
        sign: float,
        has: float,
        sens: float,
        spec: float,
        offset: float,
        accept: float,
        spread: float,
        verdict: int | None,
    ) -> None:
        s = self.sums.setdefault(v, np.zeros(11))
        s[0] += sign * has
        s[1] += sign * sens
        s[2] += sign * spec
        s[3] += sign * offset
        s[10] += sign * spread
        if verdict is not None:
            s[4 + verdict] += sign * (1 - accept)
            s[7 + verdict] += sign * accept

    # -- M-step for shared parameters ----------------------------------------------------------

    def _typical(self, column: int) -> float | None:
        """The mask-weighted median over volunteers of their mean of ``sums[:, column]``.

        A median, because random and adversarial raters (a few percent of a crowd) stray tens of
        pixels from the outline and miss most of the structure: in a mean they would set the
        prior of every newcomer (and in a large pool of occasional volunteers nearly everyone is
        a newcomer), so that a good correction from a newcomer could not outvote a bad proposal.
        """
        values, weights = [], []
        for v in sorted(self.sums):
            n = float(self.sums[v][0])
            if n > 0.5:
                values.append(float(self.sums[v][column]) / n)
                weights.append(n)
        if not values:
            return None
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(np.asarray(weights)[order])
        middle = int(np.searchsorted(cumulative, cumulative[-1] / 2))
        return float(np.asarray(values)[order][middle])

    def _refresh_shared(self) -> None:
        """Community priors, proposal-as-rater rates, P(acceptable) and foreground share."""
        total = np.zeros(11)
        for v in sorted(self.sums):
            total += self.sums[v]
        if total[0] >= 1:
            spread, sens, spec = self._typical(10), self._typical(1), self._typical(2)
            self.community_spread = 2.0 if spread is None else spread
            self.community = np.clip(
                np.array([0.9 if sens is None else sens, 0.9 if spec is None else spec]),
                0.55,
                0.995,
            )
        votes = total[4:10].reshape(2, 3)
        self.community_votes = (votes + 1.0) / (votes.sum(axis=1, keepdims=True) + 3.0)
        stats = np.zeros((2, 3))  # [A] -> (weight, Σ sens, Σ spec)
        accepts, fg, area = [], 0.0, 0.0
        for crop in sorted(self.crops):
            c = self.crops[crop]
            if c.prob is None:
                continue
            if c.gold is None and c.answers:
                accepts.append(c.accept)
            if c.gold is None and not any(m is not None for _, m, _ in c.answers.values()):
                # Without gold or a mask (drawn or a tool's), a crop's pixels are the proposal seen
                # through the current rates: counting them would let the rates confirm
                # themselves (a soft halo of foreground around every proposal, growing).
                continue
            y0, y1, x0, x1 = c.roi
            proposal = c.proposal[y0:y1, x0:x1]
            w_fg = max(c.prob.sum(), _EPS)
            w_bg = max((1 - c.prob).sum(), _EPS)
            sens = float((c.prob * proposal).sum() / w_fg)
            spec = float(((1 - c.prob) * ~proposal).sum() / w_bg)
            for a, weight in ((1, c.accept), (0, 1 - c.accept)):
                stats[a] += weight * np.array([1.0, sens, spec])
            fg += float(c.prob.sum())
            area += c.prob.size
        prior = np.array([[0.85, 0.85], [0.95, 0.97]])
        self.proposal_rates = np.clip((stats[:, 1:3] + 2 * prior) / (stats[:, :1] + 2), 0.5, 0.999)
        if accepts:
            self.prior_accept = float(np.clip((sum(accepts) + 1) / (len(accepts) + 2), 0.05, 0.95))
        if area:
            self.gamma = float(np.clip(fg / area, 0.02, 0.98))

    # -- public API ----------------------------------------------------------------------------

    def fit(
        self,
        proposals: dict[int, Mask],
        answers: list[Answer],
        gold: dict[int, Mask] | None = None,
    ) -> Self:
        """Batch EM over a whole campaign; deterministic, whatever the order of ``answers``."""
        gold = gold or {}
        self.crops, self.sums = {}, {}
        for crop in sorted(proposals):
            self.add_crop(crop, proposals[crop], gold.get(crop))
        ordered = sorted(answers, key=lambda a: (a.crop, a.volunteer))
        for answer in ordered:  # every ROI at its final size first: one distance map per mask
            if answer.verdict == ADJUST and answer.mask is not None and answer.crop in self.crops:
                self._grow_roi(answer.crop, answer.mask)
        for answer in ordered:
            self._add_answer(answer)
        return self.refit()

    def refit(self) -> Self:
        """Batch EM from scratch over every crop and answer the model holds (the periodic job)."""
        self.sums = {v: np.zeros(11) for v in self.sums}
        self.community = np.array([0.9, 0.9])
        self.community_votes = np.array([[0.2, 0.5, 0.3], [0.8, 0.1, 0.1]])
        self.proposal_rates = np.array([[0.85, 0.85], [0.95, 0.97]])
        self.prior_accept, self.gamma = 0.5, 0.3
        self.community_spread = 2.0
        self.loss_history_ = []
        for c in self.crops.values():
            c.contributions, c.prob, c.accept = {}, None, 0.5
        for _ in range(self.config.n_iter):
            previous = {
                k: (c.prob.copy() if c.prob is not None else None) for k, c in self.crops.items()
            }
            for crop in sorted(self.crops):
                self._estimate(crop)
            self._refresh_shared()
            flipped, area = 0.0, 0.0
            for k, c in self.crops.items():
                before = previous[k]
                if c.prob is None:
                    continue
                now = c.prob > 0.5
                area += float(np.count_nonzero(now))
                if before is None or before.shape != c.prob.shape:
                    flipped += float(now.size)
                else:
                    flipped += float(np.count_nonzero(now != (before > 0.5)))
            self.loss_history_.append(flipped / max(area, 1.0))
            if self.loss_history_[-1] < self.config.tol:
                break
        return self

    def add(self, answer: Answer) -> CropResult:
        """Fold one new answer in: re-estimate its crop only, update the sums it touches."""
        self._add_answer(answer)
        self._estimate(answer.crop)
        return self.result(answer.crop)

    def result(self, crop: int) -> CropResult:
        """The current consensus of a crop (full size)."""
        c = self.crops[crop]
        if c.prob is None:
            self._estimate(crop)
        assert c.prob is not None
        y0, y1, x0, x1 = c.roi
        prob = np.zeros(c.proposal.shape, dtype=np.float32)
        prob[y0:y1, x0:x1] = c.prob
        mask = prob > 0.5
        expected = (
            2
            * float((c.prob * (c.prob > 0.5)).sum())
            / max(float(c.prob.sum() + (c.prob > 0.5).sum()), _EPS)
        )
        masks = sum(1 for _, m, _ in c.answers.values() if m is not None)
        return CropResult(mask, prob, expected, c.accept, len(c.answers), masks)

    def decide(
        self, crop: int, *, confidence: float = 0.95, min_answers: int = 2, max_answers: int = 10
    ) -> Decision:
        """Retire, continue or escalate a crop after its latest answer.

        Retire when the crowd is sure (the proposal is acceptable, or enough corrections agree),
        escalate when ``max_answers`` were spent without that, else continue.
        """
        c = self.crops[crop]
        if c.gold is not None:
            return "retire"
        result = self.result(crop)
        prob = c.prob
        assert prob is not None
        uncertain = float(((prob > 0.2) & (prob < 0.8)).sum()) / max(float((prob > 0.5).sum()), 1.0)
        if result.answers >= min_answers and c.accept >= confidence:
            return "retire"
        if c.accept <= 1 - confidence and result.masks >= 2 and uncertain < 0.1:
            return "retire"
        if result.answers >= max_answers:
            return "escalate"
        return "continue"

    def volunteers(self) -> list[VolunteerReport]:
        """What was learned about each volunteer."""
        reports = []
        for v in sorted(self.sums):
            n = float(self.sums[v][0])
            p, q, offset, spread, votes, pi = self._shrunk(v)
            reliability = float(p + q - 1) if n >= 1 else 0.0
            vote_skill = float(pi[1, ACCEPT] - pi[0, ACCEPT])
            informative = max(abs(reliability), abs(vote_skill)) if n >= 1 else abs(vote_skill)
            adversary = reliability < -self.config.adversary_margin or (
                vote_skill < -self.config.adversary_margin and votes.sum() >= 2
            )
            reports.append(
                VolunteerReport(
                    volunteer=v,
                    sensitivity=float(p),
                    specificity=float(q),
                    offset_px=offset,
                    spread_px=spread,
                    reliability=reliability,
                    vote_skill=vote_skill,
                    spammer_score=float(np.clip(1 - informative / 0.5, 0, 1)),
                    adversary=bool(adversary),
                    masks=round(n),
                    verdicts=round(float(votes.sum())),
                )
            )
        return reports

    def state_dict(self) -> dict[str, Any]:
        """The learned parameters as plain, JSON-serialisable data (crops are not included)."""
        return {
            "method_version": METHOD_VERSION,
            "config": asdict(self.config),
            "sums": {str(v): s.tolist() for v, s in sorted(self.sums.items())},
            "community": self.community.tolist(),
            "community_votes": self.community_votes.tolist(),
            "proposal_rates": self.proposal_rates.tolist(),
            "community_spread": self.community_spread,
            "prior_accept": self.prior_accept,
            "gamma": self.gamma,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ProposalAwareFusion:
        """Restore parameters saved by ``state_dict``."""
        if state.get("method_version") != METHOD_VERSION:
            raise ValueError(f"state is from {state.get('method_version')!r}, not {METHOD_VERSION}")
        model = cls(PAFConfig(**state["config"]))
        model.sums = {int(v): np.asarray(s, dtype=np.float64) for v, s in state["sums"].items()}
        model.community = np.asarray(state["community"], dtype=np.float64)
        model.community_votes = np.asarray(state["community_votes"], dtype=np.float64)
        model.proposal_rates = np.asarray(state["proposal_rates"], dtype=np.float64)
        model.community_spread = float(state["community_spread"])
        model.prior_accept = float(state["prior_accept"])
        model.gamma = float(state["gamma"])
        return model
