"""Phantom data: medical-like greyscale images with exact ground-truth masks.

Four styles, each with random shape, contrast, blur and noise so that some images are easy and
some hard: ``ct`` (a hypo- or hyper-dense lesion in an organ inside a body section, HU windowed),
``ultrasound`` (a hypoechoic nodule in a speckled sector scan), ``dermoscopy`` (a pigmented lesion
with irregular border and hairs) and ``histology`` (many small dark nuclei, some touching).
Deterministic for a given seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from bot.campaign.boxes import boxes_from_mask
from bot.store.codecs import encode_mask, encode_png

STYLES = ("ct", "ultrasound", "dermoscopy", "histology")
Rng = np.random.Generator
FloatImage = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Phantom:
    """One phantom image with its truth: ``image`` (H, W) uint8, ``mask`` (H, W) bool."""

    style: str
    image: npt.NDArray[np.uint8]
    mask: Mask
    params: dict[str, float] = field(default_factory=dict)


def _grid(size: int) -> tuple[FloatImage, FloatImage]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return y, x


def blob(
    rng: Rng, size: int, centre: tuple[float, float], radius: float, irregularity: float
) -> Mask:
    """A star-shaped blob: radius ``radius`` modulated by a few random harmonics.

    Args:
        rng: random generator.
        size: side of the square output mask.
        centre: (y, x) in pixels.
        radius: mean radius in pixels.
        irregularity: 0 for an ellipse-like disc, ~0.3 for a very lobulated border.
    """
    y, x = _grid(size)
    dy, dx = y - centre[0], x - centre[1]
    theta = np.arctan2(dy, dx)
    stretch = rng.uniform(0.7, 1.3)
    angle = rng.uniform(0, math.pi)
    # Elliptical base, rotated.
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    dist = np.hypot(u * stretch, v / stretch)
    r = np.full_like(theta, radius)
    for k in range(2, 7):
        r += (
            radius
            * irregularity
            * rng.uniform(0, 1)
            / k
            * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
        )
    return dist <= r


def _smooth_noise(rng: Rng, size: int, sigma: float) -> FloatImage:
    field_ = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma)
    return np.asarray(field_ / (field_.std() + 1e-9), dtype=np.float64)


def _to_uint8(values: FloatImage, low: float, high: float) -> npt.NDArray[np.uint8]:
    scaled = np.clip((values - low) / (high - low), 0, 1)
    return np.rint(scaled * 255).astype(np.uint8)


def _ct(rng: Rng, size: int) -> Phantom:
    y, x = _grid(size)
    c = size / 2
    body = ((x - c) / (0.45 * size)) ** 2 + ((y - c) / (0.36 * size)) ** 2 <= 1
    hu = np.full((size, size), -1000.0)
    hu[body] = 40 + 8 * _smooth_noise(rng, size, 6)[body]
    spine = (x - c) ** 2 + (y - c - 0.22 * size) ** 2 <= (0.05 * size) ** 2
    hu[spine] = 700
    organ_c = (c + rng.uniform(-0.05, 0.05) * size, c - rng.uniform(0.05, 0.18) * size)
    organ = blob(rng, size, organ_c, rng.uniform(0.16, 0.22) * size, 0.15) & body & ~spine
    hu[organ] = 60 + 5 * _smooth_noise(rng, size, 4)[organ]
    mask = np.zeros((size, size), dtype=bool)
    contrast = float(rng.choice([-1, 1]) * rng.uniform(18, 70))
    for _ in range(int(rng.integers(1, 3))):
        ys, xs = np.nonzero(ndimage.binary_erosion(organ, iterations=max(3, size // 20)))
        if ys.size == 0:
            break
        pick = int(rng.integers(ys.size))
        lesion = blob(rng, size, (ys[pick], xs[pick]), rng.uniform(0.03, 0.08) * size, 0.25)
        lesion &= organ
        mask |= lesion
    hu[mask] += contrast
    blur = rng.uniform(0.4, 1.4)
    noise = rng.uniform(6, 22)
    hu = ndimage.gaussian_filter(hu, blur) + noise * rng.standard_normal((size, size))
    image = _to_uint8(hu, 40 - 200, 40 + 200)  # soft-tissue window C40/W400
    return Phantom("ct", image, mask, {"contrast_hu": contrast, "blur": blur, "noise_hu": noise})


def _ultrasound(rng: Rng, size: int) -> Phantom:
    y, x = _grid(size)
    apex = (-0.1 * size, size / 2)
    r = np.hypot(y - apex[0], x - apex[1])
    theta = np.arctan2(x - apex[1], y - apex[0])
    sector = (np.abs(theta) < math.radians(38)) & (r > 0.2 * size) & (r < 1.05 * size)
    tissue = 0.6 + 0.05 * _smooth_noise(rng, size, 8) - 0.2 * (r / size)
    centre = (rng.uniform(0.45, 0.7) * size, size / 2 + rng.uniform(-0.15, 0.15) * size)
    mask = blob(rng, size, centre, rng.uniform(0.08, 0.16) * size, 0.2) & sector
    depth = rng.uniform(0.45, 0.85)
    margin_blur = rng.uniform(1.0, 3.5)  # ill-defined (blurred) or sharp nodule margins
    tissue *= 1 - depth * ndimage.gaussian_filter(mask.astype(float), margin_blur)
    # Posterior acoustic enhancement below the nodule.
    below = ndimage.binary_dilation(mask, iterations=3) & (y > centre[0])
    tissue += 0.15 * ndimage.gaussian_filter(below.astype(float), 6)
    speckle = rng.rayleigh(scale=1 / math.sqrt(math.pi / 2), size=(size, size))
    speckle = ndimage.gaussian_filter(speckle, rng.uniform(0.5, 1.2))
    values = np.clip(tissue, 0, None) * speckle
    values[~sector] = 0
    image = _to_uint8(values, 0, float(np.percentile(values[sector], 99.5)))
    return Phantom(
        "ultrasound", image, mask, {"hypoechoic_depth": depth, "margin_blur": margin_blur}
    )


def _dermoscopy(rng: Rng, size: int) -> Phantom:
    y, x = _grid(size)
    c = size / 2
    vignette = 1 - 0.35 * (np.hypot(y - c, x - c) / (0.7 * size)) ** 2
    skin = 0.8 * vignette + 0.04 * _smooth_noise(rng, size, 10)
    centre = (c + rng.uniform(-0.12, 0.12) * size, c + rng.uniform(-0.12, 0.12) * size)
    mask = blob(rng, size, centre, rng.uniform(0.16, 0.3) * size, rng.uniform(0.1, 0.35))
    darkness = rng.uniform(0.3, 0.65)
    pigment = darkness * (0.8 + 0.2 * _smooth_noise(rng, size, 5))
    skin = skin - np.where(mask, pigment, 0)
    skin = ndimage.gaussian_filter(skin, rng.uniform(0.8, 2.5))  # soft, blurry border
    hairs = np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(0, 8))):
        t = np.linspace(0, 1, 4 * size)
        y0, x0, a = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0, math.pi)
        bend = rng.uniform(-0.3, 0.3)
        hy = (y0 + t * size * math.sin(a) + bend * size * t**2).astype(int)
        hx = (x0 + t * size * math.cos(a)).astype(int)
        ok = (hy >= 0) & (hy < size) & (hx >= 0) & (hx < size)
        hairs[hy[ok], hx[ok]] = True
    skin[ndimage.binary_dilation(hairs)] *= 0.35
    skin += 0.02 * rng.standard_normal((size, size))
    return Phantom("dermoscopy", _to_uint8(skin, 0, 1), mask, {"darkness": darkness})


def _histology(rng: Rng, size: int) -> Phantom:
    background = 0.78 + 0.06 * _smooth_noise(rng, size, 3) + 0.04 * _smooth_noise(rng, size, 15)
    mask = np.zeros((size, size), dtype=bool)
    n = int(rng.integers(12, 40))
    stain = rng.uniform(0.25, 0.5)
    for _ in range(n):
        centre = (rng.uniform(0, size), rng.uniform(0, size))
        nucleus = blob(rng, size, centre, rng.uniform(0.015, 0.035) * size, 0.12)
        mask |= nucleus
    chromatin = 0.1 * _smooth_noise(rng, size, 1)
    values = background - np.where(mask, stain + chromatin, 0)
    values = ndimage.gaussian_filter(values, rng.uniform(0.5, 1.5))
    values += 0.03 * rng.standard_normal((size, size))
    return Phantom("histology", _to_uint8(values, 0, 1), mask, {"stain": stain, "nuclei": n})


_MAKERS = {"ct": _ct, "ultrasound": _ultrasound, "dermoscopy": _dermoscopy, "histology": _histology}


def make_phantom(style: str, rng: Rng, size: int = 256) -> Phantom:
    """One phantom of ``style`` (one of ``STYLES``), ``size`` x ``size`` pixels."""
    if style not in _MAKERS:
        raise ValueError(f"style must be one of {', '.join(STYLES)} or 'mixed', got {style!r}")
    if size < 64:
        raise ValueError(f"size must be at least 64, got {size}")
    for _ in range(20):  # rare draws leave no foreground; draw again
        phantom = _MAKERS[style](rng, size)
        if phantom.mask.sum() >= 16:
            return phantom
    raise RuntimeError(f"could not draw a non-empty {style} phantom")


def jittered_boxes(
    rng: Rng, mask: Mask, max_pad: int = 3
) -> list[tuple[float, float, float, float]]:
    """Boxes a coordinator might draw: each component's tight box, loosened by 0..max_pad px."""
    h, w = mask.shape
    boxes = []
    for (x0, y0, x1, y1), _component in boxes_from_mask(mask):
        pad = rng.integers(0, max_pad + 1, size=4)
        boxes.append(
            (
                max(0.0, x0 - pad[0]),
                max(0.0, y0 - pad[1]),
                min(float(w), x1 + pad[2]),
                min(float(h), y1 + pad[3]),
            )
        )
    return boxes


def write_phantoms(
    out: Path,
    *,
    n: int,
    style: str,
    seed: int,
    size: int = 256,
    gold_fraction: float = 0.2,
    progress: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Write ``n`` phantoms to ``out`` and return the manifest.

    Layout: ``images/*.png``, ``truth/*.png`` (every mask, for evaluation only), ``gold/*.png``
    (the first ``gold_fraction`` of the masks, what a coordinator would upload as expert gold),
    ``boxes.json`` (xyxy boxes for every image) and ``manifest.json``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0 <= gold_fraction <= 1:
        raise ValueError(f"gold_fraction must be in [0, 1], got {gold_fraction}")
    if style != "mixed" and style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)} or 'mixed', got {style!r}")
    styles = STYLES if style == "mixed" else (style,)
    for folder in ("images", "truth", "gold"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    children = np.random.SeedSequence(seed).spawn(n)
    n_gold = round(n * gold_fraction)
    boxes: dict[str, list[list[float]]] = {}
    items = []
    for i, child in enumerate(children):
        rng = np.random.default_rng(child)
        kind = styles[i % len(styles)]
        phantom = make_phantom(kind, rng, size)
        name = f"{kind}_{i:04d}.png"
        (out / "images" / name).write_bytes(encode_png(phantom.image))
        mask_png = encode_mask(phantom.mask)
        (out / "truth" / name).write_bytes(mask_png)
        if i < n_gold:
            (out / "gold" / name).write_bytes(mask_png)
        boxes[name] = [list(b) for b in jittered_boxes(rng, phantom.mask)]
        items.append({"image": name, "style": kind, "gold": i < n_gold, **phantom.params})
        if progress is not None:
            progress()
    (out / "boxes.json").write_text(json.dumps(boxes, indent=1))
    manifest = {"seed": seed, "style": style, "size": size, "n": n, "gold": n_gold, "items": items}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
