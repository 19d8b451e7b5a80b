"""Decoded masks, crops and probability maps, cached by store key.

Store keys are content hashes, so a key's pixels never change and caching them is always safe.
The arrays come back read-only: callers copy before changing them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bot.store import codecs
from bot.store.files import FileStore

CACHED = 512


def _frozen(array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    array.flags.writeable = False
    return array


@functools.lru_cache(maxsize=CACHED)
def _load(root: Path, key: str, kind: str) -> npt.NDArray[np.generic]:
    decode: Callable[[bytes], npt.NDArray[np.generic]] = {
        "mask": codecs.decode_mask,
        "png": codecs.decode_png,
        "prob": codecs.decode_prob,
    }[kind]
    return _frozen(decode(FileStore(root).get(key)))


def mask(store: FileStore, key: str) -> npt.NDArray[np.bool_]:
    """The (H, W) bool mask stored under ``key``."""
    return _load(store.root, key, "mask")  # type: ignore[return-value]


def image(store: FileStore, key: str) -> npt.NDArray[np.uint8]:
    """The uint8 image (crop) stored under ``key``."""
    return _load(store.root, key, "png")  # type: ignore[return-value]


def prob(store: FileStore, key: str) -> npt.NDArray[np.float32]:
    """The probability map stored under ``key``."""
    return _load(store.root, key, "prob")  # type: ignore[return-value]
