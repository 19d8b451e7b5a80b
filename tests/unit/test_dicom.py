"""DICOM decoding rules that the shipped test files do not exercise: enhanced multi-frame
objects (per-frame rescale, window and position), burned-in annotation declared in the header."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from bot.campaign.decode import Limits, Rejected, decode_image
from bot.campaign.dicom import window_dicom
from bot.campaign.geometry import dicom_affine, sort_frames
from bot.campaign.ingest import clean_text
from tests.helpers import files

ENHANCED_CT = UID("1.2.840.10008.5.1.4.1.1.2.1")
LIMITS = Limits()


def _item(**values: object) -> Dataset:
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


def _enhanced(raw: np.ndarray, frames: list[dict[str, float]]) -> bytes:
    """An Enhanced CT object: shared spacing/orientation, per-frame position, rescale, window."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_CT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("e.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_CT, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName = "CT", "Doe^Jane"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = raw.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SharedFunctionalGroupsSequence = [
        _item(
            PixelMeasuresSequence=[_item(PixelSpacing=[0.5, 0.75], SliceThickness=2.0)],
            PlaneOrientationSequence=[_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])],
        )
    ]
    ds.PerFrameFunctionalGroupsSequence = [
        _item(
            PlanePositionSequence=[_item(ImagePositionPatient=[-10.0, -20.0, f["z"]])],
            PixelValueTransformationSequence=[
                _item(RescaleSlope=f["slope"], RescaleIntercept=f["intercept"], RescaleType="HU")
            ],
            FrameVOILUTSequence=[_item(WindowCenter=f["centre"], WindowWidth=f["width"])],
        )
        for f in frames
    ]
    ds.PixelData = raw.astype(np.int16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_enhanced_multiframe_uses_each_frames_transform_and_position() -> None:
    rng = np.random.default_rng(3)
    raw = rng.integers(-200, 1200, size=(3, 40, 48)).astype(np.int16)
    frames = [
        {"z": 4.0, "slope": 1.0, "intercept": -1024.0, "centre": 40.0, "width": 400.0},
        {"z": 0.0, "slope": 2.0, "intercept": -500.0, "centre": 100.0, "width": 1000.0},
        {"z": 2.0, "slope": 0.5, "intercept": 0.0, "centre": 300.0, "width": 200.0},
    ]
    decoded = decode_image("enhanced.dcm", _enhanced(raw, frames), LIMITS)
    assert len(decoded.slices) == decoded.frames == 3
    for i, f in enumerate(frames):
        values = raw[i].astype(np.float64) * f["slope"] + f["intercept"]
        np.testing.assert_array_equal(
            decoded.slices[i], window_dicom(values, f["centre"], f["width"])
        )
    assert decoded.geometry is not None
    positions = [g["slice"]["position"] for g in decoded.geometry if g]
    assert positions == [[-10.0, -20.0, f["z"]] for f in frames]
    assert all(g["slice"]["spacing"] == [0.5, 0.75] for g in decoded.geometry if g)


def test_dicom_affine_maps_pixels_to_ras() -> None:
    frames = [
        {"position": [-10.0, -20.0, z], "orientation": [1, 0, 0, 0, 1, 0], "spacing": [0.5, 0.75]}
        for z in (0.0, 2.0, 4.0)
    ]
    affine, notes = dicom_affine(frames)
    assert affine is not None
    assert notes == []
    # pixel (row 4, column 6) of slice 2: LPS (-10 + 6*0.75, -20 + 4*0.5, 4) -> RAS negates x, y
    ras = np.asarray(affine) @ np.array([6, 4, 2, 1.0])
    np.testing.assert_allclose(ras[:3], [10 - 4.5, 20 - 2.0, 4.0])
    uneven = [dict(f) for f in frames]
    uneven[2]["position"] = [-10.0, -20.0, 9.0]
    assert "slice spacing varies" in dicom_affine(uneven)[1][0]


def test_dicom_series_sorts_along_the_normal_then_instance_number() -> None:
    frames = [
        {"position": [0.0, 0.0, z], "orientation": [1, 0, 0, 0, 1, 0]} for z in (5.0, -5.0, 0.0)
    ]
    assert sort_frames(frames, [1, 2, 3]) == [1, 2, 0]
    unplaced = [{"position": None, "orientation": None}] * 3
    assert sort_frames(unplaced, [3, 1, 2]) == [1, 2, 0]


def test_dicom_declared_burned_in_text_that_cannot_be_found_is_refused() -> None:
    ds = dcmread(io.BytesIO(files.dicom(np.full((64, 64), 40, dtype=np.int32), modality="US")))
    ds.BurnedInAnnotation = "YES"  # ... but the pixels are flat: nothing to find and blank
    buffer = io.BytesIO()
    ds.save_as(buffer)
    decoded = decode_image("burned.dcm", buffer.getvalue(), LIMITS)
    assert decoded.burned_in
    with pytest.raises(Rejected, match="BurnedInAnnotation YES"):
        clean_text(decoded)  # not ultrasound: no imaging field to fall back on
