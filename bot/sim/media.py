"""Files the emulator holds: uploaded photos, validated and sized as Telegram does."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from bot.sim.wire import (
    MAX_DOCUMENT_BYTES,
    MAX_PHOTO_BYTES,
    MAX_PHOTO_RATIO,
    MAX_PHOTO_SIDES,
    ApiError,
    Json,
    bad_request,
    image_size,
)


@dataclass(frozen=True)
class StoredFile:
    """An uploaded file; ``file_unique_id`` depends on the bytes only, as in Telegram."""

    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    width: int
    height: int

    def photo_size(self) -> Json:
        """The PhotoSize object for this file."""
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "width": self.width,
            "height": self.height,
            "file_size": len(self.data),
        }


class MediaStore:
    """Stored files by file_id and by the file_path that getFile hands out."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._paths: dict[str, str] = {}

    def by_path(self, file_path: str) -> StoredFile | None:
        """The file behind a getFile ``file_path``, if any."""
        file_id = self._paths.get(file_path)
        return None if file_id is None else self._files[file_id]

    def store_photo(self, data: bytes) -> list[Json]:
        """Validate a photo like Telegram, store it and return its PhotoSize list."""
        if not data:
            raise bad_request("file must be non-empty")
        if len(data) > MAX_PHOTO_BYTES:
            raise bad_request("PHOTO_SAVE_FILE_INVALID")
        size = image_size(data)
        if size is None:
            raise bad_request("IMAGE_PROCESS_FAILED")
        width, height = size
        if width + height > MAX_PHOTO_SIDES or max(width, height) > MAX_PHOTO_RATIO * min(
            width, height
        ):
            raise bad_request("PHOTO_INVALID_DIMENSIONS")
        number = len(self._files) + 1
        suffix = "png" if data[:4] == b"\x89PNG" else "jpg"
        stored = StoredFile(
            file_id=f"AgACAgIAAx{number:08d}",
            file_unique_id="AQAD" + hashlib.sha256(data).hexdigest()[:16],
            file_path=f"photos/file_{number}.{suffix}",
            data=data,
            width=width,
            height=height,
        )
        self._files[stored.file_id] = stored
        self._paths[stored.file_path] = stored.file_id
        return [stored.photo_size()]

    def store_document(
        self, data: bytes, name: str, *, max_bytes: int = MAX_DOCUMENT_BYTES
    ) -> Json:
        """Store any file (a bot may upload <= 50 MB) and return its Document object."""
        if not data:
            raise bad_request("file must be non-empty")
        if len(data) > max_bytes:
            raise ApiError(413, "Request Entity Too Large")
        number = len(self._files) + 1
        stored = StoredFile(
            file_id=f"BQACAgIAAx{number:08d}",
            file_unique_id="AgAD" + hashlib.sha256(data).hexdigest()[:16],
            file_path=f"documents/file_{number}_{name}",
            data=data,
            width=0,
            height=0,
        )
        self._files[stored.file_id] = stored
        self._paths[stored.file_path] = stored.file_id
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": name,
            "file_size": len(data),
        }

    def get(self, file_id: str) -> StoredFile:
        """A stored file; Telegram's 400 for an unknown file_id."""
        stored = self._files.get(file_id)
        if stored is None:
            raise bad_request("wrong file identifier/HTTP URL specified")
        return stored

    def photo_from(self, ref: Any, files: dict[str, bytes]) -> list[Json]:
        """PhotoSizes for a photo parameter: an upload, ``attach://name`` or a known file_id."""
        if isinstance(ref, str) and ref.startswith("attach://"):
            name = ref.removeprefix("attach://")
            if name not in files:
                raise bad_request(f"file {name!r} for attach:// was not uploaded")
            return self.store_photo(files[name])
        if isinstance(ref, str) and ref:
            if re.match(r"https?://", ref):
                raise bad_request("wrong file identifier/HTTP URL specified")
            return [self.get(ref).photo_size()]
        raise bad_request("there is no photo in the request")
