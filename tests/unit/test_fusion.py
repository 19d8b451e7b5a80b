from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion.baselines import answer_masks, majority_vote
from fusion.paf import PAFConfig, ProposalAwareFusion
from fusion.simulate import (
    ACCEPT,
    ADJUST,
    REJECT,
    SKIP,
    UNSURE,
    Answer,
    Scenario,
    dice,
    signed_distance,
    simulate,
)

SCENARIOS = Path(__file__).resolve().parents[3] / "shared" / "scenarios"


def _disc(size: int, r: float, cy: object = None, cx: object = None) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    centre_y = size / 2 if cy is None else float(cy)  # type: ignore[arg-type]
    centre_x = size / 2 if cx is None else float(cx)  # type: ignore[arg-type]
    return np.asarray((y - centre_y) ** 2 + (x - centre_x) ** 2 <= r**2, dtype=bool)


TRUTH = _disc(48, 12)
DILATED = _disc(48, 15)
ERODED = _disc(48, 9)


def _model(**config: float) -> ProposalAwareFusion:
    return ProposalAwareFusion(PAFConfig(**config))  # type: ignore[arg-type]


# -- signed distance, baselines ------------------------------------------------------------------


def test_signed_distance_thresholds_back_to_the_mask_and_shifts_by_pixels() -> None:
    sd = signed_distance(TRUTH)
    np.testing.assert_array_equal(sd > 0, TRUTH)
    grown = (sd + 3) > 0
    assert abs(int(grown.sum()) - int(_disc(48, 15).sum())) < 0.1 * TRUTH.sum()


def test_majority_vote_and_answer_masks() -> None:
    a = np.array([[1, 1, 0]], bool)
    b = np.array([[1, 0, 0]], bool)
    c = np.array([[0, 1, 1]], bool)
    np.testing.assert_array_equal(majority_vote([a, b, c], a), [[True, True, False]])
    np.testing.assert_array_equal(majority_vote([a, c], a), [[True, True, True]])  # ties -> fg
    np.testing.assert_array_equal(majority_vote([], b), b)
    answers = [Answer(0, 1, ACCEPT), Answer(0, 2, ADJUST, c), Answer(0, 3, REJECT)]
    assert [m.tolist() for m in answer_masks(a, answers)] == [a.tolist(), c.tolist()]


# -- the model on literal crops ------------------------------------------------------------------


def test_gold_clamps_the_truth() -> None:
    model = _model()
    model.add_crop(0, DILATED, gold=TRUTH)
    model.fit({0: DILATED}, [Answer(0, 1, ACCEPT)], {0: TRUTH})
    result = model.result(0)
    np.testing.assert_array_equal(result.mask, TRUTH)
    assert result.accept_probability == 0.0  # Dice(dilated, truth) < 0.90
    assert model.decide(0) == "retire"


def test_accepted_proposal_without_masks_is_kept_exactly() -> None:
    answers = [Answer(0, v, ACCEPT) for v in range(4)]
    model = _model().fit({0: TRUTH}, answers)
    result = model.result(0)
    np.testing.assert_array_equal(result.mask, TRUTH)
    assert result.accept_probability > 0.9
    assert result.confidence > 0.8


def test_corrections_replace_a_rejected_proposal() -> None:
    answers = [Answer(0, v, REJECT) for v in range(3)] + [
        Answer(0, v, ADJUST, TRUTH) for v in range(3, 6)
    ]
    model = _model().fit({0: DILATED}, answers)
    result = model.result(0)
    assert result.accept_probability < 0.1
    assert dice(result.mask, TRUTH) > dice(DILATED, TRUTH)
    assert dice(result.mask, TRUTH) > 0.97


def test_unsure_and_skip_carry_no_evidence() -> None:
    base = [Answer(0, 1, ACCEPT), Answer(0, 2, ADJUST, ERODED)]
    noisy = [*base, Answer(0, 3, UNSURE), Answer(0, 4, SKIP)]
    a = _model().fit({0: TRUTH}, base).result(0)
    b = _model().fit({0: TRUTH}, noisy).result(0)
    np.testing.assert_array_equal(a.prob, b.prob)
    assert b.answers == 2


def _offset_campaign(
    bias_radius: int, n: int = 12
) -> tuple[dict[int, np.ndarray], list[Answer], dict[int, np.ndarray]]:
    """A volunteer (id 99) who always draws ``bias_radius`` instead of the truth's 12 px."""
    proposals, answers, gold = {}, [], {}
    for i in range(n):
        truth = _disc(48, 12, 24 + (i % 3), 24 - (i % 2))
        proposals[i] = _disc(48, 12 + (3 if i % 2 else -3), 24 + (i % 3), 24 - (i % 2))
        biased = _disc(48, bias_radius, 24 + (i % 3), 24 - (i % 2))
        answers.append(Answer(i, 99, ADJUST, biased))
        if i < 4:
            gold[i] = truth
        else:
            answers += [Answer(i, 10 + i, ADJUST, truth), Answer(i, 30 + i, REJECT)]
    return proposals, answers, gold


@pytest.mark.parametrize("bias", [16, 8])
def test_boundary_offset_is_learned_and_undone(bias: int) -> None:
    proposals, answers, gold = _offset_campaign(bias)
    model = _model().fit(proposals, answers, gold)
    report = {r.volunteer: r for r in model.volunteers()}[99]
    assert report.offset_px == pytest.approx(bias - 12, abs=1.5)
    # Their corrected masks are evidence for the truth, not for their biased outline.
    truth = _disc(48, 12, 24 + (5 % 3), 24 - (5 % 2))
    assert dice(model.result(5).mask, truth) > 0.95


def _gold_campaign(
    profile: str, n_gold: int = 5
) -> tuple[dict[int, np.ndarray], list[Answer], dict[int, np.ndarray]]:
    """Volunteer 7 answers ``n_gold`` gold crops (half with acceptable proposals) as ``profile``;
    volunteer 1 answers the same crops well."""
    rng = np.random.default_rng(0)
    proposals, answers, gold = {}, [], {}
    for i in range(n_gold):
        good = i % 2 == 0
        truth = _disc(48, 12, 24 + rng.integers(-3, 4), 24 + rng.integers(-3, 4))
        proposal = truth if good else _disc(48, 17)
        proposals[i], gold[i] = proposal, truth
        answers.append(Answer(i, 1, ACCEPT) if good else Answer(i, 1, ADJUST, truth))
        if profile == "lazy":
            answers.append(Answer(i, 7, ACCEPT))
        elif profile == "inverter":
            answers.append(Answer(i, 7, ADJUST, ~truth) if good else Answer(i, 7, ACCEPT))
        elif profile == "random":
            answers.append(
                Answer(i, 7, ADJUST, _disc(48, 6, rng.integers(6, 42), rng.integers(6, 42)))
            )
        else:
            answers.append(Answer(i, 7, ACCEPT) if good else Answer(i, 7, ADJUST, truth))
    return proposals, answers, gold


@pytest.mark.parametrize(
    ("profile", "spammer", "adversary"),
    [
        ("good", False, False),
        ("lazy", True, False),
        ("random", True, False),
        ("inverter", False, True),
    ],
)
def test_spammers_and_inverters_are_identified_within_five_gold_answers(
    profile: str, spammer: bool, adversary: bool
) -> None:
    model = _model().fit(*_gold_campaign(profile))
    report = {r.volunteer: r for r in model.volunteers()}[7]
    assert report.verdicts == 5
    assert (report.spammer_score > 0.5) == spammer, report
    assert report.adversary == adversary, report


def test_adversaries_are_neutralised() -> None:
    proposals, answers, gold = _gold_campaign("inverter")
    proposals[10] = TRUTH
    answers += [Answer(10, 7, ADJUST, ~TRUTH), Answer(10, 1, ACCEPT)]
    model = _model().fit(proposals, answers, gold)
    assert dice(model.result(10).mask, TRUTH) > 0.97


def test_wild_raters_do_not_set_the_community_prior() -> None:
    """Random raters stray tens of pixels from every outline; newcomers are shrunk toward the
    typical rater, not toward a mean they dominate."""
    rng = np.random.default_rng(0)
    proposals: dict[int, np.ndarray] = {}
    answers: list[Answer] = []
    for crop in range(12):
        proposals[crop] = DILATED
        for v in (1, 2, 3):  # careful regulars: outlines within a pixel of the truth's
            answers.append(Answer(crop, v, ADJUST, _disc(48, 12 + rng.uniform(-0.7, 0.7))))
        for v in (7, 8) if crop < 3 else ():  # blobs anywhere
            centre = rng.uniform(8, 40, 2)
            answers.append(Answer(crop, v, ADJUST, _disc(48, rng.uniform(3, 8), *centre)))
    model = _model().fit(proposals, answers)
    spreads = {r.volunteer: r.spread_px for r in model.volunteers()}
    assert min(spreads[7], spreads[8]) > 4 * max(spreads[1], spreads[2], spreads[3])
    assert model.community_spread <= max(spreads[1], spreads[2], spreads[3])
    newcomer = model._shrunk(99)
    assert newcomer[3] == pytest.approx(model.community_spread)


# -- decisions, online updates, state ------------------------------------------------------------


def test_decide_retires_continues_and_escalates() -> None:
    model = _model()
    model.add_crop(0, TRUTH)
    model.add(Answer(0, 1, ACCEPT))
    assert model.decide(0, min_answers=2) == "continue"
    model.add(Answer(0, 2, ACCEPT))
    model.add(Answer(0, 3, ACCEPT))
    assert model.decide(0, min_answers=2, confidence=0.9) == "retire"
    split = _model()
    split.add_crop(1, DILATED)
    for v, verdict in enumerate([ACCEPT, REJECT, ACCEPT, REJECT]):
        split.add(Answer(1, v, verdict))
    assert split.decide(1, max_answers=4) == "escalate"


def test_online_update_matches_refit_on_one_crop() -> None:
    answers = [Answer(0, 1, REJECT), Answer(0, 2, ADJUST, TRUTH), Answer(0, 3, ADJUST, ERODED)]
    online = _model()
    online.add_crop(0, DILATED)
    for answer in answers:
        result = online.add(answer)
    assert result.answers == 3
    batch = _model().fit({0: DILATED}, answers)
    # One online pass approximates the converged batch fit ...
    assert dice(result.mask, batch.result(0).mask) > 0.9
    # ... and a refit of what the online model holds is exactly the batch fit.
    online.refit()
    np.testing.assert_array_equal(online.result(0).prob, batch.result(0).prob)
    assert online.state_dict() == batch.state_dict()


def test_a_mask_that_widens_the_roi_keeps_refit_equal_to_fit() -> None:
    small = _disc(64, 6, 20, 20)
    far = _disc(64, 8, 44, 44)  # outside the first ROI: the ROI widens, maps are re-placed
    answers = [
        Answer(0, 1, ADJUST, small),
        Answer(0, 2, ADJUST, far),
        Answer(0, 3, ADJUST, small | far),
    ]
    online = _model()
    online.add_crop(0, small)
    for answer in answers:
        online.add(answer)
    online.refit()
    batch = _model().fit({0: small}, answers)
    np.testing.assert_array_equal(online.result(0).prob, batch.result(0).prob)
    assert online.state_dict() == batch.state_dict()


def test_a_volunteers_new_answer_replaces_their_last() -> None:
    twice = _model()
    twice.add_crop(0, DILATED)
    twice.add(Answer(0, 1, ADJUST, ERODED))
    twice.add(Answer(0, 1, ADJUST, TRUTH))
    once = _model()
    once.add_crop(0, DILATED)
    once.add(Answer(0, 1, ADJUST, TRUTH))
    twice.refit()
    once.refit()
    np.testing.assert_array_equal(twice.result(0).prob, once.result(0).prob)


def test_a_changed_verdict_leaves_no_negative_counts() -> None:
    model = _model()
    model.add_crop(0, TRUTH)
    model.add(Answer(0, 1, ACCEPT))
    model.add(Answer(0, 1, REJECT))
    votes = model.sums[1][4:10]
    assert (votes >= -1e-12).all()
    assert votes.sum() == pytest.approx(1.0)


def test_state_round_trips_through_json() -> None:
    model = _model().fit(*_gold_campaign("good"))
    state = json.loads(json.dumps(model.state_dict()))
    restored = ProposalAwareFusion.from_state(state)
    assert restored.state_dict() == model.state_dict()
    with pytest.raises(ValueError, match="paf-"):
        ProposalAwareFusion.from_state({**state, "method_version": "paf-0"})


def test_add_errors_name_the_problem() -> None:
    model = _model()
    with pytest.raises(KeyError, match="add_crop first"):
        model.add(Answer(5, 1, ACCEPT))
    model.add_crop(0, TRUTH)
    with pytest.raises(ValueError, match="adjust answer needs"):
        model.add(Answer(0, 1, ADJUST, None))
    with pytest.raises(ValueError, match="proposal must be"):
        model.add_crop(1, np.zeros((2, 2, 2), bool))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_batch_fit_is_independent_of_answer_order(seed: int) -> None:
    proposals, answers, gold = _offset_campaign(15, n=6)
    order = np.random.default_rng(seed).permutation(len(answers))
    a = _model(n_iter=4).fit(proposals, answers, gold)
    b = _model(n_iter=4).fit(proposals, [answers[i] for i in order], gold)
    for crop in proposals:
        np.testing.assert_array_equal(a.result(crop).prob, b.result(crop).prob)
    assert a.state_dict() == b.state_dict()


def test_fit_is_deterministic() -> None:
    data = _offset_campaign(15, n=6)
    assert _model().fit(*data).state_dict() == _model().fit(*data).state_dict()


# -- simulator -----------------------------------------------------------------------------------


def test_benchmark_scenarios_parse() -> None:
    files = sorted(
        (Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios").glob("*.json")
    )
    assert len(files) >= 2
    for file in files:
        assert Scenario.from_json(file).n_crops > 0


def test_scenarios_in_shared_parse() -> None:
    files = sorted(SCENARIOS.glob("*.json"))
    if not files:
        pytest.skip("../shared/scenarios is not beside this checkout")
    for file in files:
        assert Scenario.from_json(file).n_crops > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"volunteer_mix": {"good": 0.5, "lazy": 0.4}}, "sum to 1"),
        ({"volunteer_mix": {"genius": 1.0}}, "unknown names"),
        ({"answers_per_crop": [5, 3]}, "answers_per_crop"),
        ({"pool_size": 4, "answers_per_crop": [2, 5]}, "exceeds pool_size"),
        ({"colour": "blue"}, "unknown scenario keys"),
    ],
)
def test_scenario_errors_name_the_problem(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scenario.from_dict(change)


def test_simulation_follows_the_scenario_and_repeats() -> None:
    scenario = Scenario(
        seed=3, n_crops=12, crop_size=96, pool_size=20, answers_per_crop=(3, 5), gold_fraction=0.25
    )
    a, b = simulate(scenario), simulate(scenario)
    assert a.truth.shape == (12, 96, 96)
    assert int(a.gold.sum()) == 3
    assert [x.verdict for x in a.answers] == [x.verdict for x in b.answers]
    per_crop = np.bincount([x.crop for x in a.answers], minlength=12)
    assert all(per_crop[i] >= 3 for i in np.flatnonzero(~a.gold))
    assert len({(x.crop, x.volunteer) for x in a.answers}) == len(a.answers)
    assert all((x.mask is not None) == (x.verdict == ADJUST) for x in a.answers)
    lazy = [i for i, p in enumerate(a.profiles) if p == "lazy"]
    assert all(x.verdict == ACCEPT for x in a.answers if x.volunteer in lazy)


def test_paf_beats_majority_vote_on_a_small_campaign() -> None:
    from fusion.bench import run_methods

    scenario = Scenario(seed=5, n_crops=40, crop_size=96, pool_size=30, answers_per_crop=(4, 8))
    results = {
        r.method: r
        for r in run_methods(simulate(scenario), methods=["proposal", "majority-vote", "paf"])
    }
    assert (
        results["paf"].mean_dice
        > results["majority-vote"].mean_dice
        > results["proposal"].mean_dice
    )


@pytest.mark.parametrize("unanswered", [0, 54])
def test_crops_nobody_answered_change_no_consensus(unanswered: int) -> None:
    """A young campaign: most crops have no answer yet, some verdicts only. They say nothing
    about the proposal's pixels, so they must not teach the model that proposals miss foreground
    (a soft halo that grows with their number), or one wobbly correction outvotes four accepts.
    """
    size = 40
    proposals = {k: _disc(size, 7) for k in range(6 + unanswered)}
    gold = {0: _disc(size, 7), 1: _disc(size, 7)}
    answers = [Answer(c, 1, ACCEPT) for c in (0, 1)]
    answers += [Answer(c, 2, ADJUST, _disc(size, 7)) for c in (0, 1)]
    answers += [Answer(c, v, ACCEPT) for c in (3, 4, 5) for v in (1, 3, 4)]  # verdicts only
    wobbly = _disc(size, 8, cy=size / 2 + 1.5)
    answers += [Answer(2, v, ACCEPT) for v in (1, 3, 4, 5)] + [Answer(2, 2, ADJUST, wobbly)]
    model = _model().fit(proposals, answers, gold)
    result = model.result(2)
    assert result.accept_probability > 0.9
    assert dice(result.mask, proposals[2]) > 0.99  # was 0.970 with 54 unanswered crops
    (_, _), (sensitivity, specificity) = model.proposal_rates  # when acceptable
    assert sensitivity > 0.95  # was 0.73 with 54 unanswered crops
    assert specificity > 0.95


def test_a_tools_outline_keeps_no_drawing_bias_of_whoever_chose_it() -> None:
    """An under-segmenter's own outlines are widened back, but an outline a tool drew for them
    (a model re-run on their taps, a one-tap option) carries none of their bias: it stays."""
    proposals = dict.fromkeys(range(6), DILATED)
    gold = dict.fromkeys(range(4), TRUTH)
    answers = [Answer(k, 1, ADJUST, ERODED) for k in range(4)]  # draws 3 px too small
    answers += [Answer(k, 2, ADJUST, TRUTH) for k in range(4)]
    answers += [Answer(k, v, REJECT) for k in (4, 5) for v in (3, 4)]
    drawn = Answer(4, 1, ADJUST, ERODED)
    tool = Answer(5, 1, ADJUST, TRUTH, drawn=False)
    model = _model().fit(proposals, [*answers, drawn, tool], gold)
    assert model.volunteers()[0].offset_px < -1.5  # learned from their own outlines on gold
    assert dice(model.result(4).mask, TRUTH) > 0.95  # their outline, widened back
    assert dice(model.result(5).mask, TRUTH) > 0.95  # the tool's outline, as it is
    widened = _model().fit(proposals, [*answers, drawn, Answer(5, 1, ADJUST, TRUTH)], gold)
    assert dice(widened.result(5).mask, TRUTH) < dice(model.result(5).mask, TRUTH) - 0.03
