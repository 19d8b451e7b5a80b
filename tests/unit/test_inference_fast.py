from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pytest
import torch

from bot.sim.phantom import make_phantom
from inference.backend import sam_modules
from inference.fast import FactoredBoxDecoder, OnnxDecoder, _BoxDecoder, sdpa_encoder
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
    assert {p.name for p in tmp_path.rglob("*.onnx")} == {
        "encoder.onnx",
        OnnxDecoder.PREPARE,
        OnnxDecoder.DECODE,
    }
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


def _sam_decoder(depth: int, seed: int) -> SimpleNamespace:
    """SAM's prompt encoder and mask decoder at small sizes, with ``depth`` two-way blocks."""
    _, modeling = sam_modules()
    torch.manual_seed(seed)
    prompt_encoder = modeling.PromptEncoder(
        embed_dim=32, image_embedding_size=(8, 8), input_image_size=(128, 128), mask_in_chans=4
    )
    mask_decoder = modeling.MaskDecoder(
        num_multimask_outputs=3,
        transformer=modeling.TwoWayTransformer(
            depth=depth, embedding_dim=32, mlp_dim=64, num_heads=4
        ),
        transformer_dim=32,
        iou_head_depth=2,
        iou_head_hidden_dim=32,
    )
    for parameter in [*prompt_encoder.parameters(), *mask_decoder.parameters()]:
        torch.nn.init.normal_(parameter, std=0.3)  # large logits: a real test of the algebra
    return SimpleNamespace(prompt_encoder=prompt_encoder.eval(), mask_decoder=mask_decoder.eval())


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_factored_decoder_is_sams_decoder(depth: int) -> None:
    sam = _sam_decoder(depth, seed=depth)
    embedding = torch.randn(1, 32, 8, 8)
    boxes = torch.tensor([[10.0, 12.0, 90.0, 70.0], [0.0, 0.0, 127.0, 127.0], [50, 60, 58, 61]])
    with torch.inference_mode():
        expected_logits, expected_iou = _BoxDecoder(sam)(embedding, boxes)
        factored = FactoredBoxDecoder(sam)
        logits, iou = factored(*factored.prepare(embedding), boxes)
        single, _ = factored(*factored.prepare(embedding), boxes[1:2])
    # Far from trivial at the tolerance below: boxes change the logits, which vary across pixels.
    assert (expected_logits[0] - expected_logits[1]).abs().max() > 1e-3
    assert expected_logits.std() > 0.01
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, expected_iou, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single, expected_logits[1:2], atol=1e-5, rtol=1e-5)


def test_factored_decoder_on_a_rectangular_grid() -> None:
    _, modeling = sam_modules()
    torch.manual_seed(0)
    prompt_encoder = modeling.PromptEncoder(
        embed_dim=16, image_embedding_size=(6, 10), input_image_size=(96, 160), mask_in_chans=4
    )
    transformer = modeling.TwoWayTransformer(depth=2, embedding_dim=16, mlp_dim=32, num_heads=2)
    mask_decoder = modeling.MaskDecoder(
        num_multimask_outputs=3, transformer=transformer, transformer_dim=16
    )
    sam = SimpleNamespace(prompt_encoder=prompt_encoder.eval(), mask_decoder=mask_decoder.eval())
    embedding = torch.randn(1, 16, 6, 10)
    boxes = torch.tensor([[5.0, 8.0, 120.0, 70.0]])
    with torch.inference_mode():
        expected, _ = _BoxDecoder(sam)(embedding, boxes)
        factored = FactoredBoxDecoder(sam)
        got, _ = factored(*factored.prepare(embedding), boxes)
        with pytest.raises(ValueError, match="one embedding"):
            factored.prepare(torch.randn(2, 16, 6, 10))
    assert got.shape == expected.shape == (1, 1, 24, 40)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_prepared_tensors_are_kept_per_model(tiny: LoadedModel, crop: np.ndarray) -> None:
    other = load_model(TINY)  # same architecture, other weights below, other model id
    with torch.no_grad():
        for parameter in other.sam.mask_decoder.parameters():
            parameter.add_(0.1)
    other = LoadedModel(other.spec, other.sam, "tiny-perturbed")
    first = MedSamPredictor(tiny, InferenceConfig(decoder="factored"))
    second = MedSamPredictor(other, InferenceConfig(decoder="factored"))
    embedding = first.embed(crop)
    first.predict_boxes(embedding, [(10, 10, 60, 70)])
    got = second.predict_boxes(embedding, [(10, 10, 60, 70)])[0]
    want = MedSamPredictor(other).predict_boxes(embedding, [(10, 10, 60, 70)])[0]
    assert got.low_res_logits is not None
    assert want.low_res_logits is not None
    np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, atol=1e-4)


@pytest.mark.parametrize("decoder", ["factored", "onnx"])
def test_fast_decoders_prepare_once_per_embedding(
    tiny: LoadedModel,
    crop: np.ndarray,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    decoder: Literal["factored", "onnx"],
) -> None:
    reference = MedSamPredictor(tiny)
    fast = MedSamPredictor(tiny, InferenceConfig(decoder=decoder, onnx_dir=tmp_path))
    embedding = reference.embed(crop)
    owner = OnnxDecoder if decoder == "onnx" else FactoredBoxDecoder
    calls: list[int] = []
    original = owner.prepare

    def counting(self: Any, embedding: Any) -> Any:
        calls.append(1)
        return original(self, embedding)

    monkeypatch.setattr(owner, "prepare", counting)
    boxes = [(10, 10, 60, 70), (30, 20, 100, 80)]
    for box in boxes:
        got = fast.predict_boxes(embedding, [box])[0]
        want = reference.predict_boxes(embedding, [box])[0]
        assert got.low_res_logits is not None
        assert want.low_res_logits is not None
        np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, atol=1e-4)
        assert got.predicted_iou == pytest.approx(want.predicted_iou, abs=1e-5)
    assert len(calls) == 1
    assert len(fast.candidates(embedding, boxes[0])) >= 1
    assert len(calls) == 1
