from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.backend import build_tiny_sam
from inference.cache import EmbeddingCache, image_hash
from inference.models import MEDSAM, REGISTRY, TINY, CheckpointError, LoadedModel, load_model
from inference.prediction import (
    Candidate,
    box_from_taps,
    dedupe,
    jitter_boxes,
    mask_iou,
    stability_score,
)
from inference.predictor import InferenceConfig, MedSamPredictor
from inference.preprocess import scale_boxes, to_rgb_uint8
from tests.helpers.medsam_reference import run_medsam


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model(TINY)


def _image(shape: tuple[int, ...], dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    high = 255 if dtype == np.uint8 else 4000
    image: np.ndarray = rng.integers(0, high, size=shape).astype(dtype)
    image[shape[0] // 4 : shape[0] // 2, shape[1] // 4 : shape[1] // 2] = high // 2
    return image


# -- preprocessing -------------------------------------------------------------------------------


def test_to_rgb_uint8_handles_grey_alpha_and_16_bit() -> None:
    assert to_rgb_uint8(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 255
    assert to_rgb_uint8(rgba).max() == 0
    wide = to_rgb_uint8(np.array([[0, 1000], [2000, 4000]], np.uint16))
    assert wide.dtype == np.uint8
    assert wide.min() == 0
    assert wide.max() == 255
    with pytest.raises(ValueError, match="image must be"):
        to_rgb_uint8(np.zeros((2, 2, 2)))


def test_box_scaling_is_per_axis_for_medsam_and_uniform_for_sam() -> None:
    whole = scale_boxes(np.array([[0, 0, 420, 300]]), (300, 420), 1024, squash=True)
    np.testing.assert_allclose(whole, [[0, 0, 1024, 1024]])
    box = scale_boxes(np.array([[42, 30, 84, 60]]), (300, 420), 1024, squash=True)
    np.testing.assert_allclose(box, [[102.4, 102.4, 204.8, 204.8]], rtol=1e-6)
    sam = scale_boxes(np.array([[0, 0, 420, 300]]), (300, 420), 1024, squash=False)
    np.testing.assert_allclose(sam, [[0, 0, 1024, 731]], atol=0.01)


# -- parity with MedSAM's published steps --------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        _image((150, 210)),  # grey, non-square
        _image((120, 100), np.uint16),  # 16-bit grey
        _image((90, 90, 3)),  # RGB
        _image((80, 96, 4)),  # RGBA
    ],
    ids=["grey", "uint16", "rgb", "rgba"],
)
def test_predictor_equals_transcribed_medsam(tiny: LoadedModel, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    boxes = np.array([[5, 8, w - 10, h - 4], [w / 4, h / 4, w / 2, h / 2], [0, 0, w, h]])
    reference_input = to_rgb_uint8(image)  # MedSAM's scripts take 8-bit RGB or grey
    seg, prob, logits, embedding = run_medsam(tiny.sam, reference_input, boxes)
    predictor = MedSamPredictor(tiny)
    ours = predictor.embed(image)
    torch.testing.assert_close(ours.tensor, embedding, rtol=0, atol=0)
    predictions = predictor.predict_boxes(ours, boxes)
    for n, p in enumerate(predictions):
        np.testing.assert_array_equal(p.mask, seg[n].astype(bool))
        np.testing.assert_array_equal(p.prob, prob[n])
        np.testing.assert_array_equal(p.low_res_logits, logits[n].numpy())
        assert p.model_id == tiny.model_id
        assert np.isfinite(p.predicted_iou)
        assert 0.0 <= p.stability <= 1.0


def test_predict_boxes_in_chunks_equals_one_call(tiny: LoadedModel) -> None:
    image = _image((64, 80))
    boxes = [(i, i, 40 + i, 50) for i in range(5)]
    whole = MedSamPredictor(tiny).predict_boxes(MedSamPredictor(tiny).embed(image), boxes)
    chunked_predictor = MedSamPredictor(tiny, InferenceConfig(box_chunk=2))
    chunked = chunked_predictor.predict_boxes(chunked_predictor.embed(image), boxes)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(a.prob, b.prob, atol=1e-6)


# -- prompts and candidates ----------------------------------------------------------------------


def test_points_on_medsam_are_flagged_unvalidated(tiny: LoadedModel) -> None:
    medsam_like = LoadedModel(REGISTRY[MEDSAM], tiny.sam, "medsam-shaped-tiny")
    image = _image((64, 64))
    predictor = MedSamPredictor(medsam_like)
    embedding = predictor.embed(image)
    boxed = predictor.predict(embedding, box=(10, 10, 50, 50))
    assert not boxed.unvalidated
    tapped = predictor.predict(
        embedding, box=(10, 10, 50, 50), points=[[30, 30], [12, 12]], point_labels=[1, 0]
    )
    assert tapped.unvalidated
    refined = predictor.predict(embedding, box=(10, 10, 50, 50), mask_input=boxed.low_res_logits)
    assert refined.unvalidated
    assert (
        not MedSamPredictor(tiny)
        .predict(embedding, points=[[30, 30]], point_labels=[1])
        .unvalidated
    )
    with pytest.raises(ValueError, match="give a box"):
        predictor.predict(embedding)
    with pytest.raises(ValueError, match="point_labels"):
        predictor.predict(embedding, points=[[1, 1], [2, 2]], point_labels=[1])


def test_candidates_are_distinct_and_labelled(tiny: LoadedModel) -> None:
    predictor = MedSamPredictor(tiny)
    embedding = predictor.embed(_image((96, 96)))
    candidates = predictor.candidates(embedding, (20, 20, 70, 80))
    assert candidates[0].source == "proposal"
    assert any(c.source.startswith("alternative") for c in candidates)
    for i, a in enumerate(candidates):
        assert a.mask.shape == (96, 96)
        assert a.mask.any()
        for b in candidates[i + 1 :]:
            assert mask_iou(a.mask, b.mask) < 0.95
    medsam_like = MedSamPredictor(LoadedModel(REGISTRY[MEDSAM], tiny.sam, "m"))
    assert not any(
        c.source.startswith("alternative")
        for c in medsam_like.candidates(embedding, (20, 20, 70, 80))
    )


def test_dedupe_drops_empty_and_near_duplicates() -> None:
    base = np.zeros((10, 10), bool)
    base[2:8, 2:8] = True
    almost = base.copy()
    almost[2, 2] = False
    other = np.zeros((10, 10), bool)
    other[0:3, 0:3] = True
    kept = dedupe(
        [
            Candidate(base, "a", 1),
            Candidate(almost, "b", 1),
            Candidate(other, "c", 1),
            Candidate(np.zeros_like(base), "d", 1),
        ]
    )
    assert [c.source for c in kept] == ["a", "c"]


def test_stability_and_jitter_helpers() -> None:
    assert stability_score(np.full((4, 4), 0.1)) == 0.0
    assert stability_score(np.full((4, 4), 0.99)) == 1.0
    assert stability_score(np.array([[0.9, 0.6]])) == 0.5
    boxes = dict(jitter_boxes((10, 10, 30, 50), (60, 40), 0.1))
    assert boxes["box-smaller"] == pytest.approx((12, 14, 28, 46))
    assert boxes["box-larger"] == pytest.approx((8, 6, 32, 54))


# -- embedding cache -----------------------------------------------------------------------------


def test_cache_hit_skips_the_encoder(tiny: LoadedModel, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    predictor = MedSamPredictor(tiny, cache=cache)
    calls = {"n": 0}
    handle = tiny.sam.image_encoder.register_forward_hook(
        lambda *_: calls.__setitem__("n", calls["n"] + 1)
    )
    try:
        image = _image((70, 50))
        first = predictor.embed(image)
        second = predictor.embed(image)
    finally:
        handle.remove()
    assert calls["n"] == 1
    assert (cache.hits, cache.misses) == (1, 1)
    assert second.original_hw == (70, 50)
    torch.testing.assert_close(second.tensor, first.tensor, atol=2e-3, rtol=1e-3)
    [entry] = list(tmp_path.rglob("*.npz"))
    with np.load(entry) as data:
        assert data["embedding"].dtype == np.float16
        assert tuple(data["hw"]) == (70, 50)
    assert not list(tmp_path.rglob(".tmp-*"))


def test_cache_is_invalidated_by_model_and_preprocessing(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    key = image_hash(np.zeros((3, 3), np.uint8))
    cache.put(key, "model-a", "pre-v1", np.ones((1, 2, 2, 2)), (3, 3))
    assert cache.get(key, "model-a", "pre-v1") is not None
    assert cache.get(key, "model-b", "pre-v1") is None
    assert cache.get(key, "model-a", "pre-v2") is None
    assert image_hash(np.zeros((3, 3), np.uint8)) != image_hash(np.zeros((3, 3), np.uint16))
    with pytest.raises(ValueError, match="hex digest"):
        cache.path("../x", "m", "p")


def test_masks_from_cached_fp16_embeddings_match_fp32(tiny: LoadedModel, tmp_path: Path) -> None:
    image = _image((80, 80))
    box = [(10, 10, 60, 70)]
    fresh = MedSamPredictor(tiny)
    reference = fresh.predict_boxes(fresh.embed(image), box)[0]
    cached = MedSamPredictor(tiny, cache=EmbeddingCache(tmp_path))
    cached.embed(image)
    from_cache = cached.predict_boxes(cached.embed(image), box)[0]
    assert mask_iou(reference.mask, from_cache.mask) >= 0.999


# -- checkpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapping", ["plain", "model", "module"])
def test_checkpoint_formats_load_strictly(wrapping: str, tmp_path: Path) -> None:
    state = build_tiny_sam(seed=3).state_dict()
    if wrapping == "model":
        payload: object = {"model": state, "epoch": 3}
    elif wrapping == "module":
        payload = {f"module.{k}": v for k, v in state.items()}
    else:
        payload = state
    path = tmp_path / "w.pth"
    torch.save(payload, path)
    loaded = load_model(TINY, path)
    assert loaded.model_id.startswith("tiny@")
    for key, value in loaded.sam.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_checkpoint_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model(MEDSAM, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="needs a checkpoint"):
        load_model(MEDSAM)
    with pytest.raises(CheckpointError, match="unknown model"):
        load_model("vit_h")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model(TINY, junk)
    state = build_tiny_sam().state_dict()
    missing = tmp_path / "missing_keys.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("mask_decoder.iou")}, missing)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model(TINY, missing)
    other = tmp_path / "other.pth"
    torch.save(build_tiny_sam(img_size=128).state_dict(), other)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_model(TINY, other)


def test_checkpoint_sha_is_part_of_model_id(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save(build_tiny_sam(seed=1).state_dict(), a)
    torch.save(build_tiny_sam(seed=2).state_dict(), b)
    assert load_model(TINY, a).model_id != load_model(TINY, b).model_id


def test_modelling_code_imports_without_torchvision() -> None:
    code = (
        "import sys; sys.modules['torchvision'] = None\n"
        "import numpy as np\n"
        "from inference.models import load_model\n"
        "from inference.predictor import MedSamPredictor\n"
        "p = MedSamPredictor(load_model('tiny'))\n"
        "print(p.propose(np.zeros((32, 32), np.uint8), (4, 4, 20, 20)).mask.shape)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "(32, 32)" in result.stdout


# -- configuration errors ------------------------------------------------------------------------


def test_predictor_rejects_bad_config(tiny: LoadedModel) -> None:
    with pytest.raises(ValueError, match="device"):
        MedSamPredictor(tiny, InferenceConfig(device="tpu"))
    with pytest.raises(ValueError, match="threads"):
        MedSamPredictor(tiny, InferenceConfig(threads=0))


def test_box_from_taps_spans_the_taps_with_padding() -> None:
    assert box_from_taps([[10, 40], [30, 20]], (50, 60)) == (8.0, 18.0, 32.0, 42.0)
    assert box_from_taps([[0, 0], [59, 49]], (50, 60)) == (0.0, 0.0, 60.0, 50.0)
    with pytest.raises(ValueError, match="at least two taps"):
        box_from_taps([[1, 1]], (10, 10))
    with pytest.raises(ValueError, match="span no area"):
        box_from_taps([[100, 100], [120, 130]], (10, 10), pad=0)
