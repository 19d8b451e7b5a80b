"""The synthesis job on a real campaign: pairs from finished crops, resume, stored provenance."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import arrays
from bot.campaign.errors import InvalidInput
from bot.campaign.export import export_campaign
from bot.campaign.proposals import run_proposals
from bot.campaign.synthesis import SynthesisOptions, run_synthesis, training_pairs
from bot.db.models import (
    Campaign,
    Job,
    JobStatus,
    SyntheticPair,
    Task,
    TaskKind,
    TaskStatus,
)
from bot.jobs.proposals import LocalRunner, ProposerSpec
from bot.store import codecs
from bot.store.files import FileStore
from tests.helpers.campaigns import finish_crops, phantom_campaign


async def _finished_campaign(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, folder: Path, finish: int
) -> Campaign:
    """A phantom campaign whose first ``finish`` real crops retired with their proposal."""
    campaign = await phantom_campaign(sessionmaker, store, folder, n=6)
    await run_proposals(sessionmaker, store, campaign, ProposerSpec(), LocalRunner(0))
    await finish_crops(sessionmaker, finish)
    return campaign


async def test_pairs_come_from_finished_and_gold_crops_only(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    campaign = await _finished_campaign(sessionmaker, store, tmp_path / "ph", finish=3)
    async with sessionmaker() as session:
        pairs = await training_pairs(session, store, campaign, 32)
        tasks = (await session.exec(select(Task))).all()
    gold = [t.id or 0 for t in tasks if t.kind == TaskKind.GOLD]
    retired = [
        t.id or 0 for t in tasks if t.status == TaskStatus.RETIRED and t.kind == TaskKind.REAL
    ]
    assert sorted(pairs.task_ids) == sorted(gold + retired)
    assert pairs.images.shape == pairs.masks.shape == (len(pairs.task_ids), 32, 32)
    assert pairs.images.min() >= 0
    assert pairs.images.max() <= 1
    assert pairs.masks.dtype == bool
    assert all(m.any() for m in pairs.masks)
    assert pairs.probabilities is not None
    assert len(pairs.probabilities) == len(retired)  # the crowd's maps; gold has none


async def test_synthesis_stores_gated_pairs_and_a_second_run_resumes(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    campaign = await _finished_campaign(sessionmaker, store, tmp_path / "ph", finish=8)
    options = SynthesisOptions(n=12, preset="tiny", steps=30, seed=3)
    phases: list[str] = []
    first = await run_synthesis(
        sessionmaker,
        store,
        campaign,
        options,
        tmp_path / "data",
        report=lambda phase, _done, _total: phases.append(phase),
    )
    assert {"training", "judge", "generating"} <= set(phases)
    assert first.steps == 30
    assert first.resumed_from == 0
    assert first.candidates == 12
    assert first.acceptance == len(first.kept) / 12
    async with sessionmaker() as session:
        stored = (await session.exec(select(SyntheticPair))).all()
        job = await session.get_one(Job, first.job_id)
    assert sorted(p.id or 0 for p in stored) == sorted(first.kept)
    assert job.kind == "synthesis"
    assert job.status == JobStatus.DONE
    for pair in stored:
        assert pair.provenance["checkpoint_sha256"] == first.checkpoint_sha256
        assert {"dice", "intensity_distance", "max_correlation"} <= set(pair.scores)
        assert pair.gate_score == pair.scores["dice"]
        assert arrays.image(store, pair.image_key).shape == (32, 32)
        assert arrays.mask(store, pair.mask_key).any()
    # A second run of the same configuration trains no further and draws new masks.
    second = await run_synthesis(sessionmaker, store, campaign, options, tmp_path / "data")
    assert second.resumed_from == 30
    assert second.steps == 30
    async with sessionmaker() as session:
        indices = [p.provenance["index"] for p in (await session.exec(select(SyntheticPair))).all()]
    assert len(indices) == len(set(indices))  # never the same draw twice
    if first.kept and second.kept:
        assert min(indices[len(first.kept) :]) > max(indices[: len(first.kept)])


async def test_synthesis_needs_finished_crops(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    campaign = await phantom_campaign(sessionmaker, store, tmp_path / "ph", n=2)
    async with sessionmaker() as session:
        for task in (await session.exec(select(Task))).all():
            task.kind, task.gold_mask_key = TaskKind.REAL, None
            session.add(task)
        await session.commit()
    with pytest.raises(InvalidInput, match="at least 4 finished crops"):
        await run_synthesis(
            sessionmaker, store, campaign, SynthesisOptions(preset="tiny"), tmp_path / "data"
        )
    async with sessionmaker() as session:
        job = (await session.exec(select(Job).where(Job.kind == "synthesis"))).one()
    assert job.status == JobStatus.FAILED
    assert "at least 4" in (job.error or "")


async def test_the_export_carries_synthetic_pairs_apart_with_provenance(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    campaign = await _finished_campaign(sessionmaker, store, tmp_path / "ph", finish=2)
    assert campaign.id is not None
    image = np.full((32, 32), 90, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:20, 10:24] = True
    async with sessionmaker() as session:
        session.add(
            SyntheticPair(
                campaign_id=campaign.id,
                image_key=store.put("images", codecs.encode_png(image), "png")[0],
                mask_key=store.put("masks", codecs.encode_mask(mask), "png")[0],
                generator_id="pix2pix@0123456789abcdef",
                seed=5,
                gate_score=0.91,
                scores={"dice": 0.91},
                provenance={"strategy": "elastic", "index": 3},
            )
        )
        await session.commit()
        row = await session.get_one(Campaign, campaign.id)
        report = await export_campaign(session, store, row, tmp_path / "out")
    assert report.synthetic == 1
    with zipfile.ZipFile(report.path) as archive:
        listed = json.loads(archive.read("synthetic/pairs.json"))
        assert listed[0]["provenance"] == {"strategy": "elastic", "index": 3}
        assert listed[0]["scores"] == {"dice": 0.91}
        back = codecs.decode_mask(archive.read(listed[0]["mask"]))
        assert np.array_equal(back, mask)
        assert codecs.decode_png(archive.read(listed[0]["image"])).shape == (32, 32)
        sheet = json.loads(archive.read("datasheet.json"))
        assert sheet["synthetic_pairs"] == 1
        assert sheet["synthetic_generators"] == ["pix2pix@0123456789abcdef"]
        # Synthetic pairs never mix with the real annotations.
        assert all(
            a["source"] != "synthetic" for a in json.loads(archive.read("coco.json"))["annotations"]
        )
