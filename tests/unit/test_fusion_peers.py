"""The published peers of the fusion benchmark (the ``bench`` extra) and its measurement."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest

from fusion import bench, peers
from fusion.baselines import answer_masks, majority_vote
from fusion.simulate import ACCEPT, ADJUST, REJECT, Answer, Campaign, Scenario, dice, simulate

needs_peers = pytest.mark.skipif(
    not all(peers.available().values()), reason="the bench extra is not installed"
)


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    return simulate(
        Scenario(seed=3, n_crops=24, crop_size=64, pool_size=12, answers_per_crop=(3, 6))
    )


@needs_peers
def test_crowdkit_majority_vote_is_ours(campaign: Campaign) -> None:
    fused = peers.PEERS["ck-mv"][1](campaign)
    for i, proposal in enumerate(campaign.proposals):
        crop_answers = [a for a in campaign.answers if a.crop == i]
        expected = majority_vote(answer_masks(proposal, crop_answers), proposal)
        np.testing.assert_array_equal(fused[i], expected)


@needs_peers
@pytest.mark.parametrize("name", sorted(peers.PEERS))
def test_every_peer_fuses_every_crop(campaign: Campaign, name: str) -> None:
    fused = peers.PEERS[name][1](campaign)
    assert sorted(fused) == list(range(len(campaign.proposals)))
    scores = [dice(fused[i], campaign.truth[i]) for i in range(len(campaign.proposals))]
    assert all(m.shape == campaign.proposals[0].shape and m.dtype == bool for m in fused.values())
    assert np.mean(scores) > 0.8, f"{name}: mean Dice {np.mean(scores):.3f}"


@needs_peers
def test_staple_and_gate_on_a_hand_made_crop() -> None:
    truth = np.zeros((64, 64), dtype=bool)
    truth[16:48, 16:48] = True
    proposal = np.zeros_like(truth)
    proposal[16:48, 16:60] = True  # leaks to the right: not acceptable
    scenario = Scenario(seed=0, n_crops=2, crop_size=64, pool_size=4, answers_per_crop=(3, 4))
    answers = [Answer(0, v, ADJUST, truth.copy()) for v in range(3)] + [Answer(0, 3, REJECT)]
    campaign = Campaign(
        scenario=scenario,
        truth=truth[None],
        proposals=proposal[None],
        proposal_modes=["leak"],
        gold=np.zeros(1, dtype=bool),
        profiles=["good"] * 4,
        answers=answers,
    )
    np.testing.assert_array_equal(peers.PEERS["staple-roi"][1](campaign)[0], truth)
    everything = np.ones_like(truth)  # no background in the region: STAPLE degenerates
    campaign.answers = [Answer(0, v, ADJUST, everything.copy()) for v in range(3)]
    np.testing.assert_array_equal(peers.PEERS["staple-roi"][1](campaign)[0], everything)
    campaign.answers = answers
    np.testing.assert_array_equal(peers.PEERS["ck-ds-gate"][1](campaign)[0], truth)
    campaign.answers = [Answer(0, v, ACCEPT) for v in range(3)]
    np.testing.assert_array_equal(peers.PEERS["ck-ds-gate"][1](campaign)[0], proposal)


def test_methods_run_isolated_and_report_their_failures(campaign: Campaign) -> None:
    isolated = bench.run_methods(campaign, methods=["majority-vote", "paf"], repeats=2)
    inline = bench.run_methods(campaign, methods=["majority-vote", "paf"], isolate=False)
    for a, b in zip(isolated, inline, strict=True):
        assert (a.method, a.mean_dice, a.p10_dice) == (b.method, b.mean_dice, b.p10_dice)
        assert a.seconds >= 0
        assert a.peak_mb >= 0
    assert isolated[1].seconds > 0

    def broken(_: Campaign) -> tuple[dict[int, np.ndarray], float]:
        raise ZeroDivisionError("boom")

    with pytest.raises(RuntimeError, match="ZeroDivisionError: boom"):
        bench._isolated(broken, campaign)

    def stuck(_: Campaign) -> tuple[dict[int, np.ndarray], float]:
        time.sleep(60)
        return {}, 0.0

    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="did not finish"):
        bench._isolated(stuck, campaign, timeout_s=0.5)
    assert time.perf_counter() - started < 20
    assert not multiprocessing.active_children()


def test_in_process_memory_is_what_the_method_allocates(campaign: Campaign) -> None:
    def hungry(c: Campaign) -> tuple[dict[int, np.ndarray], float]:
        block = np.ones(40 * 2**20, dtype=np.uint8)  # 40 MB, freed on return
        return {i: p.copy() for i, p in enumerate(c.proposals)}, float(block[0])

    _, _, _, peak = bench._timed(hungry, campaign)
    assert 40 <= peak < 60


def test_unknown_or_missing_methods_are_refused(
    campaign: Campaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="unknown methods"):
        bench.run_methods(campaign, methods=["nope"])
    with pytest.raises(ValueError, match="repeats"):
        bench.run_methods(campaign, methods=["paf"], repeats=0)
    monkeypatch.setattr(peers, "available", lambda: {"crowd-kit": False, "SimpleITK": False})
    assert bench.available_methods() == list(bench.OWN_METHODS)
    with pytest.raises(ValueError, match="bench extra"):
        bench.run_methods(campaign, methods=["ck-em"])
