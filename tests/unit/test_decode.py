from __future__ import annotations

import gzip

import numpy as np
import pytest

from bot.campaign.decode import Limits, Rejected, decode_image, decode_mask, window_to_uint8
from tests.helpers import files

LIMITS = Limits(max_pixels=2_000_000, max_file_bytes=50_000_000, max_ratio=200)


def _ramp(h: int = 32, w: int = 48) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


@pytest.mark.parametrize(
    ("name", "fmt"), [("a.png", "PNG"), ("a.jpg", "JPEG"), ("a.tif", "TIFF"), ("a.bmp", "BMP")]
)
def test_decode_raster_formats_give_grey_uint8(name: str, fmt: str) -> None:
    decoded = decode_image(name, files.raster(_ramp(), fmt), LIMITS)
    assert len(decoded.slices) == 1
    assert decoded.slice_indices == [None]
    assert decoded.slices[0].shape == (32, 48)
    assert decoded.slices[0].dtype == np.uint8


def test_decode_png_keeps_exact_pixels() -> None:
    decoded = decode_image("a.png", files.png(_ramp()), LIMITS)
    np.testing.assert_array_equal(decoded.slices[0], _ramp())


def test_decode_16bit_png_is_windowed_to_full_range() -> None:
    array = (np.arange(64 * 64).reshape(64, 64) * 10).astype(np.uint16)
    decoded = decode_image("a.png", files.png(array), LIMITS)
    pixels = decoded.slices[0]
    assert pixels.dtype == np.uint8
    assert pixels.min() == 0
    assert pixels.max() == 255


def test_decode_rgb_stays_rgb_and_grey_rgb_becomes_grey() -> None:
    rgb = np.zeros((10, 10, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    assert decode_image("c.png", files.png(rgb), LIMITS).slices[0].shape == (10, 10, 3)
    grey3 = np.repeat(_ramp(10, 10)[..., None], 3, axis=2)
    assert decode_image("g.png", files.png(grey3), LIMITS).slices[0].shape == (10, 10)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.png", b"", "empty file"),
        ("text.png", b"hello, not a picture", "not a readable image"),
        ("notes.txt", b"hello", "unsupported file type"),
    ],
)
def test_decode_rejects_non_images(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        decode_image(name, data, LIMITS)


def test_decode_rejects_truncated_png() -> None:
    data = files.png(np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8))
    with pytest.raises(Rejected, match="truncated or corrupt"):
        decode_image("t.png", data[: len(data) // 2], LIMITS)


def test_decode_rejects_decompression_bomb_before_decoding() -> None:
    bomb = files.decompression_bomb_png(3000)  # 9 Mpx claimed, a few kB on disk
    assert len(bomb) < 100_000
    with pytest.raises(Rejected, match="over the 2,000,000 cap"):
        decode_image("bomb.png", bomb, LIMITS)


def test_decode_dicom_applies_rescale_and_window_and_keeps_no_tags() -> None:
    hu = np.full((40, 40), -1000, dtype=np.int32)
    hu[10:30, 10:30] = 40  # window centre -> mid grey
    hu[15:20, 15:20] = 1000  # above the window -> white
    decoded = decode_image("scan.dcm", files.dicom(hu), LIMITS)
    pixels = decoded.slices[0]
    assert decoded.modality == "CT"
    assert pixels[0, 0] == 0
    assert pixels[17, 17] == 255
    assert abs(int(pixels[25, 25]) - 128) <= 1
    assert not any(hasattr(decoded, a) for a in ("PatientName", "dataset", "tags"))


def test_decode_dicom_monochrome1_is_inverted() -> None:
    hu = np.full((8, 8), -1000, dtype=np.int32)
    decoded = decode_image("x.dcm", files.dicom(hu, photometric="MONOCHROME1"), LIMITS)
    assert decoded.slices[0].max() == 255


def test_decode_dicom_without_window_uses_percentiles() -> None:
    hu = np.tile(np.arange(-500, 500, 10, dtype=np.int32), (20, 1))
    decoded = decode_image("x.dcm", files.dicom(hu, window=None), LIMITS)
    assert decoded.slices[0].min() == 0
    assert decoded.slices[0].max() == 255


def test_decode_dicom_without_pixels_is_rejected() -> None:
    data = files.dicom(np.zeros((4, 4), dtype=np.int32), with_pixels=False)
    with pytest.raises(Rejected, match="no pixel data"):
        decode_image("x.dcm", data, LIMITS)


def test_decode_nifti_3d_gives_slices_with_indices_and_volume_hash() -> None:
    volume = np.zeros((20, 30, 5), dtype=np.float32)
    for k in range(5):
        volume[:, :, k] = k * 100 + np.arange(20)[:, None]
    decoded = decode_image("vol.nii.gz", files.nifti(volume), LIMITS)
    assert decoded.slice_indices == [0, 1, 2, 3, 4]
    assert decoded.slice_count == 5
    assert decoded.volume_hash is not None
    assert decoded.slices[0].shape == (30, 20)  # rows = Y, columns = X
    # One window for the whole volume: later slices are brighter.
    assert decoded.slices[4].mean() > decoded.slices[0].mean()


def test_decode_nifti_displays_rows_as_y_flipped() -> None:
    image = np.zeros((20, 30), dtype=np.float32)
    image[0, :] = 255  # top row bright
    image[:, 0] = 128  # left column mid grey
    image[0, 0] = 0
    data = files.nifti(image.T[:, ::-1], gz=False)  # NIfTI stores (X, Y) with Y pointing up
    decoded = decode_image("o.nii", data, LIMITS).slices[0]
    np.testing.assert_array_equal(decoded, image.astype(np.uint8))


def test_decode_nifti_2d_is_one_image() -> None:
    decoded = decode_image("one.nii", files.nifti(np.ones((16, 12), np.float32), gz=False), LIMITS)
    assert decoded.slice_indices == [None]
    assert decoded.slices[0].shape == (12, 16)


def test_decode_nifti_4d_is_rejected() -> None:
    with pytest.raises(Rejected, match="only 2D and 3D"):
        decode_image("t.nii.gz", files.nifti(np.zeros((8, 8, 4, 3), np.float32)), LIMITS)


def test_decode_gzip_bomb_is_rejected() -> None:
    bomb = gzip.compress(b"\0" * 20_000_000)
    with pytest.raises(Rejected, match="decompression bomb"):
        decode_image("bomb.nii.gz", bomb, LIMITS)


def test_decode_truncated_nifti_is_rejected() -> None:
    data = files.nifti(np.ones((32, 32, 8), np.float32), gz=False)
    with pytest.raises(Rejected):
        decode_image("cut.nii", data[: len(data) // 2], LIMITS)


def test_decode_mask_png_and_nifti() -> None:
    mask = np.zeros((6, 7), dtype=np.uint8)
    mask[2:4, 3:5] = 255
    [decoded] = decode_mask("m.png", files.png(mask), LIMITS)
    np.testing.assert_array_equal(decoded, mask > 0)
    volume = np.zeros((7, 6, 2), np.uint8)
    volume[1, 2, 1] = 1
    slices = decode_mask("m.nii.gz", files.nifti(volume), LIMITS)
    assert len(slices) == 2
    assert slices[1].sum() == 1
    assert slices[0].sum() == 0


def test_window_to_uint8_flat_image_is_black_and_nan_rejected() -> None:
    assert window_to_uint8(np.full((3, 3), 7.0)).max() == 0
    with pytest.raises(Rejected, match="no finite"):
        window_to_uint8(np.full((2, 2), np.nan))
