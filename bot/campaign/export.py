"""The finished dataset: one zip with images, consensus masks, COCO RLE, answers and a datasheet.

Layout of ``<campaign>-<timestamp>.zip``::

    images/<image_id>.png        the normalised, de-identified source images
    masks/<image_id>.png         every finished crop's consensus pasted into its image (union)
    probs/<task_id>.png          fusion's probability map per finished crop (crop frame, 8 bit)
    volumes/<volume>.nii.gz      for 3D and NIfTI sources: the masks in the source's own voxel
                                 grid, orientation and affine (docs/export.md)
    volumes/<volume>.seg.dcm     for DICOM sources with patient geometry: a DICOM SEG that
                                 references the source instances
    volumes/volumes.json         each volume file's source, shape, affine and slices
    coco.json                    COCO instances: one annotation per finished crop, RLE in the
                                 image frame (uncompressed ``counts``, column-major, as COCO)
    answers.csv                  every raw answer, with pseudonymous volunteer ids
    volunteers.csv               per pseudonym: answers, gold answers and accuracy, points
    datasheet.md / .json         counts, rules, model ids, consensus and proposal quality on gold
    synthetic/images/<id>.png    synthetic pairs that passed the quality gate (when synthesis ran),
    synthetic/masks/<id>.png     kept apart from the real data, with
    synthetic/pairs.json         every gate score and the provenance of each pair

Only crops whose consensus is final (retired or escalated) are exported; gold crops contribute
their expert mask to ``coco.json`` marked ``"source": "gold"``.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import arrays
from bot.campaign.crops import CropTransform, mask_to_image
from bot.campaign.progress import gold_quality, mean_or_none
from bot.campaign.volumes import write_volumes
from bot.db.models import (
    Answer,
    Campaign,
    Consensus,
    GoldScore,
    Image,
    Proposal,
    SyntheticPair,
    Task,
    TaskKind,
    TaskStatus,
)
from bot.db.types import utcnow
from bot.store import codecs
from bot.store.files import FileStore

logger = logging.getLogger(__name__)

Mask = npt.NDArray[np.bool_]


def coco_rle(mask: Mask) -> dict[str, Any]:
    """COCO's uncompressed RLE of an (H, W) mask: run lengths in column-major order, from 0s."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def pseudonym(volunteer_id: int) -> str:
    """A stable pseudonymous id for exports (never the Telegram id)."""
    return "v" + hashlib.blake2b(f"volunteer:{volunteer_id}".encode(), digest_size=5).hexdigest()


@dataclass
class ExportReport:
    """What an export wrote."""

    path: Path
    images: int
    crops: int
    gold: int
    answers: int
    bytes: int
    synthetic: int = 0


def _png(mask: Mask) -> bytes:
    return codecs.encode_mask(mask)


def _csv(rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


async def export_campaign(
    session: AsyncSession, store: FileStore, campaign: Campaign, out_dir: Path
) -> ExportReport:
    """Write the campaign's dataset zip under ``out_dir``; returns what it holds."""
    assert campaign.id is not None
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{campaign.name}-{stamp}.zip"
    images = {
        image.id: image
        for image in (
            await session.exec(select(Image).where(Image.campaign_id == campaign.id))
        ).all()
    }
    finished = (
        await session.exec(
            select(Task, Consensus)
            .join(Consensus, col(Consensus.task_id) == col(Task.id))
            .where(Task.campaign_id == campaign.id)
            .order_by(col(Task.id))
        )
    ).all()
    gold = await gold_quality(session, store, campaign)
    answers = (
        await session.exec(
            select(Answer, Task.image_id)
            .join(Task, col(Task.id) == Answer.task_id)
            .where(Task.campaign_id == campaign.id)
            .order_by(col(Answer.id))
        )
    ).all()
    gold_scores = (
        await session.exec(
            select(GoldScore.volunteer_id, func.count(), func.avg(GoldScore.dice))
            .join(Task, col(Task.id) == GoldScore.task_id)
            .where(Task.campaign_id == campaign.id)
            .group_by(col(GoldScore.volunteer_id))
        )
    ).all()
    proposal_counts = dict(
        (
            await session.exec(
                select(Proposal.model_id, func.count())
                .join(Task, col(Task.id) == Proposal.task_id)
                .where(Task.campaign_id == campaign.id)
                .group_by(col(Proposal.model_id))
            )
        ).all()
    )
    coco: dict[str, Any] = {
        "info": {"description": f"MedCrowd campaign {campaign.name}", "date_created": stamp},
        "categories": [{"id": 1, "name": campaign.structure}],
        "images": [],
        "annotations": [],
    }
    union: dict[int, Mask] = {}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for image_id, image in sorted(images.items()):
            assert image_id is not None
            archive.writestr(f"images/{image_id}.png", store.get(image.file_key))
            coco["images"].append(
                {
                    "id": image_id,
                    "file_name": f"images/{image_id}.png",
                    "width": image.width,
                    "height": image.height,
                }
            )
        rows: list[tuple[Task, Mask, str, float | None]] = []
        for task, consensus in finished:
            if task.status == TaskStatus.OPEN:
                continue  # a refit may have written a consensus; only final ones are exported
            if task.kind != TaskKind.REAL and task.gold_mask_key:
                continue  # an expert settled it (review): the gold below replaces the crowd
            rows.append(
                (task, arrays.mask(store, consensus.mask_key), "crowd", consensus.confidence)
            )
            if consensus.prob_key:
                archive.writestr(f"probs/{task.id}.png", store.get(consensus.prob_key))
        for task in gold.tasks:
            assert task.gold_mask_key is not None
            rows.append((task, arrays.mask(store, task.gold_mask_key), "gold", None))
        for n, (task, mask_crop, source, confidence) in enumerate(rows, start=1):
            image = images[task.image_id]
            t = CropTransform(task.crop_x0, task.crop_y0, task.crop_side, task.crop_out)
            full = mask_to_image(mask_crop, t, image.width, image.height)
            union[task.image_id] = union.get(task.image_id, np.zeros_like(full)) | full
            ys, xs = np.nonzero(full)
            bbox = (
                [
                    int(xs.min()),
                    int(ys.min()),
                    int(xs.max() - xs.min() + 1),
                    int(ys.max() - ys.min() + 1),
                ]
                if ys.size
                else [0, 0, 0, 0]
            )
            coco["annotations"].append(
                {
                    "id": n,
                    "image_id": task.image_id,
                    "category_id": 1,
                    "task_id": task.id,
                    "source": source,
                    "confidence": confidence,
                    "segmentation": coco_rle(full),
                    "area": int(full.sum()),
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
        for image_id, image in images.items():
            if image.gold_mask_key:  # the expert's whole mask, exact even where crops shrink
                assert image_id is not None
                full = arrays.mask(store, image.gold_mask_key)
                union[image_id] = union.get(image_id, np.zeros_like(full)) | full
        for image_id, mask in sorted(union.items()):
            archive.writestr(f"masks/{image_id}.png", _png(mask))
        manifest = await asyncio.to_thread(
            write_volumes, archive, list(images.values()), union, campaign.structure
        )
        if manifest:
            archive.writestr("volumes/volumes.json", json.dumps(manifest, indent=1))
        archive.writestr("coco.json", json.dumps(coco))
        archive.writestr(
            "answers.csv",
            _csv(
                [
                    [
                        "answer_id",
                        "task_id",
                        "image_id",
                        "volunteer",
                        "verdict",
                        "has_mask",
                        "seconds_taken",
                        "agreement",
                        "points",
                        "created_at",
                    ]
                ]
                + [
                    [
                        a.id,
                        a.task_id,
                        image_id,
                        pseudonym(a.volunteer_id),
                        a.verdict.value,
                        int(a.mask_key is not None),
                        a.seconds_taken,
                        a.agreement,
                        a.points,
                        a.created_at.isoformat(),
                    ]
                    for a, image_id in answers
                ]
            ),
        )
        per_volunteer: dict[int, list[Any]] = defaultdict(lambda: [0, 0, None, 0])
        for a, _ in answers:
            per_volunteer[a.volunteer_id][0] += 1
            per_volunteer[a.volunteer_id][3] += a.points
        for volunteer_id, count, mean in gold_scores:
            per_volunteer[volunteer_id][1] = int(count)
            per_volunteer[volunteer_id][2] = None if mean is None else round(float(mean), 4)
        archive.writestr(
            "volunteers.csv",
            _csv(
                [["volunteer", "answers", "gold_answers", "gold_accuracy", "points"]]
                + [[pseudonym(v), *values] for v, values in sorted(per_volunteer.items())]
            ),
        )
        crowd_crops = len([r for r in rows if r[2] == "crowd"])
        synthetic = (
            await session.exec(
                select(SyntheticPair)
                .where(SyntheticPair.campaign_id == campaign.id)
                .order_by(col(SyntheticPair.id))
            )
        ).all()
        for pair in synthetic:
            archive.writestr(f"synthetic/images/{pair.id}.png", store.get(pair.image_key))
            archive.writestr(f"synthetic/masks/{pair.id}.png", store.get(pair.mask_key))
        if synthetic:
            archive.writestr(
                "synthetic/pairs.json",
                json.dumps(
                    [
                        {
                            "id": pair.id,
                            "image": f"synthetic/images/{pair.id}.png",
                            "mask": f"synthetic/masks/{pair.id}.png",
                            "generator": pair.generator_id,
                            "scores": pair.scores,
                            "provenance": pair.provenance,
                            "trained_on_tasks": pair.source_task_ids,
                        }
                        for pair in synthetic
                    ],
                    indent=1,
                ),
            )
        sheet = {
            "campaign": campaign.name,
            "structure": campaign.structure,
            "exported_at": stamp,
            "images": len(images),
            "finished_crops": crowd_crops,
            "gold_crops": len(gold.tasks),
            "answers": len(answers),
            "volunteers": len(per_volunteer),
            "rules": {
                "min_answers": campaign.min_answers,
                "max_answers": campaign.max_answers,
                "retire_confidence": campaign.retire_confidence,
                "gold_rate": campaign.gold_rate,
                "crop_size": campaign.crop_size,
                "crop_margin": campaign.crop_margin,
            },
            "proposal_models": sorted(set(proposal_counts) | gold.model_ids),
            "proposals_by_model": {k: int(v) for k, v in sorted(proposal_counts.items())},
            "proposal_dice_on_gold": _rounded(mean_or_none(gold.proposal_dice)),
            "consensus_dice_on_gold": _rounded(mean_or_none(gold.consensus_dice)),
            "synthetic_pairs": len(synthetic),
            "synthetic_generators": sorted({pair.generator_id for pair in synthetic}),
        }
        archive.writestr("datasheet.json", json.dumps(sheet, indent=2))
        archive.writestr("datasheet.md", _datasheet_md(sheet))
    report = ExportReport(
        path=path,
        images=len(images),
        crops=crowd_crops,
        gold=len(gold.tasks),
        answers=len(answers),
        bytes=path.stat().st_size,
        synthetic=len(synthetic),
    )
    logger.info("exported campaign %s to %s", campaign.name, path)
    return report


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _datasheet_md(sheet: dict[str, Any]) -> str:
    rules = sheet["rules"]
    return "\n".join(
        [
            f"# Datasheet: {sheet['campaign']}",
            "",
            f"* structure: {sheet['structure']}; exported {sheet['exported_at']}",
            f"* {sheet['images']} images, {sheet['finished_crops']} crops with a final crowd "
            f"consensus, {sheet['gold_crops']} expert gold crops",
            f"* {sheet['answers']} answers from {sheet['volunteers']} volunteers (pseudonymous)",
            f"* rules: {rules['min_answers']}-{rules['max_answers']} answers per crop, retire at "
            f"confidence {rules['retire_confidence']}, gold rate {rules['gold_rate']}",
            "* proposal models: "
            + (
                ", ".join(f"{k} ({v} crops)" for k, v in sheet["proposals_by_model"].items())
                or ", ".join(sheet["proposal_models"])
                or "none"
            ),
            f"* proposal Dice on gold: {sheet['proposal_dice_on_gold']}",
            f"* consensus Dice on gold: {sheet['consensus_dice_on_gold']}",
            "",
            "Masks are in each image's frame; `coco.json` holds one annotation per crop "
            "(RLE, column-major, uncompressed counts). `volumes/` gives 3D, NIfTI and DICOM "
            "sources their masks back in the source's own frame (see `volumes/volumes.json`).",
            "",
        ]
    )
