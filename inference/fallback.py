"""The fallback proposer: a classical seeded segmenter for when no checkpoint is configured.

It answers the same interface as ``MedSamPredictor`` (box, taps, candidates, probability map) with
scikit-image's random walker: background seeds on a ring around the box, foreground seeds on a
small ellipse at the box centre and on the volunteer's foreground taps. Its model id says what it
is; everything shown to people labels its masks as not MedSAM's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from skimage.segmentation import random_walker

from inference.prediction import Candidate, Prediction, dedupe, jitter_boxes, stability_score

FALLBACK_ID = "fallback:random-walker-v1"
FALLBACK_LABEL = "classical random-walker proposal (no MedSAM checkpoint configured)"

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FallbackConfig:
    """Random-walker settings.

    Attributes:
        beta: edge sensitivity of the random walker (higher follows edges more tightly).
        core: radius of the central foreground seed, as a fraction of the box size.
        ring: width of the background ring around the box, in pixels.
        jitter: box change for the smaller/larger candidates, as a fraction of the box size.
    """

    beta: float = 400.0
    core: float = 0.3
    ring: int = 3
    jitter: float = 0.1


class FallbackProposer:
    """Seeded random-walker proposals for crops (no model, no GPU, deterministic)."""

    model_id = FALLBACK_ID
    label = FALLBACK_LABEL

    def __init__(self, config: FallbackConfig | None = None) -> None:
        self.config = config or FallbackConfig()

    @staticmethod
    def _grey(image: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
        array = np.asarray(image, dtype=np.float64)
        if array.ndim == 3:
            array = array[..., :3] @ np.array([0.299, 0.587, 0.114])
        if array.ndim != 2:
            raise ValueError(f"image must be (H, W) or (H, W, C), got shape {np.shape(image)}")
        low, high = float(array.min()), float(array.max())
        return (array - low) / max(high - low, 1e-8)

    def predict(
        self,
        image: npt.NDArray[np.generic],
        *,
        box: Box,
        points: npt.ArrayLike | None = None,
        point_labels: npt.ArrayLike | None = None,
    ) -> Prediction:
        """Segment the object in ``box`` (xyxy crop pixels), guided by optional taps.

        ``points`` are (P, 2) x/y pixels with ``point_labels`` 1 (foreground) or 0 (background).
        """
        grey = self._grey(image)
        h, w = grey.shape
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ValueError(f"box {box} must lie inside the {w}x{h} image with x0 < x1, y0 < y1")
        ring = self.config.ring
        # Work on the box plus a ring of background around it.
        rx0, ry0 = max(int(np.floor(x0)) - ring, 0), max(int(np.floor(y0)) - ring, 0)
        rx1, ry1 = min(int(np.ceil(x1)) + ring, w), min(int(np.ceil(y1)) + ring, h)
        region = grey[ry0:ry1, rx0:rx1]
        yy, xx = np.mgrid[ry0:ry1, rx0:rx1].astype(np.float64) + 0.5
        inside = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
        seeds = np.zeros(region.shape, dtype=np.int32)
        seeds[~inside] = 2
        if not (~inside).any():  # the box is the whole image: its border is the background
            seeds[0, :] = seeds[-1, :] = seeds[:, 0] = seeds[:, -1] = 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        rx, ry = max((x1 - x0) * self.config.core, 1.0), max((y1 - y0) * self.config.core, 1.0)
        seeds[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0] = 1
        if points is not None:
            pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            labels = np.asarray(point_labels, dtype=np.int64).reshape(-1)
            for (px, py), label in zip(pts, labels, strict=True):
                near = (xx - px) ** 2 + (yy - py) ** 2 <= 4.0
                seeds[near] = 1 if label == 1 else 2
        flat = not np.isfinite(region).all() or float(np.ptp(region)) <= 1e-12
        if flat or not (seeds == 1).any() or not (seeds == 2).any():
            # No seeds of one kind, or no contrast to walk on (a blanked or padded region).
            prob_region = np.full(region.shape, 0.5)
        else:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                # Solver round-off can leave probabilities a hair outside [0, 1]; clipped below.
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                full = random_walker(
                    region, seeds, beta=self.config.beta, mode="cg_j", return_full_prob=True
                )
            walked = np.nan_to_num(np.asarray(full[0], dtype=np.float64), nan=0.5)
            prob_region = np.clip(walked, 0.0, 1.0)
        prob = np.zeros((h, w), dtype=np.float32)
        prob[ry0:ry1, rx0:rx1] = np.where(inside, prob_region, 0.0)
        stability = stability_score(prob)
        return Prediction(
            mask=prob > 0.5,
            prob=prob,
            predicted_iou=stability,
            stability=stability,
            low_res_logits=None,
            model_id=self.model_id,
        )

    def propose(self, image: npt.NDArray[np.generic], box: Box) -> Prediction:
        """The proposal for one crop and box."""
        return self.predict(image, box=box)

    def candidates(self, image: npt.NDArray[np.generic], box: Box) -> list[Candidate]:
        """The proposal, tighter and looser thresholds, and smaller and larger boxes."""
        main = self.predict(image, box=box)
        found = [
            Candidate(main.mask, "proposal", main.predicted_iou),
            Candidate(main.prob > 0.7, "tighter", main.stability),
            Candidate(main.prob > 0.3, "looser", main.stability),
        ]
        hw = (int(np.shape(image)[0]), int(np.shape(image)[1]))
        for name, jittered in jitter_boxes(box, hw, self.config.jitter):
            other = self.predict(image, box=jittered)
            found.append(Candidate(other.mask, name, other.predicted_iou))
        return dedupe(found)
