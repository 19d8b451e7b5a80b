"""The proposals job: a MedSAM (or fallback) proposal and candidates for every pending crop.

Idempotent per crop (one proposal per task and model), resumable after a kill (each batch's
results are committed as they arrive; a new run does only what is still pending), with a
``Job`` row that shows progress.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import jobrecords
from bot.campaign.crops import CropTransform
from bot.db.models import Campaign, Proposal, Task
from bot.jobs.proposals import ProposalResult, ProposerSpec, Runner, WorkItem
from bot.settings import Settings
from bot.store import codecs
from bot.store.files import FileStore
from inference.fallback import FALLBACK_ID
from inference.models import TINY, file_sha256
from inference.predictor import InferenceConfig

logger = logging.getLogger(__name__)


def spec_from(settings: Settings, *, model: str | None = None) -> ProposerSpec:
    """The proposer the settings ask for.

    The checkpoint's model if one is configured, else the labelled fallback; ``model`` overrides
    (e.g. ``tiny`` for demos and tests).
    """
    name = model or (settings.model if settings.medsam_checkpoint else "fallback")
    encoder = settings.inference_encoder
    decoder = settings.inference_decoder
    if encoder == "auto":
        encoder = "bf16" if settings.device == "cuda" else "onnx"
    if decoder == "auto":
        decoder = "torch" if settings.device == "cuda" else "onnx"
    if name == TINY:  # a test model: the reference paths are as fast and exactly right
        encoder, decoder = "fp32", "torch"
    config = InferenceConfig(
        device=settings.device,
        threads=settings.torch_threads,
        encoder=encoder,
        decoder=decoder,
        onnx_dir=settings.data_dir / "onnx",
    )
    checkpoint = settings.medsam_checkpoint if name not in ("fallback", TINY) else None
    return ProposerSpec(name, checkpoint, config, settings.data_dir / "embeddings")


def model_id_of(spec: ProposerSpec) -> str:
    """The model id a spec's proposer will report (without loading the model)."""
    if spec.model == "fallback":
        return FALLBACK_ID
    if spec.checkpoint is None:
        return f"{TINY}:seed{spec.seed}"
    return f"{spec.model}@{file_sha256(Path(spec.checkpoint))[:16]}"


@dataclass
class ProposalRun:
    """What one run of the job did."""

    model_id: str
    pending: int
    written: int
    job_id: int


async def pending_tasks(session: AsyncSession, *, campaign_id: int, model_id: str) -> list[Task]:
    """Tasks of a campaign that have no proposal from ``model_id`` yet, oldest first."""
    done = select(Proposal.task_id).where(Proposal.model_id == model_id)
    result = await session.exec(
        select(Task)
        .where(Task.campaign_id == campaign_id, col(Task.id).not_in(done))
        .order_by(col(Task.id))
    )
    return list(result.all())


def _work(store: FileStore, tasks: list[Task], batch_size: int) -> Iterator[list[WorkItem]]:
    for start in range(0, len(tasks), batch_size):
        batch = []
        for task in tasks[start : start + batch_size]:
            assert task.id is not None
            crop = codecs.decode_png(store.get(task.crop_key))
            t = CropTransform(task.crop_x0, task.crop_y0, task.crop_side, task.crop_out)
            box = t.to_crop((task.box_x0, task.box_y0, task.box_x1, task.box_y1))
            batch.append(WorkItem(task.id, crop, box))
        yield batch


async def _write(session: AsyncSession, store: FileStore, results: list[ProposalResult]) -> int:
    """Store one batch of results in one transaction; returns how many were new."""
    files = store.batch()
    written = 0
    try:
        for result in results:
            exists = await session.exec(
                select(Proposal.id).where(
                    Proposal.task_id == result.task_id, Proposal.model_id == result.model_id
                )
            )
            if exists.first() is not None:
                continue  # another run got there first: idempotent
            prediction = result.prediction
            candidates = [
                {
                    "key": files.put("masks", codecs.encode_mask(c.mask)),
                    "source": c.source,
                    "score": round(float(c.score), 4),
                }
                for c in result.candidates
            ]
            session.add(
                Proposal(
                    task_id=result.task_id,
                    model_id=result.model_id,
                    mask_key=files.put("masks", codecs.encode_mask(prediction.mask)),
                    prob_key=files.put("probs", codecs.encode_prob(prediction.prob)),
                    candidates=candidates,
                    predicted_iou=float(prediction.predicted_iou),
                    stability=float(prediction.stability),
                )
            )
            written += 1
        await session.commit()
    except BaseException:
        await session.rollback()
        files.discard()
        raise
    return written


async def run_proposals(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    campaign: Campaign,
    spec: ProposerSpec,
    runner: Runner,
    *,
    batch_size: int = 4,
    progress: Callable[[int, int], object] | None = None,
) -> ProposalRun:
    """Propose for every pending crop of ``campaign``; calls ``progress(done, total)``."""
    assert campaign.id is not None
    model_id = model_id_of(spec)
    async with sessionmaker() as session:
        tasks = await pending_tasks(session, campaign_id=campaign.id, model_id=model_id)
    written = 0
    async with jobrecords.tracked(
        sessionmaker, "proposals", campaign.id, total=len(tasks), model_id=model_id
    ) as job:
        batches = runner.run(spec, _work(store, tasks, batch_size))
        # Each batch is computed in a worker thread, so a bot serving volunteers on this event
        # loop keeps answering while the job runs.
        while (results := await asyncio.to_thread(next, batches, None)) is not None:
            async with sessionmaker() as session:
                written += await _write(session, store, results)
            await job.progress(written)
            if progress is not None:
                progress(written, len(tasks))
        job_id = job.id
    logger.info("proposals: %d of %d written by %s", written, len(tasks), model_id)
    return ProposalRun(model_id=model_id, pending=len(tasks), written=written, job_id=job_id)
