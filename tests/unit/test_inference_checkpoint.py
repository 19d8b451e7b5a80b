"""Opt-in: every fast path against the fp32 reference on a real MedSAM checkpoint.

Runs only when MEDCROWD_MEDSAM_CHECKPOINT points at medsam_vit_b.pth (see README); takes minutes
on a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bot.campaign.boxes import boxes_from_mask
from bot.campaign.crops import cut_crop, mask_to_crop, plan_crop
from bot.sim.phantom import STYLES, make_phantom
from inference.models import MEDSAM, LoadedModel, load_model
from inference.prediction import dice, mask_iou
from inference.predictor import InferenceConfig, MedSamPredictor

CHECKPOINT = os.environ.get("MEDCROWD_MEDSAM_CHECKPOINT")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not CHECKPOINT, reason="set MEDCROWD_MEDSAM_CHECKPOINT to a MedSAM checkpoint"
    ),
]


@pytest.fixture(scope="module")
def medsam() -> LoadedModel:
    assert CHECKPOINT is not None
    return load_model(MEDSAM, Path(CHECKPOINT))


def _crops() -> list[tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]]:
    out = []
    for i, style in enumerate(STYLES):
        phantom = make_phantom(style, np.random.default_rng(i), 256)
        box, component = boxes_from_mask(phantom.mask)[0]
        t = plan_crop(box, 256, 256, margin=0.3, max_out=512)
        out.append((cut_crop(phantom.image, t), mask_to_crop(component, t), t.to_crop(box)))
    return out


@pytest.mark.parametrize(
    ("config", "min_iou"),
    [
        (InferenceConfig(encoder="onnx", decoder="onnx"), 0.999),
        (InferenceConfig(decoder="factored"), 0.999),
        (InferenceConfig(encoder="bf16"), 0.98),
    ],
    ids=["onnx", "factored", "bf16"],
)
def test_fast_paths_match_fp32_on_real_weights(
    medsam: LoadedModel, config: InferenceConfig, min_iou: float, tmp_path: Path
) -> None:
    reference = MedSamPredictor(medsam)
    fast = MedSamPredictor(medsam, InferenceConfig(**{**config.__dict__, "onnx_dir": tmp_path}))
    for crop, truth, box in _crops():
        expected = reference.propose(crop, box)
        got = fast.propose(crop, box)
        assert expected.mask.any()
        assert mask_iou(expected.mask, got.mask) >= min_iou
        ref_dice, fast_dice = dice(expected.mask, truth), dice(got.mask, truth)
        print(f"Dice vs phantom truth: reference {ref_dice:.3f}, fast {fast_dice:.3f}")
