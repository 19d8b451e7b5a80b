"""Every image file pydicom and nibabel ship decodes to what the reference library itself reads."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from bot.campaign.decode import Limits, Rejected, decode_image
from tests.helpers import realfiles

LIMITS = Limits()
DICOM = realfiles.dicom_files()
NIFTI = realfiles.nifti_files()
# Objects that are not images to segment: each must be refused by name.
NOT_IMAGES = {
    "RT Dose": "RT Dose",
    "Segmentation": "Segmentation",
    "RT Structure Set": "RT Structure Set",
}


def _plain(reason: str) -> None:
    """One plain sentence: no newline, no traceback, no UID, no plugin jargon."""
    assert "\n" not in reason
    assert "Traceback" not in reason
    assert not re.search(r"\d+\.\d+\.\d+\.\d+\.\d+", reason), reason
    assert "plugin" not in reason.lower()
    assert len(reason) < 220, reason


@pytest.mark.parametrize("path", DICOM, ids=[realfiles.label(p) for p in DICOM])
def test_dicom_decode_equals_pydicom(path: Path) -> None:
    data = path.read_bytes()
    reference = realfiles.reference_frames(path)
    ds = realfiles.read(path)
    sop = str(ds.get("SOPClassUID", ""))
    refused: str | None = None
    try:
        decoded = decode_image(path.name if path.suffix else path.name + ".dcm", data, LIMITS)
    except Rejected as error:
        refused = str(error)
    if refused is not None:
        _plain(refused)
        # pydicom reads its pixels: it must be an object that is not an image to segment.
        if reference is not None and "PixelData" in ds:
            assert sop in (
                "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
                "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
            ), f"{realfiles.label(path)} refused although pydicom decodes it: {refused}"
        return
    assert reference is not None, "we decoded a file pydicom cannot"
    assert len(decoded.slices) == len(reference), "every frame becomes an image"
    assert decoded.frames == len(reference)
    for ours, theirs in zip(decoded.slices, reference, strict=True):
        if theirs.ndim == 3 and ours.ndim == 2:  # a colour image whose channels are equal
            assert np.array_equal(theirs[..., 0], theirs[..., 1])
            theirs = theirs[..., 0]
        assert ours.shape == theirs.shape
        difference = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
        if theirs.ndim == 3:
            assert difference.max() == 0, "colour is pydicom's RGB, exactly"
        else:
            assert difference.max() <= 1, "grey is pydicom's windowing (rounding apart)"


def test_dicom_every_shipped_image_kind_is_covered() -> None:
    """The corpus holds what the issue names; a pydicom upgrade that drops one fails here."""
    kinds = set()
    for path in DICOM:
        ds = realfiles.read(path)
        kinds.add(str(ds.get("PhotometricInterpretation", "")))
    assert {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT"} <= kinds
    assert "PALETTE COLOR" in kinds


@pytest.mark.parametrize(
    ("name", "colour"),
    [
        ("examples_ybr_color.dcm", (30, 240, 320)),  # a 30-frame YBR_FULL_422 JPEG cine
        ("examples_jpeg2k.dcm", (1, 480, 640)),  # JPEG 2000 ultrasound, YBR_RCT
        ("GDCMJ2K_TextGBR.dcm", (1, 400, 400)),
        ("SC_rgb_rle_2frame.dcm", (2, 100, 100)),
    ],
)
def test_dicom_colour_is_not_converted_twice(name: str, colour: tuple[int, int, int]) -> None:
    decoded = decode_image(name, (realfiles.PYDICOM_DATA / name).read_bytes(), LIMITS)
    assert (len(decoded.slices), *decoded.slices[0].shape[:2]) == colour
    if name == "GDCMJ2K_TextGBR.dcm":  # the word "red" is written in pure red
        rgb = decoded.slices[0]
        reddish = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
        assert reddish.sum() > 500


def test_dicom_palette_uses_its_lookup_table() -> None:
    decoded = decode_image(
        "p.dcm", (realfiles.PYDICOM_DATA / "examples_palette.dcm").read_bytes(), LIMITS
    )
    assert decoded.slices[0].ndim == 3, "palette indices became RGB colours"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("rtdose.dcm", "RT Dose is a dose grid, not an image to segment"),
        ("rtplan.dcm", "RT Plan is not an image to segment"),
        ("reportsi.dcm", "Basic Text SR is not an image to segment"),
        ("waveform_ecg.dcm", "ECG Waveform is not an image to segment"),
        ("liver_1frame.dcm", "DICOM Segmentation is a mask"),
        ("rtstruct.dcm", "RT Structure Set holds contours"),
        ("badVR.dcm", "RT Dose"),
        ("MR_truncated.dcm", "shorter than its header declares"),
        ("JPEG-lossy.dcm", "JPEG Extended"),
    ],
)
def test_dicom_refusals_name_the_object(name: str, reason: str) -> None:
    with pytest.raises(Rejected, match=re.escape(reason)) as caught:
        decode_image(name, (realfiles.PYDICOM_DATA / name).read_bytes(), LIMITS)
    _plain(str(caught.value))


def test_dicom_damaged_files_get_plain_reasons() -> None:
    good = (realfiles.PYDICOM_DATA / "CT_small.dcm").read_bytes()
    with pytest.raises(Rejected, match=r"cut short|shorter") as caught:
        decode_image("cut.dcm", good[:300], LIMITS)
    _plain(str(caught.value))
    zipped = b"PK\x03\x04" + b"\0" * 400
    with pytest.raises(Rejected, match="zip archive renamed"):
        decode_image("a.dcm", zipped, LIMITS)
    cine = (realfiles.PYDICOM_DATA / "examples_ybr_color.dcm").read_bytes()
    element = b"\x28\x00\x08\x00IS\x02\x0030"  # (0028,0008) NumberOfFrames "30"
    assert cine.count(element) == 1
    with pytest.raises(Rejected, match="NumberOfFrames is '1A', not a number"):
        decode_image("frames.dcm", cine.replace(element, element[:-2] + b"1A"), LIMITS)


@pytest.mark.parametrize("path", NIFTI, ids=[p.name for p in NIFTI])
def test_nifti_decode_and_geometry_equal_nibabel(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image: Any = nib.load(path)
    data = path.read_bytes()
    try:
        decoded = decode_image(path.name, data, LIMITS)
    except Rejected as error:
        _plain(str(error))
        assert len(image.shape) > 3 or isinstance(image, nib.Cifti2Image)
        return
    source = np.asarray(image.get_fdata(), dtype=np.float64).reshape(image.shape[:3])
    assert decoded.frames == len(decoded.slices) == (source.shape[2] if source.ndim == 3 else 1)
    lo, hi = np.percentile(source[np.isfinite(source)], [0.5, 99.5])
    scaled = (np.nan_to_num(source, nan=lo) - lo) / (hi - lo)
    expected = np.rint(np.clip(scaled, 0, 1) * 255).astype(np.int16)
    # Every source voxel, carried through the stored geometry, lands on a stored pixel of its value.
    assert decoded.geometry is not None
    assert decoded.geometry[0] is not None
    volume = decoded.geometry[0]["volume"]
    assert np.allclose(volume["source"]["affine"], image.affine)
    to_stored = np.linalg.inv(np.asarray(volume["affine"]))
    ijk = np.indices(source.shape).reshape(3, -1)
    world = image.affine @ np.vstack([ijk, np.ones(ijk.shape[1])])
    crk = np.rint(to_stored @ world)[:3].astype(int)
    stored = np.stack(decoded.slices).astype(np.int16)  # (k, r, c)
    got = stored[crk[2], crk[1], crk[0]]
    assert np.abs(got - expected.reshape(-1)).max() <= 1
    json.dumps(decoded.geometry)  # the geometry is stored as JSON
