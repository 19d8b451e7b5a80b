"""What a volunteer sees of a proposal: the crop with its contour, the refine grid, re-thresholds.

Pure functions over numpy arrays; nothing here knows Telegram or the database. A crop is an
(H, W) grey or (H, W, 3) RGB uint8 array and a mask an (H, W) boolean array on the same pixels.
Images come back as deterministic PNG bytes at a phone-friendly size: the longest side is
``scale_to`` px, or the crop's own size when that is larger, and never more than ``MAX_SIDE``.
The crop is resampled by nearest neighbour (pixels stay honest, grey values unchanged) and every
line is drawn at the output resolution, so contours stay 1-2 px thin over the anatomy.

Grid cells are named row letter + column digit: "A1" is the top-left cell, "A6" the top-right.
The helpers after the public API (``as_rgb``, ``resize_nearest``, ``outline``, ...) are shared
with ``bot.campaign.cards``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from scipy import ndimage

from bot.store.codecs import encode_png

logger = logging.getLogger(__name__)

Color = tuple[int, int, int]
Box = tuple[float, float, float, float]  # xyxy, crop pixels, half-open

GRID: Final = 6
MAX_SIDE: Final = 1280
PROPOSAL_LEVEL: Final = 0.5
TIGHTER_LEVELS: Final = (0.7, 0.85)
LOOSER_LEVELS: Final = (0.3, 0.15)

CONTOUR: Final[Color] = (255, 64, 64)
SELECTED: Final[Color] = (255, 210, 0)

PHONE_PNG_LEVEL = 1  # zlib level of images only sent to phones: fast to encode
_T = TypeVar("_T", bound=np.generic)
_CROSS: Final = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
_EIGHT: Final = np.ones((3, 3), dtype=bool)


def overlay(
    crop: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
    *,
    color: Color = CONTOUR,
    width: int = 1,
    scale_to: int = 512,
) -> bytes:
    """Draw the outline of ``mask`` over ``crop``.

    Args:
        crop: (H, W) grey or (H, W, 3) RGB uint8 image.
        mask: (H, W) boolean mask; an empty mask draws no contour.
        color: RGB colour of the contour.
        width: contour thickness in output pixels (1-8), drawn just inside the mask's edge.
        scale_to: longest side of the output in pixels (see the module docstring).

    Returns:
        PNG bytes of an RGB image (out_h, out_w); the same inputs give the same bytes.
    """
    rgb = as_rgb(crop)
    mask_hw = check_mask(mask, rgb.shape[:2], "mask")
    _check_color(color, "color")
    if not 1 <= width <= 8:
        raise ValueError(f"width must be 1..8 output pixels, got {width}")
    out_hw = output_hw(rgb.shape[:2], scale_to)
    image = resize_nearest(rgb, out_hw)  # (out_h, out_w, 3)
    image[outline(resize_nearest(mask_hw, out_hw), width)] = color
    return encode_png(image, level=PHONE_PNG_LEVEL)


def output_hw(shape_hw: tuple[int, ...], scale_to: int) -> tuple[int, int]:
    """Output size for a crop of ``shape_hw``: longest side ``max(scale_to, crop)``, <= MAX_SIDE."""
    if scale_to < 1:
        raise ValueError(f"scale_to must be >= 1 pixel, got {scale_to}")
    h, w = shape_hw[:2]
    scale = min(max(scale_to, h, w), MAX_SIDE) / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def cell_labels(cells: int = GRID) -> list[str]:
    """Cell names in row-major order: ``["A1", "A2", ..., "F6"]`` for 6 cells a side."""
    if not 1 <= cells <= 26:
        raise ValueError(f"cells must be 1..26 per side, got {cells}")
    return [f"{chr(ord('A') + r)}{c + 1}" for r in range(cells) for c in range(cells)]


def box_from_cells(selected: Iterable[str], shape_hw: tuple[int, int], cells: int = GRID) -> Box:
    """The xyxy box covering the selected grid cells (their bounding box if not adjacent).

    Args:
        selected: cell labels such as ``{"A1", "B2"}``; at least one.
        shape_hw: (H, W) of the crop the grid was drawn on.
        cells: cells per side.

    Returns:
        ``(x0, y0, x1, y1)`` in crop pixels, half-open, as floats; cell edges are at
        ``i * W / cells`` and ``i * H / cells``.
    """
    h, w = shape_hw
    if h < 1 or w < 1:
        raise ValueError(f"shape_hw must be positive, got {shape_hw}")
    indices = _cell_indices(selected, cells)
    if not indices:
        raise ValueError("selected must name at least one cell")
    rows = [r for r, _ in indices]
    cols = [c for _, c in indices]
    return (
        min(cols) * w / cells,
        min(rows) * h / cells,
        (max(cols) + 1) * w / cells,
        (max(rows) + 1) * h / cells,
    )


def grid_overlay(
    crop: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.bool_],
    *,
    cells: int = GRID,
    selected: Iterable[str] = frozenset(),
    scale_to: int = 512,
) -> bytes:
    """Draw the tap-to-refine grid: contour, thin grid lines, labels and tinted selected cells.

    Args:
        crop: (H, W) grey or (H, W, 3) RGB uint8 image.
        mask: (H, W) boolean proposal whose outline is drawn.
        cells: cells per side (labels from ``cell_labels``).
        selected: labels of the cells to tint.
        scale_to: longest side of the output in pixels.

    Returns:
        PNG bytes of an RGB image (out_h, out_w).
    """
    rgb = as_rgb(crop)
    mask_hw = check_mask(mask, rgb.shape[:2], "mask")
    chosen = _cell_indices(selected, cells)
    out_h, out_w = output_hw(rgb.shape[:2], scale_to)
    image = resize_nearest(rgb, (out_h, out_w))  # (out_h, out_w, 3)
    ys = [round(i * out_h / cells) for i in range(cells + 1)]
    xs = [round(i * out_w / cells) for i in range(cells + 1)]
    for r, c in sorted(chosen):
        _blend(image[ys[r] : ys[r + 1], xs[c] : xs[c + 1]], SELECTED, 0.35)
    for i in range(1, cells):
        _blend(image[min(ys[i], out_h - 1), :], (255, 255, 255), 0.5)
        _blend(image[:, min(xs[i], out_w - 1)], (255, 255, 255), 0.5)
    image[outline(resize_nearest(mask_hw, (out_h, out_w)), 1)] = CONTOUR
    picture = PILImage.fromarray(image)
    draw = ImageDraw.Draw(picture, "RGBA")
    font = load_font(max(9, min(24, min(ys[1], xs[1]) // 5)))
    for index, label in enumerate(cell_labels(cells)):
        r, c = divmod(index, cells)
        left, top, right, bottom = draw.textbbox((xs[c] + 3, ys[r] + 2), label, font=font)
        draw.rectangle((left - 2, top - 1, right + 1, bottom + 1), fill=(0, 0, 0, 150))
        draw.text((xs[c] + 3, ys[r] + 2), label, font=font, fill=(255, 255, 255, 255))
    return encode_png(np.asarray(picture, dtype=np.uint8), level=PHONE_PNG_LEVEL)


def threshold_mask(
    prob: npt.NDArray[np.floating[Any]], level: float, *, proposal_level: float = PROPOSAL_LEVEL
) -> npt.NDArray[np.bool_]:
    """Re-threshold a probability map for "tighter" or "looser", without stray fragments.

    Rule: the proposal is ``prob >= proposal_level``. Each of its 8-connected components has a
    seed, the pixels where its probability peaks. Of ``prob >= level`` only the 8-connected
    components holding a seed are kept. A looser level thus keeps every region that touches
    the proposal and drops new islands; a tighter level keeps each region's core around its
    peak and drops fragments (usually the core is also the largest piece). Seeds do not depend
    on ``level``, so the results nest: ``threshold_mask(p, a) <= threshold_mask(p, b)`` for
    ``a >= b``. An empty proposal gives an empty mask.

    Args:
        prob: (H, W) probabilities in [0, 1].
        level: threshold in (0, 1], e.g. one of ``TIGHTER_LEVELS`` or ``LOOSER_LEVELS``.
        proposal_level: threshold that made the proposal.

    Returns:
        (H, W) boolean mask.
    """
    p = np.asarray(prob)
    if p.ndim != 2 or not np.issubdtype(p.dtype, np.floating):
        raise ValueError(f"prob must be a float (H, W) array, got {p.dtype} {p.shape}")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError("prob must hold probabilities in [0, 1] (no NaN)")
    for name, value in (("level", level), ("proposal_level", proposal_level)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {value}")
    proposal_labels, n = ndimage.label(p >= proposal_level, structure=_EIGHT)
    peaks = np.zeros(n + 1, dtype=p.dtype)
    if n:
        peaks[1:] = ndimage.maximum(p, labels=proposal_labels, index=np.arange(1, n + 1))
    seeds = (proposal_labels > 0) & (p >= peaks[proposal_labels])
    labels, _ = ndimage.label(p >= level, structure=_EIGHT)
    keep = np.unique(labels[seeds])
    return np.isin(labels, keep[keep > 0])


def as_rgb(crop: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Check a crop and return it as (H, W, 3) uint8."""
    array = np.asarray(crop)
    if array.dtype != np.uint8 or not (
        array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)
    ):
        raise ValueError(f"crop must be uint8 (H, W) or (H, W, 3), got {array.dtype} {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"crop must not be empty, got shape {array.shape}")
    return np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array


def check_mask(
    mask: npt.NDArray[np.bool_], shape_hw: tuple[int, ...], name: str
) -> npt.NDArray[np.bool_]:
    """Check a mask has the crop's (H, W) and a boolean or integer dtype; return it as bool."""
    array = np.asarray(mask)
    if array.shape != tuple(shape_hw[:2]):
        raise ValueError(f"{name} must have the crop's shape {shape_hw[:2]}, got {array.shape}")
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a boolean mask, got dtype {array.dtype}")
    return array.astype(bool)


def _check_color(color: Color, name: str) -> None:
    """Reject anything but three 0..255 channel values."""
    if len(color) != 3 or not all(0 <= int(v) <= 255 for v in color):
        raise ValueError(f"{name} must be an (r, g, b) triple of 0..255, got {color}")


def _cell_indices(selected: Iterable[str], cells: int) -> set[tuple[int, int]]:
    """(row, col) of each label, rejecting unknown ones."""
    index = {label: divmod(i, cells) for i, label in enumerate(cell_labels(cells))}
    if isinstance(selected, str):
        selected = [selected]
    unknown = sorted(str(label) for label in selected if label not in index)
    if unknown:
        last = cell_labels(cells)[-1]
        raise ValueError(f"selected has unknown cell labels {unknown}; expected A1..{last}")
    return {index[label] for label in selected}


def resize_nearest(array: npt.NDArray[_T], out_hw: tuple[int, int]) -> npt.NDArray[_T]:
    """Nearest-neighbour resize of (H, W[, C]) by pixel centres; masks and images stay aligned."""
    h, w = array.shape[:2]
    out_h, out_w = out_hw
    rows = ((2 * np.arange(out_h) + 1) * h) // (2 * out_h)
    cols = ((2 * np.arange(out_w) + 1) * w) // (2 * out_w)
    # Two 1-D takes: several times faster than one 2-D fancy index on (512, 512, 3).
    return np.ascontiguousarray(np.take(np.take(array, rows, axis=0), cols, axis=1))


def outline(mask_hw: npt.NDArray[np.bool_], width: int) -> npt.NDArray[np.bool_]:
    """The ``width``-pixel inner boundary of a mask (the frame's edge counts as outside)."""
    if not mask_hw.any():
        return mask_hw
    inner = ndimage.binary_erosion(mask_hw, structure=_CROSS, iterations=width, border_value=0)
    return np.asarray(mask_hw & ~np.asarray(inner, dtype=bool), dtype=bool)


def mix(pixels: npt.NDArray[np.uint8], color: Color, alpha: float) -> npt.NDArray[np.uint8]:
    """``pixels`` (..., 3) blended towards ``color`` by ``alpha``."""
    mixed = pixels.astype(np.float64) * (1.0 - alpha) + np.asarray(color, np.float64) * alpha
    return np.rint(mixed).astype(np.uint8)


def _blend(region: npt.NDArray[np.uint8], color: Color, alpha: float) -> None:
    """Blend a view of an image towards ``color`` in place."""
    region[...] = mix(region, color, alpha)


@functools.lru_cache(maxsize=16)
def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` px (the bitmap fallback when FreeType is missing)."""
    return ImageFont.load_default(size=size)
