"""The truth-aware ceiling of benchmarks/fusion_ceiling.py: its estimates undo what it should."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from fusion.simulate import (
    ACCEPT,
    ADJUST,
    Answer,
    Campaign,
    Scenario,
    Volunteer,
    blob,
    dice,
)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fusion_ceiling.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fusion_ceiling", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _disk(radius: float) -> np.ndarray:
    y, x = np.mgrid[0:64, 0:64]
    return np.asarray(np.hypot(y - 32, x - 32) <= radius, dtype=bool)


def _volunteer(profile: str, bias: float = 0.0) -> Volunteer:
    return Volunteer(profile, bias, 2.0, 8, 0.9, 0.03, 0.5)


def test_estimates_undo_bias_and_inversion_and_ignore_random_masks() -> None:
    ceiling = _load()
    truth = _disk(16)
    proposal = _disk(22)  # over-segments: Dice 0.68
    campaign = Campaign(
        scenario=Scenario(seed=0, n_crops=2, crop_size=64, pool_size=4, answers_per_crop=(3, 4)),
        truth=truth[None],
        proposals=proposal[None],
        proposal_modes=["biased-boundary"],
        gold=np.zeros(1, dtype=bool),
        profiles=["over-segmenter", "adversarial", "random", "lazy"],
        answers=[
            Answer(0, 0, ADJUST, _disk(21)),  # 5 px too large, and this volunteer's bias is 5
            Answer(0, 1, ADJUST, ~truth),  # an inverter
            Answer(0, 2, ADJUST, blob(np.random.default_rng(0), 64, 10, 10, 5, 5)),
            Answer(0, 3, ACCEPT),
        ],
        volunteers=[
            _volunteer("over-segmenter", 5.0),
            _volunteer("adversarial"),
            _volunteer("random"),
            _volunteer("lazy"),
        ],
    )
    estimates, usable = ceiling._candidates(campaign, 0, campaign.answers)
    assert usable
    # proposal, two corrected masks (not the random one), their average, and average + proposal
    assert len(estimates) == 5
    assert dice(estimates[1], truth) > 0.97  # the offset undone
    np.testing.assert_array_equal(estimates[2], truth)  # the inversion undone
    assert dice(estimates[3], truth) > 0.97
    nothing, usable = ceiling._candidates(campaign, 0, campaign.answers[2:])
    assert not usable  # a random blob and an accept: only the proposal
    assert len(nothing) == 1


def test_script_reports_paf_below_its_ceiling(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.json"
    scenario.write_text(
        json.dumps(
            {
                "seed": 0,
                "n_crops": 24,
                "crop_size": 96,
                "pool_size": 20,
                "answers_per_crop": [4, 8],
                "gold_fraction": 0.2,
            }
        )
    )
    out = (
        subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                "--scenario",
                str(scenario),
                "--seeds",
                "3",
                "4",
                "--budget",
                "2",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()
    )
    summary = json.loads(out[-1])
    assert summary["scenario"] == "tiny"
    assert set(summary["seeds"]) == {"3", "4"}
    for run in summary["seeds"].values():
        assert run["ceiling"]["mean"] >= run["paf"]["mean"]
        assert 0.5 < run["paf"]["mean"] <= 1.0
        assert run["no_usable_mask_first"] >= run["no_usable_mask"]
    assert summary["mean"]["ceiling"] >= summary["mean"]["paf"]
