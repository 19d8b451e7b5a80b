"""Uploads through the chat, /gold, /review of escalated crops, retrying jobs, campaign pauses."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sqlmodel import col, select

from bot.campaign import arrays
from bot.campaign.synthesis import SynthesisOptions
from bot.db.models import (
    Answer,
    AuditEntry,
    Campaign,
    CampaignStatus,
    Consensus,
    Image,
    Job,
    JobStatus,
    Proposal,
    Task,
    TaskKind,
    TaskStatus,
    Verdict,
    Volunteer,
)
from bot.store import codecs
from tests.helpers.bot import World, copied_world, prepare, press_as
from tests.helpers.campaigns import finish_crops
from tests.helpers.files import png, zip_bytes

ADMIN, EXPERT, VOLUNTEER = 7201, 7202, 7203


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uploads")
    asyncio.run(prepare(root, n=4))
    return root


@pytest.fixture
async def world(prepared: Path, tmp_path: Path) -> AsyncIterator[World]:
    async with copied_world(prepared, tmp_path / "world", frozenset({ADMIN})) as world:
        yield world


def _scan(seed: int, side: int = 96) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """A grey image with one bright ellipse, and the ellipse as its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    cy, cx = rng.uniform(0.35, 0.65, 2) * side
    mask = ((yy - cy) / (side * 0.18)) ** 2 + ((xx - cx) / (side * 0.24)) ** 2 <= 1
    image = rng.normal(70, 8, (side, side)) + 110 * mask
    return np.clip(image, 0, 255).astype(np.uint8), mask


async def _said(world: World, user_id: int, text: str, *methods: str) -> str:
    user = world.emulator.user(user_id, "C")
    await user.send(text)
    event = await user.next_event(*(methods or ("sendMessage",)), timeout=30)
    return str(event.params.get("text") or event.params.get("caption") or "")


async def _final_edit(world: World, user_id: int, needle: str, within: float = 60) -> str:
    """The text of the first edit (or message) to user_id that contains needle."""
    user = world.emulator.user(user_id, "C")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        event = await user.next_event(
            "editMessageText", "sendMessage", timeout=max(deadline - loop.time(), 0.1)
        )
        text = str(event.params.get("text") or "")
        if needle in text:
            return text


async def test_a_coordinator_uploads_a_zip_and_proposals_follow(world: World) -> None:
    coordinator = world.emulator.user(ADMIN, "A")
    image, mask = _scan(1)
    await coordinator.send_photo(png(image))
    assert "not as photos" in (await coordinator.next_event("sendMessage")).params["text"]
    boxed, _ = _scan(2)
    unboxed, _ = _scan(3)
    upload = zip_bytes(
        {
            "scans/liver1.png": png(image),
            "scans/liver1_mask.png": png(mask.astype(np.uint8) * 255),
            "scans/liver2.png": png(boxed),
            "scans/liver3.png": png(unboxed),
            "scans/broken.png": png(image)[:40],
            "scans/boxes.csv": b"image,x0,y0,x1,y1\nliver2.png,20,20,70,70\n",
            "../escape.png": png(image),
        }
    )
    await coordinator.send_document(upload, "batch.zip")
    summary = await _final_edit(world, ADMIN, "Upload batch.zip")
    assert "2 ingested" in summary
    assert "1 gold" in summary
    assert "liver3.png: no boxes" in summary
    assert "broken.png" in summary
    assert "escape.png" in summary
    done = await _final_edit(world, ADMIN, "Proposals for phantoms done")
    assert "2 new crops" in done
    async with world.services.sessionmaker() as session:
        images = (
            await session.exec(select(Image).where(col(Image.source_name).startswith("liver")))
        ).all()
        assert sorted(i.source_name for i in images) == ["liver1.png", "liver2.png"]
        tasks = (
            await session.exec(select(Task).where(col(Task.image_id).in_([i.id for i in images])))
        ).all()
        assert sorted(t.kind for t in tasks) == [TaskKind.GOLD, TaskKind.REAL]
        proposed = (
            await session.exec(
                select(Proposal).where(col(Proposal.task_id).in_([t.id for t in tasks]))
            )
        ).all()
        assert len(proposed) == 2
        audit = (await session.exec(select(AuditEntry).where(AuditEntry.action == "upload"))).one()
        assert audit.detail["ingested"] == 2


async def test_uploads_are_refused_to_volunteers_and_when_too_big(world: World) -> None:
    volunteer = world.emulator.user(VOLUNTEER, "V")
    await volunteer.send_document(png(_scan(4)[0]), "x.png")
    assert "coordinators only" in (await volunteer.next_event("sendMessage")).params["text"]
    coordinator = world.emulator.user(ADMIN, "A")
    await coordinator.send_document(b"\0" * (20 * 1000 * 1000 + 1), "huge.zip")
    assert "over 20 MB" in (await coordinator.next_event("sendMessage")).params["text"]


async def test_gold_masks_for_images_already_in_the_campaign(world: World) -> None:
    async with world.services.sessionmaker() as session:
        task = (await session.exec(select(Task).where(Task.kind == TaskKind.REAL))).first()
        assert task is not None
        image = await session.get_one(Image, task.image_id)
    expert_mask = np.zeros((image.height, image.width), dtype=np.uint8)
    x0, y0 = int(task.box_x0), int(task.box_y0)
    expert_mask[y0 + 2 : int(task.box_y1) - 2, x0 + 2 : int(task.box_x1) - 2] = 255
    stem = image.source_name.rsplit(".", 1)[0]
    assert "Send the expert masks" in await _said(world, ADMIN, "/gold")
    await world.emulator.user(ADMIN, "A").send_document(
        zip_bytes({f"{stem}_mask.png": png(expert_mask), "nobody_mask.png": png(expert_mask)}),
        "gold.zip",
    )
    summary = await _final_edit(world, ADMIN, "Upload gold.zip")
    assert "crops now gold" in summary
    assert "nobody_mask.png" in summary  # matches no image
    async with world.services.sessionmaker() as session:
        again = await session.get_one(Task, task.id)
        assert again.kind == TaskKind.GOLD
        assert again.gold_mask_key is not None
        assert arrays.mask(world.services.store, again.gold_mask_key).any()


async def _escalate(world: World, volunteer_id: int) -> list[int]:
    """Escalate two real crops, each with one volunteer's drawn mask."""
    async with world.services.sessionmaker() as session:
        tasks = (
            await session.exec(
                select(Task).where(Task.kind == TaskKind.REAL).order_by(col(Task.id)).limit(2)
            )
        ).all()
        for task in tasks:
            drawn = np.zeros((task.crop_out, task.crop_out), dtype=bool)
            drawn[10:40, 10:40] = True
            key, _ = world.services.store.put("masks", codecs.encode_mask(drawn), "png")
            assert task.id is not None
            session.add(
                Answer(
                    task_id=task.id, volunteer_id=volunteer_id, verdict=Verdict.ADJUST, mask_key=key
                )
            )
            task.status = TaskStatus.ESCALATED
            session.add(task)
            fused = np.zeros_like(drawn)
            fused[20:50, 20:50] = True
            fused_key, _ = world.services.store.put("masks", codecs.encode_mask(fused), "png")
            session.add(
                Consensus(
                    task_id=task.id,
                    mask_key=fused_key,
                    confidence=0.5,
                    answers_used=1,
                    method_version="test",
                )
            )
        await session.commit()
        return [t.id for t in tasks if t.id is not None]


async def test_an_expert_reviews_escalated_crops(world: World) -> None:
    assert "coordinators only" in await _said(world, EXPERT, "/review")
    await _said(world, ADMIN, f"/grant {EXPERT} expert")
    async with world.services.sessionmaker() as session:
        volunteer = (
            await session.exec(select(Volunteer).where(Volunteer.telegram_user_id == EXPERT))
        ).one()
    first, second = await _escalate(world, volunteer.id or 0)
    expert = world.emulator.user(EXPERT, "E")
    await expert.send("/review")
    shown = await expert.next_event("sendPhoto", timeout=30)
    assert f"Crop #{first}" in shown.params["caption"]
    assert "1. crowd consensus" in shown.params["caption"]
    assert "drawn by 1 volunteer" in shown.params["caption"]
    labels = [label for label, _ in expert.buttons(shown.message)]
    assert "1" in labels
    assert "Skip for now" in labels
    # A volunteer pressing the expert's button is refused.
    await press_as(world.emulator, VOLUNTEER, shown.message, expert.buttons(shown.message)[0][1])
    refusal = await expert.next_event("answerCallbackQuery")
    assert "coordinators only" in (refusal.params.get("text") or "")
    caption_lines = shown.params["caption"].splitlines()
    picked = caption_lines[1].split(". ", 1)[1]  # the label of candidate 1
    assert shown.message is not None
    await expert.press("1", message_id=shown.message["message_id"])
    following = await expert.next_event("sendPhoto", timeout=30)
    assert f"Crop #{second}" in following.params["caption"]
    async with world.services.sessionmaker() as session:
        settled = await session.get_one(Task, first)
        assert settled.kind == TaskKind.GOLD
        assert settled.status == TaskStatus.RETIRED
        assert settled.gold_mask_key is not None
        audit = (await session.exec(select(AuditEntry).where(AuditEntry.action == "review"))).one()
        assert audit.detail == {"task_id": first, "source": picked}
        side = (await session.get_one(Task, second)).crop_out
    # The expert sends a mask of the wrong size, then the right one.
    await expert.send_document(png(np.full((side + 1, side + 1), 255, np.uint8)), "m.png")
    assert "must be" in (await expert.next_event("sendMessage")).params["text"]
    own = np.zeros((side, side), dtype=np.uint8)
    own[5:30, 5:50] = 255
    await expert.send_document(png(own), "mine.png")
    assert "now this crop's gold" in (await expert.next_event("sendMessage")).params["text"]
    assert "No escalated crop waits" in (await expert.next_event("sendMessage")).params["text"]
    async with world.services.sessionmaker() as session:
        settled = await session.get_one(Task, second)
        assert settled.gold_mask_key is not None
        stored = arrays.mask(world.services.store, settled.gold_mask_key)
        assert np.array_equal(stored, own > 0)
    # The export holds the expert's mask for each settled crop, and not the crowd's as well.
    await _said(world, ADMIN, "/export", "sendDocument")
    exported = world.emulator.user(ADMIN, "A").events[-1].upload("document")
    with zipfile.ZipFile(io.BytesIO(exported)) as archive:
        annotations = json.loads(archive.read("coco.json"))["annotations"]
    for task_id in (first, second):
        assert [a["source"] for a in annotations if a["task_id"] == task_id] == ["gold"]


async def test_a_failed_job_is_retried_from_jobs(world: World) -> None:
    async with world.services.sessionmaker() as session:
        await session.exec(Proposal.__table__.delete())  # type: ignore[attr-defined]
        session.add(
            Job(
                kind="proposals",
                status=JobStatus.FAILED,
                campaign_id=world.campaign_id,
                error="RuntimeError('disk full')",
            )
        )
        await session.commit()
    coordinator = world.emulator.user(ADMIN, "A")
    await coordinator.send("/jobs")
    listing = await coordinator.next_event("sendMessage")
    assert "disk full" in listing.params["text"]
    buttons = coordinator.buttons(listing.message)
    retry = [label for label, _ in buttons if label.startswith("Retry")]
    assert retry
    assert listing.message is not None
    await press_as(world.emulator, VOLUNTEER, listing.message, dict(buttons)[retry[0]])
    refusal = await coordinator.next_event("answerCallbackQuery")
    assert "coordinators only" in (refusal.params.get("text") or "")
    await coordinator.press(retry[0], message_id=listing.message["message_id"])
    done = await _final_edit(world, ADMIN, "Proposals for phantoms done")
    async with world.services.sessionmaker() as session:
        proposals = (await session.exec(select(Proposal))).all()
        tasks = (await session.exec(select(Task))).all()
        assert len(proposals) == len(tasks)
        assert f"{len(tasks)} new crops" in done
        failed = (await session.exec(select(Job).where(Job.status == JobStatus.FAILED))).one()
        assert failed.params.get("retried") is True
    await coordinator.send("/jobs")
    relisted = await coordinator.next_event("sendMessage")
    assert not [b for b in coordinator.buttons(relisted.message) if b[0].startswith("Retry")]


async def test_pause_resume_close_for_coordinators_and_reminders_for_volunteers(
    world: World,
) -> None:
    assert "now paused" in await _said(world, ADMIN, "/pause")
    assert "now active" in await _said(world, ADMIN, "/resume")
    reminders = await _said(world, ADMIN, "/pause me")
    assert "now paused" not in reminders
    assert "now paused" not in await _said(world, VOLUNTEER, "/pause")
    assert "now closed" in await _said(world, ADMIN, "/close")
    async with world.services.sessionmaker() as session:
        campaign = await session.get_one(Campaign, world.campaign_id)
        assert campaign.status == CampaignStatus.CLOSED
        volunteer = (
            await session.exec(select(Volunteer).where(Volunteer.telegram_user_id == VOLUNTEER))
        ).one()
        assert volunteer.paused


async def test_synthesize_fails_clearly_then_a_retry_succeeds(world: World) -> None:
    world.handlers.synthesis = SynthesisOptions(n=6, preset="tiny", steps=20)
    assert "usage" in await _said(world, ADMIN, "/synthesize many")
    await world.emulator.user(ADMIN, "A").send("/synthesize 6")
    failed = await _final_edit(world, ADMIN, "failed")
    assert "at least 4 finished crops" in failed
    # Crops finish (here: retired with their proposal as consensus), then the job is retried.
    await finish_crops(world.services.sessionmaker, 6)
    coordinator = world.emulator.user(ADMIN, "A")
    await coordinator.send("/jobs")
    listing = await coordinator.next_event("sendMessage")
    assert listing.message is not None
    retry = [b for b, _ in coordinator.buttons(listing.message) if "synthesis" in b]
    assert retry
    await coordinator.press(retry[0], message_id=listing.message["message_id"])
    done = await _final_edit(world, ADMIN, "done (job")
    assert "synthetic pairs" in done
    async with world.services.sessionmaker() as session:
        jobs = (await session.exec(select(Job).where(Job.kind == "synthesis"))).all()
    assert sorted(j.status for j in jobs) == sorted([JobStatus.DONE, JobStatus.FAILED])
