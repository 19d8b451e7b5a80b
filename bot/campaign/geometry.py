"""Where stored pixels sit in patient space, kept with each image so exports overlay the source.

Every image row may carry a geometry (JSON): ``{"volume": {...}, "slice": {...}}``.

* ``volume["affine"]``: 4x4, maps a stored voxel ``(column, row, slice_index, 1)`` to RAS mm.
* ``volume["source"]``: how to give a mask back in the source file's own frame:
  ``{"kind": "nifti", "shape": [...], "affine": 4x4, "qform_code": n, "sform_code": n}`` or
  ``{"kind": "dicom", "study_uid", "series_uid", "frame_of_reference_uid", "sop_class_uid",
  "modality"}``.
* ``slice``: for DICOM, that frame's ``sop_instance_uid``, ``frame`` number (multi-frame objects),
  ``position``, ``orientation``, ``spacing``, ``rows``, ``columns``.

Stored NIfTI slices are the canonical (RAS) volume's axial planes shown with anterior up and the
patient's right on the left (``nifti_slice_view``); stored DICOM frames are the file's own rows and
columns, slices sorted along the slice normal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Mask = npt.NDArray[np.bool_]
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def slice_normal(orientation: list[float] | tuple[float, ...]) -> npt.NDArray[np.float64]:
    """The unit normal of a DICOM image plane (row direction x column direction)."""
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:], dtype=np.float64)
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    return normal / norm if norm > 0 else normal


def dicom_affine(frames: list[dict[str, Any]]) -> tuple[list[list[float]] | None, list[str]]:
    """The RAS affine of stacked DICOM frames (already sorted along the normal), and notes.

    Returns ``(None, notes)`` when the frames lack position, orientation or spacing.
    """
    first = frames[0]
    if not (first.get("position") and first.get("orientation") and first.get("spacing")):
        return None, []
    notes: list[str] = []
    orientation = np.asarray(first["orientation"], dtype=np.float64)
    row_dir, col_dir = orientation[:3], orientation[3:]
    row_spacing, col_spacing = (float(v) for v in first["spacing"])
    origin = np.asarray(first["position"], dtype=np.float64)
    normal = slice_normal(first["orientation"])
    if len(frames) > 1 and all(f.get("position") for f in frames):
        last = np.asarray(frames[-1]["position"], dtype=np.float64)
        step = (last - origin) / (len(frames) - 1)
        gaps = np.diff([float(np.dot(f["position"], normal)) for f in frames])
        if gaps.size and float(np.ptp(gaps)) > max(0.01, 0.01 * abs(float(np.mean(gaps)))):
            notes.append(
                f"slice spacing varies ({gaps.min():.2f}-{gaps.max():.2f} mm); the volume "
                "export uses the mean spacing"
            )
    else:
        thickness = first.get("thickness") or 1.0
        step = normal * float(thickness)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return (LPS_TO_RAS @ lps).tolist(), notes


def sort_frames(frames: list[dict[str, Any]], numbers: list[int | None]) -> list[int]:
    """The order of a series' frames: along the slice normal, else by instance number."""
    orientation = frames[0].get("orientation")
    if orientation and all(f.get("position") for f in frames):
        normal = slice_normal(orientation)
        keys = [float(np.dot(f["position"], normal)) for f in frames]
        return sorted(range(len(frames)), key=lambda i: (keys[i], numbers[i] or 0))
    return sorted(range(len(frames)), key=lambda i: (numbers[i] is None, numbers[i] or 0, i))


def nifti_stored_affine(
    canonical_affine: npt.NDArray[np.float64], height: int
) -> list[list[float]]:
    """The affine of stored NIfTI slices: stored ``(c, r, k)`` is canonical ``(c, H-1-r, k)``."""
    flip = np.eye(4)
    flip[1, 1] = -1.0
    flip[1, 3] = height - 1
    result: list[list[float]] = (np.asarray(canonical_affine, dtype=np.float64) @ flip).tolist()
    return result


def stack_masks(slices: dict[int, Mask], count: int, height: int, width: int) -> Mask:
    """Stored-frame masks as one ``(width, height, count)`` array indexed ``[c, r, k]``."""
    volume = np.zeros((width, height, count), dtype=bool)
    for index, mask in slices.items():
        if 0 <= index < count:
            volume[:, :, index] = mask.T
    return volume


def to_nifti_source(volume_crk: Mask, source: dict[str, Any]) -> Mask:
    """A ``[c, r, k]`` stored-frame volume back in a NIfTI source's own voxel order and shape."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    # Stored slice k is flipud(canonical[:, :, k].T): canonical[x, y, k] = stored[c=x, r=Y-1-y].
    canonical = volume_crk[:, ::-1, :]
    affine = np.asarray(source["affine"], dtype=np.float64)
    back = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(affine))
    original = apply_orientation(canonical, back)
    return np.asarray(original, dtype=bool).reshape(tuple(source["shape"]))


def nifti_bytes(volume: npt.NDArray[Any], affine: Any, *, qform: int = 1, sform: int = 1) -> bytes:
    """A gzipped NIfTI-1 file of ``volume`` (uint8) with ``affine`` as both qform and sform."""
    import gzip

    import nibabel as nib

    matrix = np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image(np.asarray(volume, dtype=np.uint8), affine=matrix)
    image.set_qform(matrix, code=int(qform) or 1)
    image.set_sform(matrix, code=int(sform) or 1)
    return gzip.compress(image.to_bytes(), mtime=0)
