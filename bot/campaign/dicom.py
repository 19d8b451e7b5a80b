"""DICOM: which objects are images, their exact 8-bit pixels and their place in patient space.

Pixels follow pydicom's own decode (``Dataset.pixel_array``, which already returns RGB for every
YBR form) and then one documented rule per photometric interpretation:

* MONOCHROME1/2: the modality transform (Rescale Slope/Intercept or Modality LUT, per frame for
  enhanced multi-frame objects), then the file's first VOI window with its VOI LUT Function
  (LINEAR, LINEAR_EXACT, SIGMOID; PS3.3 C.11.2.1.2) to 0-255; with no window, 8-bit unsigned
  pixels are kept as they are and deeper ones use the 0.5-99.5 percentile range of the whole
  stack. MONOCHROME1 is inverted after windowing, so bright always means dense.
* RGB and every YBR form: pydicom's RGB, 16/32-bit samples scaled by Bits Stored to 8 bits.
* PALETTE COLOR: the file's palette (``apply_color_lut``), scaled by the LUT's bit depth.

Geometry (for the export to overlay the source): the study, series, frame-of-reference and SOP
instance UIDs (the "retain UIDs" option of PS3.15's confidentiality profile), and per frame the
image position, orientation and pixel spacing. No other header field leaves this module except a
whitelisted modality code and whether the file declares burned-in annotation.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

MODALITIES = frozenset(
    {"CT", "MR", "US", "CR", "DX", "MG", "XA", "RF", "PT", "NM", "OT", "SM", "XC", "ES", "OP", "GM"}
)
# Objects that carry masks for other images: accepted as gold, never as images to segment.
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
# Image-like objects that are not pictures of anatomy.
NOT_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose is a dose grid, not an image to segment",
    "1.2.840.10008.5.1.4.1.1.66": "Raw Data is not an image to segment",
    "1.2.840.10008.5.1.4.1.1.66.3": "a Deformable Spatial Registration is not an image",
    "1.2.840.10008.5.1.4.1.1.30": "a Parametric Map is not an image to segment",
}


class DicomProblem(Exception):
    """A DICOM file that cannot be ingested; ``str(error)`` is one plain sentence."""


@dataclass(frozen=True)
class DicomHeader:
    """What ingest needs to know about a DICOM file before decoding its pixels."""

    kind: str  # "image", "seg", "rtstruct"
    sop_class: str
    sop_instance: str
    series: str
    rows: int
    columns: int
    frames: int
    orientation: tuple[float, ...] | None
    position: tuple[float, ...] | None
    instance_number: int | None


@dataclass
class DicomImage:
    """A decoded DICOM image object: every frame, 8-bit, with its geometry."""

    frames: list[npt.NDArray[np.uint8]]
    modality: str
    study: dict[str, str]  # UIDs that identify the study, series and frame of reference
    frame_geometry: list[dict[str, Any]]  # per frame: sop, frame number, position, orientation...
    burned_in: bool  # the file says so (BurnedInAnnotation YES)
    suspect_text: bool  # a kind of image that often has text on it (US, secondary capture)


def quiet_readers() -> None:
    """Keep pydicom's and nibabel's own log lines (tracebacks of failed decoders) off a terminal.

    Every failure they report becomes one sentence in the ingest report instead.
    """
    for name in ("pydicom", "nibabel", "nibabel.global", "highdicom"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def read_dataset(data: bytes, *, force: bool, header_only: bool = False) -> Any:
    """Parse a DICOM file; raises ``DicomProblem`` with a plain reason."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    quiet_readers()

    if data[:4] == b"PK\x03\x04":
        raise DicomProblem("this is a zip archive renamed .dcm, not a DICOM file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(io.BytesIO(data), force=force, stop_before_pixels=header_only)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError):
        raise DicomProblem("not a valid DICOM file (unreadable or cut short)") from None
    except Exception:  # pydicom's parser raises assorted types on hostile bytes
        raise DicomProblem("not a valid DICOM file (unreadable or cut short)") from None
    if len(dataset) == 0:
        raise DicomProblem("not a valid DICOM file (its header is cut short or empty)")
    return dataset


def _text(dataset: Any, keyword: str) -> str:
    try:
        value = dataset.get(keyword, "")
    except Exception:  # a broken element fails on first access
        return ""
    return str(value or "").strip()


def _int(dataset: Any, keyword: str, default: int | None) -> int | None:
    raw = _text(dataset, keyword)
    if raw == "":
        return default
    try:
        return int(float(raw))
    except ValueError:
        raise DicomProblem(f"DICOM {keyword} is {raw!r}, not a number") from None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(np.isfinite(numbers)):
        return None
    return numbers


def class_name(sop_class: str) -> str:
    """A SOP class's plain name ("RT Dose"), from pydicom's dictionary."""
    from pydicom.uid import UID

    name = UID(sop_class).name if sop_class else ""
    if not name or name == sop_class:
        return f"an object of SOP class {sop_class}"
    return name.removesuffix(" Storage").strip()


def header(dataset: Any, *, pixels: bool = True) -> DicomHeader:
    """Classify a parsed dataset; raises ``DicomProblem`` for objects that are not images.

    ``pixels=False`` for a dataset read without its pixel data (``header_only``).
    """
    sop_class = _text(dataset, "SOPClassUID")
    if sop_class == SEG_CLASS:
        kind = "seg"
    elif sop_class == RTSTRUCT_CLASS:
        kind = "rtstruct"
    elif sop_class in NOT_IMAGES:
        raise DicomProblem(NOT_IMAGES[sop_class])
    else:
        kind = "image"
        has_pixels = "PixelData" in dataset or not pixels
        if sop_class and "Image" not in class_name(sop_class) and not has_pixels:
            raise DicomProblem(f"{class_name(sop_class)} is not an image to segment")
    if kind == "image" and pixels and "PixelData" not in dataset:
        if sop_class:
            raise DicomProblem(f"{class_name(sop_class)} has no pixel data, nothing to segment")
        raise DicomProblem("DICOM file has no pixel data (a report or structured document?)")
    rows = _int(dataset, "Rows", 0) or 0
    columns = _int(dataset, "Columns", 0) or 0
    frames = _int(dataset, "NumberOfFrames", 1) or 1
    if kind == "image" and (rows < 1 or columns < 1):
        raise DicomProblem("DICOM image declares no Rows/Columns")
    return DicomHeader(
        kind=kind,
        sop_class=sop_class,
        sop_instance=_text(dataset, "SOPInstanceUID"),
        series=_text(dataset, "SeriesInstanceUID"),
        rows=rows,
        columns=columns,
        frames=frames,
        orientation=_floats(dataset.get("ImageOrientationPatient"), 6),
        position=_floats(dataset.get("ImagePositionPatient"), 3),
        instance_number=_int(dataset, "InstanceNumber", None),
    )


def _group_value(dataset: Any, frame: int, sequence: str, keyword: str) -> Any:
    """A functional-group attribute for one frame (per-frame, then shared), else the top level."""
    for groups_name in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = dataset.get(groups_name)
        if not groups:
            continue
        index = frame if groups_name.startswith("PerFrame") else 0
        if index >= len(groups):
            continue
        items = groups[index].get(sequence)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return dataset.get(keyword)


def window_dicom(
    values: npt.NDArray[np.float64], centre: float, width: float, function: str = "LINEAR"
) -> npt.NDArray[np.uint8]:
    """DICOM's VOI window (PS3.3 C.11.2.1.2) onto 0-255."""
    if function == "SIGMOID":
        scaled = 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    elif function == "LINEAR_EXACT":
        scaled = (values - centre) / width + 0.5
    elif width <= 1.0:
        scaled = (values > centre - 0.5).astype(np.float64)
    else:
        scaled = (values - (centre - 0.5)) / (width - 1.0) + 0.5
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def percentile_window(values: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    """The 0.5-99.5 percentile range onto 0-255 (min-max when that range is flat)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise DicomProblem("image has no finite pixel values")
    low, high = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.nan_to_num(values, nan=low) - low) / (high - low)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _first(value: Any) -> float | None:
    if value is None or isinstance(value, str | bytes):
        try:
            return float(value) if value not in (None, "", b"") else None
        except (TypeError, ValueError):
            return None
    try:
        return float(value)
    except TypeError:
        try:
            return float(next(iter(value)))
        except (TypeError, ValueError, StopIteration):
            return None
    except ValueError:
        return None


def _grey_frames(dataset: Any, stack: npt.NDArray[Any]) -> list[npt.NDArray[np.uint8]]:
    """Modality transform and VOI window per frame: (F, R, C) -> F frames of uint8."""
    from pydicom.pixels.processing import apply_modality_lut

    frames = stack.shape[0]
    values = np.empty(stack.shape, dtype=np.float64)
    rescaled = False
    windows: list[tuple[float, float, str] | None] = []
    for i in range(frames):
        slope = _first(_group_value(dataset, i, "PixelValueTransformationSequence", "RescaleSlope"))
        intercept = _first(
            _group_value(dataset, i, "PixelValueTransformationSequence", "RescaleIntercept")
        )
        if dataset.get("ModalityLUTSequence"):
            values[i] = apply_modality_lut(stack[i], dataset)
            rescaled = True
        else:
            values[i] = stack[i].astype(np.float64) * (1.0 if slope is None else slope) + (
                0.0 if intercept is None else intercept
            )
            rescaled = rescaled or (slope not in (None, 1.0)) or (intercept not in (None, 0.0))
        centre = _first(_group_value(dataset, i, "FrameVOILUTSequence", "WindowCenter"))
        width = _first(_group_value(dataset, i, "FrameVOILUTSequence", "WindowWidth"))
        function = str(
            _group_value(dataset, i, "FrameVOILUTSequence", "VOILUTFunction") or "LINEAR"
        ).upper()
        ok = centre is not None and width is not None and width > 0
        windows.append((centre, width, function) if ok else None)  # type: ignore[arg-type]
    photometric = _text(dataset, "PhotometricInterpretation").upper()
    bits = _int(dataset, "BitsStored", 8) or 8
    signed = (_int(dataset, "PixelRepresentation", 0) or 0) == 1
    if all(w is not None for w in windows):
        out = [window_dicom(values[i], *windows[i]) for i in range(frames)]  # type: ignore[misc]
    elif bits <= 8 and not signed and not rescaled and stack.dtype.kind in "ub":
        out = [np.asarray(stack[i], dtype=np.uint8) for i in range(frames)]
    else:
        out = list(percentile_window(values))
    if photometric == "MONOCHROME1":
        out = [255 - frame for frame in out]
    return out


def _scale_to_uint8(array: npt.NDArray[Any], bits: int) -> npt.NDArray[np.uint8]:
    if array.dtype == np.uint8 and bits <= 8:
        return array
    top = float(2**bits - 1)
    return np.rint(np.clip(array.astype(np.float64), 0, top) * (255.0 / top)).astype(np.uint8)


def _colour_frames(dataset: Any, stack: npt.NDArray[Any]) -> list[npt.NDArray[np.uint8]]:
    bits = _int(dataset, "BitsStored", 8) or 8
    return [_scale_to_uint8(frame, bits) for frame in stack]


def _palette_frames(dataset: Any, stack: npt.NDArray[Any]) -> list[npt.NDArray[np.uint8]]:
    from pydicom.pixels.processing import apply_color_lut

    try:
        rgb = np.asarray(apply_color_lut(stack, dataset))
        descriptor = dataset.get("RedPaletteColorLookupTableDescriptor")
        depth = int(descriptor[2]) if descriptor else 8
    except Exception:  # a palette that is missing or malformed
        raise DicomProblem("DICOM palette colour image has no usable colour palette") from None
    if rgb.shape[-1] == 4:  # an alpha channel: drop it
        rgb = rgb[..., :3]
    depth = 16 if rgb.dtype == np.uint16 and depth not in (8, 16) else depth
    return [_scale_to_uint8(frame, depth) for frame in rgb]


def _compression(dataset: Any) -> str:
    from pydicom.uid import UID

    syntax = str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "") or "")
    name = UID(syntax).name if syntax else "unknown"
    return name if name != syntax else f"transfer syntax {syntax}"


def _decode_array(dataset: Any) -> npt.NDArray[Any]:
    """Pydicom's own decode; a failure becomes one sentence naming the compression."""
    from pydicom.uid import UID

    syntax = str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "") or "")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(dataset.pixel_array)
    except NotImplementedError:
        raise DicomProblem(
            f"DICOM pixel data is compressed as {_compression(dataset)}, which this server "
            "cannot decode"
        ) from None
    except Exception:  # pydicom raises many types for broken pixel data
        if syntax and UID(syntax).is_compressed:
            raise DicomProblem(
                f"DICOM pixel data ({_compression(dataset)}) is corrupt or uses a variant "
                "that cannot be decoded"
            ) from None
        raise DicomProblem("DICOM pixel data is shorter than its header declares") from None


def decode(dataset: Any, head: DicomHeader, max_pixels: int) -> DicomImage:
    """Every frame of an image object, 8-bit, with its geometry; raises ``DicomProblem``."""
    if head.kind == "seg":
        raise DicomProblem(
            "a DICOM Segmentation is a mask: upload it with the images it references (or "
            "under --masks) to use it as gold"
        )
    if head.kind == "rtstruct":
        raise DicomProblem(
            "an RT Structure Set holds contours: upload it with the images it references "
            "(or under --masks) to use it as gold"
        )
    if head.rows * head.columns * head.frames > max_pixels:
        raise DicomProblem(
            f"image has {head.rows * head.columns * head.frames:,} pixels, over the "
            f"{max_pixels:,} cap (decompression bomb?)"
        )
    pixels = _decode_array(dataset)
    samples = _int(dataset, "SamplesPerPixel", 1) or 1
    declared = (
        (head.rows, head.columns) if head.frames <= 1 else (head.frames, head.rows, head.columns)
    )
    tail = (3,) if samples == 3 else ()
    if pixels.shape != (*declared, *tail):
        raise DicomProblem(
            f"DICOM pixel data does not match the {head.frames} frame(s) of "
            f"{head.columns}x{head.rows} its header declares"
        )
    stack = pixels if head.frames > 1 else pixels[np.newaxis]
    photometric = _text(dataset, "PhotometricInterpretation").upper()
    if samples == 3:
        frames = _colour_frames(dataset, stack)
    elif photometric == "PALETTE COLOR":
        frames = _palette_frames(dataset, stack)
    elif samples == 1:
        frames = _grey_frames(dataset, stack)
    else:
        raise DicomProblem(f"DICOM images with {samples} samples per pixel are not supported")
    modality = _text(dataset, "Modality").upper()
    sop_class = head.sop_class
    conversion = _text(dataset, "ConversionType").upper()
    image_type = " ".join(str(v) for v in (dataset.get("ImageType") or [])).upper()
    suspect = (
        modality in ("US", "OT", "XC", "ES")
        or sop_class.startswith(SECONDARY_CAPTURE_PREFIX)
        or conversion in ("WSD", "SD", "SI", "DRW", "SYN")
        or "SCREEN" in image_type
        or not sop_class
    )
    study = {
        "study_uid": _text(dataset, "StudyInstanceUID"),
        "series_uid": head.series,
        "frame_of_reference_uid": _text(dataset, "FrameOfReferenceUID"),
        "sop_class_uid": sop_class,
        "modality": modality if modality in MODALITIES or modality == "" else "OT",
    }
    geometry = [_frame_geometry(dataset, head, i) for i in range(head.frames)]
    return DicomImage(
        frames=frames,
        modality=modality if modality in MODALITIES else "unknown",
        study=study,
        frame_geometry=geometry,
        burned_in=_text(dataset, "BurnedInAnnotation").upper() == "YES",
        suspect_text=suspect,
    )


def _frame_geometry(dataset: Any, head: DicomHeader, frame: int) -> dict[str, Any]:
    position = _floats(
        _group_value(dataset, frame, "PlanePositionSequence", "ImagePositionPatient"), 3
    )
    orientation = _floats(
        _group_value(dataset, frame, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
    )
    spacing = _floats(_group_value(dataset, frame, "PixelMeasuresSequence", "PixelSpacing"), 2)
    thickness = _first(_group_value(dataset, frame, "PixelMeasuresSequence", "SliceThickness"))
    return {
        "sop_instance_uid": head.sop_instance,
        "frame": frame + 1 if head.frames > 1 else None,
        "position": list(position) if position else None,
        "orientation": list(orientation) if orientation else None,
        "spacing": list(spacing) if spacing else None,
        "thickness": thickness,
        "rows": head.rows,
        "columns": head.columns,
    }
