"""Uploaded files: decoders, archive walking and the whole ingest under hostile bytes.

Every input ends as a decoded image or a ``Rejected`` / ``SourceRejection`` with a reason; an
archive is never extracted to disk; and ingest writes nothing for what it refuses: the store
holds exactly the files the database rows name, however the batch went.
"""

from __future__ import annotations

import functools
import io
import json
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image as PILImage
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.boxes import parse_boxes
from bot.campaign.decode import Decoded, Rejected, decode_image, decode_mask
from bot.campaign.errors import InvalidInput
from bot.campaign.projects import ensure_campaign
from bot.campaign.sources import ArchiveLimits, Source, SourceRejection, count_inputs, iter_sources
from bot.campaign.upload import ingest_upload
from bot.db.models import Image, Task
from bot.store.files import FileStore
from tests.fuzz.conftest import budget, tried
from tests.helpers import files, hostile

# Decoders warn about the broken files they are fed (corrupt EXIF, odd VRs): expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LIMITS = ArchiveLimits(
    max_pixels=1_000_000,
    max_file_bytes=4_000_000,
    max_ratio=100,
    ratio_floor_bytes=1 << 20,
    max_archive_bytes=8_000_000,
    max_entries=40,
)
SUFFIXES = [".png", ".jpg", ".tif", ".bmp", ".dcm", ".nii", ".nii.gz", ".zip", ".txt", ""]
TRAVERSALS = [
    "../evil.png",
    "../../../../etc/cron.d/x.png",
    "/abs.png",
    "//server/share.png",
    "C:\\Windows\\x.png",
    "c:/x.png",
    "a/../../b.png",
    "..\\..\\x.png",
    "ok/..",
    "a/./b.png",
    ".hidden/x.png",
    "__MACOSX/._a.png",
    "x" * 300 + ".png",
    "é/ü ñ.png",
]


KINDS = [
    "seed",
    "mutated",
    "random",
    "png bomb",
    "nifti bomb",
    "gzip bomb",
    "dicom lies",
    "polyglot",
]


@functools.cache
def seeds() -> dict[str, bytes]:
    """Small valid files of every accepted format (and a mask), the mutators' raw material."""
    rng = np.random.default_rng(7)
    gray = rng.integers(0, 255, (24, 32), dtype=np.uint8)
    rgb = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    volume = rng.normal(size=(16, 12, 3)).astype(np.float32)
    pages = io.BytesIO()
    first, *rest = (PILImage.fromarray(gray // k) for k in (1, 2, 3))
    first.save(pages, format="TIFF", save_all=True, append_images=rest)
    return {
        "gray.png": files.png(gray),
        "rgb.png": files.png(rgb),
        "deep.png": files.png(gray.astype(np.uint16) * 200),
        "photo.jpg": files.raster(rgb, "JPEG"),
        "stack.tif": pages.getvalue(),
        "gray.bmp": files.raster(gray, "BMP"),
        "scan.dcm": files.dicom(gray.astype(np.int32)),
        "flat.nii": files.nifti(volume, gz=False),
        "vol.nii.gz": files.nifti(volume),
        "case_mask.png": files.png(((gray > 128) * 255).astype(np.uint8)),
    }


def _dicom_lying(rows: int, cols: int, frames: int) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(seeds()["scan.dcm"]))
    dataset.Rows, dataset.Columns = rows, cols
    if frames != 1:
        dataset.NumberOfFrames = frames
    out = io.BytesIO()
    dataset.save_as(out)
    return out.getvalue()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A seed with bytes flipped, cut, inserted or a header field overwritten."""
    name = draw(st.sampled_from(sorted(seeds())))
    data = bytearray(seeds()[name])
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "header"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if how == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif how == "cut":
            del data[at:]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:  # the first 400 bytes hold every format's header fields
            at = draw(st.integers(0, 400))
            data[at : at + 4] = draw(st.binary(min_size=4, max_size=4))
    if draw(st.booleans()):  # and maybe a suffix that lies about the format
        name = "renamed" + draw(st.sampled_from(SUFFIXES))
    return name, bytes(data)


@st.composite
def hostile_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(name, bytes) of one upload file meant to break a decoder."""
    kind = draw(st.sampled_from(KINDS))
    big = st.integers(1, 2**31 - 1)
    if kind == "seed":
        name = draw(st.sampled_from(sorted(seeds())))
        return name, seeds()[name]
    if kind == "mutated":
        return draw(mutated())
    if kind == "random":
        return "random" + draw(st.sampled_from(SUFFIXES)), draw(st.binary(max_size=2000))
    if kind == "png bomb":
        depth, colour = draw(st.sampled_from([(1, 0), (8, 0), (16, 0), (8, 2), (8, 6), (16, 6)]))
        data = hostile.png_claiming(draw(big), draw(big), bit_depth=depth, colour=colour)
        return "bomb.png", data
    if kind == "nifti bomb":
        shape = tuple(draw(st.lists(st.integers(-2, 32767), min_size=1, max_size=7)))
        gz = draw(st.booleans())
        return ("bomb.nii.gz" if gz else "bomb.nii"), hostile.nifti_claiming(shape, gz=gz)
    if kind == "gzip bomb":
        header = seeds()["flat.nii"][:352]
        return "bomb.nii.gz", hostile.gzip_bomb(header, draw(st.integers(1, 6)) << 20)
    if kind == "dicom lies":
        rows, cols = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
        return "lies.dcm", _dicom_lying(rows, cols, draw(st.integers(-1, 5000)))
    # polyglot: a PNG with a zip appended (a valid zip too), or a zip named as an image
    png = seeds()["gray.png"]
    inner = hostile.zip_with([("x.png", png), ("../y.png", png)])
    name = "poly" + draw(st.sampled_from([".png", ".zip", ".dcm", ".nii"]))
    return name, draw(st.sampled_from([png + inner, inner, inner + png]))


def _decoded_ok(decoded: Decoded) -> None:
    assert decoded.slices
    assert len(decoded.slices) == len(decoded.slice_indices)
    for pixels in decoded.slices:
        assert pixels.dtype == np.uint8
        assert pixels.ndim in (2, 3)
        assert pixels.shape[0] * pixels.shape[1] * len(decoded.slices) <= LIMITS.max_pixels


@budget(800)
@given(hostile_files())
def test_decoders_return_pixels_or_a_reason(upload: tuple[str, bytes]) -> None:
    tried("decode_image / decode_mask")
    name, data = upload
    reasons = []
    try:
        _decoded_ok(decode_image(name, data, LIMITS))
    except Rejected as error:
        reasons.append(str(error))
    try:
        masks = decode_mask(name, data, LIMITS)
    except Rejected as error:
        reasons.append(str(error))
    else:
        assert all(m.dtype == np.bool_ and m.ndim == 2 for m in masks)
    assert all(reasons)  # a refusal always says why


box_cells = st.one_of(
    st.integers(-(10**400), 10**400).map(str),
    st.floats().map(str),
    st.sampled_from(["1e999", "nan", "", '"', "\r", "1,2", "²"]),
    st.text(max_size=8),
)
box_files = st.one_of(
    st.binary(max_size=300),
    st.lists(st.lists(box_cells, max_size=7), max_size=5)
    .map(
        lambda rows: "\r\n".join(
            ",".join(r) for r in [["image", "x0", "y0", "x1", "y1", "slice"], *rows]
        )
    )
    .map(str.encode),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    ).map(lambda v: json.dumps(v).encode()),
    st.integers(1, 5000).map(lambda n: ("[" * n + "]" * n).encode()),
)


@budget(500)
@given(box_files, st.sampled_from(["boxes.csv", "boxes.json"]))
def test_boxes_files_parse_or_refuse_with_a_reason(data: bytes, name: str) -> None:
    tried("parse_boxes")
    try:
        table = parse_boxes(data, name)
    except InvalidInput as error:
        reason = str(error)
    else:
        reason = "parsed"
        assert all(len(box) == 4 for boxes in table.values() for box in boxes)
    assert reason


names = st.one_of(
    st.sampled_from(TRAVERSALS),
    st.text(max_size=30).map(lambda s: s + "x.png"),
    st.sampled_from(sorted(seeds())),
    st.builds(lambda a, b: f"{a}/{b}", st.sampled_from(["..", "", ".", "a"]), st.text(max_size=9)),
)


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    """A zip of hostile entries: traversal names, symlinks, bombs, nested zips, then maybe
    corrupted as a whole."""
    entries: list[tuple[str, bytes]] = []
    links: set[str] = set()
    for _ in range(draw(st.integers(0, 6))):
        name = draw(names)
        what = draw(st.sampled_from(["file", "bomb", "nested", "link", "empty"]))
        if what == "file":
            entries.append((name, draw(hostile_files())[1]))
        elif what == "bomb":
            entries.append((name, b"\0" * (draw(st.integers(1, 5)) << 20)))
        elif what == "nested":
            entries.append((name + ".zip", hostile.zip_with([("a.png", seeds()["gray.png"])])))
        elif what == "link":
            entries.append((name, draw(st.sampled_from([b"/etc/passwd", b"../../secret.png"]))))
            links.add(name)
        else:
            entries.append((name, b""))
    if draw(st.booleans()):  # many entries
        entries += [(f"many/{i}.png", b"x") for i in range(draw(st.integers(0, 60)))]
    data = bytearray(hostile.zip_with(entries, symlinks=frozenset(links)))
    for _ in range(draw(st.integers(0, 3))):  # corrupt the archive itself
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if data:
            data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()) and data:
        del data[draw(st.integers(0, len(data) - 1)) :]
    return bytes(data)


def _unsafe(name: str) -> bool:
    inner = name.split(".zip:", 1)[1].replace("\\", "/")
    return inner.startswith("/") or ".." in PurePosixPath(inner).parts or inner[1:2] == ":"


@budget(250)
@given(archives())
def test_archives_yield_sources_or_reasons_and_extract_nothing(data: bytes) -> None:
    tried("iter_sources (zip)")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = root / "upload.zip"
        path.write_bytes(data)
        count_inputs([path])
        total = 0
        for item in iter_sources([path], LIMITS):
            if isinstance(item, SourceRejection):
                assert item.reason
                continue
            assert isinstance(item, Source)
            assert "/" not in item.basename
            assert "\\" not in item.basename
            assert not item.basename.startswith(".")
            assert len(item.data) <= LIMITS.max_file_bytes
            assert not _unsafe(item.name), item.name
            assert not item.name.lower().endswith(".zip"), item.name
            assert not item.data.startswith((b"/etc/passwd", b"../../secret")), item.name  # link
            total += len(item.data)
        assert total <= LIMITS.max_archive_bytes
        assert sorted(p.name for p in root.rglob("*")) == ["upload.zip"]  # nothing extracted


@budget(80)
@given(st.lists(st.tuples(names, hostile_files()), max_size=4), st.data())
def test_folders_with_hostile_names_and_links_yield_sources_or_reasons(
    entries: list[tuple[str, tuple[str, bytes]]], data: st.DataObject
) -> None:
    tried("iter_sources (folder)")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "upload"
        root.mkdir()
        secret = Path(folder) / "secret.png"
        secret.write_bytes(seeds()["gray.png"])
        links: set[str] = set()
        for name, (_, content) in entries:
            target = root / name.replace("\\", "/").replace("\0", "").lstrip("/")
            try:
                resolved = target.resolve()
                if root.resolve() not in resolved.parents or target.exists():
                    continue  # the test writes only inside its folder
                target.parent.mkdir(parents=True, exist_ok=True)
                if data.draw(st.booleans(), label="link"):
                    target.symlink_to(secret)
                    links.add(str(target))
                else:
                    target.write_bytes(content)
            except OSError:  # a name this file system refuses (too long, a folder, ...)
                continue
        for item in iter_sources([root], LIMITS):
            if isinstance(item, SourceRejection):
                assert item.reason
            else:
                assert item.name.split(".zip:")[0] not in links  # links are never followed


# -- the whole ingest, through the database -----------------------------------------------------


@st.composite
def uploads(draw: st.DrawFn) -> tuple[str, bytes]:
    """One chat upload: a hostile file, or a zip of images, masks and a boxes file."""
    if draw(st.booleans()):
        return draw(hostile_files())
    entries: list[tuple[str, bytes]] = []
    for _ in range(draw(st.integers(1, 4))):
        name, data = draw(hostile_files())
        entries.append((draw(st.sampled_from([name, "case.png", "case_mask.png"])), data))
    boxes = draw(
        st.sampled_from(
            [
                None,
                "image,x0,y0,x1,y1\ncase.png,2,2,20,20\ngray.png,0,0,16,12\n",
                "image,x0,y0,x1,y1,slice\nvol.nii.gz,1,1,10,10,{}\n",
                '{{"case.png": [[1, 1, 9, {}]]}}',
                '[{{"image": "gray.png", "box": [0, 0, 5, 5], "slice": {}}}]',
            ]
        )
    )
    if boxes is not None:
        filler = draw(st.one_of(st.text(max_size=12), st.integers().map(str), st.just("1e999")))
        name = "boxes.json" if boxes.lstrip().startswith(("{", "[")) else "boxes.csv"
        entries.append((name, boxes.format(filler).encode("utf-8", "surrogatepass")))
    return "upload.zip", hostile.zip_with(entries)


async def _stored(sessionmaker: async_sessionmaker[AsyncSession]) -> tuple[int, int, set[str]]:
    async with sessionmaker() as session:
        images = (await session.exec(select(Image.file_key))).all()
        tasks = (await session.exec(select(Task.crop_key, Task.gold_mask_key))).all()
        n_tasks = (await session.exec(select(func.count()).select_from(Task))).one()
    keys = set(images) | {t[0] for t in tasks} | {t[1] for t in tasks if t[1]}
    return len(images), n_tasks, keys


@budget(120, long=2000)
@given(uploads(), st.booleans())
async def test_ingest_refuses_hostile_uploads_with_reasons_and_no_partial_write(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    upload: tuple[str, bytes],
    gold: bool,
) -> None:
    tried("ingest_upload (database)")
    name, data = upload
    async with sessionmaker() as session:
        campaign = await ensure_campaign(session, "fuzz")
        await session.commit()
    images_before, tasks_before, known = await _stored(sessionmaker)
    known |= set(store.all_keys())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        report = await ingest_upload(sessionmaker, store, campaign, path, LIMITS, gold=gold)
    for outcome in report.ingest.files:
        assert outcome.status in ("ingested", "duplicate", "rejected")
        if outcome.status != "ingested":
            assert outcome.reason, outcome
    images, tasks, keys = await _stored(sessionmaker)
    counts = report.ingest.counts()
    assert images - images_before == counts["images"]
    assert tasks - tasks_before == counts["tasks"]
    stored = set(store.all_keys())
    assert keys <= stored, sorted(keys - stored)  # no row without its file
    # No new file without its row (a gold mask replaced by a newer one may stay behind).
    assert stored - keys <= known, sorted(stored - keys - known)
    assert report.summary(name)[0]
