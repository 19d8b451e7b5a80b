"""The fusion benchmark: every method on the same simulated answers of one scenario.

Per method: mean Dice, 10th-percentile Dice, share of crops with Dice >= 0.90 (gold crops are not
scored), mean answers used per crop, wall seconds and peak extra memory. ``paf-adaptive`` streams
the answers in arrival order and stops asking about a crop as soon as the model retires or
escalates it (the bot's behaviour); the others use every answer. The published peers of
``fusion.peers`` join when their libraries are installed (the ``bench`` extra).

Each method runs in a forked child process (on Linux): its seconds are wall time with nothing else
traced, and its memory is the child's peak resident set above what it started with, so
allocations made by C and C++ code (pandas, ITK) count too. The peers' libraries are imported
before the fork, so no method is charged for its imports. Elsewhere (or with ``isolate=False``)
methods run in-process and memory is the peak of ``tracemalloc``'s traced allocations.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusion import peers
from fusion.baselines import by_crop, majority_vote, masks_by_crop
from fusion.paf import PAFConfig, ProposalAwareFusion
from fusion.simulate import Campaign, dice

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


Method = Callable[[Campaign], tuple[dict[int, Mask], float]]  # -> masks, answers per crop


def _answers_per_scored_crop(campaign: Campaign) -> float:
    """Mean answers a crop outside gold received: the full budget of fixed redundancy."""
    grouped = by_crop(campaign.answers)
    return float(np.mean([len(grouped.get(int(i), [])) for i in np.flatnonzero(~campaign.gold)]))


def _streaming_model(campaign: Campaign, config: PAFConfig) -> ProposalAwareFusion:
    """A model holding the campaign's crops and gold, ready for answers one at a time."""
    model = ProposalAwareFusion(config)
    gold = _gold(campaign)
    for i, proposal in enumerate(campaign.proposals):
        model.add_crop(i, proposal, gold.get(i))
    return model


def _proposal(campaign: Campaign) -> tuple[dict[int, Mask], float]:
    return {i: campaign.proposals[i] for i in range(len(campaign.proposals))}, 0.0


def _majority(campaign: Campaign) -> tuple[dict[int, Mask], float]:
    fused = {
        i: majority_vote(masks, campaign.proposals[i])
        for i, masks in masks_by_crop(campaign).items()
    }
    return fused, _answers_per_scored_crop(campaign)


def _gold(campaign: Campaign) -> dict[int, Mask]:
    return {int(i): campaign.truth[i] for i in np.flatnonzero(campaign.gold)}


def _paf(campaign: Campaign, config: PAFConfig) -> tuple[dict[int, Mask], float]:
    proposals = dict(enumerate(campaign.proposals))
    model = ProposalAwareFusion(config).fit(proposals, campaign.answers, _gold(campaign))
    return {i: model.result(i).mask for i in proposals}, _answers_per_scored_crop(campaign)


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
    model = _streaming_model(campaign, config)
    gold = _gold(campaign)
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


def _rss_mb() -> float:
    """This process's resident set now (Linux), in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """This process's peak resident set (Linux reports kilobytes), in MB."""
    import resource  # POSIX only; only forked children (Linux) measure this way

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


Outcome = tuple[dict[int, Mask], float, float, float]  # masks, answers/crop, seconds, peak MB


def _repeat(fn: Method, campaign: Campaign, repeats: int) -> tuple[dict[int, Mask], float, float]:
    """Run ``fn`` ``repeats`` times: the last masks and answers, the median seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        masks, answers = fn(campaign)
        times.append(time.perf_counter() - started)
    return masks, answers, float(np.median(times))


def _timed(fn: Method, campaign: Campaign, repeats: int = 1) -> Outcome:
    """Run in this process; memory is the peak of traced (Python and NumPy) allocations."""
    tracemalloc.start()
    try:
        masks, answers, seconds = _repeat(fn, campaign, repeats)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return masks, answers, seconds, peak / 2**20


def _child(fn: Method, campaign: Campaign, repeats: int, conn: Any) -> None:
    try:
        start_mb = _rss_mb()
        masks, answers, seconds = _repeat(fn, campaign, repeats)
        peak = max(0.0, _peak_rss_mb() - start_mb)
        packed = {i: np.packbits(m) for i, m in masks.items()}
        conn.send(("ok", packed, answers, seconds, peak))
    except BaseException as error:  # report it in the parent
        conn.send(("error", f"{type(error).__name__}: {error}", 0.0, 0.0, 0.0))
    finally:
        conn.close()


def _isolated(
    fn: Method, campaign: Campaign, repeats: int = 1, timeout_s: float = 3600.0
) -> Outcome:
    """Run ``fn`` ``repeats`` times in one forked child; the median seconds, the peak memory.

    The child's memory is its peak resident set above what it started with; the libraries a
    method needs are imported by the parent beforehand (``peers.preload``), so no method pays
    for its imports. The first run in a fresh process is slower (a quarter, measured): repeats
    in the same child give the warm figure a long-running service would see. Without fork
    (not Linux) the method runs in this process with traced memory.
    """
    if sys.platform != "linux":
        return _timed(fn, campaign, repeats)
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(fn, campaign, repeats, sender))
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise RuntimeError(f"the method did not finish within {timeout_s:.0f} s")
        status, payload, answers, seconds, peak = receiver.recv()
    except EOFError:
        payload, status = f"the method's process died (exit code {process.exitcode})", "error"
    finally:
        receiver.close()
        if process.is_alive():
            process.join(timeout=5)
        if process.is_alive():
            process.terminate()
        process.join()
    if status != "ok":
        raise RuntimeError(str(payload))
    shape = campaign.proposals[0].shape
    size = int(np.prod(shape))
    masks = {
        i: np.unpackbits(bits, count=size).reshape(shape).astype(bool)
        for i, bits in payload.items()
    }
    return masks, answers, seconds, peak


def available_methods() -> list[str]:
    """Our methods and the baselines, then the peers whose libraries are installed."""
    have = peers.available()
    return [*OWN_METHODS, *(name for name, (lib, _) in peers.PEERS.items() if have[lib])]


OWN_METHODS = ("proposal", "majority-vote", "paf", "paf-adaptive")


def run_methods(
    campaign: Campaign,
    config: PAFConfig | None = None,
    methods: list[str] | None = None,
    *,
    isolate: bool = True,
    repeats: int = 1,
) -> list[MethodResult]:
    """Score every method on ``campaign`` (by default: ours, the baselines, installed peers).

    With ``repeats`` > 1 each method runs that many times in its process (the results are the
    same; shared machines are not): seconds are the median, memory the peak over all runs.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    config = config or PAFConfig()
    scored = np.flatnonzero(~campaign.gold)
    full_budget = _answers_per_scored_crop(campaign)

    def peer(fn: peers.PeerFn) -> Method:
        return lambda c: (fn(c), full_budget)

    table: dict[str, Method] = {
        "proposal": _proposal,
        "majority-vote": _majority,
        "paf": lambda c: _paf(c, config),
        "paf-adaptive": lambda c: _paf_adaptive(c, config),
        **{name: peer(fn) for name, (_, fn) in peers.PEERS.items()},
    }
    chosen = methods or available_methods()
    unknown = set(chosen) - set(table)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {sorted(table)}")
    have = peers.available()
    missing = [m for m in chosen if m in peers.PEERS and not have[peers.PEERS[m][0]]]
    if missing:
        raise ValueError(
            f"{', '.join(missing)} need the bench extra: pip install 'medcrowd[bench]'"
        )
    peers.preload([m for m in chosen if m in peers.PEERS])
    results = []
    for name in chosen:
        run = _isolated if isolate else _timed
        masks, answers, seconds, peak = run(table[name], campaign, repeats)
        scores = np.array([dice(masks[int(i)], campaign.truth[i]) for i in scored])
        results.append(
            MethodResult(
                method=name,
                mean_dice=round(float(scores.mean()), 4),
                p10_dice=round(float(np.percentile(scores, 10)), 4),
                share_dice_90=round(float((scores >= 0.90).mean()), 4),
                answers_per_crop=round(answers, 2),
                seconds=round(seconds, 3),
                peak_mb=round(peak, 1),
            )
        )
    return results


def online_latency(campaign: Campaign, config: PAFConfig | None = None) -> dict[str, float]:
    """Milliseconds per ``add`` (one answer folded in) when every answer streams in.

    The model starts from the campaign's crops and gold and receives the answers in arrival
    order, as the bot would deliver them; p50, p95 and the maximum over all answers.
    """
    model = _streaming_model(campaign, config or PAFConfig())
    elapsed = []
    for answer in campaign.answers:
        started = time.perf_counter()
        model.add(answer)
        elapsed.append((time.perf_counter() - started) * 1000)
    ms = np.asarray(elapsed)
    return {
        "online_add_ms_p50": round(float(np.percentile(ms, 50)), 2),
        "online_add_ms_p95": round(float(np.percentile(ms, 95)), 2),
        "online_add_ms_max": round(float(ms.max()), 2),
    }


def summarise(results: list[MethodResult]) -> dict[str, float | str | None]:
    """PAF against the others in one run: the best other method, speed and memory ratios.

    ``paf_speedup_vs_ck_em`` is crowd-kit SegmentationEM's seconds over PAF's batch fit;
    ``paf_memory_vs_ck_mv`` is PAF's peak memory as a fraction of crowd-kit majority vote's.
    Ratios are None when a method did not run.
    """
    by = {r.method: r for r in results}
    others = [r for r in results if not r.method.startswith("paf")]
    best = max(others, key=lambda r: r.mean_dice, default=None)
    paf = by.get("paf")

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b <= 0 else round(a / b, 3)

    return {
        "best_other_method": best.method if best else None,
        "best_other_mean_dice": best.mean_dice if best else None,
        "paf_margin_over_best_other": (
            round(paf.mean_dice - best.mean_dice, 4) if paf and best else None
        ),
        "paf_speedup_vs_ck_em": ratio(
            by["ck-em"].seconds if "ck-em" in by else None, paf.seconds if paf else None
        ),
        "paf_memory_vs_ck_mv": ratio(
            paf.peak_mb if paf else None, by["ck-mv"].peak_mb if "ck-mv" in by else None
        ),
    }


def as_dicts(results: list[MethodResult]) -> list[dict[str, float | str]]:
    """Results as JSON-ready dicts."""
    return [asdict(r) for r in results]
