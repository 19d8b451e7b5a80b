"""Decoding of uploaded files into normalised 8-bit pixels, with no metadata kept.

Raster images (PNG, JPEG, TIFF, BMP), DICOM (modality LUT, then the file's window or a robust
percentile window; no tag is kept but a whitelisted modality code) and NIfTI 2D/3D (slices of the
canonical RAS volume, one window for the whole volume). Every failure raises ``Rejected`` with a
reason a coordinator understands.
"""

from __future__ import annotations

import gzip
import io
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageSequence

from bot.campaign import dicom
from bot.campaign.geometry import dicom_affine, nifti_stored_affine, sort_frames
from bot.store.files import sha256_hex

G = TypeVar("G", bound=np.generic)

RASTER_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Pillow's plugins fail on hostile bytes with more exception types than its documentation names
# (a BMP header type raises OSError, a TIFF tag KeyError, a missing size TypeError, ...).
PIL_FAILURES = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    struct.error,
    PILImage.DecompressionBombError,
    PILImage.DecompressionBombWarning,
)


class Rejected(Exception):
    """An input that cannot be ingested; ``str(error)`` is the reason shown in the report."""


@dataclass(frozen=True)
class Limits:
    """Caps on what one upload may cost."""

    max_pixels: int = 40_000_000
    min_side: int = 32  # smaller images would be crops of mostly padding
    max_file_bytes: int = 512 << 20
    max_ratio: float = 1100.0  # above single-pass deflate's ~1032:1, so only exotic bombs trip it
    ratio_floor_bytes: int = 1 << 20  # small outputs are harmless whatever their ratio


@dataclass(frozen=True)
class Decoded:
    """A decoded input: one slice for a 2D file, several for a volume or stack.

    ``slices[i]`` is (H, W) or (H, W, 3) uint8; ``slice_indices[i]`` its index in the volume.
    """

    slices: list[npt.NDArray[np.uint8]]
    slice_indices: list[int | None]
    modality: str
    volume_hash: str | None = None
    slice_count: int | None = None
    geometry: list[dict[str, Any] | None] | None = None  # per slice, see bot.campaign.geometry
    frames: int = 1  # frames or slices in the source, each either an image or a report line
    burned_in: bool = False  # the file declares burned-in annotation
    suspect_text: bool = False  # a kind of image that often carries text (US, screenshots)
    notes: list[str] = field(default_factory=list)


def is_nifti_name(name: str) -> bool:
    """Whether a file name says NIfTI."""
    return name.lower().endswith(NIFTI_SUFFIXES)


def strip_suffix(name: str) -> str:
    """A file name without its image suffix (``.nii.gz`` counts as one)."""
    lower = name.lower()
    for suffix in (*NIFTI_SUFFIXES, *RASTER_SUFFIXES, *DICOM_SUFFIXES):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name.rsplit(".", 1)[0] if "." in name else name


def window_to_uint8(
    array: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    window: tuple[float, float] | None = None,
) -> npt.NDArray[np.uint8]:
    """Map intensities to uint8.

    Args:
        array: any real array.
        window: ``(centre, width)``; when None, the 0.5-99.5 percentile range.
    """
    values = np.asarray(array, dtype=np.float64)
    if window is not None and window[1] > 0:
        low, high = window[0] - window[1] / 2.0, window[0] + window[1] / 2.0
        scaled = (np.nan_to_num(values, nan=low) - low) / (high - low)
        return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    try:
        return dicom.percentile_window(values)
    except dicom.DicomProblem as error:
        raise Rejected(str(error)) from None


def _check_pixels(count: int, limits: Limits) -> None:
    if count > limits.max_pixels:
        raise Rejected(
            f"image has {count:,} pixels, over the {limits.max_pixels:,} cap (decompression bomb?)"
        )


def _frame_to_uint8(frame: PILImage.Image) -> npt.NDArray[np.uint8]:
    mode = frame.mode
    if mode in ("1", "L", "P", "PA", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        rgb = np.asarray(frame.convert("RGB"), dtype=np.uint8)
        if mode in ("1", "L", "LA") or (
            np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        ):
            return np.ascontiguousarray(rgb[..., 0])
        return rgb
    # 16-bit and float greyscale (I;16, I, F): window to 8 bits.
    return window_to_uint8(np.asarray(frame))


def decode_raster(data: bytes, limits: Limits) -> Decoded:
    """Decode PNG/JPEG/TIFF/BMP; a multi-page TIFF becomes a stack of slices."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            image = PILImage.open(io.BytesIO(data), formats=RASTER_FORMATS)
    except PIL_FAILURES:
        raise Rejected("not a readable image (PNG, JPEG, TIFF, BMP, DICOM or NIfTI)") from None
    with image:
        slices: list[npt.NDArray[np.uint8]] = []
        try:
            width, height = image.size
            frames = getattr(image, "n_frames", 1)  # a TIFF reads every page's header here
            _check_pixels(width * height * frames, limits)
            for frame in ImageSequence.Iterator(image):
                frame.load()
                slices.append(_frame_to_uint8(frame))
        except PIL_FAILURES as error:
            raise Rejected(f"image data is truncated or corrupt ({error})") from None
    if frames > 1:
        return Decoded(
            slices,
            list(range(frames)),
            "unknown",
            volume_hash=sha256_hex(data),
            slice_count=frames,
            frames=frames,
            suspect_text=True,
        )
    # A picture file may be a screenshot or a viewer's export: look for text on it.
    return Decoded(slices, [None], "unknown", suspect_text=True)


def decode_dicom(data: bytes, limits: Limits, *, force: bool) -> Decoded:
    """Decode a DICOM image's pixels (every frame); only whitelisted fields survive."""
    try:
        dataset = dicom.read_dataset(data, force=force)
        head = dicom.header(dataset)
        image = dicom.decode(dataset, head, limits.max_pixels)
    except dicom.DicomProblem as error:
        raise Rejected(str(error)) from None
    except Exception as error:  # pydicom converts elements lazily: a broken one fails on use
        raise Rejected(
            f"not a valid DICOM file (a damaged element: {type(error).__name__})"
        ) from None
    return dicom_decoded([image])


def decode_series(names: list[str], blobs: list[bytes], limits: Limits) -> Decoded:
    """Decode the files of one DICOM series into one volume, sorted along the slice normal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode_series(names, blobs, limits)


def _decode_series(names: list[str], blobs: list[bytes], limits: Limits) -> Decoded:
    images: list[dicom.DicomImage] = []
    numbers: list[int | None] = []
    total = 0
    for name, data in zip(names, blobs, strict=True):
        short = name.rsplit("/", 1)[-1]
        try:
            dataset = dicom.read_dataset(data, force=True)
            head = dicom.header(dataset)
            before = total
            total += head.rows * head.columns * head.frames
            # The cap holds for the whole series: each file may use what the others left.
            images.append(dicom.decode(dataset, head, limits.max_pixels - before))
        except dicom.DicomProblem as error:
            raise Rejected(f"{short}: {error}") from None
        except Exception as error:  # pydicom converts elements lazily
            raise Rejected(f"{short}: not a valid DICOM file ({type(error).__name__})") from None
        numbers.append(head.instance_number)
    order = sort_frames([image.frame_geometry[0] for image in images], numbers)
    ordered = [images[i] for i in order]
    return dicom_decoded(ordered)


def dicom_decoded(images: list[dicom.DicomImage]) -> Decoded:
    """One Decoded from DICOM objects already in slice order (one object, or a series)."""
    frames = [frame for image in images for frame in image.frames]
    geometry = [g for image in images for g in image.frame_geometry]
    first = images[0]
    affine, notes = dicom_affine(geometry)
    volume = {"affine": affine, "source": {"kind": "dicom", **first.study}}
    per_slice: list[dict[str, Any] | None] = [{"volume": volume, "slice": g} for g in geometry]
    count = len(frames)
    volume_hash: str | None = None
    if count > 1:
        # By content: the same frames re-encoded or re-compressed are the same volume.
        volume_hash = sha256_hex(b"".join(f.tobytes() for f in frames))
    return Decoded(
        frames,
        list(range(count)) if count > 1 else [None],
        first.modality,
        volume_hash=volume_hash,
        slice_count=count if count > 1 else None,
        geometry=per_slice,
        frames=count,
        burned_in=any(i.burned_in for i in images),
        suspect_text=any(i.suspect_text for i in images),
        notes=notes,
    )


def gunzip_capped(data: bytes, limits: Limits) -> bytes:
    """Decompress gzip data, refusing output past the size or ratio cap (gzip bomb)."""
    cap = max(limits.ratio_floor_bytes, int(len(data) * limits.max_ratio))
    cap = min(limits.max_file_bytes, cap)
    out = io.BytesIO()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
                if out.tell() > cap:
                    raise Rejected(
                        f"gzip expands past {cap:,} bytes (ratio or size cap; decompression bomb?)"
                    )
    except (OSError, EOFError, zlib.error):  # gzip.BadGzipFile is an OSError
        raise Rejected("gzip data is truncated or corrupt") from None
    return out.getvalue()


@dataclass(frozen=True)
class NiftiVolume:
    """A NIfTI file's voxels in canonical (RAS) order, and how to give masks back in its frame."""

    voxels: npt.NDArray[np.float32]  # (X, Y, Z), Z may be 1
    canonical_affine: npt.NDArray[np.float64]
    source: dict[str, Any]  # {"kind": "nifti", "shape", "affine", "qform_code", "sform_code"}


def load_nifti_array(data: bytes, limits: Limits) -> npt.NDArray[np.float32]:
    """A NIfTI file's voxels in canonical (RAS) orientation, as (X, Y, Z) float32; Z may be 1."""
    return load_nifti(data, limits).voxels


def load_nifti(data: bytes, limits: Limits) -> NiftiVolume:
    """Read a NIfTI-1/2 file (gzipped or not) into its canonical volume and source geometry."""
    import nibabel as nib

    dicom.quiet_readers()
    raw = gunzip_capped(data, limits) if data[:2] == b"\x1f\x8b" else data
    image = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cls in (nib.Nifti1Image, nib.Nifti2Image):
            try:
                image = cls.from_bytes(raw)
                break
            except Exception:  # nibabel raises assorted errors for a header of the other version
                continue
        if image is None:
            raise Rejected("not a valid NIfTI file")
        intent = int(image.header.get("intent_code", 0))
        if 3000 <= intent < 3100:
            raise Rejected("a CIFTI-2 file is a brain-surface or connectivity matrix, not an image")
        shape = tuple(int(v) for v in image.shape)
        if len(shape) > 3 and any(v > 1 for v in shape[3:]):
            raise Rejected(
                f"NIfTI is {len(shape)}D {shape}; only 2D and 3D are accepted (split 4D series)"
            )
        if len(shape) < 2:
            raise Rejected(f"NIfTI has shape {shape}; need 2D or 3D")
        _check_pixels(int(np.prod(shape)), limits)
        try:
            squeezed = nib.squeeze_image(image)
            if len(squeezed.shape) == 2:  # a 2D file: give it a third axis of one
                squeezed = nib.Nifti1Image(
                    np.asanyarray(squeezed.dataobj)[:, :, np.newaxis], squeezed.affine
                )
            canonical = nib.as_closest_canonical(squeezed)
            volume = np.asarray(canonical.get_fdata(dtype=np.float32))
        except Exception as error:  # truncated data surfaces here
            raise Rejected(
                f"NIfTI voxel data is truncated or corrupt ({type(error).__name__})"
            ) from None
        header = image.header
        source = {
            "kind": "nifti",
            "shape": list(shape),
            "affine": np.asarray(squeezed.affine, dtype=np.float64).tolist(),
            "qform_code": int(header["qform_code"]),
            "sform_code": int(header["sform_code"]),
        }
    if volume.ndim != 3 or 0 in volume.shape:  # a header declaring 0 voxels along an axis
        raise Rejected(f"NIfTI has shape {shape}; need 2D or 3D with no empty axis")
    return NiftiVolume(volume, np.asarray(canonical.affine, dtype=np.float64), source)


def nifti_slice_view(plane: npt.NDArray[G]) -> npt.NDArray[G]:
    """Turn an (X, Y) RAS slice into display rows/columns: anterior up, patient right at left."""
    return np.ascontiguousarray(np.flipud(plane.T))


def decode_nifti(data: bytes, limits: Limits) -> Decoded:
    """Decode a 2D or 3D NIfTI file into axial slices with one window for the whole volume."""
    nifti = load_nifti(data, limits)
    volume = nifti.voxels
    depth = volume.shape[2]
    if not np.isfinite(volume).any():
        raise Rejected("NIfTI has no finite voxel values")
    scaled = window_to_uint8(volume)
    slices = [nifti_slice_view(scaled[:, :, k]) for k in range(depth)]
    height = slices[0].shape[0]
    block = {
        "volume": {
            "affine": nifti_stored_affine(nifti.canonical_affine, height),
            "source": nifti.source,
        },
        "slice": None,
    }
    geometry: list[dict[str, Any] | None] = [block] * depth
    if depth == 1:
        return Decoded(slices, [None], "unknown", geometry=geometry)
    return Decoded(
        slices,
        list(range(depth)),
        "unknown",
        sha256_hex(scaled.tobytes() + str(scaled.shape).encode()),  # by content, not by file
        depth,
        geometry=geometry,
        frames=depth,
    )


def decode_image(name: str, data: bytes, limits: Limits) -> Decoded:
    """Decode any accepted format, choosing the decoder by content first, then by name.

    The readers' own warnings (pydicom's lazy element checks, nibabel's header fixes) never
    reach a terminal: every problem that matters is a ``Rejected`` reason or a note.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _decode_image(name, data, limits)


def _decode_image(name: str, data: bytes, limits: Limits) -> Decoded:
    if not data:
        raise Rejected("empty file (0 bytes)")
    if len(data) > limits.max_file_bytes:
        raise Rejected(f"file is {len(data):,} bytes, over the {limits.max_file_bytes:,} cap")
    lower = name.lower()
    if data[128:132] == b"DICM" or lower.endswith(DICOM_SUFFIXES):
        return decode_dicom(data, limits, force=lower.endswith(DICOM_SUFFIXES))
    if is_nifti_name(name) or data[344:348] in (b"n+1\x00", b"n+2\x00"):
        return decode_nifti(data, limits)
    if not lower.endswith(RASTER_SUFFIXES):
        raise Rejected("unsupported file type (accepted: PNG, JPEG, TIFF, BMP, DICOM, NIfTI)")
    return decode_raster(data, limits)


def decode_mask(name: str, data: bytes, limits: Limits) -> list[npt.NDArray[np.bool_]]:
    """Decode an expert mask file into one (H, W) boolean mask per slice (non-zero = foreground)."""
    if not data:
        raise Rejected("mask file is empty (0 bytes)")
    if is_nifti_name(name) or data[344:348] in (b"n+1\x00", b"n+2\x00"):
        volume = load_nifti_array(data, limits)
        return [nifti_slice_view(volume[:, :, k] > 0) for k in range(volume.shape[2])]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            image = PILImage.open(io.BytesIO(data), formats=RASTER_FORMATS)
    except PIL_FAILURES:
        raise Rejected("mask is not a readable PNG/TIFF/BMP/NIfTI image") from None
    with image:
        _check_pixels(image.size[0] * image.size[1], limits)
        try:
            image.load()
        except PIL_FAILURES:
            raise Rejected("mask image is truncated or corrupt") from None
        array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., :3].max(axis=2)
    return [np.asarray(array) > 0]
