"""Array <-> stored bytes: PNG images, 1-bit PNG masks, 8-bit probability maps, fp16 embeddings."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage


def encode_png(pixels: npt.NDArray[np.uint8], *, level: int = 6) -> bytes:
    """Encode an (H, W) grey or (H, W, 3) RGB uint8 image as a deterministic PNG.

    ``level`` is zlib's compression level: keep the default for stored files (their content
    hash depends on it); images only sent to a phone may use 1 (several times faster).
    """
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(
            f"pixels must be uint8 (H, W) or (H, W, 3), got {pixels.dtype} {pixels.shape}"
        )
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG", optimize=False, compress_level=level)
    return buffer.getvalue()


def decode_png(data: bytes) -> npt.NDArray[np.uint8]:
    """Decode a PNG written by ``encode_png``."""
    with PILImage.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB" if image.mode == "RGB" else "L"), dtype=np.uint8)


def encode_mask(mask_hw: npt.NDArray[np.bool_]) -> bytes:
    """Encode an (H, W) boolean mask as a 1-bit PNG."""
    if mask_hw.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask_hw.shape}")
    buffer = io.BytesIO()
    PILImage.fromarray(mask_hw.astype(bool)).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_mask(data: bytes) -> npt.NDArray[np.bool_]:
    """Decode a mask PNG to an (H, W) boolean array (any non-zero pixel is foreground)."""
    with PILImage.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8) > 0


def encode_prob(prob_hw: npt.NDArray[np.floating]) -> bytes:
    """Encode an (H, W) probability map in [0, 1] as an 8-bit PNG (resolution 1/255)."""
    # A NaN (a solver that found no contrast) carries no evidence: store it as 0.5.
    values = np.nan_to_num(np.asarray(prob_hw, dtype=np.float64), nan=0.5, posinf=1.0, neginf=0.0)
    clipped = np.clip(values, 0.0, 1.0)
    return encode_png(np.rint(clipped * 255.0).astype(np.uint8))


def decode_prob(data: bytes) -> npt.NDArray[np.float32]:
    """Decode a probability map written by ``encode_prob``."""
    return decode_png(data).astype(np.float32) / 255.0


def encode_embedding(embedding: npt.NDArray[np.floating]) -> bytes:
    """Serialise an embedding as fp16 ``.npy`` bytes."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(embedding, dtype=np.float16), allow_pickle=False)
    return buffer.getvalue()


def decode_embedding(data: bytes) -> npt.NDArray[np.float16]:
    """Load an embedding written by ``encode_embedding``."""
    array = np.load(io.BytesIO(data), allow_pickle=False)
    return np.asarray(array, dtype=np.float16)


def encode_runs(mask_hw: npt.NDArray[np.bool_]) -> list[int]:
    """Row-major run lengths of an (H, W) mask, background run first (it may be 0).

    The Mini App's wire format: a 512 x 512 outline is a few hundred integers, and a browser
    decodes it into ``ImageData`` (also row-major) in one loop.
    """
    if mask_hw.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask_hw.shape}")
    flat = np.asarray(mask_hw, dtype=bool).ravel()
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(edges).tolist()
    return [0, *runs] if flat[0] else runs


def decode_runs(runs: list[int], hw: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """The (H, W) mask ``encode_runs`` describes.

    Raises:
        ValueError: a run that is not a non-negative integer, or runs not summing to H * W.
    """
    h, w = hw
    if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in runs):
        raise ValueError("runs must be non-negative integers")
    if sum(runs) != h * w:
        raise ValueError(f"runs cover {sum(runs)} pixels, the mask has {h * w}")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(h, w)
