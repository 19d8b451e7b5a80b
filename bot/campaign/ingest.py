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
from bot.campaign.burnedin import TextRegion, blank_regions, find_text, overlaps
from bot.campaign.crops import Box, cut_crop, mask_to_crop, plan_crop, validate_box
from bot.campaign.decode import (
    Decoded,
    Rejected,
    decode_image,
    decode_mask,
    decode_series,
    strip_suffix,
)
from bot.campaign.dicom_gold import GoldProblem, masks_for
from bot.campaign.errors import InvalidBox
from bot.campaign.field import Box as Field
from bot.campaign.field import blank_outside, imaging_field
from bot.campaign.series import DicomGold, Unit, plan_units
from bot.campaign.sources import ArchiveLimits, Source, SourceRejection, iter_sources
from bot.db import queries
from bot.db.models import Campaign, Image, Task, TaskKind
from bot.store import codecs
from bot.store.files import FileStore, sha256_hex

logger = logging.getLogger(__name__)

Status = Literal["ingested", "duplicate", "rejected"]
_GOLD_NAMES = {"seg": "Segmentation", "rtstruct": "RT Structure Set"}
_MASK_SUFFIX = re.compile(r"(?i)[_-](mask|seg|gt|label|labels|truth)$")


@dataclass(frozen=True)
class IngestOptions:
    """Where boxes and gold come from."""

    masks: dict[str, Source] = field(default_factory=dict)  # by image stem
    boxes: BoxTable | None = None
    grid: tuple[int, int] | None = None
    modality: str | None = None
    dicom_gold: list[DicomGold] = field(default_factory=list)  # SEG / RTSTRUCT in the upload
    used_gold: set[str] = field(default_factory=set)  # filled in as gold finds its images


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
    frames: int = 0  # frames or slices in the file (a series counts its files' frames)
    notes: list[str] = field(default_factory=list)  # text blanked, slices skipped, and why


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
        out["frames"] = sum(f.frames for f in self.files)
        out["images"] = sum(f.images for f in self.files)
        out["tasks"] = sum(f.tasks for f in self.files)
        out["gold_tasks"] = sum(f.gold_tasks for f in self.files)
        return out

    def to_json(self) -> str:
        """The report as indented JSON."""
        body = {
            "campaign": self.campaign,
            "summary": self.counts(),
            "files": [
                {k: v for k, v in asdict(f).items() if v is not None and v != []}
                for f in self.files
            ],
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
    geometry: str | None = None  # JSON, see bot.campaign.geometry
    gold_png: bytes | None = None  # the expert's whole-image mask


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
    frames: int = 1
    notes: list[str] = field(default_factory=list)


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
    """Decode and validate one input file and cut its crops; raises ``Rejected``. Writes nothing."""
    return prepare_unit(Unit(source.name, source.basename, [source]), options, campaign, limits)


def _decode_unit(unit: Unit, limits: ArchiveLimits) -> Decoded:
    if len(unit.sources) == 1:
        return decode_image(unit.sources[0].name, unit.sources[0].data, limits)
    return decode_series([s.name for s in unit.sources], [s.data for s in unit.sources], limits)


def _expert_masks(
    unit: Unit, decoded: Decoded, options: IngestOptions, limits: ArchiveLimits
) -> tuple[list[npt.NDArray[np.bool_] | None] | None, list[str]]:
    """The expert's mask per slice (by file stem, or DICOM gold by reference), and notes."""
    stem = strip_suffix(unit.basename)
    mask_source = options.masks.get(stem)
    if mask_source is not None:
        listed = decode_mask(mask_source.basename, mask_source.data, limits)
        if len(listed) != len(decoded.slices):
            raise Rejected(
                f"mask {mask_source.basename} has {len(listed)} slices, "
                f"image has {len(decoded.slices)}"
            )
        masks: list[npt.NDArray[np.bool_] | None] = list(listed)
        return masks, []
    geometry = [(g or {}).get("slice") for g in (decoded.geometry or [])]
    found: list[npt.NDArray[np.bool_] | None] | None = None
    notes: list[str] = []
    for gold in options.dicom_gold:
        try:
            covered = masks_for(gold, geometry)
        except GoldProblem as error:
            raise Rejected(f"gold {gold.name.rsplit('/', 1)[-1]}: {error}") from None
        if covered is None:
            continue
        options.used_gold.add(gold.name)
        notes.append(f"gold from {gold.name.rsplit('/', 1)[-1]}")
        if found is None:
            found = covered
        else:
            found = [
                a if b is None else b if a is None else a | b
                for a, b in zip(found, covered, strict=True)
            ]
    return found, notes


def clean_text(
    decoded: Decoded, *, ultrasound: bool = False
) -> tuple[list[npt.NDArray[np.uint8]], list[list[TextRegion]], list[Field | None], list[str]]:
    """Blank burned-in text on every slice that may carry it; refuse what cannot be cleaned.

    Ultrasound screens also lose everything outside their imaging field (the machine's banners
    and parameter columns), where text too small for the detector often sits.

    Returns the cleaned slices, the text found on each, each slice's imaging field (or None)
    and the report's notes.
    """
    nothing: list[Field | None] = [None for _ in decoded.slices]
    if not (decoded.burned_in or decoded.suspect_text or ultrasound):
        return decoded.slices, [[] for _ in decoded.slices], nothing, []
    cleaned: list[npt.NDArray[np.uint8]] = []
    regions: list[list[TextRegion]] = []
    fields: list[Field | None] = []
    for pixels in decoded.slices:
        found = find_text(pixels)
        regions.append(found)
        out = blank_regions(pixels, found) if found else pixels
        field = imaging_field(out) if ultrasound else None
        fields.append(field)
        cleaned.append(blank_outside(out, field) if field is not None else out)
    count = sum(len(r) for r in regions)
    if decoded.burned_in and count == 0 and not any(fields):
        raise Rejected(
            "the file declares burned-in patient text (BurnedInAnnotation YES) that MedCrowd "
            "could not locate to blank: remove it before uploading"
        )
    notes = []
    if count:
        where = sum(1 for r in regions if r)
        notes.append(
            f"burned-in text blanked: {count} region(s) on {where} of {len(regions)} frame(s)"
        )
    if any(fields):
        notes.append(
            f"ultrasound screen outside the imaging field blanked on "
            f"{sum(1 for f in fields if f)} of {len(fields)} frame(s)"
        )
    return cleaned, regions, fields, notes


def _ranges(indices: list[int]) -> str:
    parts: list[str] = []
    for index in indices:
        if parts and parts[-1].split("-")[-1] == str(index - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{index}"
        else:
            parts.append(str(index))
    return ", ".join(parts)


def prepare_unit(
    unit: Unit, options: IngestOptions, campaign: Campaign, limits: ArchiveLimits
) -> PreparedFile:
    """Decode and validate one file or DICOM series and cut its crops; raises ``Rejected``.

    Every image (slice) is returned with its PNG and crops; one with no box has no crops.
    """
    decoded = _decode_unit(unit, limits)
    height, width = decoded.slices[0].shape[:2]
    if min(height, width) < limits.min_side:
        raise Rejected(
            f"image is {width}x{height} pixels, under the {limits.min_side}-pixel minimum side "
            "(its crops would be mostly padding)"
        )
    masks, notes = _expert_masks(unit, decoded, options, limits)
    notes = list(decoded.notes) + notes
    if masks is not None:
        for mask_hw, pixels in zip(masks, decoded.slices, strict=True):
            if mask_hw is not None and mask_hw.shape != pixels.shape[:2]:
                raise Rejected(
                    f"the expert mask is {mask_hw.shape[1]}x{mask_hw.shape[0]} "
                    f"but the image is {pixels.shape[1]}x{pixels.shape[0]}"
                )
    ultrasound = (options.modality or decoded.modality).upper() == "US"
    slices, text, fields, text_notes = clean_text(decoded, ultrasound=ultrasound)
    notes += text_notes
    images: list[PreparedImage] = []
    volume = decoded.slice_count is not None
    dropped_boxes = 0
    # Images with no box are kept here so that duplicates are reported as such; the caller
    # rejects them (or, for a volume, reports them as skipped) after the duplicate check.
    for i, (pixels, slice_index) in enumerate(zip(slices, decoded.slice_indices, strict=True)):
        height, width = pixels.shape[:2]
        mask = masks[i] if masks is not None else None
        boxed: list[tuple[Box, npt.NDArray[np.bool_] | None]]
        listed = _boxes_for(options.boxes, unit.basename, slice_index)
        if listed is not None:
            try:
                valid = [validate_box(b, width, height) for b in listed]
            except InvalidBox as error:
                where = f" (slice {slice_index})" if slice_index is not None else ""
                raise Rejected(f"boxes file{where}: {error}") from None
            boxed = [(b, gold_for_box(mask, b) if mask is not None else None) for b in valid]
        elif mask is not None:
            boxed = [(b, component) for b, component in boxes_from_mask(mask)]
        elif options.grid is not None and fields[i] is not None:
            fx0, fy0, fx1, fy1 = fields[i]  # type: ignore[misc]
            inner = grid_boxes(fx1 - fx0, fy1 - fy0, *options.grid)
            boxed = [((x0 + fx0, y0 + fy0, x1 + fx0, y1 + fy0), None) for x0, y0, x1, y1 in inner]
        elif options.grid is not None:
            boxed = [(b, None) for b in grid_boxes(width, height, *options.grid)]
        else:
            boxed = []
        if text[i]:
            kept = [(b, g) for b, g in boxed if not overlaps(b, text[i])]
            dropped_boxes += len(boxed) - len(kept)
            boxed = kept
        crops = []
        for box, gold in boxed:
            t = plan_crop(
                box, width, height, margin=campaign.crop_margin, max_out=campaign.crop_size
            )
            gold_png = codecs.encode_mask(mask_to_crop(gold, t)) if gold is not None else None
            crop_png = codecs.encode_png(cut_crop(pixels, t))
            crops.append(PreparedCrop(box, t.x0, t.y0, t.side, t.out, crop_png, gold_png))
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        geometry = decoded.geometry[i] if decoded.geometry else None
        images.append(
            PreparedImage(
                codecs.encode_png(pixels),
                width,
                height,
                channels,
                slice_index,
                crops,
                geometry=json.dumps(geometry, separators=(",", ":")) if geometry else None,
                gold_png=codecs.encode_mask(mask) if mask is not None and mask.any() else None,
            )
        )
    if dropped_boxes:
        notes.append(f"{dropped_boxes} box(es) overlapping burned-in text dropped")
    if volume:
        no_boxes = "no slice of this volume has a box (empty masks, no boxes, no --grid)"
    elif masks is not None:
        no_boxes = "the expert mask is empty and no boxes were given for this image"
    else:
        no_boxes = "no boxes for this image: not in the boxes file, no mask, and no --grid"
    if dropped_boxes and not any(image.crops for image in images):
        no_boxes = "every box overlaps burned-in text, which was blanked"
    modality = (options.modality.upper() if options.modality else decoded.modality)[:16]
    return PreparedFile(
        unit.name,
        unit.basename,
        modality,
        decoded.volume_hash,
        decoded.slice_count,
        images,
        no_boxes,
        frames=decoded.frames,
        notes=notes,
    )


async def store_prepared(
    session: AsyncSession, store: FileStore, campaign: Campaign, prepared: PreparedFile
) -> FileReport:
    """Write one prepared file's images, crops and tasks in one transaction."""
    assert campaign.id is not None
    report = FileReport(
        file=prepared.name, status="duplicate", frames=prepared.frames, notes=list(prepared.notes)
    )
    files = store.batch()
    volume = prepared.volume_hash is not None
    try:
        for image in prepared.images:
            content_hash = sha256_hex(image.png)
            # A volume's slices are its frames, even when two are alike (a still cine frame).
            existing = (
                None
                if volume
                else await queries.image_by_hash(
                    session, campaign_id=campaign.id, content_hash=content_hash
                )
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
                geometry=image.geometry,
                gold_mask_key=files.put("masks", image.gold_png) if image.gold_png else None,
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
    units, gold = plan_units(sources, options.masks.values())
    dicom_masks = {g.name for g in gold}
    options = replace(
        options,
        masks={k: v for k, v in options.masks.items() if v.name not in dicom_masks},
        dicom_gold=gold,
        used_gold=set(),
    )
    for item in units:
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
    for dicom_gold in gold:
        if dicom_gold.name not in options.used_gold:
            report.unmatched_masks.append(dicom_gold.name)
            report.files.append(
                FileReport(
                    dicom_gold.name,
                    "rejected",
                    f"this DICOM {_GOLD_NAMES[dicom_gold.kind]} references no image in this "
                    "upload (upload them together)",
                )
            )
    return report


async def _ingest_one(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    campaign: Campaign,
    unit: Unit,
    options: IngestOptions,
    limits: ArchiveLimits,
) -> FileReport:
    frames = len(unit.sources)  # each a frame at least, until decoding says more
    try:
        prepared = await asyncio.to_thread(prepare_unit, unit, options, campaign, limits)
    except Rejected as error:
        return FileReport(unit.name, "rejected", str(error), frames=frames)
    assert campaign.id is not None
    frames = prepared.frames
    async with sessionmaker() as session:
        if prepared.volume_hash is not None:
            # A volume is one source: known already if its hash is; slices without a box are
            # reported, not stored (the export writes them as empty slices).
            existing = await queries.image_by_volume(
                session, campaign_id=campaign.id, volume_hash=prepared.volume_hash
            )
            if existing is not None:
                return FileReport(
                    unit.name,
                    "duplicate",
                    "same volume already in the campaign",
                    duplicate_of=existing.source_name,
                    frames=frames,
                )
            boxed = [i for i in prepared.images if i.crops]
            if not boxed:
                return FileReport(
                    unit.name, "rejected", prepared.no_boxes, frames=frames, notes=prepared.notes
                )
            skipped = [
                i.slice_index for i in prepared.images if not i.crops and i.slice_index is not None
            ]
            notes = list(prepared.notes)
            if skipped:
                notes.append(
                    f"{len(skipped)} of {frames} slices have no box (no mask there, no boxes, "
                    f"no --grid) and are not stored: {_ranges(skipped)}"
                )
            prepared = replace(prepared, images=boxed, notes=notes)
        else:
            image = prepared.images[0]
            existing = await queries.image_by_hash(
                session, campaign_id=campaign.id, content_hash=sha256_hex(image.png)
            )
            if existing is not None:
                return FileReport(
                    unit.name,
                    "duplicate",
                    "same pixels already in the campaign",
                    duplicate_of=existing.source_name,
                    frames=frames,
                )
            if not image.crops:
                return FileReport(
                    unit.name, "rejected", prepared.no_boxes, frames=frames, notes=prepared.notes
                )
        try:
            return await store_prepared(session, store, campaign, prepared)
        except IntegrityError:
            # Another ingest stored the same pixels between our check and our insert.
            return FileReport(
                unit.name, "duplicate", "same pixels were ingested concurrently", frames=frames
            )
