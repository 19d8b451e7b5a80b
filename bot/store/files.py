"""Content-addressed files under the data dir.

A key is ``<kind>/<sha256>.<ext>``; the file lives at ``<root>/<kind>/<sha[:2]>/<sha>.<ext>``.
Writes go to a temporary file in the same folder, are fsynced and renamed into place, so a crash
never leaves a half-written file under a real key. Equal content is stored once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

Kind = Literal["images", "crops", "masks", "probs", "embeddings", "synthetic", "exports"]
KINDS: frozenset[str] = frozenset(
    {"images", "crops", "masks", "probs", "embeddings", "synthetic", "exports"}
)
_KEY = re.compile(r"^(?P<kind>[a-z]+)/(?P<sha>[0-9a-f]{64})\.(?P<ext>[a-z0-9]{1,8})$")


class InvalidKey(ValueError):
    """A string that is not a file-store key."""


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class FileStore:
    """Content-addressed, atomically written files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file of ``key``; raises ``InvalidKey`` for anything that is not a key."""
        match = _KEY.match(key)
        if match is None or match["kind"] not in KINDS:
            raise InvalidKey(f"not a file-store key: {key!r}")
        sha = match["sha"]
        return self.root / match["kind"] / sha[:2] / f"{sha}.{match['ext']}"

    @staticmethod
    def key_for(kind: Kind, data: bytes, ext: str) -> str:
        """The key ``data`` would be stored under."""
        return f"{kind}/{sha256_hex(data)}.{ext}"

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        return self.path(key).is_file()

    def put(self, kind: Kind, data: bytes, ext: str) -> tuple[str, bool]:
        """Store ``data`` and return ``(key, created)``; ``created`` is False if already there."""
        key = self.key_for(kind, data, ext)
        target = self.path(key)
        if target.is_file():
            return key, False
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=f".{ext}")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            Path(tmp).replace(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key, True

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``."""
        return self.path(key).read_bytes()

    def delete(self, key: str) -> None:
        """Remove ``key`` if present (used to undo writes of a failed transaction)."""
        self.path(key).unlink(missing_ok=True)

    def batch(self) -> FileBatch:
        """A group of writes that can be undone together (see ``FileBatch``)."""
        return FileBatch(self)

    def all_keys(self) -> list[str]:
        """Every stored key, sorted (temporary files are not keys)."""
        found: list[str] = []
        if not self.root.is_dir():
            return found
        for kind_dir in sorted(self.root.iterdir()):
            if kind_dir.name not in KINDS:
                continue
            for file in sorted(kind_dir.glob("*/*")):
                if file.name.startswith(".tmp-"):
                    continue
                key = f"{kind_dir.name}/{file.name}"
                if _KEY.match(key):
                    found.append(key)
        return found

    def sweep_temporary(self) -> int:
        """Delete temporary files left by a crash mid-write; returns how many."""
        removed = 0
        for tmp in self.root.glob("*/*/.tmp-*"):
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed


class FileBatch:
    """Writes that belong to one database transaction.

    ``put`` stores files as ``FileStore.put`` does and remembers the ones it created; ``discard``
    removes exactly those, for when the transaction that would reference them fails.
    """

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.created: list[str] = []

    def put(self, kind: Kind, data: bytes, ext: str = "png") -> str:
        """Store ``data`` and return its key."""
        key, new = self.store.put(kind, data, ext)
        if new:
            self.created.append(key)
        return key

    def discard(self) -> None:
        """Delete the files this batch created."""
        for key in self.created:
            self.store.delete(key)
        self.created.clear()
