"""Readiness: the phase and every probe decide /readyz; /healthz only needs the process."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiohttp.test_utils import TestClient, TestServer
from telegram.error import NetworkError

from bot.campaign.health import Phase, Readiness
from bot.telegram import probes
from bot.web.health import HealthServer


async def _fine() -> str | None:
    return None


async def _get(readiness: Readiness, path: str) -> tuple[int, dict[str, object]]:
    async with TestClient(TestServer(HealthServer(readiness).app())) as client:
        response = await client.get(path)
        return response.status, await response.json()


async def test_readyz_is_503_until_the_bot_runs_and_200_when_every_probe_is_fine() -> None:
    readiness = Readiness()
    readiness.add("database", _fine)
    assert await _get(readiness, "/readyz") == (
        503,
        {"ready": False, "problems": {"bot": "starting"}},
    )
    assert await _get(readiness, "/healthz") == (200, {"ok": True})
    readiness.phase = Phase.RUNNING
    assert await _get(readiness, "/readyz") == (200, {"ready": True})
    readiness.phase = Phase.STOPPING
    status, body = await _get(readiness, "/readyz")
    assert (status, body["problems"]) == (503, {"bot": "stopping"})


async def test_readyz_names_the_failing_slow_and_raising_probes() -> None:
    async def lagging() -> str | None:
        return "schema at abc, migrations at def"

    async def slow() -> str | None:
        await asyncio.sleep(5)
        return None

    async def broken() -> str | None:
        raise ConnectionRefusedError("postgresql://user:secret@db/x")

    readiness = Readiness(timeout=0.2)
    readiness.phase = Phase.RUNNING
    for name, probe in (("ok", _fine), ("lag", lagging), ("slow", slow), ("down", broken)):
        readiness.add(name, probe)
    status, body = await _get(readiness, "/readyz")
    assert status == 503
    assert body["problems"] == {
        "lag": "schema at abc, migrations at def",
        "slow": "no answer in 0.2 s",
        "down": "unreachable (ConnectionRefusedError)",  # the reason never carries the URL
    }


async def test_the_telegram_probe_asks_telegram_when_it_has_not_heard_from_it() -> None:
    class Bot:
        def __init__(self) -> None:
            self.up = False
            self.calls = 0

        async def get_me(self) -> None:
            self.calls += 1
            if not self.up:
                raise NetworkError("connection refused")

    class Contact:
        def __init__(self) -> None:
            self.age: float | None = None

        def contact_age(self) -> float | None:
            return self.age

        def touch(self) -> None:
            self.age = 0.0

    bot, intake = Bot(), Contact()
    alive = asyncio.Event()
    worker = asyncio.create_task(alive.wait(), name="poll")
    readiness = Readiness()
    readiness.phase = Phase.RUNNING
    probes.register(readiness, SimpleNamespace(bot=bot), intake, [worker], stale_seconds=30)  # type: ignore[arg-type]
    assert await readiness.problems() == {"telegram": "not reached (never; NetworkError)"}
    intake.age = 31.0
    assert (await readiness.problems())["telegram"] == "not reached (not for 31 s; NetworkError)"
    bot.up = True
    assert await readiness.problems() == {}
    assert intake.age == 0.0  # the answer counts as contact
    calls = bot.calls
    assert await readiness.problems() == {}
    assert bot.calls == calls  # fresh contact: Telegram is not asked again
    assert await _get(readiness, "/healthz") == (200, {"ok": True})
    alive.set()
    await worker
    assert await readiness.problems() == {"intake": "workers stopped: poll"}
    bot.up = False  # Telegram down is not a reason to restart; a dead worker is
    assert await _get(readiness, "/healthz") == (
        503,
        {"ok": False, "problems": {"intake": "workers stopped: poll"}},
    )
