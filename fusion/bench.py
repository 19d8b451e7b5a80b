"""The fusion benchmark: every method on the same simulated answers of one scenario.

Per method: mean Dice, 10th-percentile Dice, share of crops with Dice >= 0.90 (gold crops are not
scored), mean answers used per crop, wall seconds and peak traced memory (NumPy allocations
included). ``paf-adaptive`` streams the answers in arrival order and stops asking about a crop as
soon as the model retires or escalates it (the bot's behaviour); the others use every answer.
"""

from __future__ import annotations

import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from fusion.baselines import answer_masks, majority_vote
from fusion.paf import PAFConfig, ProposalAwareFusion
from fusion.simulate import Answer, Campaign, dice

Mask = np.ndarray


@dataclass(frozen=True)
class MethodResult:
    """One method's scores on one scenario."""

    method: str
    mean_dice: float
    p10_dice: float
    share_dice_90: float
    answers_per_crop: float
    seconds: float
    peak_mb: float


def _by_crop(answers: list[Answer]) -> dict[int, list[Answer]]:
    grouped: dict[int, list[Answer]] = defaultdict(list)
    for answer in answers:
        grouped[answer.crop].append(answer)
    return grouped


def _proposal(campaign: Campaign) -> tuple[dict[int, Mask], float]:
    return {i: campaign.proposals[i] for i in range(len(campaign.proposals))}, 0.0


def _majority(campaign: Campaign) -> tuple[dict[int, Mask], float]:
    grouped = _by_crop(campaign.answers)
    out = {}
    for i, proposal in enumerate(campaign.proposals):
        out[i] = majority_vote(answer_masks(proposal, grouped.get(i, [])), proposal)
    return out, float(
        np.mean([len(grouped.get(int(i), [])) for i in np.flatnonzero(~campaign.gold)])
    )


def _gold(campaign: Campaign) -> dict[int, Mask]:
    return {int(i): campaign.truth[i] for i in np.flatnonzero(campaign.gold)}


def _paf(campaign: Campaign, config: PAFConfig) -> tuple[dict[int, Mask], float]:
    proposals = dict(enumerate(campaign.proposals))
    model = ProposalAwareFusion(config).fit(proposals, campaign.answers, _gold(campaign))
    grouped = _by_crop(campaign.answers)
    used = float(np.mean([len(grouped.get(int(i), [])) for i in np.flatnonzero(~campaign.gold)]))
    return {i: model.result(i).mask for i in proposals}, used


def run_adaptive(
    campaign: Campaign,
    config: PAFConfig,
    *,
    confidence: float = 0.95,
    min_answers: int = 2,
    max_answers: int | None = None,
    refit_every: int = 250,
) -> tuple[ProposalAwareFusion, dict[int, int]]:
    """Stream answers in arrival order, skipping crops already retired or escalated.

    Returns the model (refitted on the answers used) and the answers used per crop.
    """
    limit = max_answers or campaign.scenario.answers_per_crop[1]
    model = ProposalAwareFusion(config)
    gold = _gold(campaign)
    for i, proposal in enumerate(campaign.proposals):
        model.add_crop(i, proposal, gold.get(i))
    closed: set[int] = set()
    used: dict[int, int] = defaultdict(int)
    for n, answer in enumerate(campaign.answers, start=1):
        if answer.crop in closed:
            continue
        model.add(answer)
        used[answer.crop] += 1
        if answer.crop not in gold:
            decision = model.decide(
                answer.crop, confidence=confidence, min_answers=min_answers, max_answers=limit
            )
            if decision != "continue":
                closed.add(answer.crop)
        if n % refit_every == 0:
            model.refit()
    model.refit()
    return model, dict(used)


def _paf_adaptive(campaign: Campaign, config: PAFConfig) -> tuple[dict[int, Mask], float]:
    model, used = run_adaptive(campaign, config)
    per_crop = [used.get(int(i), 0) for i in np.flatnonzero(~campaign.gold)]
    return {i: model.result(i).mask for i in range(len(campaign.proposals))}, float(
        np.mean(per_crop)
    )


def run_methods(
    campaign: Campaign, config: PAFConfig | None = None, methods: list[str] | None = None
) -> list[MethodResult]:
    """Score every method on ``campaign``."""
    config = config or PAFConfig()
    table: dict[str, Callable[[Campaign], tuple[dict[int, Mask], float]]] = {
        "proposal": _proposal,
        "majority-vote": _majority,
        "paf": lambda c: _paf(c, config),
        "paf-adaptive": lambda c: _paf_adaptive(c, config),
    }
    chosen = methods or list(table)
    unknown = set(chosen) - set(table)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {sorted(table)}")
    scored = np.flatnonzero(~campaign.gold)
    results = []
    for name in chosen:
        tracemalloc.start()
        started = time.perf_counter()
        masks, answers = table[name](campaign)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        scores = np.array([dice(masks[int(i)], campaign.truth[i]) for i in scored])
        results.append(
            MethodResult(
                method=name,
                mean_dice=round(float(scores.mean()), 4),
                p10_dice=round(float(np.percentile(scores, 10)), 4),
                share_dice_90=round(float((scores >= 0.90).mean()), 4),
                answers_per_crop=round(answers, 2),
                seconds=round(seconds, 2),
                peak_mb=round(peak / 2**20, 1),
            )
        )
    return results


def as_dicts(results: list[MethodResult]) -> list[dict[str, float | str]]:
    """Results as JSON-ready dicts."""
    return [asdict(r) for r in results]
