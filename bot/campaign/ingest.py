"""Ingest: uploaded files -> normalised images, crops around prompt boxes, tasks.

Each input file is decoded and checked completely before anything is written; its files go to the
store and its rows to the database in one transaction, and the files it created are removed again
if that transaction fails. Bad input is reported and never aborts the batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.boxes import BoxTable, boxes_from_mask, gold_for_box, grid_boxes
from bot.campaign.crops import Box, cut_crop, mask_to_crop, plan_crop, validate_box
from bot.campaign.decode import Rejected, decode_image, decode_mask, strip_suffix
from bot.campaign.errors import InvalidBox
from bot.campaign.sources import ArchiveLimits, Source, SourceRejection, iter_sources
from bot.db import queries
from bot.db.models import Campaign, Image, Task, TaskKind
from bot.store import codecs
from bot.store.files import FileStore, sha256_hex

logger = logging.getLogger(__name__)

Status = Literal["ingested", "duplicate", "rejected"]
_MASK_SUFFIX = re.compile(r"(?i)[_-](mask|seg|gt|label|labels|truth)$")


@dataclass(frozen=True)
class IngestOptions:
    """Where boxes and gold come from."""

    masks: dict[str, Source] = field(default_factory=dict)  # by image stem
    boxes: BoxTable | None = None
    grid: tuple[int, int] | None = None
    modality: str | None = None


@dataclass
class FileReport:
    """The outcome for one input file."""

    file: str
    status: Status
    reason: str | None = None
    images: int = 0
    tasks: int = 0
    gold_tasks: int = 0
    duplicate_of: str | None = None


@dataclass
class IngestReport:
    """Every input file with its outcome, and masks that matched no image."""

    campaign: str
    files: list[FileReport] = field(default_factory=list)
    unmatched_masks: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Files by status, and images and tasks created."""
        out = {
            s: sum(1 for f in self.files if f.status == s)
            for s in ("ingested", "duplicate", "rejected")
        }
        out["images"] = sum(f.images for f in self.files)
        out["tasks"] = sum(f.tasks for f in self.files)
        out["gold_tasks"] = sum(f.gold_tasks for f in self.files)
        return out

    def to_json(self) -> str:
        """The report as indented JSON."""
        body = {
            "campaign": self.campaign,
            "summary": self.counts(),
            "files": [{k: v for k, v in asdict(f).items() if v is not None} for f in self.files],
            "unmatched_masks": self.unmatched_masks,
        }
        return json.dumps(body, indent=2)

    def write(self, path: Path) -> None:
        """Write the report atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".report-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.to_json())
        Path(tmp).replace(path)


@dataclass(frozen=True)
class PreparedCrop:
    """One task's crop, ready to store."""

    box: Box
    x0: int
    y0: int
    side: int
    out: int
    crop_png: bytes
    gold_png: bytes | None


@dataclass(frozen=True)
class PreparedImage:
    """One image (or slice) and its crops, ready to store."""

    png: bytes
    width: int
    height: int
    channels: int
    slice_index: int | None
    crops: list[PreparedCrop]


@dataclass(frozen=True)
class PreparedFile:
    """A decoded, validated input file."""

    name: str
    basename: str
    modality: str
    volume_hash: str | None
    slice_count: int | None
    images: list[PreparedImage]
    no_boxes: str  # why an image without crops cannot be ingested


def mask_key(name: str) -> str:
    """The image stem a mask file belongs to (``case1_mask.png`` -> ``case1``)."""
    return _MASK_SUFFIX.sub("", strip_suffix(name))


def index_masks(paths: list[Path], limits: ArchiveLimits) -> tuple[dict[str, Source], list[str]]:
    """Mask files by image stem; returns ``(index, problems)``."""
    index: dict[str, Source] = {}
    problems: list[str] = []
    for item in iter_sources(paths, limits):
        if isinstance(item, SourceRejection):
            problems.append(f"{item.name}: {item.reason}")
            continue
        key = mask_key(item.basename)
        if key in index:
            problems.append(f"{item.name}: another mask is also named {key!r}; ignored")
            continue
        index[key] = item
    return index, problems


def _boxes_for(table: BoxTable | None, basename: str, slice_index: int | None) -> list[Box] | None:
    if table is None:
        return None
    stem = strip_suffix(basename)
    keys = (
        [basename, stem]
        if slice_index is None
        else [f"{basename}#{slice_index}", f"{stem}#{slice_index}"]
    )
    for key in keys:
        if key in table:
            return table[key]
    return None


def prepare_file(
    source: Source, options: IngestOptions, campaign: Campaign, limits: ArchiveLimits
) -> PreparedFile:
    """Decode and validate one input file and cut its crops; raises ``Rejected``. Writes nothing.

    Every image (slice) is returned with its PNG and crops; one with no box has no crops.
    """
    decoded = decode_image(source.name, source.data, limits)
    stem = strip_suffix(source.basename)
    masks: list[npt.NDArray[np.bool_]] | None = None
    mask_source = options.masks.get(stem)
    if mask_source is not None:
        masks = decode_mask(mask_source.basename, mask_source.data, limits)
        if len(masks) != len(decoded.slices):
            raise Rejected(
                f"mask {mask_source.basename} has {len(masks)} slices, "
                f"image has {len(decoded.slices)}"
            )
        for mask_hw, pixels in zip(masks, decoded.slices, strict=True):
            if mask_hw.shape != pixels.shape[:2]:
                raise Rejected(
                    f"mask {mask_source.basename} is {mask_hw.shape[1]}x{mask_hw.shape[0]} "
                    f"but the image is {pixels.shape[1]}x{pixels.shape[0]}"
                )
    images: list[PreparedImage] = []
    volume = decoded.slice_count is not None
    # Images with no box are kept here so that duplicates are reported as such; the caller
    # rejects them (or, for a volume, drops them) after the duplicate check.
    for i, (pixels, slice_index) in enumerate(
        zip(decoded.slices, decoded.slice_indices, strict=True)
    ):
        height, width = pixels.shape[:2]
        mask = masks[i] if masks is not None else None
        boxed: list[tuple[Box, npt.NDArray[np.bool_] | None]]
        listed = _boxes_for(options.boxes, source.basename, slice_index)
        if listed is not None:
            try:
                valid = [validate_box(b, width, height) for b in listed]
            except InvalidBox as error:
                where = f" (slice {slice_index})" if slice_index is not None else ""
                raise Rejected(f"boxes file{where}: {error}") from None
            boxed = [(b, gold_for_box(mask, b) if mask is not None else None) for b in valid]
        elif mask is not None:
            boxed = [(b, component) for b, component in boxes_from_mask(mask)]
        elif options.grid is not None:
            boxed = [(b, None) for b in grid_boxes(width, height, *options.grid)]
        else:
            boxed = []
        crops = []
        for box, gold in boxed:
            t = plan_crop(
                box, width, height, margin=campaign.crop_margin, max_out=campaign.crop_size
            )
            gold_png = codecs.encode_mask(mask_to_crop(gold, t)) if gold is not None else None
            crop_png = codecs.encode_png(cut_crop(pixels, t))
            crops.append(PreparedCrop(box, t.x0, t.y0, t.side, t.out, crop_png, gold_png))
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        images.append(
            PreparedImage(codecs.encode_png(pixels), width, height, channels, slice_index, crops)
        )
    if volume:
        no_boxes = "no slice of this volume has a box (empty masks, no boxes, no --grid)"
    elif masks is not None:
        no_boxes = "the expert mask is empty and no boxes were given for this image"
    else:
        no_boxes = "no boxes for this image: not in the boxes file, no mask, and no --grid"
    modality = (options.modality.upper() if options.modality else decoded.modality)[:16]
    return PreparedFile(
        source.name,
        source.basename,
        modality,
        decoded.volume_hash,
        decoded.slice_count,
        images,
        no_boxes,
    )


async def store_prepared(
    session: AsyncSession, store: FileStore, campaign: Campaign, prepared: PreparedFile
) -> FileReport:
    """Write one prepared file's images, crops and tasks in one transaction."""
    assert campaign.id is not None
    report = FileReport(file=prepared.name, status="duplicate")
    files = store.batch()
    try:
        for image in prepared.images:
            content_hash = sha256_hex(image.png)
            # Checked again inside the transaction: two slices of one volume can be identical.
            existing = await queries.image_by_hash(
                session, campaign_id=campaign.id, content_hash=content_hash
            )
            if existing is not None:
                report.duplicate_of = report.duplicate_of or existing.source_name
                continue
            row = Image(
                campaign_id=campaign.id,
                content_hash=content_hash,
                file_key=files.put("images", image.png),
                source_name=prepared.basename,
                modality=prepared.modality,
                width=image.width,
                height=image.height,
                channels=image.channels,
                volume_hash=prepared.volume_hash,
                slice_index=image.slice_index,
                slice_count=prepared.slice_count,
            )
            session.add(row)
            await session.flush()
            assert row.id is not None
            for crop in image.crops:
                crop_key = files.put("crops", crop.crop_png)
                gold_key = files.put("masks", crop.gold_png) if crop.gold_png is not None else None
                session.add(
                    Task(
                        campaign_id=campaign.id,
                        image_id=row.id,
                        kind=TaskKind.GOLD if gold_key else TaskKind.REAL,
                        crop_x0=crop.x0,
                        crop_y0=crop.y0,
                        crop_side=crop.side,
                        crop_out=crop.out,
                        crop_key=crop_key,
                        crop_hash=sha256_hex(crop.crop_png),
                        box_x0=crop.box[0],
                        box_y0=crop.box[1],
                        box_x1=crop.box[2],
                        box_y1=crop.box[3],
                        gold_mask_key=gold_key,
                    )
                )
                report.tasks += 1
                report.gold_tasks += int(gold_key is not None)
            report.images += 1
        await session.commit()
    except BaseException:
        await session.rollback()
        files.discard()
        raise
    if report.images:
        report.status = "ingested"
        report.duplicate_of = None
    else:
        report.reason = "same pixels already in the campaign"
    return report


async def ingest(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    campaign: Campaign,
    paths: list[Path],
    options: IngestOptions,
    limits: ArchiveLimits,
    progress: Callable[[str], object] | None = None,
) -> IngestReport:
    """Ingest every file under ``paths`` into ``campaign``; never raises for bad input."""
    return await ingest_sources(
        sessionmaker, store, campaign, iter_sources(paths, limits), options, limits, progress
    )


async def ingest_sources(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    campaign: Campaign,
    sources: Iterable[Source | SourceRejection],
    options: IngestOptions,
    limits: ArchiveLimits,
    progress: Callable[[str], object] | None = None,
) -> IngestReport:
    """Ingest already-read sources (the CLI's files, a chat upload's members)."""
    report = IngestReport(campaign=campaign.name)
    used_masks: set[str] = set()
    for item in sources:
        if isinstance(item, SourceRejection):
            report.files.append(FileReport(item.name, "rejected", item.reason))
        else:
            report.files.append(
                await _ingest_one(sessionmaker, store, campaign, item, options, limits)
            )
            if report.files[-1].status != "rejected":
                used_masks.add(strip_suffix(item.basename))
        logger.debug("ingest %s: %s", report.files[-1].status, report.files[-1].reason)
        if progress is not None:
            progress(report.files[-1].status)
    report.unmatched_masks = sorted(
        source.name for key, source in options.masks.items() if key not in used_masks
    )
    return report


async def _ingest_one(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    campaign: Campaign,
    source: Source,
    options: IngestOptions,
    limits: ArchiveLimits,
) -> FileReport:
    try:
        prepared = await asyncio.to_thread(prepare_file, source, options, campaign, limits)
    except Rejected as error:
        return FileReport(source.name, "rejected", str(error))
    assert campaign.id is not None
    async with sessionmaker() as session:
        # A volume's slices without a box are dropped; a 2D image is checked for duplication
        # first, so that a copy of a known image is reported as such even without boxes.
        volume = prepared.slice_count is not None
        candidates = [i for i in prepared.images if i.crops] if volume else prepared.images
        if not candidates:
            return FileReport(source.name, "rejected", prepared.no_boxes)
        fresh: list[PreparedImage] = []
        duplicate_of: str | None = None
        for image in candidates:
            existing = await queries.image_by_hash(
                session, campaign_id=campaign.id, content_hash=sha256_hex(image.png)
            )
            if existing is None:
                fresh.append(image)
            else:
                duplicate_of = duplicate_of or existing.source_name
        if not fresh:
            return FileReport(
                source.name,
                "duplicate",
                "same pixels already in the campaign",
                duplicate_of=duplicate_of,
            )
        if not all(image.crops for image in fresh):
            return FileReport(source.name, "rejected", prepared.no_boxes)
        prepared = replace(prepared, images=fresh)
        try:
            return await store_prepared(session, store, campaign, prepared)
        except IntegrityError:
            # Another ingest stored the same pixels between our check and our insert.
            return FileReport(source.name, "duplicate", "same pixels were ingested concurrently")
