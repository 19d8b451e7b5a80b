"""Reference aggregators for the benchmark: the raw proposal and pixel majority vote.

Generic mask aggregators see the bot's answers as drawn masks: accept -> the proposal, adjust ->
the volunteer's mask, reject -> nothing; a crop with no mask falls back to the proposal.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import numpy.typing as npt

from fusion.simulate import ACCEPT, ADJUST, Answer, Campaign

Mask = npt.NDArray[np.bool_]


def by_crop(answers: list[Answer]) -> dict[int, list[Answer]]:
    """Answers grouped by crop, each group in arrival order."""
    grouped: dict[int, list[Answer]] = defaultdict(list)
    for answer in answers:
        grouped[answer.crop].append(answer)
    return grouped


def answer_mask(proposal: Mask, answer: Answer) -> Mask | None:
    """The mask a generic aggregator sees in one answer (None for a reject, unsure or skip)."""
    if answer.verdict == ACCEPT:
        return proposal
    if answer.verdict == ADJUST and answer.mask is not None:
        return answer.mask
    return None


def answer_masks(proposal: Mask, answers: list[Answer]) -> list[Mask]:
    """The masks a generic aggregator gets from one crop's answers."""
    masks = (answer_mask(proposal, answer) for answer in answers)
    return [mask for mask in masks if mask is not None]


def masks_by_crop(campaign: Campaign) -> dict[int, list[Mask]]:
    """Every crop's masks as a generic aggregator gets them (crops without answers included)."""
    grouped = by_crop(campaign.answers)
    return {
        i: answer_masks(proposal, grouped.get(i, []))
        for i, proposal in enumerate(campaign.proposals)
    }


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
