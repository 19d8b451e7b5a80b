"""The real bot (python-telegram-bot, durable intake, handlers) against the Bot API emulator."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlmodel import col, func, select

from bot.db.models import Answer, Assignment, GoldScore, Task, TaskStatus, Verdict, Volunteer
from bot.sim.chat import Event, VirtualUser
from bot.sim.volunteers import VirtualVolunteer, profile
from tests.helpers.bot import World, copied_world, prepare


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One proposed phantom campaign; each test copies its folder."""
    import asyncio

    root = tmp_path_factory.mktemp("world")
    asyncio.run(prepare(root))
    return root


@pytest.fixture
async def world(prepared: Path, tmp_path: Path) -> AsyncIterator[World]:
    async with copied_world(prepared, tmp_path / "world", digest_seconds=0.5) as world:
        yield world


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


async def test_volunteer_consents_learns_on_gold_and_answers_in_one_message(world: World) -> None:
    user = world.emulator.user(501, "Ann")
    await user.send("/start")
    welcome = await user.next_event("sendMessage")
    assert "MedCrowd" in welcome.params["text"]
    terms = await user.next_event("sendMessage")
    assert "forget" in terms.params["text"]
    await user.send("/next")  # nothing before consent
    refusal = await user.next_event("sendMessage")
    assert "agree" in refusal.params["text"].lower()
    await user.press("✅ I agree")
    ask = await user.next_event("editMessageText")
    assert "nickname" in ask.params["text"]
    await user.send("Ann the Bold")
    hello = await user.next_event("sendMessage")
    assert "Ann the Bold" in hello.params["text"]
    await user.next_event("sendMessage")  # the tutorial intro
    first = await user.next_event("sendPhoto")
    assert first.message is not None
    message_id = first.message["message_id"]
    assert "Practice" in first.params["caption"]
    assert [b[0] for b in user.buttons()] == ["✅ Accept", "✏️ Adjust", "❌ Reject", "🤷 Can't tell"]
    assert max(_png_size(first.upload("photo"))) >= 512
    await user.press("✅ Accept")
    feedback = await user.next_event("editMessageMedia")
    assert feedback.message is not None
    assert feedback.message["message_id"] == message_id
    assert "score" in feedback.params["media"]["caption"]
    await user.press("Next")
    crop = await user.next_event("editMessageMedia")
    assert crop.message is not None
    assert crop.message["message_id"] == message_id  # one message, edited in place
    for label in ("❌ Reject", "🤷"):
        await answer(user, label)
    async with world.services.sessionmaker() as session:
        volunteer = (
            await session.exec(select(Volunteer).where(Volunteer.telegram_user_id == 501))
        ).one()
        assert volunteer.nickname == "Ann the Bold"
        verdicts = (
            await session.exec(
                select(Answer.verdict)
                .where(Answer.volunteer_id == volunteer.id)
                .order_by(col(Answer.id))
            )
        ).all()
        gold = (await session.exec(select(func.count()).select_from(GoldScore))).one()
    assert verdicts == [Verdict.ACCEPT, Verdict.REJECT, Verdict.UNSURE]
    assert gold >= 1
    assert all(
        e.message is None or e.message["message_id"] == message_id
        for e in user.events
        if e.method == "editMessageMedia"
    )


async def toast(user: VirtualUser, text: str) -> Event:
    """The first answerCallbackQuery (from now on) whose text contains ``text``."""
    seen = []
    for _ in range(20):
        event = await user.next_event("answerCallbackQuery")
        seen.append(event.params.get("text"))
        if text in (event.params.get("text") or ""):
            return event
    raise AssertionError(f"no toast {text!r}; saw {seen}")


async def answer(user: VirtualUser, label: str) -> Event:
    """Press a verdict; after gold feedback press Next too. Returns the new crop's event."""
    await user.press(label)
    event = await user.next_event("editMessageMedia")
    if "Next ▶️" in [b[0] for b in user.buttons(event.message)]:
        await user.press("Next")
        event = await user.next_event("editMessageMedia")
    return event


async def _joined(world: World, user_id: int, nickname: str | None = None) -> VirtualVolunteer:
    volunteer = VirtualVolunteer(
        world.emulator.user(user_id, f"U{user_id}"),
        profile("good", np.random.default_rng(user_id)),
        world.oracle,
        np.random.default_rng(user_id),
    )
    await volunteer.join(nickname)
    return volunteer


async def test_every_adjust_path_reaches_the_database(world: World) -> None:
    volunteer = await _joined(world, 601)
    user = volunteer.user
    # Get past the tutorial to a crop, then use each tool on it.
    await volunteer.answer()
    if "Next ▶️" in [b[0] for b in user.buttons(volunteer.screen)]:
        await volunteer.answer()
    await volunteer._press("✏️ Adjust")
    menu = await volunteer._await_screen()
    assert "Adjust" in menu.params["media"]["caption"]
    labels = [b[0] for b in user.buttons(volunteer.screen)]
    assert "✔️ Done" not in labels  # nothing to submit yet
    assert user.web_apps(volunteer.screen) == []  # no Mini App configured: the chat grid only
    await volunteer._press("↩️ Undo")
    await toast(user, "Nothing to undo")
    await volunteer._press("Options")
    await volunteer._await_screen()
    options = [b[0] for b in user.buttons(volunteer.screen)]
    assert any(o.startswith("1. ") for o in options)
    assert any("looser" in o for o in options)
    await volunteer._press(next(o for o in options if "tighter" in o))
    await volunteer._await_screen()
    assert "✔️ Done" in [b[0] for b in user.buttons(volunteer.screen)]
    await volunteer._press("↩️ Undo")  # back to the proposal: nothing to submit again
    await volunteer._await_screen()
    assert "✔️ Done" not in [b[0] for b in user.buttons(volunteer.screen)]
    await volunteer._press("Tap the grid")
    grid = await volunteer._await_screen()
    assert "Tap the cells" in grid.params["media"]["caption"]
    await volunteer._press("🟢 Inside")  # the fallback proposer also takes points
    await volunteer._await_screen()
    await volunteer._press("C3")
    await volunteer._await_screen()
    assert "+C3" in [b[0] for b in user.buttons(volunteer.screen)]
    await volunteer._press("▭ Box")
    await volunteer._await_screen()
    for cell in ("B2", "B3", "C2"):
        await volunteer._press(cell)
        await volunteer._await_screen()
    assert "●C2" in [b[0] for b in user.buttons(volunteer.screen)]
    await volunteer._press("🔄")
    await volunteer._await_screen()
    await volunteer._press("⬅️ Back")  # to the verdict buttons, then Adjust again: state kept
    await volunteer._await_screen()
    await volunteer._press("✏️ Adjust")
    await volunteer._await_screen()
    await volunteer._press("✔️ Done")
    await volunteer._await_screen()
    async with world.services.sessionmaker() as session:
        last = (await session.exec(select(Answer).order_by(col(Answer.id).desc()))).first()
    assert last is not None
    assert last.verdict is Verdict.ADJUST
    assert last.mask_key is not None
    assert last.prompt_points  # the box and the point of the last Redraw
    assert [p[2] for p in last.prompt_points[0]["points"]] == [1]


async def test_stale_buttons_are_answered_and_move_the_volunteer_on(world: World) -> None:
    volunteer = await _joined(world, 701)
    user = volunteer.user
    old = dict(volunteer.screen)
    await volunteer.answer()
    # A press on the old message's keyboard (a double tap, or an old message): its crop is
    # answered, so nothing more is stored and the volunteer is told so.
    token = next(d for _, d in user.buttons(old) if d.startswith("a:"))
    world.emulator.open_callback_query("stale-1", user_id=701, chat_id=701)
    await world.emulator.push_update(
        {
            "callback_query": {
                "id": "stale-1",
                "from": user.user,
                "chat_instance": "x",
                "message": old,
                "data": token,
            }
        }
    )
    await toast(user, "Already saved")
    async with world.services.sessionmaker() as session:
        n = (await session.exec(select(func.count()).select_from(Answer))).one()
    assert n == 1  # stored once


async def test_virtual_crowd_retires_crops_and_earns_credit(world: World) -> None:
    crowd = [
        await _joined(world, 800 + i, nickname=f"Vol {i}" if i < 2 else None) for i in range(4)
    ]
    for _ in range(6):
        for volunteer in crowd:
            await volunteer.answer()
    async with world.services.sessionmaker() as session:
        retired = (
            await session.exec(
                select(func.count()).select_from(Answer).where(col(Answer.credited_at).is_not(None))
            )
        ).one()
    assert retired > 0
    first = crowd[0].user
    await first.send("/leaderboard")
    board = await first.next_event("sendMessage")
    while "📬" in board.params["text"]:  # a digest may come in between
        board = await first.next_event("sendMessage")
    text = board.params["text"]
    assert "Leaderboard" in text
    assert "U800" not in text  # never the Telegram name
    await first.send("/me")
    card = await first.next_event("sendPhoto")
    assert _png_size(card.upload("photo")) == (800, 420)
    digests: list[str] = []
    for _ in range(50):  # the digest job runs every half second here
        digests = [
            e.params["text"]
            for e in first.events
            if e.method == "sendMessage" and "📬" in e.params["text"]
        ]
        if digests:
            break
        await asyncio.sleep(0.1)
    assert digests
    assert "points" in digests[0]


async def test_forget_deletes_personal_data(world: World) -> None:
    volunteer = await _joined(world, 901, nickname="Zed")
    user = volunteer.user
    await volunteer.answer()
    await user.send("/forget")
    confirm = await user.next_event("sendMessage")
    while "📬" in confirm.params["text"]:  # a digest may come in between
        confirm = await user.next_event("sendMessage")
    await user.press("Yes, forget me")
    done = await user.next_event("editMessageText")
    assert "deleted" in done.params["text"]
    async with world.services.sessionmaker() as session:
        row = (await session.exec(select(Volunteer).where(Volunteer.nickname == "Zed"))).first()
        gone = (await session.exec(select(Volunteer).where(Volunteer.forgotten))).one()
        answers = (await session.exec(select(Answer).where(Answer.volunteer_id == gone.id))).all()
    assert row is None
    assert gone.telegram_user_id < 0
    assert len(answers) == 1


async def test_help_pause_and_resume(world: World) -> None:
    user = world.emulator.user(950, "P")
    await user.send("/help")
    assert "/leaderboard" in (await user.next_event("sendMessage")).params["text"]
    await user.send("/pause")
    assert "Paused" in (await user.next_event("sendMessage")).params["text"]
    await user.send("/resume")
    assert "on again" in (await user.next_event("sendMessage")).params["text"]


async def test_a_press_on_a_crop_retired_meanwhile_moves_on(world: World) -> None:
    volunteer = await _joined(world, 711)
    user = volunteer.user
    while "Practice" in (volunteer.screen.get("caption") or "") or "Next ▶️" in [
        b[0] for b in user.buttons(volunteer.screen)
    ]:
        await volunteer.answer()  # past the tutorial, to a real crop
    token = next(d for _, d in user.buttons(volunteer.screen) if d.startswith("a:")).split(":")[1]
    async with world.services.sessionmaker() as session:
        assignment = (await session.exec(select(Assignment).where(Assignment.token == token))).one()
        task = await session.get_one(Task, assignment.task_id)
        task.status = TaskStatus.RETIRED  # the crowd finished it while this volunteer looked
        session.add(task)
        await session.commit()
    await volunteer._press("✅ Accept")
    await toast(user, "already finished")
    fresh = await volunteer._await_screen()
    assert fresh.message is not None
    new_token = next(d for _, d in user.buttons(fresh.message) if ":" in d).split(":")[1]
    assert new_token != token
    async with world.services.sessionmaker() as session:
        stored = (await session.exec(select(Answer).where(Answer.task_id == task.id))).all()
    assert all(a.volunteer_id != assignment.volunteer_id for a in stored)
