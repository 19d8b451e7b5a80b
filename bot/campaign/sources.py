"""Enumerate upload inputs (files, folders, zip archives) safely, one file's bytes at a time.

Zip entries with absolute paths or ``..`` components, symbolic links, encrypted or nested archives,
entries whose compression ratio or size passes the caps (zip bombs) are refused with a reason,
never extracted.
Nothing is written to disk here.
"""

from __future__ import annotations

import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bot.campaign.decode import Limits

_SAFE = re.compile(r"[^A-Za-z0-9._#+-]+")
# What zipfile raises for a corrupt archive: its own BadZipFile, but also a name that is not
# UTF-8 (ValueError), a bad deflate stream (zlib.error), a short header (struct.error), ...
_CORRUPT = (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError, zlib.error)
_CORRUPT_ENTRY = (*_CORRUPT, struct.error)


@dataclass(frozen=True)
class ArchiveLimits(Limits):
    """``Limits`` plus caps that apply to a whole archive."""

    max_archive_bytes: int = 4 << 30
    max_entries: int = 20_000


@dataclass(frozen=True)
class Source:
    """One input file's bytes; ``name`` is what the report shows (``archive.zip:inner/path``)."""

    name: str
    basename: str
    data: bytes


@dataclass(frozen=True)
class SourceRejection:
    """An input refused before decoding, with the reason."""

    name: str
    reason: str


def sanitise_name(name: str) -> str:
    """A file's base name reduced to safe characters (no folders, at most 120 characters)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    cleaned = _SAFE.sub("_", base).lstrip(".") or "unnamed"
    return cleaned[-120:]


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" or p == "Thumbs.db" for p in parts)


def _is_dir(info: zipfile.ZipInfo) -> bool:
    """``ZipInfo.is_dir`` without its IndexError on an empty name."""
    return info.filename.endswith("/")


def _unsafe_member(name: str) -> bool:
    normal = name.replace("\\", "/")
    if normal.startswith("/") or re.match(r"^[^/]:", normal):  # a drive (C:), or 0: alike
        return True
    return ".." in PurePosixPath(normal).parts


def count_inputs(paths: list[Path]) -> int:
    """How many entries ``iter_sources`` will yield (for a progress bar's total)."""
    total = 0
    for path in paths:
        if path.is_dir():
            total += sum(1 for p in path.rglob("*") if p.is_file() or p.is_symlink())
        elif path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
            try:
                with zipfile.ZipFile(path) as archive:
                    total += sum(1 for i in archive.infolist() if not _is_dir(i))
            except _CORRUPT:
                total += 1
        else:
            total += 1
    return total


def iter_sources(paths: list[Path], limits: ArchiveLimits) -> Iterator[Source | SourceRejection]:
    """Yield every input file under ``paths`` (recursing into folders and zip files)."""
    for path in paths:
        if path.is_symlink():
            yield SourceRejection(str(path), "symbolic links are not followed")
        elif path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if child.is_symlink():
                    yield SourceRejection(str(child), "symbolic links are not followed")
                elif child.is_file():
                    yield from _from_file(child, limits, hidden=_hidden(rel.parts))
        elif path.is_file():
            yield from _from_file(path, limits, hidden=False)
        else:
            yield SourceRejection(str(path), "no such file or folder")


def _from_file(
    path: Path, limits: ArchiveLimits, *, hidden: bool
) -> Iterator[Source | SourceRejection]:
    if hidden:
        yield SourceRejection(str(path), "hidden or system file, skipped")
        return
    if path.suffix.lower() == ".zip":
        yield from _from_zip(path, limits)
        return
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        yield SourceRejection(
            str(path), f"file is {size:,} bytes, over the {limits.max_file_bytes:,} cap"
        )
        return
    yield Source(str(path), sanitise_name(path.name), path.read_bytes())


def _from_zip(path: Path, limits: ArchiveLimits) -> Iterator[Source | SourceRejection]:
    try:
        archive = zipfile.ZipFile(path)
    except _CORRUPT:
        yield SourceRejection(str(path), "not a valid zip archive (truncated or corrupt)")
        return
    with archive:
        members = [info for info in archive.infolist() if not _is_dir(info)]
        if len(members) > limits.max_entries:
            yield SourceRejection(
                str(path),
                f"archive has {len(members):,} entries, over the {limits.max_entries:,} cap",
            )
            return
        extracted = 0
        for info in members:
            name = f"{path}:{info.filename}"
            reason = _member_problem(info, limits, extracted)
            if reason is not None:
                yield SourceRejection(name, reason)
                continue
            try:
                data = _read_capped(archive, info, limits)
            except ValueError as error:
                yield SourceRejection(name, str(error))
                continue
            except _CORRUPT_ENTRY:
                yield SourceRejection(name, "archive entry is corrupt (bad CRC or truncated)")
                continue
            extracted += len(data)
            yield Source(name, sanitise_name(info.filename), data)


def _member_problem(info: zipfile.ZipInfo, limits: ArchiveLimits, extracted: int) -> str | None:
    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
    if _unsafe_member(info.filename):
        return "unsafe path in archive (absolute or '..'), not extracted"
    if _hidden(parts):
        return "hidden or system file, skipped"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link in archive, not followed"
    if info.flag_bits & 0x1:
        return "encrypted archive entry, cannot be read"
    if info.filename.lower().endswith(".zip"):
        return "nested archives are not accepted; upload them separately"
    if info.file_size > limits.max_file_bytes:
        return f"entry expands to {info.file_size:,} bytes, over the {limits.max_file_bytes:,} cap"
    ratio = info.file_size / max(info.compress_size, 1)
    if ratio > limits.max_ratio and info.file_size > limits.ratio_floor_bytes:
        cap = limits.max_ratio
        return f"compression ratio {ratio:,.0f}:1 is over the {cap:,.0f}:1 cap (zip bomb?)"
    if extracted + info.file_size > limits.max_archive_bytes:
        return f"archive expands past the {limits.max_archive_bytes:,}-byte cap (zip bomb?)"
    return None


def _read_capped(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ArchiveLimits) -> bytes:
    """Read an entry, refusing one that yields more than it declared or passes the caps."""
    cap = min(info.file_size, limits.max_file_bytes)
    chunks: list[bytes] = []
    total = 0
    with archive.open(info) as stream:
        while chunk := stream.read(1 << 20):
            total += len(chunk)
            if total > cap:
                raise ValueError("entry expands past its declared size (corrupt or malicious zip)")
            chunks.append(chunk)
    return b"".join(chunks)
