"""The export's volumes: masks given back in each source's own frame (NIfTI and DICOM SEG).

* A NIfTI source: the mask volume has the source's shape, voxel order, affine and q/sform codes,
  so ``mask[i, j, k]`` labels source voxel ``[i, j, k]`` (viewers overlay it on the scan).
* A DICOM source (a series, a multi-frame object or one image): a NIfTI ``[column, row, slice]``
  with the RAS affine from Image Position/Orientation (Patient) and Pixel Spacing, slices in
  the order of the stored volume (along the slice normal); and, where the source has patient
  geometry and one frame per instance, a DICOM SEG that references the source instances.
* Anything else with several slices (a multi-page TIFF, a DICOM without geometry): the same
  ``[column, row, slice]`` array with an identity affine (pixel units).

Slices that were not stored (no box on them) are empty in the volume: nothing was asked there.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
import zipfile
from collections import defaultdict
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.campaign.dicom import quiet_readers
from bot.campaign.geometry import nifti_bytes, stack_masks, to_nifti_source
from bot.db.models import Image

logger = logging.getLogger(__name__)

Mask = npt.NDArray[np.bool_]


def _geometry(image: Image) -> dict[str, Any] | None:
    if not image.geometry:
        return None
    value = json.loads(image.geometry)
    return value if isinstance(value, dict) else None


def write_volumes(
    archive: zipfile.ZipFile, images: list[Image], masks: dict[int, Mask], structure: str
) -> list[dict[str, Any]]:
    """Write every source volume's mask into ``archive``; returns the manifest rows."""
    groups: dict[str, list[Image]] = defaultdict(list)
    geometries = {image.id: _geometry(image) for image in images}  # each JSON parsed once
    for image in images:
        geometry = geometries[image.id]
        nifti = bool(geometry and geometry["volume"]["source"]["kind"] == "nifti")
        dicom = bool(geometry and geometry["volume"]["source"]["kind"] == "dicom")
        if image.volume_hash:
            groups[image.volume_hash[:16]].append(image)
        elif nifti or (dicom and geometry and geometry["volume"].get("affine")):
            groups[f"image-{image.id}"].append(image)
    manifest: list[dict[str, Any]] = []
    for name, members in sorted(groups.items()):
        members.sort(key=lambda i: i.slice_index or 0)
        first = members[0]
        geometry = geometries[first.id]
        count = max([first.slice_count or 1] + [(i.slice_index or 0) + 1 for i in members])
        slices = {
            (i.slice_index or 0): masks.get(i.id, np.zeros((i.height, i.width), dtype=bool))
            for i in members
            if i.id is not None
        }
        volume_crk = stack_masks(slices, count, first.height, first.width)
        row: dict[str, Any] = {
            "source": first.source_name,
            "image_ids": [i.id for i in members],
            "slices_stored": sorted(slices),
        }
        if geometry and geometry["volume"]["source"]["kind"] == "nifti":
            source = geometry["volume"]["source"]
            data = to_nifti_source(volume_crk, source)
            archive.writestr(
                f"volumes/{name}.nii.gz",
                nifti_bytes(
                    data, source["affine"], qform=source["qform_code"], sform=source["sform_code"]
                ),
            )
            row.update(
                nifti=f"volumes/{name}.nii.gz",
                frame="the source NIfTI's own voxel grid and affine",
                shape=list(data.shape),
                affine=source["affine"],
            )
        else:
            affine = geometry["volume"].get("affine") if geometry else None
            archive.writestr(
                f"volumes/{name}.nii.gz", nifti_bytes(volume_crk, affine or np.eye(4).tolist())
            )
            row.update(
                nifti=f"volumes/{name}.nii.gz",
                frame="[column, row, slice] of the stored images"
                + (", RAS mm from the DICOM geometry" if affine else ", pixel units (no geometry)"),
                shape=list(volume_crk.shape),
                affine=affine or np.eye(4).tolist(),
            )
            if geometry and affine:
                per_slice = [(geometries[i.id] or {}).get("slice") or {} for i in members]
                seg = _seg(members, slices, per_slice, geometry, structure)
                if seg is not None:
                    archive.writestr(f"volumes/{name}.seg.dcm", seg)
                    row["seg"] = f"volumes/{name}.seg.dcm"
        manifest.append(row)
    return manifest


def _seg(
    members: list[Image],
    slices: dict[int, Mask],
    per_slice: list[dict[str, Any]],
    geometry: dict[str, Any],
    structure: str,
) -> bytes | None:
    """A DICOM SEG over the stored slices, referencing their source instances; None if it can't.

    ``per_slice`` is each member's slice geometry, in the members' order.
    """
    study = geometry["volume"]["source"]
    if not study.get("frame_of_reference_uid") or any(
        not g.get("position") or g.get("frame") for g in per_slice
    ):
        return None  # multi-frame objects and images without patient geometry: NIfTI only
    try:
        return _build_seg(members, slices, per_slice, study, structure)
    except Exception as error:  # highdicom validates strictly; the NIfTI still holds the mask
        logger.warning("DICOM SEG not written for %s: %s", members[0].source_name, error)
        return None


def _build_seg(
    members: list[Image],
    slices: dict[int, Mask],
    per_slice: list[dict[str, Any]],
    study: dict[str, Any],
    structure: str,
) -> bytes:
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    quiet_readers()
    sources = []
    for g in per_slice:
        ds = Dataset()
        ds.SOPClassUID = study["sop_class_uid"] or "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = g["sop_instance_uid"]
        ds.StudyInstanceUID = study["study_uid"] or generate_uid()
        ds.SeriesInstanceUID = study["series_uid"] or generate_uid()
        ds.FrameOfReferenceUID = study["frame_of_reference_uid"]
        ds.Modality = study.get("modality") or "OT"
        ds.Rows, ds.Columns = g["rows"], g["columns"]
        ds.PixelSpacing = [f"{v:.10g}" for v in g["spacing"]]
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in g["orientation"]]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in g["position"]]
        ds.SliceThickness = f"{float(g.get('thickness') or 1.0):.10g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        # The patient and study modules stay empty: MedCrowd never stored them.
        for keyword in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "StudyDate",
            "StudyTime",
            "StudyID",
            "AccessionNumber",
            "ReferringPhysicianName",
        ):
            setattr(ds, keyword, "")
        sources.append(ds)
    pixels = np.stack([slices[i.slice_index or 0] for i in members]).astype(np.uint8)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=structure[:64] or "structure",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.MorphologicallyAbnormalStructure,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="MedCrowd consensus",
            version="1",
            family=codes.cid7162.ArtificialIntelligence,
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=generate_uid(),
            series_number=9001,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="MedCrowd",
            manufacturer_model_name="MedCrowd",
            software_versions="1",
            device_serial_number="0",
            omit_empty_frames=False,
        )
        buffer = io.BytesIO()
        seg.save_as(buffer)
    return buffer.getvalue()
