"""Builders of input files, good and hostile, for ingest tests."""

from __future__ import annotations

import gzip
import io
import zipfile

import nibabel as nib
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-7734-SECRET"


def png(array: npt.NDArray[np.generic], mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = PILImage.fromarray(array, mode=mode) if mode else PILImage.fromarray(array)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def raster(array: npt.NDArray[np.generic], fmt: str) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def dicom(
    hu: npt.NDArray[np.integer],
    *,
    window: tuple[float, float] | None = (40.0, 400.0),
    photometric: str = "MONOCHROME2",
    modality: str = "CT",
    with_pixels: bool = True,
) -> bytes:
    """A CT-like DICOM file with identifying tags, storing ``hu + 1024`` as uint16."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.InstitutionName = "St Example Hospital"
    ds.Modality = modality
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.PixelData = (hu.astype(np.int32) + 1024).clip(0, 65535).astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def nifti(volume: npt.NDArray[np.generic], *, gz: bool = True) -> bytes:
    image = nib.Nifti1Image(np.asarray(volume), affine=np.eye(4))
    raw = image.to_bytes()
    return gzip.compress(raw) if gz else raw


def zip_bytes(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def decompression_bomb_png(side: int = 9000) -> bytes:
    """A small PNG whose header claims ``side`` x ``side`` pixels."""
    image = PILImage.new("1", (side, side), 0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
