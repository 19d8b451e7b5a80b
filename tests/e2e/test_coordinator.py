"""The coordinator's commands through the emulator, and every refusal for a plain volunteer."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlmodel import select

from bot.db.models import AuditEntry, Campaign, CampaignStatus, Volunteer
from tests.helpers.bot import World, copied_world, prepare, press_as

ADMIN, COORDINATOR, VOLUNTEER = 7001, 7002, 7003


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coordinator")
    asyncio.run(prepare(root, n=4))
    return root


@pytest.fixture
async def world(prepared: Path, tmp_path: Path) -> AsyncIterator[World]:
    async with copied_world(prepared, tmp_path / "world", frozenset({ADMIN})) as world:
        yield world


async def _said(world: World, user_id: int, text: str) -> str:
    user = world.emulator.user(user_id, "C")
    await user.send(text)
    return str((await user.next_event("sendMessage", "sendDocument")).params.get("text", ""))


async def test_a_plain_volunteer_is_refused_every_privileged_command(world: World) -> None:
    for command in (
        "/grant 5 coordinator",
        "/projects",
        "/rules gold_rate=0.5",
        "/campaign close",
        "/close",
        "/export",
        "/use phantoms",
        "/jobs",
        "/status",
        "/volunteers",
        "/volunteer 1",
        "/ban 1",
        "/unban 1",
        "/broadcast hello",
        "/gold",
        "/review",
        "/synthesize 4",
    ):
        reply = await _said(world, VOLUNTEER, command)
        assert "coordinators only" in reply, command
    async with world.services.sessionmaker() as session:
        campaign = (await session.exec(select(Campaign))).one()
        assert campaign.status == CampaignStatus.ACTIVE
        assert campaign.gold_rate != 0.5


async def test_admin_grants_and_the_coordinator_runs_the_campaign(world: World) -> None:
    assert "now coordinator" in await _said(world, ADMIN, f"/grant {COORDINATOR} coordinator")
    coordinator = world.emulator.user(COORDINATOR, "C")
    await coordinator.send("/projects")
    listing = await coordinator.next_event("sendMessage")
    assert "phantoms" in listing.params["text"]
    # A volunteer who sees the coordinator's keyboard and presses it is refused.
    await press_as(
        world.emulator, VOLUNTEER, listing.message, coordinator.buttons(listing.message)[0][1]
    )
    await coordinator.press("Use phantoms")
    answers = []
    for _ in range(2):
        answers.append(await coordinator.next_event("answerCallbackQuery"))
    texts = {a.params.get("callback_query_id"): a.params.get("text") for a in answers}
    assert "coordinators only" in (texts["intrude"] or "")
    assert any("Working on phantoms" in (t or "") for t in texts.values())
    assert "Working on phantoms" in await _said(world, COORDINATOR, "/use phantoms")
    assert "no campaign named" in await _said(world, COORDINATOR, "/use nope")
    jobs = await _said(world, COORDINATOR, "/jobs")
    assert "proposals: done" in jobs  # the proposals job that prepared the campaign
    rules = await _said(world, COORDINATOR, "/rules")
    assert "min_answers = 2" in rules
    changed = await _said(world, COORDINATOR, "/rules gold_rate=0.2 min_answers=3")
    assert "gold_rate = 0.2" in changed
    assert "min_answers = 3" in changed
    refused = await _said(world, COORDINATOR, "/rules min_answers=9")  # above max_answers 4
    assert "cannot exceed" in refused
    assert "between" in await _said(world, COORDINATOR, "/rules gold_rate=2")
    assert "now paused" in await _said(world, COORDINATOR, "/campaign pause")
    assert "now active" in await _said(world, COORDINATOR, "/campaign resume")
    watcher = world.emulator.user(COORDINATOR, "C")
    await watcher.send("/status")
    status = await watcher.next_event("sendPhoto", timeout=30)
    assert "crops:" in status.params["caption"]
    assert "open" in status.params["caption"]
    with Image.open(io.BytesIO(status.upload("photo"))) as chart:
        assert chart.size == (960, 420)
    exporter = world.emulator.user(COORDINATOR, "C")
    await exporter.send("/export")
    document = await exporter.next_event("sendDocument", timeout=30)
    with zipfile.ZipFile(io.BytesIO(document.upload("document"))) as archive:
        assert json.loads(archive.read("coco.json"))["images"]
    assert "now volunteer" in await _said(world, ADMIN, f"/revoke {COORDINATOR}")
    assert "coordinators only" in await _said(world, COORDINATOR, "/rules")
    async with world.services.sessionmaker() as session:
        actions = [a.action for a in (await session.exec(select(AuditEntry))).all()]
    assert actions.count("set_role") == 2
    assert {"use", "set_rules", "set_status", "export"} <= set(actions)


async def test_status_numbers_count_the_campaign(world: World) -> None:
    from bot.campaign.progress import chart, progress

    async with world.services.sessionmaker() as session:
        campaign = (await session.exec(select(Campaign))).one()
        numbers = await progress(session, world.services.store, campaign)
    assert sum(numbers.tasks.values()) > 0
    assert numbers.tasks.get("open", 0) == sum(numbers.tasks.values())  # nothing answered yet
    assert len(numbers.answers_per_day) == 14
    assert numbers.proposal_dice_on_gold is not None
    assert numbers.consensus_dice_on_gold is None
    assert chart(numbers)[:4] == b"\x89PNG"


async def test_volunteers_ban_and_broadcast(world: World) -> None:
    from bot.sim.volunteers import VirtualVolunteer, profile

    crowd = []
    for i in range(3):
        rng = np.random.default_rng(i)
        volunteer = VirtualVolunteer(
            world.emulator.user(7100 + i, "V"), profile("good", rng), world.oracle, rng
        )
        await volunteer.join()
        await volunteer.answer()
        crowd.append(volunteer)
    await crowd[2].user.send("/pause")  # no broadcasts for them
    await crowd[2].user.next_event("sendMessage")
    assert "volunteer #" not in await _said(world, VOLUNTEER, "/volunteers")  # refused
    await _said(world, ADMIN, f"/grant {COORDINATOR} coordinator")
    listing = await _said(world, COORDINATOR, "/volunteers")
    assert "Most reliable in phantoms" in listing
    assert "V" not in listing.split(":")[0]  # never a Telegram name
    async with world.services.sessionmaker() as session:
        paused = (
            await session.exec(select(Volunteer).where(Volunteer.telegram_user_id == 7102))
        ).one()
    ids = [int(row.split()[0].lstrip("#")) for row in listing.splitlines()[1:]]
    assert paused.id in ids
    first_id = next(i for i in ids if i != paused.id)  # ban someone who is not paused
    card = await _said(world, COORDINATOR, f"/volunteer {first_id}")
    assert card.startswith(f"#{first_id} ")
    assert "banned" in await _said(world, COORDINATOR, f"/ban {first_id}")
    async with world.services.sessionmaker() as session:
        banned = await session.get_one(Volunteer, first_id)
        assert banned.banned
    assert world.handlers.crowd.models == {}  # refitted without their open answers on next use
    refused = await _said(world, banned.telegram_user_id, "/next")
    assert "no more crops" in refused
    coordinator = world.emulator.user(COORDINATOR, "C")
    await coordinator.send("/broadcast New crops are in!")
    started = await coordinator.next_event("sendMessage")
    assert "Broadcasting to 1 volunteers" in started.params["text"]  # not paused, not banned
    done = await coordinator.next_event("editMessageText", timeout=10)
    assert "1 delivered" in done.params["text"]
    received = [
        v
        for v in crowd
        if any("New crops are in!" in (e.params.get("text") or "") for e in v.user.events)
    ]
    assert len(received) == 1
    assert "unbanned" in await _said(world, COORDINATOR, f"/unban {first_id}")


async def test_newproject_is_a_short_dialogue(world: World) -> None:
    assert "coordinators only" in await _said(world, VOLUNTEER, "/newproject")
    await _said(world, ADMIN, f"/grant {COORDINATOR} coordinator")
    assert "Name of the new campaign" in await _said(world, COORDINATOR, "/newproject")
    assert "Which structure" in await _said(world, COORDINATOR, "liver-2026")
    assert "instructions" in await _said(world, COORDINATOR, "liver   lesion")
    created = await _said(world, COORDINATOR, "Outline every lesion, not the vessels.")
    assert "Created liver-2026 (liver lesion)" in created
    assert "liver-2026" in await _said(world, COORDINATOR, "/rules")  # now the working campaign
    await _said(world, COORDINATOR, "/newproject")
    await _said(world, COORDINATOR, "liver-2026")
    await _said(world, COORDINATOR, "kidney")
    assert "exists" in await _said(world, COORDINATOR, "-")
    async with world.services.sessionmaker() as session:
        names = [c.name for c in (await session.exec(select(Campaign))).all()]
    assert names.count("liver-2026") == 1


async def test_coordinators_hear_once_when_a_volunteers_reliability_collapses(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot's side of the alert: who hears it, and only once (fusion's judgement itself is
    tested on an adversary in tests/db/test_abuse.py; this world's crops are too few for it)."""
    from bot.campaign import alerts
    from bot.sim.volunteers import VirtualVolunteer, profile

    world.handlers.crowd.refit_every, world.handlers.crowd.refit_share = 1, 0.0
    await _said(world, ADMIN, f"/grant {COORDINATOR} coordinator")
    people = []
    for i in range(3):
        rng = np.random.default_rng(10 + i)
        volunteer = VirtualVolunteer(
            world.emulator.user(7200 + i, "V"), profile("good", rng), world.oracle, rng
        )
        await volunteer.join()
        people.append(volunteer)
    async with world.services.sessionmaker() as session:
        target = (
            await session.exec(select(Volunteer).where(Volunteer.telegram_user_id == 7202))
        ).one()
    judged = []

    def collapsed(reports: Any) -> list[Any]:  # fusion "finds" the third volunteer collapsed
        judged.append(len(reports))
        return [r for r in reports if r.volunteer == target.id]

    monkeypatch.setattr(alerts, "collapsed", collapsed)
    for _ in range(3):
        for volunteer in people:
            volunteer.timeout = 3.0
            with contextlib.suppress(TimeoutError):  # no crop left for them
                await volunteer.answer()
    assert len(judged) >= 3  # judged after each refit ...
    heard = [
        e.params["text"]
        for e in world.emulator.user(COORDINATOR, "C").events
        if e.method == "sendMessage" and "⚠️" in (e.params.get("text") or "")
    ]
    assert len(heard) == 1, heard  # ... and told once
    assert f"#{target.id} " in heard[0]
    assert f"/ban {target.id}" in heard[0]
    admin = world.emulator.user(ADMIN, "A")
    assert any("⚠️" in (e.params.get("text") or "") for e in admin.events)  # admins hear too
    for volunteer in people:
        assert not any("⚠️" in (e.params.get("text") or "") for e in volunteer.user.events)
