"""Real files in, dataset out: every mask comes back in its source's own frame, voxel for voxel.

NIfTI volumes that nibabel ships (one of them not in canonical orientation) and a DICOM series
that pydicom ships are ingested with an expert mask (a NIfTI mask, a DICOM SEG made by
highdicom from the real source instances, an RT Structure Set); the export's NIfTI and DICOM SEG
are read back with nibabel and highdicom and compared with the mask in the source's frame.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.export import export_campaign
from bot.campaign.ingest import IngestOptions, IngestReport, index_masks, ingest
from bot.campaign.projects import ensure_campaign
from bot.campaign.sources import ArchiveLimits
from bot.db.models import Campaign
from bot.store.files import FileStore
from tests.helpers import realfiles

# Small real files: the minimum side is lowered so the 16-pixel DICOM series is accepted.
LIMITS = ArchiveLimits(min_side=8)
SERIES = realfiles.PYDICOM_DATA / "dicomdirtests" / "98892001" / "CT5N"  # 5 slices, 2.5 mm
UNEVEN = realfiles.PYDICOM_DATA / "dicomdirtests" / "77654033" / "CT2"  # a 200 mm gap


def _blobs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A mask of a few 3x3x2 blocks (every block's slice part is over the 4-pixel minimum)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, dtype=np.uint8)
    for _ in range(4):
        x, y = (int(rng.integers(0, max(s - 3, 1))) for s in shape[:2])
        z = int(rng.integers(0, max(shape[2] - 1, 1)))
        mask[x : x + 3, y : y + 3, z : z + 2] = 1
    return mask


async def _ingest(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    paths: list[Path],
    masks: Path | None,
    name: str,
) -> tuple[Campaign, IngestReport]:
    index = index_masks([masks], LIMITS)[0] if masks else {}
    async with sessionmaker() as session:
        campaign = await ensure_campaign(session, name)
    report = await ingest(sessionmaker, store, campaign, paths, IngestOptions(index), LIMITS)
    return campaign, report


async def _export(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, campaign: Campaign, out: Path
) -> zipfile.ZipFile:
    async with sessionmaker() as session:
        row = await session.get_one(Campaign, campaign.id)
        report = await export_campaign(session, store, row, out)
    return zipfile.ZipFile(report.path)


def _volume_of(archive: zipfile.ZipFile, source: str) -> dict[str, Any]:
    manifest = json.loads(archive.read("volumes/volumes.json"))
    return next(row for row in manifest if row["source"] == source)


def _load_nifti(archive: zipfile.ZipFile, name: str) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(archive.read(name)))


@pytest.mark.parametrize("name", ["anatomical.nii", "reoriented_anat_moved.nii"])
async def test_nifti_gold_comes_back_in_the_source_frame(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path, name: str
) -> None:
    source = realfiles.NIBABEL_DATA / "tests" / "data" / name
    image: Any = nib.load(source)
    (tmp_path / "up").mkdir()
    (tmp_path / "masks").mkdir()
    shutil.copy(source, tmp_path / "up" / name)
    truth = _blobs(image.shape[:3], seed=len(name))
    header = image.header.copy()
    header.set_data_dtype(np.uint8)
    nib.save(
        nib.Nifti1Image(truth, image.affine, header), tmp_path / "masks" / f"{name[:-4]}_mask.nii"
    )
    campaign, report = await _ingest(
        sessionmaker, store, [tmp_path / "up"], tmp_path / "masks", "nifti-" + name[:4]
    )
    assert report.counts()["ingested"] == 1, report.to_json()
    archive = await _export(sessionmaker, store, campaign, tmp_path / "out")
    row = _volume_of(archive, name)
    exported = _load_nifti(archive, row["nifti"])
    assert exported.shape == image.shape
    np.testing.assert_allclose(exported.affine, image.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(exported.dataobj), truth)
    assert nib.aff2axcodes(exported.affine) == nib.aff2axcodes(image.affine)


def _series_datasets() -> list[Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [pydicom.dcmread(p) for p in sorted(SERIES.iterdir())]


def _seg_for(datasets: list[Dataset], masks: np.ndarray) -> bytes:
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.MorphologicallyAbnormalStructure,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=masks.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=generate_uid(),
            series_number=2,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="expert",
            manufacturer_model_name="hand",
            software_versions="1",
            device_serial_number="1",
        )
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def _in_position_order(datasets: list[Dataset]) -> list[Dataset]:
    normal = np.cross(
        np.asarray(datasets[0].ImageOrientationPatient[:3], float),
        np.asarray(datasets[0].ImageOrientationPatient[3:], float),
    )
    return sorted(
        datasets, key=lambda d: float(np.dot(np.asarray(d.ImagePositionPatient, float), normal))
    )


async def test_dicom_series_with_seg_gold_round_trips(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    datasets = _series_datasets()
    assert len(datasets) >= 3
    rng = np.random.default_rng(5)
    truth = np.zeros((len(datasets), 16, 16), dtype=bool)  # in the datasets' (file) order
    for i in range(len(datasets)):
        y, x = (int(v) for v in rng.integers(2, 10, size=2))
        truth[i, y : y + 4, x : x + 5] = True
    up = tmp_path / "up" / "CT5N"
    up.mkdir(parents=True)
    names = sorted(p.name for p in SERIES.iterdir())
    for index, name in enumerate(reversed(names)):  # the upload's order is not the slice order
        shutil.copy(SERIES / name, up / f"{index:02d}-{name}.dcm")
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "expert.dcm").write_bytes(_seg_for(datasets, truth))
    campaign, report = await _ingest(
        sessionmaker, store, [tmp_path / "up"], tmp_path / "masks", "series-seg"
    )
    counts = report.counts()
    assert counts["ingested"] == 1, report.to_json()
    assert counts["frames"] == len(datasets) == counts["images"]
    assert "DICOM series" in report.files[0].file
    archive = await _export(sessionmaker, store, campaign, tmp_path / "out")
    row = _volume_of(archive, "CT5N")
    by_uid = {d.SOPInstanceUID: truth[i] for i, d in enumerate(datasets)}
    ordered = _in_position_order(datasets)
    # The NIfTI: [column, row, slice] along the normal, with the DICOM geometry as RAS.
    exported = _load_nifti(archive, row["nifti"])
    data = np.asarray(exported.dataobj).astype(bool)
    for k, ds in enumerate(ordered):
        np.testing.assert_array_equal(data[:, :, k].T, by_uid[ds.SOPInstanceUID])
        # voxel (c=2, r=3, k) lies where DICOM says pixel (row 3, column 2) of that slice lies
        ipp = np.asarray(ds.ImagePositionPatient, float)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        lps = ipp + 2 * dc * iop[:3] + 3 * dr * iop[3:]
        ras = exported.affine @ np.array([2, 3, k, 1.0])
        np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-3)
    # The DICOM SEG: read back with highdicom against the source instances.
    seg = hd.seg.segread(io.BytesIO(archive.read(row["seg"])))
    uids = [d.SOPInstanceUID for d in datasets]
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    np.testing.assert_array_equal(pixels.astype(bool), truth)
    assert str(seg.FrameOfReferenceUID) == str(datasets[0].FrameOfReferenceUID)
    assert str(seg.PatientName) == ""  # nothing of the patient was kept, nothing is given back


def _rtstruct(datasets: list[Dataset], slice_ds: Dataset, square: tuple[int, int, int]) -> bytes:
    """An RT Structure Set with one square contour on ``slice_ds`` (pixel row, col, side)."""
    row, col, side = square
    ipp = np.asarray(slice_ds.ImagePositionPatient, float)
    iop = np.asarray(slice_ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in slice_ds.PixelSpacing)
    corners = [
        (row, col),
        (row, col + side - 1),
        (row + side - 1, col + side - 1),
        (row + side - 1, col),
    ]
    points = [ipp + c * dc * iop[:3] + r * dr * iop[3:] for r, c in corners]
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID = slice_ds.StudyInstanceUID
    image_refs = []
    for d in datasets:
        item = Dataset()
        item.ReferencedSOPClassUID = d.SOPClassUID
        item.ReferencedSOPInstanceUID = d.SOPInstanceUID
        image_refs.append(item)
    series = Dataset()
    series.SeriesInstanceUID = slice_ds.SeriesInstanceUID
    series.ContourImageSequence = image_refs
    study = Dataset()
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = slice_ds.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    contour = Dataset()
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = 4
    contour.ContourData = [f"{v:.6f}" for p in points for v in p]
    ref = Dataset()
    ref.ReferencedSOPClassUID = slice_ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = slice_ds.SOPInstanceUID
    contour.ContourImageSequence = [ref]
    roi = Dataset()
    roi.ReferencedROINumber = 1
    roi.ContourSequence = [contour]
    ds.ROIContourSequence = [roi]
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


async def test_dicom_rtstruct_gold_is_rasterised_on_its_slice(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    datasets = _series_datasets()
    target = _in_position_order(datasets)[1]
    up = tmp_path / "up" / "CT5N"
    up.mkdir(parents=True)
    for p in SERIES.iterdir():
        shutil.copy(p, up / f"{p.name}.dcm")
    (up / "contours.dcm").write_bytes(_rtstruct(datasets, target, (4, 5, 6)))
    campaign, report = await _ingest(sessionmaker, store, [tmp_path / "up"], None, "series-rt")
    assert report.counts()["ingested"] == 1, report.to_json()
    assert report.counts()["gold_tasks"] == 1
    archive = await _export(sessionmaker, store, campaign, tmp_path / "out")
    row = _volume_of(archive, "CT5N")
    data = np.asarray(_load_nifti(archive, row["nifti"]).dataobj).astype(bool)
    expected = np.zeros((16, 16), dtype=bool)
    expected[4:10, 5:11] = True  # pixel centres inside the square through the corner centres
    np.testing.assert_array_equal(data[:, :, 1].T, expected)
    assert data.sum() == expected.sum()


async def test_dicom_gold_for_images_not_uploaded_is_reported(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    up = tmp_path / "up"
    up.mkdir()
    shutil.copy(realfiles.PYDICOM_DATA / "liver_1frame.dcm", up / "liver_seg.dcm")
    shutil.copy(realfiles.PYDICOM_DATA / "CT_small.dcm", up / "ct.dcm")
    _, report = await _ingest(sessionmaker, store, [up], None, "orphan-seg")
    rows = {f.file.rsplit("/", 1)[-1]: f for f in report.files}
    assert rows["liver_seg.dcm"].status == "rejected"
    assert "references no image in this upload" in (rows["liver_seg.dcm"].reason or "")
    assert rows["ct.dcm"].status == "rejected"  # no boxes, no mask, no grid


async def test_dicom_series_with_uneven_spacing_says_so(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    up = tmp_path / "up" / "CT2"
    up.mkdir(parents=True)
    for p in UNEVEN.iterdir():
        shutil.copy(p, up / p.name)  # no suffix: found by the DICOM preamble
    _, report = await _ingest(sessionmaker, store, [tmp_path / "up"], None, "uneven")
    (row,) = report.files
    assert "DICOM series, 4 files" in row.file
    assert any("slice spacing varies" in note for note in row.notes)
