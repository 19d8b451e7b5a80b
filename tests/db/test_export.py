"""The dataset export round-trips: COCO RLE (pycocotools), mask PNGs and NIfTI (nibabel)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import routing
from bot.campaign import volunteers as people
from bot.campaign.answers import submit
from bot.campaign.crops import CropTransform, mask_to_image
from bot.campaign.crowd import Crowd
from bot.campaign.errors import NoWork
from bot.campaign.export import coco_rle, export_campaign, pseudonym
from bot.campaign.proposals import run_proposals
from bot.campaign.volumes import write_volumes
from bot.db.models import Campaign, Consensus, Image, Task, TaskStatus, Verdict
from bot.jobs.proposals import LocalRunner, ProposerSpec
from bot.store import codecs
from bot.store.files import FileStore
from tests.helpers.campaigns import phantom_campaign


@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (6, 3)])
def test_coco_rle_decodes_to_the_same_mask(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for fill in (0.0, 0.5, 1.0):
        mask = rng.random(shape) < fill
        rle = coco_rle(mask)
        decoded = coco_mask.decode(coco_mask.frPyObjects(rle, *shape))
        np.testing.assert_array_equal(decoded.astype(bool), mask)


def test_nifti_stacks_slices_in_order() -> None:
    images = {
        i: Image(
            id=i,
            campaign_id=1,
            content_hash=str(i),
            file_key="k",
            source_name="v.nii",
            width=4,
            height=3,
            volume_hash="abc",
            slice_index=i - 1,
            slice_count=3,
        )
        for i in (1, 2, 3)
    }
    masks = {1: np.eye(3, 4, dtype=bool), 3: np.ones((3, 4), dtype=bool)}  # by image id
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        manifest = write_volumes(archive, list(images.values()), masks, "lesion")
    with zipfile.ZipFile(buffer) as archive:
        blob = archive.read(manifest[0]["nifti"])
    volume = nib.Nifti1Image.from_bytes(gzip.decompress(blob))
    data = np.asarray(volume.dataobj)
    assert data.shape == (4, 3, 3)
    np.testing.assert_array_equal(data[:, :, 0].T.astype(bool), masks[1])
    assert not data[:, :, 1].any()
    np.testing.assert_array_equal(data[:, :, 2].T.astype(bool), masks[3])


async def test_export_round_trips_the_consensus(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    campaign = await phantom_campaign(sessionmaker, store, tmp_path / "ph", n=6)
    await run_proposals(sessionmaker, store, campaign, ProposerSpec(), LocalRunner(workers=0))
    crowd = Crowd(store)
    rng = np.random.default_rng(0)
    async with sessionmaker() as session:
        row = await session.get_one(Campaign, campaign.id)
        row.min_answers, row.max_answers, row.tutorial_tasks, row.retire_confidence = 2, 3, 0, 0.6
        session.add(row)
        await session.commit()
        for user in range(4):
            volunteer = await people.volunteer_for(session, telegram_user_id=300 + user)
            await people.give_consent(session, volunteer=volunteer)
            await session.commit()
            for _ in range(20):
                try:
                    assignment = await routing.next_assignment(
                        session, volunteer=volunteer, rng=rng
                    )
                except NoWork:
                    break
                await submit(
                    session,
                    crowd=crowd,
                    store=store,
                    volunteer=volunteer,
                    assignment=assignment,
                    verdict=Verdict.ACCEPT,
                )
        finished = (
            await session.exec(
                select(Task, Consensus)
                .join(Consensus, col(Consensus.task_id) == col(Task.id))
                .where(col(Task.status) != TaskStatus.OPEN)
            )
        ).all()
        assert finished
        report = await export_campaign(session, store, row, tmp_path / "out")
        images = {i.id: i for i in (await session.exec(select(Image))).all()}
    assert report.crops == len(finished)
    with zipfile.ZipFile(report.path) as archive:
        names = set(archive.namelist())
        coco = json.loads(archive.read("coco.json"))
        by_task = {a["task_id"]: a for a in coco["annotations"]}
        for task, consensus in finished:
            image = images[task.image_id]
            expected = mask_to_image(
                codecs.decode_mask(store.get(consensus.mask_key)),
                CropTransform(task.crop_x0, task.crop_y0, task.crop_side, task.crop_out),
                image.width,
                image.height,
            )
            annotation = by_task[task.id]
            assert annotation["source"] == "crowd"
            rle = coco_mask.frPyObjects(annotation["segmentation"], image.height, image.width)
            np.testing.assert_array_equal(coco_mask.decode(rle).astype(bool), expected)
            assert annotation["area"] == int(expected.sum())
            union = codecs.decode_mask(archive.read(f"masks/{task.image_id}.png"))
            assert union[expected].all()  # the image's mask holds every crop's consensus
            assert f"probs/{task.id}.png" in names
            assert f"images/{task.image_id}.png" in names
        assert any(a["source"] == "gold" for a in coco["annotations"])
        answers = list(csv.DictReader(io.StringIO(archive.read("answers.csv").decode())))
        assert len(answers) == report.answers > 0
        assert all(re.fullmatch(r"v[0-9a-f]{10}", a["volunteer"]) for a in answers)
        assert len({a["volunteer"] for a in answers}) == 4  # one pseudonym per volunteer
        assert pseudonym(1) != pseudonym(2)
        sheet = json.loads(archive.read("datasheet.json"))
        assert sheet["finished_crops"] == len(finished)
        assert sheet["proposal_dice_on_gold"] is not None
        assert "datasheet.md" in names
        assert "volunteers.csv" in names
