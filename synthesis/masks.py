"""New plausible masks from the consensus masks: the main source of diversity in synthesis.

pix2pix has no latent noise worth the name (its authors' FAQ), so new images need new masks.
Four strategies (research/synthesis.md §2.2, §4.2), each a pure function of a mask set and a
``numpy.random.Generator``:

* ``elastic``: a smooth random displacement plus a small rotation, scaling and shift (Simard);
* ``shape_model``: PCA of clipped signed distance maps (Leventon), sampled within +-k sigma;
* ``blend``: a random point between two masks' signed distance maps;
* ``crowd``: the crowd's probability map thresholded at a random level (masks the crowd accepts).

``MaskPlausibility`` is fitted on the real masks and rejects area, component count or compactness
outside their range, and near-copies of any training mask; ``MaskSampler`` keeps a tally of
rejections per strategy so an over-aggressive setting shows up in the logs, not in the data.
Every draw ``i`` of a sampler seeded ``s`` uses its own ``Generator([s, i])``: one mask is
reproducible from its provenance (seed, index) without replaying the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from synthesis.config import SamplerConfig

Mask = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
STRATEGIES = ("elastic", "shape_model", "blend", "crowd")


def signed_distance(mask: Mask, clip: float | None = None) -> Floats:
    """(H, W) mask -> (H, W) signed distance in pixels: negative inside, positive outside."""
    m = mask.astype(bool)
    if not m.any():
        return np.full(m.shape, float(clip) if clip else float(max(m.shape)))
    dist = ndi.distance_transform_edt(~m) - ndi.distance_transform_edt(m)
    return np.clip(dist, -clip, clip) if clip else np.asarray(dist, dtype=np.float64)


def clean(mask: Mask, keep: int) -> Mask:
    """Fill holes and keep the ``keep`` largest connected components."""
    filled = ndi.binary_fill_holes(mask)
    labels, n = ndi.label(filled)
    if n <= keep:
        return np.asarray(filled, dtype=bool)
    sizes = ndi.sum(filled, labels, index=np.arange(1, n + 1))
    kept = 1 + np.argsort(sizes)[::-1][:keep]
    return np.isin(labels, kept)


def elastic_affine(mask: Mask, rng: np.random.Generator, cfg: SamplerConfig) -> Mask:
    """Smooth random displacement + rotation/scale/shift of one (H, W) mask.

    The displacement is drawn on a coarse ``elastic_grid`` and upsampled (cubic), which is both
    smooth and much cheaper than filtering a full-size noise image.
    """
    h, w = mask.shape
    side = max(h, w)
    g = cfg.elastic_grid
    coarse = rng.uniform(-1.0, 1.0, size=(2, g, g))
    coarse /= np.abs(coarse).max() + 1e-8
    disp = np.stack([ndi.zoom(c, (h / g, w / g), order=3) for c in coarse])
    disp *= cfg.elastic_alpha * side
    theta = np.deg2rad(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    scale = rng.uniform(*cfg.scale_range)
    ty, tx = rng.uniform(-cfg.max_shift, cfg.max_shift, size=2) * side
    yy, xx = np.meshgrid(
        np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij"
    )
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y0, x0 = yy - cy - ty, xx - cx - tx
    ys = (np.cos(theta) * y0 - np.sin(theta) * x0) / scale + cy + disp[0]
    xs = (np.sin(theta) * y0 + np.cos(theta) * x0) / scale + cx + disp[1]
    warped = ndi.map_coordinates(mask.astype(np.float64), [ys, xs], order=1, mode="constant")
    return np.asarray(warped > 0.5)


def sdf_blend(a: Mask, b: Mask, t: float, keep: int) -> Mask:
    """The zero level set of (1 - t) * sdf(a) + t * sdf(b): a shape between a and b."""
    return clean((1 - t) * signed_distance(a) + t * signed_distance(b) < 0, keep)


def crowd_threshold(probability: Floats, level: float, keep: int) -> Mask:
    """The crowd's (H, W) probability map (vote fraction, 0..1) at one threshold level."""
    return clean(probability >= level, keep)


class ShapeModel:
    """Linear shape model: PCA of clipped signed distance maps (Leventon et al. 2000)."""

    def __init__(self, var_kept: float = 0.95, clip: float = 20.0, max_sigma: float = 2.0) -> None:
        self.var_kept = var_kept
        self.clip = clip
        self.max_sigma = max_sigma

    def fit(self, masks: Mask) -> ShapeModel:
        """Fit on (N, H, W) masks."""
        x = np.stack([signed_distance(m, self.clip).ravel() for m in masks])
        self.shape_ = masks.shape[1:]
        self.mean_ = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        var = s**2 / max(len(x) - 1, 1)
        total = var.sum()
        k = 1 if total <= 0 else int(np.searchsorted(np.cumsum(var) / total, self.var_kept) + 1)
        self.components_ = vt[:k]
        self.std_ = np.sqrt(var[:k])
        return self

    def sample(self, rng: np.random.Generator, keep: int) -> Mask:
        """One (H, W) mask with PCA coefficients drawn within +-max_sigma."""
        z = np.clip(rng.standard_normal(len(self.std_)), -self.max_sigma, self.max_sigma)
        sdf = self.mean_ + (z * self.std_) @ self.components_
        return clean(sdf.reshape(self.shape_) < 0, keep)


def compactness(mask: Mask) -> float:
    """perimeter**2 / (4 pi area): 1-ish for a disc, larger for ragged or thin shapes."""
    m = mask.astype(bool)
    perimeter = np.count_nonzero(m & ~ndi.binary_erosion(m))
    return float(perimeter**2 / (4 * np.pi * max(int(m.sum()), 1)))


class MaskPlausibility:
    """Accept a mask only if its simple statistics lie within the real masks' range.

    Fitted on the training masks: area between the low and high quantiles (widened by ``slack``),
    no more connected components than any real mask has, compactness below the high quantile
    (widened), and IoU to every training mask at most ``max_iou_to_train`` (novelty).
    """

    def __init__(self, cfg: SamplerConfig) -> None:
        self.cfg = cfg

    def fit(self, masks: Mask) -> MaskPlausibility:
        """Fit on (N, H, W) boolean training masks."""
        self.train_ = masks.reshape(len(masks), -1).astype(bool)
        self.train_area_ = self.train_.sum(axis=1)
        area = self.train_area_.astype(np.float64)
        lo, hi = self.cfg.quantiles
        slack = self.cfg.slack
        self.area_range_ = (
            float(np.quantile(area, lo)) * (1 - slack),
            float(np.quantile(area, hi)) * (1 + slack),
        )
        self.max_components_ = max(int(ndi.label(m)[1]) for m in masks)
        comp = np.array([compactness(m) for m in masks])
        self.max_compactness_ = float(np.quantile(comp, hi)) * (1 + slack)
        return self

    def check(self, mask: Mask) -> str:
        """``"ok"`` or the first failed test: area, components, compactness or near-copy."""
        area = int(mask.sum())
        if not self.area_range_[0] <= area <= self.area_range_[1]:
            return "area"
        if ndi.label(mask)[1] > self.max_components_:
            return "components"
        if compactness(mask) > self.max_compactness_:
            return "compactness"
        flat = mask.ravel()
        inter = self.train_[:, flat].sum(axis=1)
        union = self.train_area_ + area - inter
        if (inter / np.maximum(union, 1)).max() > self.cfg.max_iou_to_train:
            return "near-copy"
        return "ok"


@dataclass(frozen=True)
class SampledMask:
    """One accepted mask and where it came from (draw ``index`` of a sampler seeded ``seed``)."""

    mask: Mask
    strategy: str
    seed: int
    index: int


class MaskSampler:
    """Strategy mixture + plausibility filter over a set of consensus masks.

    ``fit(masks, probabilities)`` learns the shape model and the filter; ``sample(n, seed)``
    returns ``n`` accepted masks and adds every draw's outcome to ``tally_[strategy][reason]``.
    """

    def __init__(self, cfg: SamplerConfig | None = None) -> None:
        self.cfg = cfg or SamplerConfig()

    def fit(self, masks: Mask, probabilities: Floats | None = None) -> MaskSampler:
        """Fit on (N, H, W) bool consensus masks and, optionally, (M, H, W) crowd probabilities."""
        if masks.ndim != 3 or len(masks) < 2:
            raise ValueError(f"masks must be (N >= 2, H, W), got shape {masks.shape}")
        cfg = self.cfg
        self.masks_ = masks.astype(bool)
        self.probabilities_ = probabilities
        self.keep_ = max(int(ndi.label(m)[1]) for m in self.masks_)
        self.shape_model_ = ShapeModel(cfg.shape_var_kept, cfg.shape_clip, cfg.shape_max_sigma)
        self.shape_model_.fit(self.masks_)
        self.plausibility_ = MaskPlausibility(cfg).fit(self.masks_)
        weights = dict(cfg.weights)
        unknown = set(weights) - set(STRATEGIES)
        if unknown:
            raise ValueError(f"weights name unknown strategies {sorted(unknown)}")
        if probabilities is None or len(probabilities) == 0:
            weights.pop("crowd", None)
        names = [s for s in STRATEGIES if weights.get(s, 0.0) > 0]
        if not names:
            raise ValueError("no sampling strategy has a positive weight")
        p = np.array([weights[s] for s in names])
        self.strategies_ = tuple(names)
        self.probs_ = p / p.sum()
        self.tally_: dict[str, Counter[str]] = {s: Counter() for s in names}
        return self

    def draw(self, rng: np.random.Generator) -> tuple[str, Mask]:
        """One unfiltered candidate: (strategy, (H, W) mask)."""
        cfg = self.cfg
        strategy = self.strategies_[int(rng.choice(len(self.strategies_), p=self.probs_))]
        n = len(self.masks_)
        if strategy == "elastic":
            mask = clean(elastic_affine(self.masks_[rng.integers(n)], rng, cfg), self.keep_)
        elif strategy == "shape_model":
            mask = self.shape_model_.sample(rng, self.keep_)
        elif strategy == "blend":
            i, j = rng.choice(n, size=2, replace=False)
            mask = sdf_blend(
                self.masks_[i], self.masks_[j], rng.uniform(*cfg.blend_range), self.keep_
            )
        else:
            assert self.probabilities_ is not None
            prob = self.probabilities_[rng.integers(len(self.probabilities_))]
            mask = crowd_threshold(prob, rng.uniform(*cfg.crowd_range), self.keep_)
        return strategy, mask

    def sample(self, n: int, seed: int, start: int = 0) -> list[SampledMask]:
        """``n`` plausible masks from draws ``start, start + 1, ...`` of the sampler ``seed``.

        Raises:
            RuntimeError: when ``max_tries_per_mask * n`` draws yield fewer than ``n`` masks.
        """
        out: list[SampledMask] = []
        budget = self.cfg.max_tries_per_mask * max(n, 1)
        index = start
        while len(out) < n:
            if index - start >= budget:
                raise RuntimeError(
                    f"mask sampler: {len(out)} of {n} masks after {budget} draws; "
                    f"rejections {self.rejections()}"
                )
            strategy, mask = self.draw(np.random.default_rng([seed, index]))
            reason = self.plausibility_.check(mask)
            self.tally_[strategy][reason] += 1
            if reason == "ok":
                out.append(SampledMask(mask, strategy, seed, index))
            index += 1
        return out

    def rejections(self) -> dict[str, dict[str, int]]:
        """Rejections so far per strategy and reason (accepted draws are not counted)."""
        return {
            s: {r: c for r, c in counts.items() if r != "ok"} for s, counts in self.tally_.items()
        }


def stack(sampled: Sequence[SampledMask]) -> Mask:
    """(N, H, W) array of the sampled masks."""
    return np.stack([s.mask for s in sampled])
