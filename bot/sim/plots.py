"""The demo report's pictures (matplotlib, drawn off-screen to PNG bytes)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib as mpl

mpl.use("Agg")  # no display: figures are only ever written to PNG

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import ndimage

from bot.sim.outcomes import CropOutcome, Sample, VolunteerOutcome

COLOURS = {"consensus": "#2f7ed8", "majority": "#f28f43", "proposal": "#8c8c8c", "truth": "#2bb34b"}
PROFILE_COLOURS = {
    "good": "#2bb34b",
    "noisy": "#9bc53d",
    "over-segmenter": "#f2b400",
    "under-segmenter": "#f28f43",
    "lazy": "#8c8c8c",
    "random": "#a05195",
    "adversarial": "#d62728",
}


def _png(figure: Figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return out.getvalue()


def dice_per_crop(crops: Sequence[CropOutcome]) -> bytes:
    """Consensus against proposal and majority vote, crop by crop, and the means."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), width_ratios=(1.4, 1))
    order = np.argsort([c.consensus for c in crops])
    x = np.arange(len(crops))
    for name in ("proposal", "majority", "consensus"):
        values = np.array([getattr(crops[i], name) for i in order])
        label = {"majority": "majority vote (same answers)"}.get(name, name)
        left.plot(x, values, "o", ms=4, color=COLOURS[name], label=label, alpha=0.85)
    left.set_xlabel("finished crops, sorted by consensus Dice")
    left.set_ylabel("Dice against the hidden truth")
    left.set_ylim(max(0.0, min(min(c.proposal, c.majority) for c in crops) - 0.05), 1.0)
    left.legend(loc="lower right", fontsize=8)
    means = [np.mean([getattr(c, n) for c in crops]) for n in ("proposal", "majority", "consensus")]
    bars = right.bar(
        ["AI proposal", "majority vote", "MedCrowd\nconsensus"],
        means,
        color=[COLOURS["proposal"], COLOURS["majority"], COLOURS["consensus"]],
    )
    right.bar_label(bars, fmt="%.3f")
    right.set_ylim(max(0.0, min(means) - 0.1), 1.0)
    right.set_title("mean Dice", fontsize=10)
    figure.tight_layout()
    return _png(figure)


def answers_per_crop(crops: Sequence[CropOutcome], fixed: int) -> bytes:
    """How many answers each finished crop took, against a fixed redundancy of ``fixed``."""
    figure, axis = plt.subplots(figsize=(6.5, 3.4))
    counts = [c.answers for c in crops]
    bins = [b + 0.5 for b in range(max([*counts, fixed]) + 1)]
    axis.hist(counts, bins=bins, color=COLOURS["consensus"])
    axis.axvline(fixed, color="#d62728", ls="--", label=f"fixed redundancy: {fixed} per crop")
    axis.axvline(
        float(np.mean(counts)),
        color="#1d2733",
        label=f"adaptive retirement: {np.mean(counts):.1f} on average",
    )
    axis.set_xlabel("answers spent on a finished crop")
    axis.set_ylabel("crops")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def volunteers(people: Sequence[VolunteerOutcome]) -> bytes:
    """The weight fusion learned for each volunteer, coloured by their hidden profile."""
    ordered = sorted(people, key=lambda v: -v.trust)
    figure, axis = plt.subplots(figsize=(8, 0.35 * len(ordered) + 1.2))
    y = np.arange(len(ordered))[::-1]
    axis.barh(
        y,
        [v.trust for v in ordered],
        color=[PROFILE_COLOURS.get(v.profile, "#444") for v in ordered],
    )
    axis.set_yticks(y, [f"{v.name} ({v.profile})" for v in ordered], fontsize=8)
    axis.set_xlim(0, 1)
    axis.set_xlabel("trust fusion learned (1 - spammer score); colour = hidden profile")
    figure.tight_layout()
    return _png(figure)


def _outline(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    return np.asarray(mask & ~ndimage.binary_erosion(mask), dtype=bool)


def _draw(
    axis: Axes, crop: npt.NDArray[np.uint8], masks: Sequence[tuple[npt.NDArray[np.bool_], str]]
) -> None:
    grey = np.repeat(crop[..., None], 3, axis=2) if crop.ndim == 2 else crop[..., :3]
    rgb = grey.astype(np.float32) / 255.0
    for mask, colour in masks:
        rgb[_outline(mask)] = mpl.colors.to_rgb(colour)
    axis.imshow(rgb, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])


def samples(items: Sequence[Sample]) -> bytes:
    """Crop | proposal | the crowd's masks | consensus | truth, one row per crop."""
    figure, axes = plt.subplots(len(items), 5, figsize=(11, 2.3 * len(items)), squeeze=False)
    titles = ("crop", "AI proposal", "volunteers' masks", "consensus", "hidden truth")
    for row, item in zip(axes, items, strict=True):
        _draw(row[0], item.crop, [])
        _draw(row[1], item.crop, [(item.proposal, "#eb3c32")])  # red, as on the contact sheet
        _draw(row[2], item.crop, [(m, "#f2b400") for m in item.answers])
        _draw(row[3], item.crop, [(item.consensus, COLOURS["consensus"])])
        _draw(row[4], item.crop, [(item.truth, COLOURS["truth"])])
        o = item.outcome
        row[0].set_ylabel(f"crop #{item.task_id}", fontsize=8)
        row[1].set_xlabel(f"Dice {o.proposal:.3f}", fontsize=8)
        row[2].set_xlabel(f"{len(item.answers)} masks of {o.answers} answers", fontsize=8)
        row[3].set_xlabel(f"Dice {o.consensus:.3f} (majority {o.majority:.3f})", fontsize=8)
    for axis, title in zip(axes[0], titles, strict=True):
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return _png(figure)


def timings(stages: Sequence[tuple[str, float]]) -> bytes:
    """Seconds per stage, as horizontal bars."""
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(stages) + 1.0))
    y = np.arange(len(stages))[::-1]
    bars = axis.barh(y, [s for _, s in stages], color=COLOURS["consensus"])
    axis.bar_label(bars, fmt="%.1f s", fontsize=8, padding=2)
    axis.set_yticks(y, [name for name, _ in stages], fontsize=8)
    axis.set_xlabel("seconds")
    figure.tight_layout()
    return _png(figure)


def synthetic_grid(
    images: Sequence[npt.NDArray[np.uint8]],
    masks: Sequence[npt.NDArray[np.bool_]],
    columns: int = 6,
) -> bytes:
    """Synthetic pairs: each generated image with its conditioning mask's outline (green)."""
    rows = max(1, (len(images) + columns - 1) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.8 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.set_axis_off()
    for axis, image, mask in zip(axes.ravel(), images, masks, strict=False):
        _draw(axis, image, [(mask, COLOURS["truth"])])
        axis.set_axis_on()
    figure.tight_layout()
    return _png(figure)
