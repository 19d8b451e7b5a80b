from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.store import codecs
from bot.store.files import FileStore, InvalidKey, sha256_hex


def test_store_put_is_content_addressed_and_deduplicated(store: FileStore) -> None:
    key, created = store.put("images", b"abc", "png")
    assert key == f"images/{sha256_hex(b'abc')}.png"
    assert created
    again, created_again = store.put("images", b"abc", "png")
    assert again == key
    assert not created_again
    assert store.get(key) == b"abc"
    assert store.all_keys() == [key]


def test_store_path_rejects_traversal_and_unknown_kinds(store: FileStore) -> None:
    for bad in [
        "../etc/passwd",
        "images/../../x.png",
        "secrets/" + "a" * 64 + ".png",
        "images/abc.png",
    ]:
        with pytest.raises(InvalidKey):
            store.path(bad)


def test_store_failed_write_leaves_no_file(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("bot.store.files.os.fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put("crops", b"data", "png")
    assert store.all_keys() == []
    assert list(store.root.rglob("*.png")) == []


def test_store_sweeps_temporary_files(store: FileStore, tmp_path: Path) -> None:
    key, _ = store.put("masks", b"m", "png")
    leftover = store.path(key).parent / ".tmp-crash.png"
    leftover.write_bytes(b"half")
    assert store.all_keys() == [key]
    assert store.sweep_temporary() == 1
    assert not leftover.exists()


def test_store_delete_removes_key(store: FileStore) -> None:
    key, _ = store.put("embeddings", b"e", "npy")
    store.delete(key)
    assert not store.exists(key)


def test_mask_codec_is_one_bit_and_lossless() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.3
    data = codecs.encode_mask(mask)
    assert Image.open(io.BytesIO(data)).mode == "1"
    np.testing.assert_array_equal(codecs.decode_mask(data), mask)


def test_prob_codec_quantises_to_1_255() -> None:
    prob = np.linspace(0, 1, 100).reshape(10, 10)
    back = codecs.decode_prob(codecs.encode_prob(prob))
    assert np.abs(back - prob).max() <= 0.5 / 255 + 1e-6


def test_embedding_codec_is_fp16() -> None:
    embedding = np.random.default_rng(1).standard_normal((1, 8, 4, 4)).astype(np.float32)
    back = codecs.decode_embedding(codecs.encode_embedding(embedding))
    assert back.dtype == np.float16
    assert back.shape == embedding.shape
    np.testing.assert_allclose(back, embedding, rtol=1e-3, atol=1e-3)


def test_png_codec_round_trips_grey_and_rgb() -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
    np.testing.assert_array_equal(codecs.decode_png(codecs.encode_png(grey)), grey)
    np.testing.assert_array_equal(codecs.decode_png(codecs.encode_png(rgb)), rgb)
    assert codecs.encode_png(grey) == codecs.encode_png(grey.copy())  # deterministic bytes


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((3, 4), dtype=bool),
        np.ones((3, 4), dtype=bool),
        np.eye(4, dtype=bool),
        np.random.default_rng(0).random((17, 9)) > 0.5,
    ],
)
def test_runs_round_trip_masks(mask: np.ndarray) -> None:
    runs = codecs.encode_runs(mask)
    assert sum(runs) == mask.size
    assert runs[0] == (0 if mask.flat[0] else runs[0])
    assert np.array_equal(codecs.decode_runs(runs, mask.shape), mask)


@pytest.mark.parametrize("runs", [[5], [-1, 13], [3, 2.5, 7], [True, 11]])
def test_runs_refuse_what_does_not_describe_the_mask(runs: list[int]) -> None:
    with pytest.raises(ValueError, match="runs"):
        codecs.decode_runs(runs, (3, 4))
