"""What leaves the server: crops only, protected, never a source file's name or path.

Every payload the bot sent through the emulator during a short campaign (volunteers answering, an
expert reviewing, a coordinator's status) is inspected.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import select

from bot.db.models import Image
from bot.logs import JsonFormatter
from bot.sim.volunteers import VirtualVolunteer, profile
from tests.helpers.bot import World, copied_world, prepare

ADMIN = 7301


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("privacy")
    asyncio.run(prepare(root, n=4))
    return root


@pytest.fixture
async def world(prepared: Path, tmp_path: Path) -> AsyncIterator[World]:
    async with copied_world(prepared, tmp_path / "world", frozenset({ADMIN})) as world:
        yield world


async def test_only_protected_crops_leave_and_no_source_name_or_path(world: World) -> None:
    for i, name in enumerate(("good", "noisy", "lazy")):
        rng = np.random.default_rng(i)
        volunteer = VirtualVolunteer(
            world.emulator.user(7310 + i, "V"), profile(name, rng), world.oracle, rng
        )
        await volunteer.join()
        for _ in range(4):
            await volunteer.answer()
    coordinator = world.emulator.user(ADMIN, "A")
    await coordinator.send("/status")
    await coordinator.next_event("sendPhoto", timeout=30)
    async with world.services.sessionmaker() as session:
        names = {i.source_name for i in (await session.exec(select(Image))).all()}
    assert names
    secrets = {
        *names,
        *(n.rsplit(".", 1)[0] for n in names),  # the stem alone
        str(world.settings.data_dir),
        "phantoms/",
    }
    photos = [c for c in world.emulator.calls if c.method in ("sendPhoto", "sendMediaGroup")]
    to_volunteers = [c for c in photos if int(c.params["chat_id"]) != ADMIN]
    assert len(to_volunteers) >= 3
    for call in to_volunteers:  # every crop a volunteer receives is protected
        assert call.params.get("protect_content") in (True, "true", "True"), call.params
    for call in world.emulator.calls:
        payload = json.dumps(call.params, default=str)
        for secret in secrets:
            assert secret not in payload, (call.method, secret)


async def test_the_bot_token_never_reaches_the_logs(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, from every library
    rng = np.random.default_rng(5)
    volunteer = VirtualVolunteer(
        world.emulator.user(7320, "V"), profile("good", rng), world.oracle, rng
    )
    await volunteer.join()
    await volunteer.answer()
    await world.emulator.user(7321, "X").send("/nonsense")
    await asyncio.sleep(1.5)  # a long-poll round trip or two
    token = world.emulator.token
    assert len(caplog.records) > 10
    secret = token.split(":", 1)[1]
    as_json = JsonFormatter()  # the JSON format also writes extra fields and tracebacks
    for record in caplog.records:
        assert secret not in record.getMessage(), record.name
        assert secret not in str(record.args), record.name
        assert secret not in as_json.format(record), record.name  # unredacted, even so
