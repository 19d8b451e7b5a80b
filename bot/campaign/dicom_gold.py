"""Gold masks from DICOM: a Segmentation (via highdicom) or an RT Structure Set's contours.

Both are matched to the images they reference by SOP Instance UID (and frame number for
multi-frame images). Every segment or ROI becomes foreground: a campaign segments one structure.
RT Structure Set contours (``CLOSED_PLANAR``, patient mm) are rasterised on their image plane:
a pixel is inside when its centre is inside or on the contour; nested contours of one ROI on one
plane toggle (holes).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.campaign.series import DicomGold

logger = logging.getLogger(__name__)

Mask = npt.NDArray[np.bool_]


class GoldProblem(Exception):
    """DICOM gold that cannot be used; ``str(error)`` is one plain sentence."""


def masks_for(gold: DicomGold, slices: list[dict[str, Any] | None]) -> list[Mask | None] | None:
    """One mask per slice (None where the gold says nothing), or None if it covers no slice.

    Args:
        gold: a Segmentation or RT Structure Set.
        slices: each stored slice's DICOM geometry (``geometry["slice"]``), in slice order.
    """
    uids = {g["sop_instance_uid"] for g in slices if g}
    if not uids & gold.references:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if gold.kind == "seg":
            return _seg_masks(gold, slices)
        return _rtstruct_masks(gold, slices)


def _seg_masks(gold: DicomGold, slices: list[dict[str, Any] | None]) -> list[Mask | None]:
    import highdicom as hd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = hd.seg.Segmentation.from_dataset(gold.dataset, copy=False)
            out: list[Mask | None] = []
            for g in slices:
                if not g or g["sop_instance_uid"] not in gold.references:
                    out.append(None)
                    continue
                if g.get("frame"):
                    pixels = seg.get_pixels_by_source_frame(
                        g["sop_instance_uid"],
                        [int(g["frame"])],
                        ignore_spatial_locations=True,
                        assert_missing_frames_are_empty=True,
                        skip_overlap_checks=True,
                    )
                else:
                    pixels = seg.get_pixels_by_source_instance(
                        [g["sop_instance_uid"]],
                        ignore_spatial_locations=True,
                        assert_missing_frames_are_empty=True,
                        skip_overlap_checks=True,
                    )
                flat = np.asarray(pixels[0], dtype=bool).reshape(g["rows"], g["columns"], -1)
                mask: Mask = np.asarray(flat.any(axis=2), dtype=bool)
                out.append(mask)
    except Exception as error:  # highdicom raises assorted types for malformed objects
        logger.debug("segmentation unreadable: %s", error)
        raise GoldProblem(
            "the DICOM Segmentation cannot be read against its images (its frames do not match "
            "the referenced images)"
        ) from None
    return out


def _plane_index(
    points: npt.NDArray[np.float64], slices: list[dict[str, Any] | None], referenced: str | None
) -> int | None:
    """Which slice a planar contour lies on: by its referenced instance, else by distance."""
    if referenced:
        for i, g in enumerate(slices):
            if g and g["sop_instance_uid"] == referenced:
                return i
    best, best_distance = None, float("inf")
    for i, g in enumerate(slices):
        if not g or not g.get("position") or not g.get("orientation"):
            continue
        normal = np.cross(g["orientation"][:3], g["orientation"][3:])
        distance = float(np.abs((points - np.asarray(g["position"])) @ normal).mean())
        if distance < best_distance:
            best, best_distance = i, distance
    thickness = 1.0
    if best is not None:
        thickness = float((slices[best] or {}).get("thickness") or 1.0)
    return best if best_distance <= max(thickness / 2.0, 0.5) else None


def rasterise_contour(points: npt.NDArray[np.float64], g: dict[str, Any]) -> Mask:
    """Fill one closed planar contour (N, 3 patient mm) on a slice's pixel grid."""
    from skimage.draw import polygon, polygon_perimeter

    origin = np.asarray(g["position"], dtype=np.float64)
    row_dir = np.asarray(g["orientation"][:3], dtype=np.float64)
    col_dir = np.asarray(g["orientation"][3:], dtype=np.float64)
    row_spacing, col_spacing = (float(v) for v in g["spacing"])
    offsets = points - origin
    columns = offsets @ row_dir / col_spacing
    rows = offsets @ col_dir / row_spacing
    shape = (g["rows"], g["columns"])
    mask = np.zeros(shape, dtype=bool)
    mask[polygon(rows, columns, shape=shape)] = True
    # The contour passes through pixel centres: pixels on it belong to the structure too.
    mask[polygon_perimeter(np.rint(rows), np.rint(columns), shape=shape, clip=False)] = True
    return mask


def _rtstruct_masks(gold: DicomGold, slices: list[dict[str, Any] | None]) -> list[Mask | None]:
    if not all(
        g and g.get("position") and g.get("orientation") and g.get("spacing") for g in slices
    ):
        raise GoldProblem(
            "the RT Structure Set's images lack position, orientation or spacing, so its "
            "contours cannot be placed"
        )
    out: list[Mask | None] = [None] * len(slices)
    placed = 0
    try:
        for roi in gold.dataset.get("ROIContourSequence") or []:
            for contour in roi.get("ContourSequence") or []:
                kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
                if kind != "CLOSED_PLANAR":
                    continue
                points = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
                images = contour.get("ContourImageSequence") or []
                referenced = str(images[0].ReferencedSOPInstanceUID) if images else None
                index = _plane_index(points, slices, referenced)
                if index is None:
                    continue
                g = slices[index]
                assert g is not None
                filled = rasterise_contour(points, g)
                current = out[index]
                out[index] = filled if current is None else current ^ filled
                placed += 1
    except (AttributeError, ValueError, TypeError, KeyError) as error:
        logger.debug("rtstruct unreadable: %s", error)
        raise GoldProblem("the RT Structure Set's contours are malformed") from None
    if placed == 0:
        raise GoldProblem("no contour of the RT Structure Set lies on an uploaded image")
    # Slices the structure set references but draws nothing on are known to be empty.
    for i, g in enumerate(slices):
        if out[i] is None and g and g["sop_instance_uid"] in gold.references:
            out[i] = np.zeros((g["rows"], g["columns"]), dtype=bool)
    return out
