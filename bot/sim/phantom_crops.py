"""Phantom crops for the downstream evaluation: fixed-size (image, truth mask, box) triples.

The evaluation (``bot.sim.enhancement``) needs many small labelled pairs whose truth is exact and
a real test set that no training step ever sees. Phantoms give both: each phantom image is cut
into one crop per lesion box, as the bot would show it to a volunteer (square region around the
box, ``bot.campaign.crops.plan_crop``), resized to ``size`` x ``size`` (image bilinear, mask
nearest, so the mask stays a mask). The split into a labelled *pool* and a *test* set is by source
image, so no test crop shares pixels with a training crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from bot.campaign.boxes import gold_for_box
from bot.campaign.crops import cut_crop, mask_to_crop, plan_crop
from bot.sim.phantom import STYLES, jittered_boxes, make_phantom

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class CropSet:
    """Crops of phantom images.

    Attributes:
        images: (N, S, S) float32 in [0, 1].
        masks: (N, S, S) bool, the truth of the lesion the box asks for.
        boxes: (N, 4) float64 xyxy boxes in crop pixels (what a coordinator drew).
        sources: (N,) index of the phantom image each crop was cut from.
    """

    images: npt.NDArray[np.float32]
    masks: npt.NDArray[np.bool_]
    boxes: npt.NDArray[np.float64]
    sources: npt.NDArray[np.intp]

    def __len__(self) -> int:
        return len(self.images)

    def take(self, index: npt.NDArray[np.intp]) -> CropSet:
        """The crops at ``index``."""
        return CropSet(
            self.images[index], self.masks[index], self.boxes[index], self.sources[index]
        )


def _resize(array: npt.NDArray[Any], size: int, resample: PILImage.Resampling) -> npt.NDArray[Any]:
    return np.asarray(PILImage.fromarray(array).resize((size, size), resample))


def crops_of_image(
    image: npt.NDArray[np.uint8],
    truth: npt.NDArray[np.bool_],
    boxes: list[Box],
    size: int,
    margin: float,
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], Box]]:
    """One ``size`` x ``size`` crop per box: (image in [0, 1], truth mask, box in crop pixels).

    The crop's truth is the part of the image's truth the box asks for (``gold_for_box``, as the
    bot's gold crops), so a second lesion that happens to be in view is not labelled.
    """
    h, w = truth.shape
    out = []
    for box in boxes:
        t = plan_crop(box, w, h, margin=margin, max_out=10**6, min_side=8)
        region = cut_crop(image, t)  # (side, side) uint8
        mask = mask_to_crop(gold_for_box(truth, box), t)  # (side, side) bool
        pixels = _resize(region, size, PILImage.Resampling.BILINEAR).astype(np.float32)
        small = np.asarray(pixels / np.float32(255), dtype=np.float32)  # float32 arithmetic
        small_mask = _resize(mask.astype(np.uint8) * 255, size, PILImage.Resampling.NEAREST) > 127
        s = size / t.side
        x0, y0, x1, y1 = t.to_crop(box)
        crop_box = (
            max(0.0, x0 * s),
            max(0.0, y0 * s),
            min(float(size), x1 * s),
            min(float(size), y1 * s),
        )
        if small_mask.sum() >= 4:  # a lesion that vanishes at this size is no training pair
            out.append((small, small_mask, crop_box))
    return out


def build_phantom_crops(
    n_images: int,
    *,
    style: str = "ultrasound",
    size: int = 32,
    image_size: int = 128,
    margin: float = 0.4,
    seed: int = 0,
) -> CropSet:
    """Crops of ``n_images`` phantoms (deterministic for ``seed``).

    Args:
        n_images: phantom images to draw.
        style: a phantom style (``bot.sim.phantom.STYLES``) or ``mixed``.
        size: crop side in pixels after resizing.
        image_size: phantom side in pixels.
        margin: context around each box, as a share of its longer side on each side.
        seed: phantom image ``i`` comes from ``SeedSequence(seed).spawn(n)[i]``.
    """
    if n_images < 2:
        raise ValueError(f"n_images must be at least 2, got {n_images}")
    if style != "mixed" and style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)} or 'mixed', got {style!r}")
    if size < 16:
        raise ValueError(f"crop size must be at least 16, got {size}")
    styles = STYLES if style == "mixed" else (style,)
    images, masks, boxes, sources = [], [], [], []
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n_images)):
        rng = np.random.default_rng(child)
        phantom = make_phantom(styles[i % len(styles)], rng, image_size)
        drawn = jittered_boxes(rng, phantom.mask)
        for image, mask, box in crops_of_image(phantom.image, phantom.mask, drawn, size, margin):
            images.append(image)
            masks.append(mask)
            boxes.append(box)
            sources.append(i)
    return CropSet(
        np.stack(images),
        np.stack(masks),
        np.asarray(boxes, dtype=np.float64),
        np.asarray(sources, dtype=np.intp),
    )


def split_by_image(crops: CropSet, test_fraction: float, seed: int) -> tuple[CropSet, CropSet]:
    """(pool, test): a seeded ``test_fraction`` of the source images goes to the test set.

    Whole images move, so the two sets share no source image (no pixel leaks into the test).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images = np.unique(crops.sources)
    n_test = min(max(1, round(len(images) * test_fraction)), len(images) - 1)
    test_images = np.random.default_rng([seed, 7]).choice(images, size=n_test, replace=False)
    in_test = np.isin(crops.sources, test_images)
    return crops.take(np.flatnonzero(~in_test)), crops.take(np.flatnonzero(in_test))
