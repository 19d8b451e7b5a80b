"""Crops around prompt boxes, with the exact transform back to image coordinates.

Coordinates are continuous pixel-edge coordinates: pixel ``i`` spans ``[i, i + 1)``. A crop is a
square region of the image, ``side`` pixels wide with its top-left corner at ``(x0, y0)``, stored
as ``out`` x ``out`` pixels (``out <= side``; equal unless the region is larger than the campaign's
crop size). The map is affine: ``image = origin + crop * side / out``, so boxes round-trip exactly;
masks round-trip exactly whenever ``out == side``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from bot.campaign.errors import InvalidBox

Box = tuple[float, float, float, float]  # xyxy, image pixels


@dataclass(frozen=True)
class CropTransform:
    """Where a crop sits: square image region ``[x0, x0+side) x [y0, y0+side)`` -> ``out`` px."""

    x0: int
    y0: int
    side: int
    out: int

    def __post_init__(self) -> None:
        if self.side < 1 or self.out < 1 or self.out > self.side:
            raise ValueError(f"need 1 <= out <= side, got side={self.side} out={self.out}")

    @property
    def scale(self) -> float:
        """Image pixels per crop pixel."""
        return self.side / self.out

    def to_image(self, box_crop: Box) -> Box:
        """Map an xyxy box from crop to image coordinates."""
        s = self.scale
        x0, y0, x1, y1 = box_crop
        return (self.x0 + x0 * s, self.y0 + y0 * s, self.x0 + x1 * s, self.y0 + y1 * s)

    def to_crop(self, box_image: Box) -> Box:
        """Map an xyxy box from image to crop coordinates."""
        s = self.scale
        x0, y0, x1, y1 = box_image
        return ((x0 - self.x0) / s, (y0 - self.y0) / s, (x1 - self.x0) / s, (y1 - self.y0) / s)


def validate_box(box: Box, width: int, height: int) -> Box:
    """Check an xyxy box lies inside a ``width`` x ``height`` image and has positive area."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise InvalidBox(f"box {box} has a non-finite coordinate")
    if not (x1 > x0 and y1 > y0):
        raise InvalidBox(f"box {box} is empty: need x1 > x0 and y1 > y0 (xyxy pixels)")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise InvalidBox(f"box {box} lies outside the {width}x{height} image")
    return (x0, y0, x1, y1)


def plan_crop(
    box: Box, width: int, height: int, *, margin: float, max_out: int, min_side: int = 64
) -> CropTransform:
    """Choose the square crop region for a prompt box.

    The region is the box's longer side plus ``margin`` of it on each side (at least ``min_side``),
    centred on the box and shifted to stay inside the image where the image is large enough.
    """
    x0, y0, x1, y1 = validate_box(box, width, height)
    side = max(min_side, math.ceil(max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    rx, ry = round(cx - side / 2.0), round(cy - side / 2.0)
    rx = min(max(rx, 0), width - side) if side <= width else (width - side) // 2
    ry = min(max(ry, 0), height - side) if side <= height else (height - side) // 2
    return CropTransform(x0=rx, y0=ry, side=side, out=min(side, max_out))


def _padded_region(array: npt.NDArray[np.generic], t: CropTransform) -> npt.NDArray[np.generic]:
    """The ``side`` x ``side`` region of ``array`` (H, W[, C]), zero-padded where it overhangs."""
    h, w = array.shape[:2]
    region = np.zeros((t.side, t.side, *array.shape[2:]), dtype=array.dtype)
    sx0, sy0 = max(t.x0, 0), max(t.y0, 0)
    sx1, sy1 = min(t.x0 + t.side, w), min(t.y0 + t.side, h)
    region[sy0 - t.y0 : sy1 - t.y0, sx0 - t.x0 : sx1 - t.x0] = array[sy0:sy1, sx0:sx1]
    return region


def cut_crop(image: npt.NDArray[np.uint8], t: CropTransform) -> npt.NDArray[np.uint8]:
    """Cut the crop pixels: (H, W[, 3]) uint8 image -> (out, out[, 3]) uint8."""
    region = _padded_region(image, t).astype(np.uint8)
    if t.out == t.side:
        return region
    resized = PILImage.fromarray(region).resize((t.out, t.out), PILImage.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


def _nearest_index(n_out: int, offset: int, scale: float) -> npt.NDArray[np.int64]:
    """Source index (image pixels) of each crop pixel centre along one axis."""
    centres = offset + (np.arange(n_out) + 0.5) * scale
    return np.asarray(np.floor(centres), dtype=np.int64)


def mask_to_crop(mask_hw: npt.NDArray[np.bool_], t: CropTransform) -> npt.NDArray[np.bool_]:
    """Resample an (H, W) image mask into crop space: (out, out), nearest neighbour."""
    region = _padded_region(mask_hw.astype(bool), t)
    if t.out == t.side:
        return region.astype(bool)
    idx = _nearest_index(t.out, 0, t.scale)
    return region[np.ix_(idx, idx)].astype(bool)


def mask_to_image(
    mask_crop: npt.NDArray[np.bool_], t: CropTransform, width: int, height: int
) -> npt.NDArray[np.bool_]:
    """Paste an (out, out) crop mask back into an (height, width) image mask, nearest neighbour."""
    if mask_crop.shape != (t.out, t.out):
        raise ValueError(f"mask_crop must be ({t.out}, {t.out}), got {mask_crop.shape}")
    result = np.zeros((height, width), dtype=bool)
    xs = np.arange(max(t.x0, 0), min(t.x0 + t.side, width))
    ys = np.arange(max(t.y0, 0), min(t.y0 + t.side, height))
    if xs.size == 0 or ys.size == 0:
        return result
    cx = np.floor((xs + 0.5 - t.x0) / t.scale).astype(np.int64).clip(0, t.out - 1)
    cy = np.floor((ys + 0.5 - t.y0) / t.scale).astype(np.int64).clip(0, t.out - 1)
    result[np.ix_(ys, xs)] = mask_crop[np.ix_(cy, cx)]
    return result
