"""Faults the bot recovers from by itself, with no press lost or stored twice.

Telegram failing (5xx, timeouts, dropped connections), the database restarting under load, the
disk filling while a mask is written. Each test makes a burst of presses, injects the fault, and
then checks: every press became exactly one answer, and every volunteer can go on answering.
(kill -9, 429 storms and floods are in test_bot_faults.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.engine import make_url
from sqlmodel import col, func, select

from bot.campaign.services import Services
from bot.db.models import Answer, Assignment
from bot.settings import Settings
from bot.sim.volunteers import VirtualVolunteer, profile
from bot.store.files import FileStore, Kind
from bot.telegram import texts
from tests.helpers.bot import World, copied_settings, prepare, running_bot
from tests.helpers.pg import scratch_database
from tests.helpers.proxy import CuttableProxy


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults2")
    asyncio.run(prepare(root, n=12))
    return root


def _crowd(world: World, first: int, n: int) -> list[VirtualVolunteer]:
    crowd = []
    for i in range(n):
        rng = np.random.default_rng(first + i)
        user = world.emulator.user(first + i, f"U{first + i}")
        crowd.append(VirtualVolunteer(user, profile("good", rng), world.oracle, rng))
    return crowd


async def _burst(crowd: list[VirtualVolunteer], label: str = "✅ Accept") -> list[str]:
    """Everyone presses ``label`` on their crop at once; returns the pressed lease tokens."""
    tokens = []
    for volunteer in crowd:
        screen = volunteer.screen
        data = next(d for t, d in volunteer.user.buttons(screen) if t == label)
        tokens.append(data.split(":")[1])
        await volunteer.user.press(label, message_id=screen["message_id"])
    return tokens


async def _stored(services: Services, tokens: list[str], *, seconds: float = 30.0) -> int:
    """Answers stored for ``tokens``, once every token has one (or ``seconds`` passed)."""
    done = 0
    for _ in range(int(seconds * 10)):
        try:
            async with services.sessionmaker() as session:
                done = (
                    await session.exec(
                        select(func.count())
                        .select_from(Answer)
                        .join(Assignment, col(Assignment.id) == Answer.assignment_id)
                        .where(col(Assignment.token).in_(tokens))
                    )
                ).one()
        except Exception:  # the database may still be coming back
            done = 0
        if done >= len(tokens):
            break
        await asyncio.sleep(0.1)
    return int(done)


async def _next_screen(volunteer: VirtualVolunteer) -> None:
    event = await volunteer.user.next_event("editMessageMedia", "editMessageReplyMarkup")
    if event.message is not None:
        volunteer.screen = event.message


async def _total(services: Services) -> int:
    async with services.sessionmaker() as session:
        return int((await session.exec(select(func.count()).select_from(Answer))).one())


async def _go_on(services: Services, crowd: list[VirtualVolunteer], before: list[str]) -> list[str]:
    """Each volunteer asks for a crop with /next and accepts it; returns the answered tokens.

    Self-recovery: after the fault, the bot serves and stores as before.
    """
    answered: list[str] = []
    for volunteer in crowd:
        user = volunteer.user
        tried = set(before)
        for attempt in range(600):
            if attempt % 100 == 0:  # ask (again, if the screen has not moved for 10 s)
                await user.send("/next")
            await asyncio.sleep(0.1)
            with contextlib.suppress(LookupError):
                message = user.message
                buttons = {d.split(":")[0]: d for _, d in user.buttons(message)}
                if "a" in buttons and buttons["a"].split(":")[1] not in tried:
                    token = buttons["a"].split(":")[1]
                    tried.add(token)
                    await user.press("✅ Accept", message_id=message["message_id"])
                    if await _stored(services, [token], seconds=10) == 1:
                        answered.append(token)
                        break
                    # refused (its crop finished meanwhile): the bot shows another
                elif "n" in buttons:  # gold feedback: on to the next crop
                    await user.press(texts.NEXT, message_id=message["message_id"])
                    await asyncio.sleep(0.3)
    assert len(answered) == len(crowd)
    return answered


@pytest.mark.parametrize(
    ("fault", "method"),
    [
        ("502", "editMessageMedia"),
        ("500", "answerCallbackQuery"),
        ("timeout", "editMessageMedia"),
        ("drop", "editMessageMedia"),
        ("drop", "answerCallbackQuery"),
    ],
)
async def test_telegram_failures_lose_no_press(
    prepared: Path, tmp_path: Path, fault: str, method: str
) -> None:
    async with running_bot(copied_settings(prepared, tmp_path / "w")) as world:
        crowd = _crowd(world, 2000, 6)
        for volunteer in crowd:
            await volunteer.join()
        emulator = world.emulator
        if fault == "timeout":  # longer than the bot's 5 s read timeout: the call times out
            emulator.delay_next(method, seconds=7.0, times=2)
        elif fault == "drop":
            emulator.drop_next(method, times=3)
        else:
            emulator.fail_next(method, status=int(fault), description="Bad Gateway", times=3)
        tokens = await _burst(crowd)
        assert await _stored(world.services, tokens) == len(tokens)
        assert await _total(world.services) == len(tokens)  # none twice
        again = await _go_on(world.services, crowd, tokens)
        assert await _total(world.services) == len(tokens) + len(again)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with scratch_database("medcrowd_fault") as url:
        yield url


@pytest.mark.postgres
async def test_postgres_restarted_under_load_loses_no_press(
    tmp_path: Path, postgres_url: str
) -> None:
    url = make_url(postgres_url)
    await prepare(tmp_path / "w", database_url=postgres_url, n=12)
    proxy = await CuttableProxy(url.host or "127.0.0.1", url.port or 5432).start()
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = Settings(data_dir=tmp_path / "w" / "data", database_url=through)
    try:
        async with running_bot(settings) as world:
            crowd = _crowd(world, 3000, 10)
            for volunteer in crowd:
                await volunteer.join()
            tokens = await _burst(crowd)
            await asyncio.sleep(0.05)  # some presses in flight, some not yet read
            await proxy.outage(2.0)  # every connection dies; new ones refused for 2 s
            late = await _burst(crowd[:3], label="❌ Reject")  # already answered
            assert await _stored(world.services, tokens, seconds=60) == len(tokens)
            assert await _total(world.services) == len(tokens)  # the late presses: no new rows
            assert late
            again = await _go_on(world.services, crowd, tokens)
            assert await _total(world.services) == len(tokens) + len(again)
            assert proxy.cuts == 1
    finally:
        await proxy.stop()


async def test_disk_full_while_writing_a_mask_loses_no_answer(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = {"on": True, "refused": 0}
    put = FileStore.put

    def put_or_enospc(self: FileStore, kind: Kind, data: bytes, ext: str) -> tuple[str, bool]:
        if full["on"] and kind == "masks":
            full["refused"] += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return put(self, kind, data, ext)

    async with running_bot(copied_settings(prepared, tmp_path / "w")) as world:
        crowd = _crowd(world, 4000, 3)
        for volunteer in crowd:
            await volunteer.join()
        monkeypatch.setattr(FileStore, "put", put_or_enospc)
        full["on"] = False
        tokens = []
        # each fixes the outline: Adjust, Options, the loosest threshold (a model candidate may
        # be the proposal itself, and sending that back unchanged is an accept: no mask written)
        for volunteer in crowd:
            tokens.append(
                next(d for _, d in volunteer.user.buttons(volunteer.screen)).split(":")[1]
            )
            for label in ("✏️", "Options"):
                await volunteer.user.press(label, message_id=volunteer.screen["message_id"])
                await _next_screen(volunteer)
            pick = [d for _, d in volunteer.user.buttons(volunteer.screen) if d.startswith("p:")][
                -1
            ]
            label = next(t for t, d in volunteer.user.buttons(volunteer.screen) if d == pick)
            await volunteer.user.press(label, message_id=volunteer.screen["message_id"])
            await _next_screen(volunteer)
        full["on"] = True  # the disk fills up just before they send their fixes
        for volunteer in crowd:
            await volunteer.user.press("✔️", message_id=volunteer.screen["message_id"])
        await asyncio.sleep(2.0)
        assert full["refused"] >= len(crowd)  # the disk was full when they answered
        assert await _total(world.services) == 0  # nothing half-written
        full["on"] = False  # space freed
        assert await _stored(world.services, tokens, seconds=30) == len(tokens)
        assert await _total(world.services) == len(tokens)
        async with world.services.sessionmaker() as session:
            masks = (await session.exec(select(Answer.mask_key))).all()
        assert all(key and world.services.store.exists(key) for key in masks)
