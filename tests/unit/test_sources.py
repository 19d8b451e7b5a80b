from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from bot.campaign.sources import (
    ArchiveLimits,
    Source,
    SourceRejection,
    count_inputs,
    iter_sources,
    sanitise_name,
)
from tests.helpers import files

LIMITS = ArchiveLimits(max_file_bytes=10_000_000, max_ratio=100, max_archive_bytes=20_000_000)
PNG = files.png(np.zeros((8, 8), dtype=np.uint8) + 3)


def _collect(paths: list[Path], limits: ArchiveLimits = LIMITS) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in iter_sources(paths, limits):
        out[item.name.split(":", 1)[-1] if ":" in item.name else Path(item.name).name] = (
            item.reason if isinstance(item, SourceRejection) else None
        )
    return out


def test_sources_walk_folders_and_skip_hidden(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(PNG)
    (tmp_path / ".DS_Store").write_bytes(b"x")
    result = _collect([tmp_path])
    assert result["a.png"] is None
    assert "hidden" in str(result[".DS_Store"])
    assert count_inputs([tmp_path]) == 2


def test_sources_refuse_symlinks(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)
    folder = tmp_path / "up"
    folder.mkdir()
    (folder / "link.png").symlink_to(secret)
    assert "symbolic links" in str(_collect([folder])["link.png"])


def test_sources_zip_refuses_traversal_absolute_nested_and_bombs(tmp_path: Path) -> None:
    archive = tmp_path / "up.zip"
    archive.write_bytes(
        files.zip_bytes(
            {
                "ok/a.png": PNG,
                "../evil.png": PNG,
                "/abs.png": PNG,
                "ok/inner.zip": files.zip_bytes({"x.png": PNG}),
                "ok/bomb.png": b"\0" * 5_000_000,
            }
        )
    )
    result = _collect([archive])
    assert result["ok/a.png"] is None
    assert "unsafe path" in str(result["../evil.png"])
    assert "unsafe path" in str(result["/abs.png"])
    assert "nested archives" in str(result["ok/inner.zip"])
    assert "zip bomb" in str(result["ok/bomb.png"])


def test_sources_zip_total_cap(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blobs = {f"r{i}.bin": rng.bytes(400_000) for i in range(5)}  # incompressible
    archive = tmp_path / "big.zip"
    archive.write_bytes(files.zip_bytes(blobs, compression=zipfile.ZIP_STORED))
    limits = ArchiveLimits(max_file_bytes=10_000_000, max_ratio=100, max_archive_bytes=1_000_000)
    result = _collect([archive], limits)
    assert sum(v is None for v in result.values()) == 2
    assert all("cap" in str(v) for v in result.values() if v is not None)


def test_sources_zip_entry_lying_about_size_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "liar.zip"
    archive.write_bytes(files.zip_bytes({"a.png": PNG}, compression=zipfile.ZIP_STORED))
    data = bytearray(archive.read_bytes())
    # Shrink the declared uncompressed size in the central directory to 10 bytes.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    [item] = list(iter_sources([archive], LIMITS))
    assert isinstance(item, SourceRejection)


def test_sources_corrupt_zip_and_missing_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    result = _collect([bad, tmp_path / "missing.png"])
    assert "not a valid zip" in str(result["bad.zip"])
    assert "no such file" in str(result["missing.png"])


def test_sources_encrypted_entry_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "enc.zip"
    archive.write_bytes(files.zip_bytes({"a.png": PNG}, compression=zipfile.ZIP_STORED))
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        data[at + offset] |= 0x1
    archive.write_bytes(bytes(data))
    [item] = list(iter_sources([archive], LIMITS))
    assert isinstance(item, SourceRejection)
    assert "encrypted" in item.reason


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("a/b/Scan 01.png", "Scan_01.png"),
        ("..\\..\\x.dcm", "x.dcm"),
        ("", "unnamed"),
        ("é.png", "_.png"),
        (".hidden", "hidden"),
    ],
)
def test_sanitise_name(raw: str, clean: str) -> None:
    assert sanitise_name(raw) == clean


def test_source_carries_sanitised_basename(tmp_path: Path) -> None:
    (tmp_path / "Mr Smith scan.png").write_bytes(PNG)
    [item] = list(iter_sources([tmp_path / "Mr Smith scan.png"], LIMITS))
    assert isinstance(item, Source)
    assert item.basename == "Mr_Smith_scan.png"
