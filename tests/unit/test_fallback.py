from __future__ import annotations

import numpy as np
import pytest

from bot.campaign.boxes import boxes_from_mask
from bot.campaign.crops import cut_crop, mask_to_crop, plan_crop
from bot.sim.phantom import STYLES, make_phantom
from inference.fallback import FALLBACK_ID, FallbackProposer
from inference.prediction import dice


def _crops(
    style: str, n: int
) -> list[tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]]:
    out = []
    for seed in range(n):
        phantom = make_phantom(style, np.random.default_rng(100 + seed), 192)
        for box, component in boxes_from_mask(phantom.mask)[:2]:
            t = plan_crop(box, 192, 192, margin=0.3, max_out=512)
            out.append((cut_crop(phantom.image, t), mask_to_crop(component, t), t.to_crop(box)))
    return out


@pytest.mark.parametrize("style", STYLES)
def test_fallback_segments_phantom_crops(style: str, capsys: pytest.CaptureFixture[str]) -> None:
    proposer = FallbackProposer()
    scores = [
        dice(proposer.propose(crop, box).mask, truth) for crop, truth, box in _crops(style, 4)
    ]
    with capsys.disabled():
        print(
            f"\nfallback Dice on {len(scores)} {style} phantom crops: "
            f"mean {np.mean(scores):.3f}, min {np.min(scores):.3f}"
        )
    assert np.mean(scores) >= 0.75


def test_fallback_labels_itself_and_keeps_to_the_box() -> None:
    crop, _, box = _crops("ct", 1)[0]
    prediction = FallbackProposer().propose(crop, box)
    assert prediction.model_id == FALLBACK_ID
    assert prediction.low_res_logits is None
    x0, y0, x1, y1 = (round(v) for v in box)
    outside = prediction.mask.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any()
    assert prediction.prob.dtype == np.float32


def test_fallback_taps_move_the_mask() -> None:
    image = np.zeros((60, 60), np.uint8)
    image[10:50, 10:30] = 200  # two touching regions of different brightness
    image[10:50, 30:50] = 120
    proposer = FallbackProposer()
    box = (8.0, 8.0, 52.0, 52.0)
    left = proposer.predict(image, box=box, points=[[20, 30], [40, 30]], point_labels=[1, 0])
    right = proposer.predict(image, box=box, points=[[40, 30], [20, 30]], point_labels=[1, 0])
    assert left.mask[30, 20]
    assert not left.mask[30, 40]
    assert right.mask[30, 40]
    assert not right.mask[30, 20]


def test_fallback_candidates_and_errors() -> None:
    crop, _, box = _crops("dermoscopy", 1)[0]
    proposer = FallbackProposer()
    candidates = proposer.candidates(crop, box)
    assert candidates[0].source == "proposal"
    assert all(c.mask.shape == crop.shape for c in candidates)
    with pytest.raises(ValueError, match="inside"):
        proposer.predict(crop, box=(0, 0, 10_000, 5))
