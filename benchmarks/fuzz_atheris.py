r"""Coverage-guided fuzzing (atheris) of the parsers that take outside data; optional.

Hypothesis (``tests/fuzz``) checks properties with structured inputs; atheris mutates raw bytes
towards new branches, which finds the exception types nobody thought to catch. Each target takes
the fuzzer's bytes, lets the parser's documented refusal through, and crashes on anything else:

* ``press``: ``Press.decode`` (ValueError);
* ``initdata``: ``validate_init_data`` (InvalidInitData);
* ``decode``: ``decode_image`` and ``decode_mask`` under every accepted suffix (Rejected);
* ``zip``: ``iter_sources`` on the bytes as an uploaded zip (SourceRejection items, never a raise);
* ``boxes``: ``parse_boxes`` as CSV and as JSON (InvalidInput).

atheris is not a project dependency (a wheel exists for CPython 3.11 on Linux x86-64). Install it
into a throwaway environment that can also import the project, then run one target::

    python -m venv /tmp/atheris && /tmp/atheris/bin/pip install atheris
    PYTHONPATH=.:.venv/lib/python3.11/site-packages /tmp/atheris/bin/python \
        benchmarks/fuzz_atheris.py decode -atheris_runs=20000 -artifact_prefix=/tmp/

``decode`` gets far with a seed corpus of valid files (libFuzzer grows the folder)::

    ... benchmarks/fuzz_atheris.py seeds /tmp/decode-corpus
    ... benchmarks/fuzz_atheris.py decode -atheris_runs=200000 /tmp/decode-corpus

The last line is one JSON object: the target and how many inputs it ran.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import atheris  # noqa: E402

warnings.simplefilter("ignore")  # pydicom and Pillow warn about every broken file they are fed

with atheris.instrument_imports(include=["bot"]):  # the project only: torch is huge
    from bot.campaign.boxes import parse_boxes
    from bot.campaign.decode import Rejected, decode_image, decode_mask
    from bot.campaign.errors import InvalidInput
    from bot.campaign.sources import ArchiveLimits, iter_sources
    from bot.telegram.keyboards import Press
    from bot.web.initdata import InvalidInitData, validate_init_data

LIMITS = ArchiveLimits(max_pixels=1_000_000, max_file_bytes=4_000_000, max_archive_bytes=8_000_000)
SUFFIXES = [".png", ".jpg", ".tif", ".bmp", ".dcm", ".nii", ".nii.gz"]
RUNS = [0]


def _press(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(200)
    with contextlib.suppress(ValueError):
        Press.decode(text)


def _initdata(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(5000)
    with contextlib.suppress(InvalidInitData):
        validate_init_data(text, "42:FUZZ", max_age=3600, now=1_700_000_000)


def _decode(data: bytes) -> None:
    if not data:
        return
    suffix, raw = SUFFIXES[data[0] % len(SUFFIXES)], data[1:]  # the first byte picks the name
    for decoder in (decode_image, decode_mask):
        with contextlib.suppress(Rejected):
            decoder("fuzz" + suffix, raw, LIMITS)


def _zip(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload.zip"
        path.write_bytes(data)
        for _ in iter_sources([path], LIMITS):
            pass


def _boxes(data: bytes) -> None:
    for name in ("boxes.csv", "boxes.json"):
        with contextlib.suppress(InvalidInput):
            parse_boxes(data, name)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "press": _press,
    "initdata": _initdata,
    "decode": _decode,
    "zip": _zip,
    "boxes": _boxes,
}


def write_seeds(folder: Path) -> None:
    """Small valid files of each format for ``decode`` (first byte: the suffix's index)."""
    import numpy as np

    from tests.helpers import files

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (24, 32), dtype=np.uint8)
    volume = rng.normal(size=(12, 10, 3)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        ".png": files.png(gray),
        ".jpg": files.raster(gray, "JPEG"),
        ".tif": files.raster(gray, "TIFF"),
        ".bmp": files.raster(gray, "BMP"),
        ".dcm": files.dicom(gray.astype(np.int32)),
        ".nii": files.nifti(volume, gz=False),
        ".nii.gz": files.nifti(volume),
    }
    for suffix, data in made.items():
        (folder / f"seed{suffix}").write_bytes(bytes([SUFFIXES.index(suffix)]) + data)


def main() -> None:
    """Fuzz the target named first on the command line (atheris flags follow it)."""
    if len(sys.argv) == 3 and sys.argv[1] == "seeds":
        write_seeds(Path(sys.argv[2]))
        return
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: fuzz_atheris.py {{{','.join(TARGETS)}}} [-atheris_runs=N ...] [CORPUS]")
    name = sys.argv.pop(1)
    target = TARGETS[name]

    def counted(data: bytes) -> None:
        RUNS[0] += 1
        target(data)

    atheris.Setup(sys.argv, counted)
    try:
        atheris.Fuzz()  # exits the process when the runs are done, or on a crash
    finally:
        print(json.dumps({"target": name, "inputs": RUNS[0]}))


if __name__ == "__main__":
    main()
