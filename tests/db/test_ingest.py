"""Ingest of a corpus mixing every accepted format with every kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.boxes import parse_boxes
from bot.campaign.crops import CropTransform, cut_crop
from bot.campaign.ingest import IngestOptions, IngestReport, index_masks, ingest
from bot.campaign.projects import ensure_campaign, summarise
from bot.campaign.sources import ArchiveLimits
from bot.db.models import Image, Task, TaskKind
from bot.sim.phantom import make_phantom
from bot.store import codecs
from bot.store.files import FileStore
from tests.helpers import files

LIMITS = ArchiveLimits(
    max_pixels=4_000_000, max_file_bytes=20_000_000, max_ratio=100, max_archive_bytes=50_000_000
)


def _phantom(style: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    p = make_phantom(style, np.random.default_rng(seed), 128)
    return p.image, p.mask


def _build_corpus(root: Path) -> tuple[Path, Path, Path]:
    up, masks = root / "upload", root / "masks"
    up.mkdir(parents=True)
    masks.mkdir(parents=True)
    ct, ct_mask = _phantom("ct", 1)
    us, _ = _phantom("ultrasound", 2)
    skin, _ = _phantom("dermoscopy", 3)
    histo, _ = _phantom("histology", 4)
    other, _ = _phantom("ct", 5)
    box = [[30, 30, 90, 90]]
    # Valid inputs, one of each format.
    (up / "ct.png").write_bytes(files.png(ct))
    (masks / "ct_mask.png").write_bytes(files.png((ct_mask * 255).astype(np.uint8)))
    (up / "us.jpg").write_bytes(files.raster(us, "JPEG"))
    (up / "skin.tif").write_bytes(files.raster(skin, "TIFF"))
    (up / "histo.bmp").write_bytes(files.raster(histo, "BMP"))
    hu = np.where(ct_mask, 80, 40).astype(np.int32)
    (up / "scan.dcm").write_bytes(files.dicom(hu))
    volume = np.zeros((64, 48, 6), dtype=np.float32)
    volume[:, :, :] = np.arange(6)[None, None, :] * 10
    mask_volume = np.zeros((64, 48, 6), dtype=np.uint8)
    mask_volume[20:30, 10:25, 2] = 1
    mask_volume[22:34, 12:20, 3] = 1
    volume[mask_volume > 0] += 200
    (up / "vol.nii.gz").write_bytes(files.nifti(volume))
    (masks / "vol.nii.gz").write_bytes(files.nifti(mask_volume))
    flat, _ = _phantom("dermoscopy", 6)
    (up / "flat.nii").write_bytes(files.nifti(flat.T[:, ::-1].astype(np.float32), gz=False))
    # Bad inputs.
    good_png = files.png(other)
    (up / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (up / "empty.png").write_bytes(b"")
    (up / "notes.txt").write_text("not an image")
    (up / "fake.png").write_text("<html>not an image</html>")
    (up / "huge.png").write_bytes(files.decompression_bomb_png(3000))
    (up / "series.nii.gz").write_bytes(files.nifti(np.zeros((8, 8, 3, 2), np.float32)))
    (up / "dup.png").write_bytes(files.raster(ct, "BMP"))  # same pixels as ct.png, other format
    (up / "wrongmask.png").write_bytes(files.png(us))
    (masks / "wrongmask.png").write_bytes(files.png(np.zeros((10, 10), np.uint8)))
    (masks / "orphan.png").write_bytes(files.png((ct_mask * 255).astype(np.uint8)))
    (up / "noboxes.png").write_bytes(files.png(255 - other))
    (up / "archive.zip").write_bytes(
        files.zip_bytes(
            {
                "inner/a.png": good_png,
                "../evil.png": good_png,
                "/abs.png": good_png,
                "inner/bomb.png": b"\0" * 10_000_000,
                "inner/nested.zip": files.zip_bytes({"x.png": good_png}),
            }
        )
    )
    boxes = dict.fromkeys(
        (
            "us.jpg",
            "skin.tif",
            "histo.bmp",
            "scan.dcm",
            "a.png",
            "flat.nii",
            "wrongmask.png",
            "dup.png",
            "truncated.png",
        ),
        box,
    )
    boxes_file = root / "boxes.json"
    boxes_file.write_text(json.dumps(boxes))
    return up, masks, boxes_file


async def _run(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, root: Path
) -> IngestReport:
    up, masks_dir, boxes_file = _build_corpus(root)
    masks, problems = index_masks([masks_dir], LIMITS)
    assert problems == []
    options = IngestOptions(masks=masks, boxes=parse_boxes(boxes_file.read_bytes(), "boxes.json"))
    async with sessionmaker() as session:
        campaign = await ensure_campaign(session, "corpus")
    return await ingest(sessionmaker, store, campaign, [up], options, LIMITS)


EXPECTED = {
    "ct.png": ("ingested", None),
    "us.jpg": ("ingested", None),
    "skin.tif": ("ingested", None),
    "histo.bmp": ("ingested", None),
    "scan.dcm": ("ingested", None),
    "vol.nii.gz": ("ingested", None),
    "flat.nii": ("ingested", None),
    "inner/a.png": ("ingested", None),
    "dup.png": ("duplicate", "same pixels"),
    "truncated.png": ("rejected", "truncated or corrupt"),
    "empty.png": ("rejected", "empty file"),
    "notes.txt": ("rejected", "unsupported file type"),
    "fake.png": ("rejected", "not a readable image"),
    "huge.png": ("rejected", "decompression bomb"),
    "series.nii.gz": ("rejected", "only 2D and 3D"),
    "wrongmask.png": ("rejected", "but the image is 128x128"),
    "noboxes.png": ("rejected", "no boxes for this image"),
    "../evil.png": ("rejected", "unsafe path"),
    "/abs.png": ("rejected", "unsafe path"),
    "inner/bomb.png": ("rejected", "zip bomb"),
    "inner/nested.zip": ("rejected", "nested archives"),
}


def _short(name: str) -> str:
    return name.split(".zip:", 1)[1] if ".zip:" in name else Path(name).name


async def test_ingest_mixed_corpus_reports_every_file(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    report = await _run(sessionmaker, store, tmp_path)
    got = {_short(f.file): f for f in report.files}
    assert set(got) == set(EXPECTED)
    for name, (status, reason) in EXPECTED.items():
        assert got[name].status == status, (name, got[name])
        if reason is not None:
            assert reason in str(got[name].reason), (name, got[name].reason)
    assert got["dup.png"].duplicate_of == "ct.png"
    assert got["vol.nii.gz"].images == 2
    assert got["vol.nii.gz"].gold_tasks == 2
    assert got["ct.png"].gold_tasks == got["ct.png"].tasks >= 1
    # The wrong-size mask's image was rejected, and the orphan mask has no image at all.
    assert sorted(Path(m).name for m in report.unmatched_masks) == ["orphan.png", "wrongmask.png"]
    counts = report.counts()
    assert counts["ingested"] == 8
    assert counts["duplicate"] == 1
    assert counts["rejected"] == 12
    body = json.loads(report.to_json())
    assert body["summary"]["images"] == 9
    assert len(body["files"]) == 21


async def test_ingest_store_holds_exactly_what_rows_reference(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    await _run(sessionmaker, store, tmp_path)
    async with sessionmaker() as session:
        images = list((await session.exec(select(Image))).all())
        tasks = list((await session.exec(select(Task))).all())
    referenced = {i.file_key for i in images} | {t.crop_key for t in tasks}
    referenced |= {t.gold_mask_key for t in tasks if t.gold_mask_key}
    referenced |= {i.gold_mask_key for i in images if i.gold_mask_key}  # the whole expert mask
    assert set(store.all_keys()) == referenced
    assert len(images) == 9
    assert all(i.content_hash in i.file_key for i in images)


async def test_ingest_keeps_no_identifying_data(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    await _run(sessionmaker, store, tmp_path)
    for key in store.all_keys():
        blob = store.get(key)
        assert files.PATIENT_NAME.encode() not in blob
        assert files.PATIENT_ID.encode() not in blob
    async with sessionmaker() as session:
        rows = list((await session.exec(select(Image))).all())
    dumped = json.dumps([r.model_dump(mode="json") for r in rows])
    assert files.PATIENT_NAME not in dumped
    assert files.PATIENT_ID not in dumped
    scan = next(r for r in rows if r.source_name == "scan.dcm")
    assert scan.modality == "CT"


async def test_ingest_volume_slices_keep_volume_and_index(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    await _run(sessionmaker, store, tmp_path)
    async with sessionmaker() as session:
        slices = list(
            (
                await session.exec(
                    select(Image)
                    .where(Image.source_name == "vol.nii.gz")
                    .order_by(col(Image.slice_index))
                )
            ).all()
        )
        gold = list((await session.exec(select(Task).where(Task.kind == TaskKind.GOLD))).all())
    assert [s.slice_index for s in slices] == [2, 3]
    assert {s.slice_count for s in slices} == {6}
    assert len({s.volume_hash for s in slices}) == 1
    for task in gold:
        assert task.gold_mask_key is not None
        assert codecs.decode_mask(store.get(task.gold_mask_key)).any()


async def test_ingest_crops_match_their_image_region(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    await _run(sessionmaker, store, tmp_path)
    async with sessionmaker() as session:
        pairs = list(
            (await session.exec(select(Task, Image).where(Task.image_id == Image.id))).all()
        )
    assert pairs
    for task, image in pairs:
        pixels = codecs.decode_png(store.get(image.file_key))
        t = CropTransform(task.crop_x0, task.crop_y0, task.crop_side, task.crop_out)
        np.testing.assert_array_equal(
            codecs.decode_png(store.get(task.crop_key)), cut_crop(pixels, t)
        )
        x0, y0, x1, y1 = t.to_crop((task.box_x0, task.box_y0, task.box_x1, task.box_y1))
        assert 0 <= x0 < x1 <= t.out
        assert 0 <= y0 < y1 <= t.out


async def test_ingest_again_marks_everything_duplicate(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    first = await _run(sessionmaker, store, tmp_path / "a")
    keys = store.all_keys()
    second = await _run(sessionmaker, store, tmp_path / "b")
    assert first.counts()["images"] == 9
    assert second.counts()["ingested"] == 0
    assert second.counts()["duplicate"] == 9
    assert store.all_keys() == keys


async def test_ingest_failed_transaction_leaves_no_rows_or_files(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with sessionmaker() as session:
        await ensure_campaign(session, "corpus")
    original = AsyncSession.commit
    calls = {"n": 0}

    async def failing_commit(self: AsyncSession) -> None:
        calls["n"] += 1
        raise RuntimeError("database went away")

    monkeypatch.setattr(AsyncSession, "commit", failing_commit)
    with pytest.raises(RuntimeError, match="database went away"):
        await _run(sessionmaker, store, tmp_path)
    monkeypatch.setattr(AsyncSession, "commit", original)
    assert calls["n"] >= 1
    assert store.all_keys() == []
    async with sessionmaker() as session:
        assert (await session.exec(select(Image))).all() == []
        campaign = await ensure_campaign(session, "corpus")
        assert (await summarise(session, campaign)).total_tasks == 0
    shutil.rmtree(tmp_path / "upload")
