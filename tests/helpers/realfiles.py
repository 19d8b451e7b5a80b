"""The DICOM and NIfTI files that pydicom and nibabel ship in their wheels, and their own reading.

MedCrowd wrote none of these files; each test compares what MedCrowd stores with what the
reference library itself decodes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_windowing

PYDICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_DATA = Path(nibabel.__file__).parent
_NOT_DICOM = {".json", ".txt", ".dump", ".icc", ".gz", ".py"}


def dicom_files() -> list[Path]:
    """Every DICOM file pydicom and nibabel ship (DICOMDIR indexes included: they are refused)."""
    found = [
        p
        for p in sorted(PYDICOM_DATA.rglob("*"))
        if p.is_file() and p.suffix.lower() not in _NOT_DICOM and p.name != "README"
    ]
    found += sorted(NIBABEL_DATA.rglob("*.dcm"))
    return found


def nifti_files() -> list[Path]:
    """Every NIfTI file nibabel ships."""
    return sorted(
        p
        for p in (NIBABEL_DATA / "tests" / "data").iterdir()
        if p.name.endswith((".nii", ".nii.gz"))
    )


def label(path: Path) -> str:
    """A short test id: the file's name under its library."""
    for root in (PYDICOM_DATA, NIBABEL_DATA):
        if path.is_relative_to(root):
            return str(path.relative_to(root))
    return path.name


def read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def reference_frames(path: Path) -> list[npt.NDArray[np.uint8]] | None:
    """pydicom's own decode of an image, after MedCrowd's documented windowing; None if pydicom
    cannot decode its pixels.

    Colour: pydicom's RGB scaled by Bits Stored; palette: pydicom's ``apply_color_lut`` scaled by
    the LUT depth; grey: pydicom's ``apply_modality_lut`` then ``apply_windowing`` (its own
    output range mapped onto 0-255), identity for 8-bit unsigned pixels with no window, and the
    0.5-99.5 percentiles otherwise; MONOCHROME1 inverted.
    """
    ds = read(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = np.asarray(ds.pixel_array)
    except Exception:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    stack = array if frames > 1 else array[np.newaxis]
    photometric = str(ds.PhotometricInterpretation).upper()
    if int(ds.SamplesPerPixel) == 3:
        top = 2 ** int(ds.BitsStored) - 1
        return [np.rint(f.astype(np.float64) * 255.0 / top).astype(np.uint8) for f in stack]
    if photometric == "PALETTE COLOR":
        rgb = np.asarray(apply_color_lut(stack, ds))[..., :3]
        top = 2 ** int(ds.RedPaletteColorLookupTableDescriptor[2]) - 1
        return [np.rint(f.astype(np.float64) * 255.0 / top).astype(np.uint8) for f in rgb]
    values = np.asarray(apply_modality_lut(stack, ds), dtype=np.float64)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        low, high = apply_windowing(np.array([-1e15, 1e15]), read(path))
        windowed = apply_windowing(values, read(path))
        out = np.rint((windowed - low) / (high - low) * 255.0).astype(np.uint8)
    elif (
        int(ds.BitsStored) <= 8
        and int(ds.PixelRepresentation) == 0
        and float(ds.get("RescaleSlope", 1)) == 1
        and float(ds.get("RescaleIntercept", 0)) == 0
    ):
        out = stack.astype(np.uint8)
    else:
        lo, hi = np.percentile(values, [0.5, 99.5])
        if hi <= lo:
            lo, hi = values.min(), values.max()
        out = np.rint(np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return list(out)
