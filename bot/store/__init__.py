"""Content-addressed file storage under the data dir."""

from bot.store.files import FileStore, InvalidKey, sha256_hex

__all__ = ["FileStore", "InvalidKey", "sha256_hex"]
