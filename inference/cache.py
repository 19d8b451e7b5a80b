"""On-disk cache of image embeddings: fp16, keyed by image hash, preprocessing and model id.

Layout: ``<root>/<model id>/<preprocess version>/<hash[:2]>/<hash>.npz`` holding the embedding
(fp16) and the original (H, W). Writes are atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

_SAFE = re.compile(r"[^A-Za-z0-9._@-]+")


def image_hash(image: npt.NDArray[np.generic]) -> str:
    """sha256 of an image's pixels, shape and dtype."""
    array = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{array.shape}|{array.dtype.str}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """fp16 embeddings on disk; a different model or preprocessing never reads another's entry."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path(self, key: str, model_id: str, preprocess_version: str) -> Path:
        """Where the entry for ``key`` lives."""
        if not re.fullmatch(r"[0-9a-f]{16,64}", key):
            raise ValueError(f"cache key must be a hex digest, got {key!r}")
        folder = self.root / _SAFE.sub("_", model_id) / _SAFE.sub("_", preprocess_version)
        return folder / key[:2] / f"{key}.npz"

    def get(
        self, key: str, model_id: str, preprocess_version: str
    ) -> tuple[npt.NDArray[np.float16], tuple[int, int]] | None:
        """The cached ``(embedding, (H, W))`` or None."""
        path = self.path(key, model_id, preprocess_version)
        try:
            with np.load(path, allow_pickle=False) as data:
                embedding = np.asarray(data["embedding"], dtype=np.float16)
                hw = tuple(int(v) for v in data["hw"])
        except (FileNotFoundError, KeyError, ValueError, OSError):
            self.misses += 1
            return None
        self.hits += 1
        return embedding, (hw[0], hw[1])

    def put(
        self,
        key: str,
        model_id: str,
        preprocess_version: str,
        embedding: npt.NDArray[np.floating],
        hw: tuple[int, int],
    ) -> Path:
        """Store an embedding as fp16, atomically."""
        path = self.path(key, model_id, preprocess_version)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(
                    handle,
                    embedding=np.asarray(embedding, dtype=np.float16),
                    hw=np.asarray(hw, dtype=np.int64),
                )
                handle.flush()
                os.fsync(handle.fileno())
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
