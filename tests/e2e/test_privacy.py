"""What leaves the server: crops only, protected, never a source file's name or path.

Every payload the bot sent through the emulator during a short campaign (volunteers answering, an
expert reviewing, a coordinator's status) is inspected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import select

from bot.db.models import Image
from bot.logs import JsonFormatter
from bot.sim.privacy import audit, secrets_of
from bot.sim.volunteers import VirtualVolunteer, profile
from tests.helpers.bot import World, copied_world, prepare

ADMIN = 7301


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
    secrets = secrets_of(names, [world.settings.data_dir]) | {"phantoms/"}
    assert any(name.rsplit(".", 1)[0] in secrets for name in names)  # stems too
    found = audit(world.emulator.calls, secrets, staff={ADMIN})
    assert found.crops_to_volunteers >= 3
    assert found.unprotected == []  # every crop sent to a volunteer is protected
    assert found.leaks == []


def test_the_audit_finds_a_leak_and_an_unprotected_crop() -> None:
    from bot.sim.emulator import Call

    calls = [
        Call("sendPhoto", {"chat_id": 5, "caption": "from liver_007.dcm"}, 0.0),
        Call("sendPhoto", {"chat_id": 6, "protect_content": True}, 0.0),
        Call("sendPhoto", {"chat_id": 1, "caption": "staff may get a plain photo"}, 0.0),
    ]
    found = audit(calls, secrets_of(["liver_007.dcm"], []), staff={1})
    assert sorted(found.leaks) == [("sendPhoto", "liver_007"), ("sendPhoto", "liver_007.dcm")]
    assert found.unprotected == ["sendPhoto"]
    assert found.crops_to_volunteers == 2
    assert not found.clean


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
