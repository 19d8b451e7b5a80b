"""Hostile upload files built byte by byte: lying headers, bombs, symlinks, polyglots."""

from __future__ import annotations

import gzip
import io
import stat
import struct
import warnings
import zipfile
import zlib

import nibabel as nib
import numpy as np


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int, *, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A valid-looking PNG whose header claims ``width`` x ``height`` but holds one short row."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    data = zlib.compress(b"\0" * min(width + 1, 4096))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def nifti_claiming(shape: tuple[int, ...], *, gz: bool = False) -> bytes:
    """A NIfTI-1 header claiming ``shape`` (up to 7 dims) over 8 bytes of voxels."""
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), affine=np.eye(4))
    raw = bytearray(image.to_bytes())
    dims = [len(shape), *shape, *([1] * (7 - len(shape)))]
    raw[40:56] = struct.pack("<8h", *dims)
    return gzip.compress(bytes(raw)) if gz else bytes(raw)


def gzip_bomb(header: bytes, expanded: int) -> bytes:
    """``header`` then ``expanded`` zero bytes, gzipped (a few KiB per MiB)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as stream:
        stream.write(header)
        zeros = b"\0" * (1 << 20)
        left = expanded
        while left > 0:
            stream.write(zeros[: min(left, len(zeros))])
            left -= len(zeros)
    return out.getvalue()


def zip_with(
    entries: list[tuple[str, bytes]], *, symlinks: frozenset[str] = frozenset(), level: int = 9
) -> bytes:
    """A zip of ``entries`` (names kept exactly, even ``../x``); names in ``symlinks`` are links."""
    buffer = io.BytesIO()
    with (
        warnings.catch_warnings(),  # duplicate names are one of the hostile cases
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive,
    ):
        warnings.simplefilter("ignore", UserWarning)
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return buffer.getvalue()
