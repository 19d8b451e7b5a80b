"""How much Dice do the simulated answers allow? A truth-aware ceiling for the fusion goals.

For each scored crop this picks, knowing the truth, the best of several estimates built from that
crop's answers: the proposal, PAF's consensus, every honest correction with its volunteer's true
boundary bias undone (an inverter's mask flipped), and the precision-weighted average of those
corrections' signed distances using the volunteers' true noise amplitudes, alone and with the
proposal. No method can pick per crop with the truth, so the ceiling's mean is an optimistic bound
on what fusion can reach from these answers; crops where nobody drew a usable mask are held at
the proposal's own Dice (an accept or reject says only "good enough" or "not").

It reports, per seed, PAF and the ceiling with every answer and with each crop's first
``--budget`` answers; the last line is one JSON object.

    .venv/bin/python benchmarks/fusion_ceiling.py --scenario ../shared/scenarios/standard.json \
        [--seeds 0 1 2] [--budget 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusion.paf import PAFConfig, ProposalAwareFusion  # noqa: E402
from fusion.simulate import (  # noqa: E402
    ADJUST,
    Answer,
    Campaign,
    Mask,
    Scenario,
    dice,
    signed_distance,
    simulate,
)

GOOD_PROPOSAL_NOISE = 1.5  # the simulator's boundary noise amplitude of a "good" proposal


def _candidates(campaign: Campaign, crop: int, answers: list[Answer]) -> tuple[list[Mask], bool]:
    """Truth-aware estimates for one crop, and whether any usable mask was drawn."""
    proposal = campaign.proposals[crop]
    estimates = [proposal]
    total = np.zeros(proposal.shape)
    weight = 0.0
    for answer in answers:
        volunteer = campaign.volunteers[answer.volunteer]
        if answer.verdict != ADJUST or answer.mask is None or volunteer.profile == "random":
            continue
        distance = signed_distance(answer.mask)
        distance = -distance if volunteer.profile == "adversarial" else distance - volunteer.bias
        estimates.append(distance > 0)
        total += distance / volunteer.amp**2
        weight += 1 / volunteer.amp**2
    if weight == 0:
        return estimates, False
    estimates.append(total > 0)
    w = 1 / GOOD_PROPOSAL_NOISE**2
    estimates.append(total + w * signed_distance(proposal) > 0)
    return estimates, True


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values)
    return {
        "mean": round(float(v.mean()), 4),
        "p10": round(float(np.quantile(v, 0.1)), 4),
        "share_090": round(float((v >= 0.90).mean()), 4),
    }


def measure(campaign: Campaign, budget: int) -> dict[str, Any]:
    """PAF and the ceiling on all answers, and the ceiling on each crop's first ``budget``."""
    proposals = dict(enumerate(campaign.proposals))
    gold = {int(i): campaign.truth[i] for i in np.flatnonzero(campaign.gold)}
    model = ProposalAwareFusion(PAFConfig()).fit(proposals, campaign.answers, gold)
    by_crop: dict[int, list[Answer]] = {}
    for answer in campaign.answers:
        by_crop.setdefault(answer.crop, []).append(answer)
    paf, full, first, no_mask_full, no_mask_first = [], [], [], 0, 0
    for crop in map(int, np.flatnonzero(~campaign.gold)):
        truth = campaign.truth[crop]
        consensus = model.result(crop).mask
        paf.append(dice(consensus, truth))
        answers = by_crop.get(crop, [])
        estimates, usable = _candidates(campaign, crop, answers)
        full.append(max(dice(m, truth) for m in [consensus, *estimates]))
        no_mask_full += not usable
        estimates, usable = _candidates(campaign, crop, answers[:budget])
        first.append(max(dice(m, truth) for m in estimates))
        no_mask_first += not usable
    n = len(paf)
    return {
        "answers_per_crop": round(
            sum(len(v) for c, v in by_crop.items() if not campaign.gold[c]) / n, 2
        ),
        "paf": _stats(paf),
        "ceiling": _stats(full),
        "ceiling_first": _stats(first),
        "no_usable_mask": round(no_mask_full / n, 4),
        "no_usable_mask_first": round(no_mask_first / n, 4),
    }


def main() -> None:
    """Run the ceiling for each seed and print the JSON summary last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--budget", type=int, default=5)
    args = parser.parse_args()
    data = json.loads(args.scenario.read_text())
    seeds = args.seeds if args.seeds is not None else [data["seed"]]
    runs = {}
    for seed in seeds:
        campaign = simulate(Scenario.from_dict({**data, "seed": seed}))
        runs[str(seed)] = result = measure(campaign, args.budget)
        print(
            f"seed {seed}: {result['answers_per_crop']} answers/crop; "
            f"paf {result['paf']}; ceiling {result['ceiling']}; "
            f"first {args.budget} answers: ceiling {result['ceiling_first']}; "
            f"no usable mask on {result['no_usable_mask']:.0%} of crops "
            f"({result['no_usable_mask_first']:.0%} within the first {args.budget})",
            flush=True,
        )
    mean = {
        key: round(float(np.mean([r[key]["mean"] for r in runs.values()])), 4)
        for key in ("paf", "ceiling", "ceiling_first")
    }
    print(
        json.dumps(
            {"scenario": args.scenario.stem, "budget": args.budget, "seeds": runs, "mean": mean}
        )
    )


if __name__ == "__main__":
    main()
