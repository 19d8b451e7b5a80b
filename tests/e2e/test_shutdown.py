"""SIGTERM mid-burst: every stored press is answered exactly once, the rest wait at Telegram.

The real ``medcrowd run`` runs as a subprocess, logging JSON at DEBUG and serving /readyz on its
health port; the test also checks that every log line is a JSON object without the bot token.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from sqlmodel import col, func, select

from bot.campaign.services import Services
from bot.db.models import Answer, Assignment, InboxUpdate
from bot.settings import Settings
from bot.sim.emulator import BotApiEmulator
from bot.sim.volunteers import Oracle, VirtualVolunteer, profile
from tests.helpers.bot import copied_settings, prepare


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shutdown")
    asyncio.run(prepare(root, n=12))
    return root


@pytest.fixture
async def emulator() -> AsyncIterator[BotApiEmulator]:
    emulator = await BotApiEmulator(limits=None).start()
    yield emulator
    await emulator.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(
    settings: Settings, emulator: BotApiEmulator, log: Path, port: int
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MEDCROWD_BOT_TOKEN": emulator.token,
        "MEDCROWD_TELEGRAM_BASE_URL": emulator.base_url,
        "MEDCROWD_TELEGRAM_FILE_URL": emulator.base_file_url,
        "MEDCROWD_DATA_DIR": str(settings.data_dir),
        "MEDCROWD_DATABASE_URL": settings.resolved_database_url,
        "MEDCROWD_FLOOD_RATE": "100",
        "MEDCROWD_FLOOD_BURST": "100",
        "MEDCROWD_LOG_FORMAT": "json",
        "MEDCROWD_LOG_LEVEL": "DEBUG",
        "MEDCROWD_HEALTH_LISTEN": f"127.0.0.1:{port}",
        "PTB_TIMEDELTA": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def _wait_ready(port: int, bot: subprocess.Popen[bytes], log: Path) -> dict[str, object]:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            assert bot.poll() is None, _tail(log)
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    body = await response.json()
                    if response.status == 200:
                        return dict(body)
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"never ready: {_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def _stop(bot: subprocess.Popen[bytes]) -> tuple[int, float]:
    started = time.monotonic()
    bot.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(asyncio.to_thread(bot.wait), 30)
    return code, time.monotonic() - started


def _callback_answers(emulator: BotApiEmulator) -> collections.Counter[str]:
    return collections.Counter(
        str(c.params["callback_query_id"])
        for c in emulator.calls
        if c.method.lower() == "answercallbackquery"
    )


async def test_sigterm_mid_burst_answers_every_stored_press_once_and_exits_0(
    prepared: Path, tmp_path: Path, emulator: BotApiEmulator
) -> None:
    settings = copied_settings(prepared, tmp_path / "world")
    services = Services.from_settings(settings)
    oracle = Oracle(services.sessionmaker, services.store)
    log, port = tmp_path / "bot.log", _free_port()
    bot = _start(settings, emulator, log, port)
    try:
        assert await _wait_ready(port, bot, log) == {"ready": True}
        crowd = []
        for i in range(16):
            rng = np.random.default_rng(i)
            user = emulator.user(2000 + i, f"U{i}")
            crowd.append(VirtualVolunteer(user, profile("good", rng), oracle, rng))
        for volunteer in crowd:
            await volunteer.join()
        presses: dict[int, str] = {}  # update_id -> assignment token
        for volunteer in crowd:  # a burst: everyone presses at once
            screen = volunteer.screen
            token = next(d for _, d in volunteer.user.buttons(screen) if d.startswith("a:"))
            update_id = await volunteer.user.press("✅ Accept", message_id=screen["message_id"])
            presses[update_id] = token.split(":")[1]
        before = 0
        for _ in range(1500):  # the first answers of the burst are in
            async with services.sessionmaker() as session:
                before = (await session.exec(select(func.count()).select_from(Answer))).one()
            if before:
                break
            await asyncio.sleep(0.01)
        code, seconds = await _stop(bot)  # in the middle of the burst
        async with services.sessionmaker() as session:
            answered_at_exit = (await session.exec(select(func.count()).select_from(Answer))).one()
            stored = (
                await session.exec(
                    select(InboxUpdate).where(col(InboxUpdate.update_id).in_(list(presses)))
                )
            ).all()
        assert code == 0, log.read_text()[-3000:]
        assert seconds < 15
        assert stored, "the bot stored none of the burst"
        assert all(row.processed_at is not None for row in stored)  # finished, and marked done
        queries = {row.update_id: str(row.payload["callback_query"]["id"]) for row in stored}
        replies = _callback_answers(emulator)
        assert all(replies[q] == 1 for q in queries.values())  # each answered exactly once
        assert answered_at_exit == len(stored)  # and stored as an answer exactly once
        pending = {int(u["update_id"]) for u in emulator.pending_updates}
        assert set(presses) - set(queries) <= pending  # not stored: still waiting at Telegram
        assert 0 < before < len(presses), "the signal came too late to test anything"
        assert answered_at_exit > before  # what was in flight at the signal was finished

        bot = _start(settings, emulator, log, port)  # the rest after a restart, none twice
        await _wait_ready(port, bot, log)
        for _ in range(300):
            async with services.sessionmaker() as session:
                done = (
                    await session.exec(
                        select(func.count())
                        .select_from(Answer)
                        .join(Assignment, col(Assignment.id) == Answer.assignment_id)
                        .where(col(Assignment.token).in_(list(presses.values())))
                    )
                ).one()
            if done == len(presses):
                break
            await asyncio.sleep(0.1)
        assert done == len(presses), log.read_text()[-3000:]
        code, _ = await _stop(bot)
        assert code == 0
        async with services.sessionmaker() as session:
            assert (await session.exec(select(func.count()).select_from(Answer))).one() == len(
                presses
            )
        assert max(_callback_answers(emulator).values()) == 1
    finally:
        if bot.poll() is None:
            bot.kill()
        await services.close()
    secret = emulator.token.split(":", 1)[1]
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert len(lines) > 20
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= set(record), line
        assert secret not in line
