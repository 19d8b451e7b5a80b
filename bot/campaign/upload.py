"""Uploads through the chat: one document (an image, a volume or a zip) -> the CLI's ingest.

A zip can carry everything a campaign needs: images; expert masks named after their image
(``case1_mask.png``; also ``_seg``, ``_gt``, ``_label``, ``_truth``), whose crops become gold;
and a ``boxes.csv`` or ``boxes.json`` of prompt boxes (the format of ``medcrowd ingest --boxes``).
An image with neither a box nor a mask is refused with the reason, as on the command line.

After ``/gold``, masks may also come on their own: a mask named after an image already in the
campaign turns that image's crops into gold crops (the part of the mask inside each crop's box).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.boxes import BoxTable, gold_for_box, parse_boxes
from bot.campaign.crops import CropTransform, mask_to_crop
from bot.campaign.decode import Rejected, decode_mask, strip_suffix
from bot.campaign.errors import InvalidInput
from bot.campaign.ingest import IngestOptions, IngestReport, ingest_sources, mask_key
from bot.campaign.sources import ArchiveLimits, Source, SourceRejection, iter_sources
from bot.db.models import Campaign, Image, Task, TaskKind
from bot.store import codecs
from bot.store.files import FileBatch, FileStore

logger = logging.getLogger(__name__)

BOX_FILES = ("boxes.csv", "boxes.json")
SUMMARY_LIMIT = 3500  # characters of a chat summary (Telegram's message limit is 4096)


@dataclass
class Upload:
    """An upload's members, sorted: images to ingest, masks by image stem, boxes."""

    items: list[Source | SourceRejection] = field(default_factory=list)
    masks: dict[str, Source] = field(default_factory=dict)
    boxes: BoxTable | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class UploadReport:
    """The ingest report, plus gold applied to images already in the campaign."""

    ingest: IngestReport
    gold_applied: dict[str, int] = field(default_factory=dict)  # mask name -> crops made gold
    problems: list[str] = field(default_factory=list)

    def summary(self, upload_name: str) -> tuple[str, bool]:
        """The chat summary and whether it was shortened (then send the full JSON report)."""
        counts = self.ingest.counts()
        lines = [
            f"Upload {upload_name} into {self.ingest.campaign}: {len(self.ingest.files)} files, "
            f"{counts['ingested']} ingested ({counts['images']} images of {counts['frames']} "
            f"frames, {counts['tasks']} crops, "
            f"{counts['gold_tasks']} gold), {counts['duplicate']} duplicate, "
            f"{counts['rejected']} rejected."
        ]
        if self.gold_applied:
            crops = sum(self.gold_applied.values())
            lines.append(f"Gold masks applied to images already here: {crops} crops now gold.")
            lines += [f"  {name}: {n} crops" for name, n in sorted(self.gold_applied.items())]
        rejected = [f for f in self.ingest.files if f.status == "rejected"]
        if rejected:
            lines.append("Rejected:")
            lines += [f"  {f.file}: {f.reason}" for f in rejected]
        noted = [f for f in self.ingest.files if f.notes and f.status != "rejected"]
        if noted:
            lines.append("Notes:")
            lines += [f"  {f.file}: {'; '.join(f.notes)}" for f in noted]
        if self.ingest.unmatched_masks:
            lines.append("Masks that match no image:")
            lines += [f"  {name}" for name in self.ingest.unmatched_masks]
        if self.problems:
            lines.append("Other problems:")
            lines += [f"  {p}" for p in self.problems]
        text = "\n".join(lines)
        if len(text) <= SUMMARY_LIMIT:
            return text, False
        cut = text[:SUMMARY_LIMIT].rsplit("\n", 1)[0]
        return cut + "\n... (the full report is attached)", True


def is_mask_name(basename: str) -> bool:
    """Whether a file is named like an expert mask (``case1_mask.png``)."""
    return mask_key(basename) != strip_suffix(basename)


def sort_members(sources: Iterable[Source | SourceRejection]) -> Upload:
    """Split an upload's members into images, masks and a boxes file."""
    upload = Upload()
    for item in sources:
        if isinstance(item, SourceRejection):
            upload.items.append(item)
        elif item.basename.lower() in BOX_FILES:
            if upload.boxes is not None:
                upload.problems.append(f"{item.name}: a second boxes file; ignored")
                continue
            try:
                upload.boxes = parse_boxes(item.data, item.basename)
            except InvalidInput as error:
                upload.problems.append(str(error))
        elif is_mask_name(item.basename):
            key = mask_key(item.basename)
            if key in upload.masks:
                upload.problems.append(f"{item.name}: another mask is also named {key!r}; ignored")
            else:
                upload.masks[key] = item
        else:
            upload.items.append(item)
    return upload


async def ingest_upload(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    campaign: Campaign,
    path: Path,
    limits: ArchiveLimits,
    *,
    gold: bool = False,
    progress: Callable[[str], object] | None = None,
) -> UploadReport:
    """Ingest an uploaded file (saved at ``path``); with ``gold``, masks may target old images."""
    upload = sort_members(iter_sources([path], limits))
    options = IngestOptions(masks=upload.masks, boxes=upload.boxes)
    report = UploadReport(
        await ingest_sources(
            sessionmaker, store, campaign, upload.items, options, limits, progress
        ),
        problems=upload.problems,
    )
    if gold and report.ingest.unmatched_masks:
        unmatched = set(report.ingest.unmatched_masks)
        still: list[str] = []
        for key, source in sorted(upload.masks.items()):
            if source.name not in unmatched:
                continue
            files = store.batch()
            async with sessionmaker() as session:
                try:
                    made = await apply_gold(session, files, campaign, key, source, limits)
                    await session.commit()
                except (Rejected, InvalidInput) as error:
                    await session.rollback()
                    files.discard()  # the masks of crops made gold before the error
                    report.problems.append(f"{source.name}: {error}")
                    continue
                except BaseException:
                    files.discard()
                    raise
            if made:
                report.gold_applied[source.name] = made
            else:
                still.append(source.name)
        report.ingest.unmatched_masks = still
    return report


async def apply_gold(
    session: AsyncSession,
    files: FileBatch,
    campaign: Campaign,
    key: str,
    source: Source,
    limits: ArchiveLimits,
) -> int:
    """Make the crops of the campaign's images named ``key`` gold; returns how many changed.

    The caller commits, or discards ``files`` (the gold masks written) when it cannot. A crop
    whose box holds none of the mask stays as it was.
    """
    images = [
        image
        for image in (
            await session.exec(
                select(Image).where(
                    Image.campaign_id == campaign.id,
                    col(Image.source_name).startswith(key, autoescape=True),
                )
            )
        ).all()
        if strip_suffix(image.source_name) == key
    ]
    if not images:
        return 0
    slices = decode_mask(source.basename, source.data, limits)
    made = 0
    for image in images:
        index = image.slice_index or 0
        if index >= len(slices):
            raise InvalidInput(f"the mask has {len(slices)} slices, the image has more")
        mask = slices[index]
        if mask.shape != (image.height, image.width):
            raise InvalidInput(
                f"the mask is {mask.shape[1]}x{mask.shape[0]} "
                f"but {image.source_name} is {image.width}x{image.height}"
            )
        tasks = (await session.exec(select(Task).where(Task.image_id == image.id))).all()
        for task in tasks:
            crop_gold = _crop_gold(mask, task)
            if not crop_gold.any():
                continue
            task.gold_mask_key = files.put("masks", codecs.encode_mask(crop_gold))
            task.kind = TaskKind.GOLD
            session.add(task)
            made += 1
    return made


def _crop_gold(mask: npt.NDArray[np.bool_], task: Task) -> npt.NDArray[np.bool_]:
    box = (task.box_x0, task.box_y0, task.box_x1, task.box_y1)
    t = CropTransform(task.crop_x0, task.crop_y0, task.crop_side, task.crop_out)
    return mask_to_crop(gold_for_box(mask, box), t)
