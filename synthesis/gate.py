"""Quality gate: keep a synthetic pair only if it is faithful, realistic in intensity and novel.

Three checks (research/synthesis.md §4.5), every score kept with the pair:

1. faithfulness: a judge segmenter trained on real pairs only recovers the conditioning mask,
   Dice >= tau, where tau is a low quantile of the judge's own Dice on real validation images
   ("at least as recognisable as the harder real images"), never below ``min_dice``;
2. intensity: the 1-Wasserstein distance between the image's intensity histogram and the pooled
   real histogram is within the range real images show (a high quantile, times a slack);
3. novelty: the image's largest Pearson correlation with any training image is below
   ``max_correlation``, or below what held-out real images reach if that is higher (a toy or
   very homogeneous set has real neighbours that close, and a new real image is not a copy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from synthesis.config import GateConfig
from synthesis.segmenter import dice

Images = npt.NDArray[np.floating[Any]]
Masks = npt.NDArray[np.bool_]
Judge = Callable[[Images], Masks]


@dataclass(frozen=True)
class GateScores:
    """What the gate measured on one pair and its verdict (``failed`` names the failed checks)."""

    dice: float
    intensity_distance: float
    max_correlation: float
    accepted: bool
    failed: tuple[str, ...]


class QualityGate:
    """Fitted on real data, then scores synthetic (image, mask) pairs.

    Args:
        cfg: thresholds.
        judge: (N, S, S) images in [0, 1] -> (N, S, S) masks; trained on real pairs only.
    """

    def __init__(self, cfg: GateConfig, judge: Judge) -> None:
        self.cfg = cfg
        self.judge = judge

    def fit(self, val_images: Images, val_masks: Masks, train_images: Images) -> QualityGate:
        """Thresholds from held-out real pairs and the training images (all (N, S, S), [0, 1])."""
        cfg = self.cfg
        if len(val_images) == 0:
            raise ValueError("the gate needs at least one held-out real pair to set its thresholds")
        found = self.judge(val_images)
        self.val_dice_ = np.array([dice(f, m) for f, m in zip(found, val_masks, strict=True)])
        self.dice_threshold_ = max(
            cfg.min_dice, float(np.quantile(self.val_dice_, cfg.dice_quantile)) - cfg.dice_margin
        )
        self.edges_ = np.linspace(0.0, 1.0, cfg.histogram_bins + 1)
        real = np.concatenate([train_images, val_images])
        self.reference_cdf_ = self._cdf(real.ravel())
        real_dist = np.array([self._intensity_distance(im) for im in real])
        self.intensity_threshold_ = float(np.quantile(real_dist, cfg.intensity_quantile)) * (
            cfg.intensity_slack
        )
        self.train_ = _standardise(train_images)
        val_corr = self._max_correlation(val_images)
        self.correlation_threshold_ = max(cfg.max_correlation, float(val_corr.max(initial=0.0)))
        return self

    def _cdf(self, values: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        hist, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=self.edges_)
        return np.cumsum(hist) / max(int(hist.sum()), 1)

    def _intensity_distance(self, image: Images) -> float:
        """1-Wasserstein distance between intensity distributions (histogram CDFs)."""
        width = 1.0 / self.cfg.histogram_bins
        return float(np.abs(self._cdf(image.ravel()) - self.reference_cdf_).sum() * width)

    def _max_correlation(self, images: Images) -> npt.NDArray[np.float64]:
        """(N,) largest Pearson correlation of each image with any training image."""
        if len(images) == 0:
            return np.zeros(0)
        corr = _standardise(images) @ self.train_.T  # (N, N_train)
        return np.asarray(corr.max(axis=1), dtype=np.float64)

    def score(self, images: Images, masks: Masks) -> list[GateScores]:
        """Scores for (N, S, S) synthetic images in [0, 1] and their conditioning masks."""
        found = self.judge(images)
        corr = self._max_correlation(images)
        out = []
        for image, mask, seg, c in zip(images, masks, found, corr, strict=True):
            d = dice(seg, mask)
            dist = self._intensity_distance(image)
            failed = tuple(
                name
                for name, bad in (
                    ("dice", d < self.dice_threshold_),
                    ("intensity", dist > self.intensity_threshold_),
                    ("near-copy", c > self.correlation_threshold_),
                )
                if bad
            )
            out.append(GateScores(d, dist, float(c), not failed, failed))
        return out

    def thresholds(self) -> dict[str, float]:
        """The fitted thresholds, for provenance and logs."""
        return {
            "dice": self.dice_threshold_,
            "intensity_distance": self.intensity_threshold_,
            "max_correlation": self.correlation_threshold_,
        }


def _standardise(images: Images) -> npt.NDArray[np.float64]:
    """(N, S, S) -> (N, S*S) rows of zero mean and unit norm (dot product = Pearson r)."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norm, 1e-12), dtype=np.float64)
