"""What every proposer returns: predictions and one-tap candidates, with their quality scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Stability is measured between these two probability thresholds (logit +-1, as SAM's offset 1.0).
STABILITY_HIGH = float(1 / (1 + np.exp(-1.0)))
STABILITY_LOW = 1.0 - STABILITY_HIGH


@dataclass(frozen=True)
class Prediction:
    """A mask proposed for one image (crop) and prompt.

    Attributes:
        mask: (H, W) bool.
        prob: (H, W) float32 foreground probability.
        predicted_iou: the model's own IoU estimate (the fallback reports its stability).
        stability: IoU of the mask at probability thresholds 0.73 and 0.27 (0 for an empty mask).
        low_res_logits: (1, h, w) float32 logits to feed back as a mask prompt, or None.
        model_id: which weights (or which classical method) made it.
        unvalidated: True when a prompt kind was used that the model was not trained with.
    """

    mask: npt.NDArray[np.bool_]
    prob: npt.NDArray[np.float32]
    predicted_iou: float
    stability: float
    low_res_logits: npt.NDArray[np.float32] | None
    model_id: str
    unvalidated: bool = False


@dataclass(frozen=True)
class Candidate:
    """An alternative mask offered for a one-tap choice; ``source`` says how it was made."""

    mask: npt.NDArray[np.bool_]
    source: str
    score: float


def stability_score(prob: npt.NDArray[np.floating]) -> float:
    """IoU between the masks at the high and low thresholds; 0 when the low mask is empty."""
    union = int((prob > STABILITY_LOW).sum())
    if union == 0:
        return 0.0
    return float((prob > STABILITY_HIGH).sum() / union)


def mask_iou(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """IoU of two masks (1.0 when both are empty)."""
    union = int(np.logical_or(a, b).sum())
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """Dice coefficient of two masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return float(2 * np.logical_and(a, b).sum() / total)


def dedupe(candidates: list[Candidate], threshold: float = 0.95) -> list[Candidate]:
    """Drop empty masks and any mask with IoU >= ``threshold`` to an earlier one; order is kept."""
    kept: list[Candidate] = []
    for candidate in candidates:
        if not candidate.mask.any():
            continue
        if any(mask_iou(candidate.mask, k.mask) >= threshold for k in kept):
            continue
        kept.append(candidate)
    return kept


def jitter_boxes(
    box_xyxy: tuple[float, float, float, float], hw: tuple[int, int], fraction: float
) -> list[tuple[str, tuple[float, float, float, float]]]:
    """A smaller and a larger version of a box (by ``fraction`` of its size per side), clipped."""
    x0, y0, x1, y1 = box_xyxy
    h, w = hw
    dx, dy = (x1 - x0) * fraction, (y1 - y0) * fraction
    out = []
    for name, sign in (("box-smaller", 1.0), ("box-larger", -1.0)):
        nx0, ny0 = max(0.0, x0 + sign * dx), max(0.0, y0 + sign * dy)
        nx1, ny1 = min(float(w), x1 - sign * dx), min(float(h), y1 - sign * dy)
        if nx1 - nx0 >= 2 and ny1 - ny0 >= 2:
            out.append((name, (nx0, ny0, nx1, ny1)))
    return out


def box_from_taps(
    points_xy: npt.ArrayLike, hw: tuple[int, int], pad: float = 2.0
) -> tuple[float, float, float, float]:
    """A new box prompt from a volunteer's taps: the taps' bounding box, ``pad`` pixels looser.

    Args:
        points_xy: (P, 2) x/y crop pixels, at least two taps (e.g. two opposite corners).
        hw: the crop's (H, W); the box is clipped to it.
        pad: margin added on every side (MedSAM was trained on slightly loose boxes).
    """
    points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    if points.shape[0] < 2:
        raise ValueError(f"a box needs at least two taps, got {points.shape[0]}")
    h, w = hw
    x0, y0 = points.min(axis=0) - pad
    x1, y1 = points.max(axis=0) + pad
    box = (
        max(0.0, float(x0)),
        max(0.0, float(y0)),
        min(float(w), float(x1)),
        min(float(h), float(y1)),
    )
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        raise ValueError(f"taps {points.tolist()} span no area inside the {w}x{h} crop")
    return box
