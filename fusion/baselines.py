"""Reference aggregators for the benchmark: the raw proposal and pixel majority vote.

Generic mask aggregators see the bot's answers as drawn masks: accept -> the proposal, adjust ->
the volunteer's mask, reject -> nothing; a crop with no mask falls back to the proposal.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import numpy.typing as npt

from fusion.simulate import ACCEPT, ADJUST, Answer

Mask = npt.NDArray[np.bool_]


def by_crop(answers: list[Answer]) -> dict[int, list[Answer]]:
    """Answers grouped by crop, each group in arrival order."""
    grouped: dict[int, list[Answer]] = defaultdict(list)
    for answer in answers:
        grouped[answer.crop].append(answer)
    return grouped


def answer_masks(proposal: Mask, answers: list[Answer]) -> list[Mask]:
    """The masks a generic aggregator gets from one crop's answers."""
    masks = []
    for answer in answers:
        if answer.verdict == ACCEPT:
            masks.append(proposal)
        elif answer.verdict == ADJUST and answer.mask is not None:
            masks.append(answer.mask)
    return masks


def majority_vote(masks: list[Mask], fallback: Mask) -> Mask:
    """Pixel-wise majority (ties to foreground); ``fallback`` when there is no mask.

    Args:
        masks: N masks of shape (H, W).
        fallback: (H, W) mask returned for N = 0.
    """
    if not masks:
        return fallback.copy()
    counts = np.zeros(fallback.shape, dtype=np.int32)
    for mask in masks:
        counts += mask
    return np.asarray(2 * counts >= len(masks), dtype=bool)
