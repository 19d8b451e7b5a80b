from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bot.sim.phantom import make_phantom
from inference.fast import sdpa_encoder
from inference.models import TINY, LoadedModel, load_model
from inference.prediction import mask_iou
from inference.predictor import InferenceConfig, MedSamPredictor


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model(TINY)


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return make_phantom("ct", np.random.default_rng(2), 128).image[20:110, 10:120]


def test_sdpa_attention_equals_reference(tiny: LoadedModel) -> None:
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        expected = tiny.sam.image_encoder(x)
        got = sdpa_encoder(tiny.sam)(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_onnx_paths_match_torch(tiny: LoadedModel, crop: np.ndarray, tmp_path: Path) -> None:
    reference = MedSamPredictor(tiny)
    fast = MedSamPredictor(tiny, InferenceConfig(encoder="onnx", decoder="onnx", onnx_dir=tmp_path))
    ref_embedding, fast_embedding = reference.embed(crop), fast.embed(crop)
    torch.testing.assert_close(fast_embedding.tensor, ref_embedding.tensor, atol=1e-4, rtol=1e-4)
    boxes = [(10, 10, 60, 70), (30, 20, 100, 80), (0, 0, 110, 90)]
    for a, b in zip(
        reference.predict_boxes(ref_embedding, boxes),
        fast.predict_boxes(ref_embedding, boxes),
        strict=True,
    ):
        assert a.low_res_logits is not None
        assert b.low_res_logits is not None
        np.testing.assert_allclose(b.low_res_logits, a.low_res_logits, atol=1e-4)
        assert mask_iou(a.mask, b.mask) >= 0.999
    assert {p.name for p in tmp_path.rglob("*.onnx")} == {"encoder.onnx", "decoder.onnx"}
    # Points still work on the ONNX predictor (they take the torch decoder).
    assert fast.predict(ref_embedding, points=[[40, 40]], point_labels=[1]).mask.shape == crop.shape


@pytest.mark.parametrize("sdpa", [False, True])
def test_bf16_encoder_agrees_with_fp32(tiny: LoadedModel, crop: np.ndarray, sdpa: bool) -> None:
    reference = MedSamPredictor(tiny)
    fast = MedSamPredictor(tiny, InferenceConfig(encoder="bf16", sdpa=sdpa))
    a, b = reference.embed(crop), fast.embed(crop)
    relative = float((a.tensor - b.tensor).norm() / a.tensor.norm())
    assert relative < 0.05
    boxes = [(10, 10, 60, 70), (30, 20, 100, 80)]
    for p, q in zip(
        reference.predict_boxes(a, boxes), reference.predict_boxes(b, boxes), strict=True
    ):
        assert mask_iou(p.mask, q.mask) >= 0.98


def test_onnx_needs_cpu(tiny: LoadedModel) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="no GPU"):
        MedSamPredictor(tiny, InferenceConfig(device="cuda", decoder="onnx"))
