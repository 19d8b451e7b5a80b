"""The bot under faults: floods, 429 storms, a webhook, and kill -9 in the middle of a burst."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from sqlmodel import col, func, select

from bot.campaign.services import Services
from bot.db.models import Answer, Assignment
from bot.settings import Settings
from bot.sim.emulator import BotApiEmulator
from bot.sim.feed import SECRET_HEADER
from bot.sim.volunteers import Oracle, VirtualVolunteer, profile
from tests.helpers.bot import copied_settings, prepare, running_bot


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    asyncio.run(prepare(root, n=12))
    return root


def _copy(prepared: Path, tmp_path: Path) -> Settings:
    return copied_settings(prepared, tmp_path / "world")


async def _count(services: Services) -> int:
    async with services.sessionmaker() as session:
        return int((await session.exec(select(func.count()).select_from(Answer))).one())


def _volunteer(emulator: BotApiEmulator, oracle: Oracle, user_id: int) -> VirtualVolunteer:
    rng = np.random.default_rng(user_id)
    return VirtualVolunteer(
        emulator.user(user_id, f"U{user_id}"), profile("good", rng), oracle, rng
    )


async def test_flood_control_drops_a_burst_before_the_database(
    prepared: Path, tmp_path: Path
) -> None:
    async with running_bot(_copy(prepared, tmp_path), flood=(1.0, 3.0)) as world:
        volunteer = _volunteer(world.emulator, world.oracle, 301)
        await volunteer.join()
        await asyncio.sleep(3.0)  # let the bucket refill after joining
        screen = volunteer.screen
        for _ in range(12):  # a frantic double-tapper on one message
            await volunteer.user.press("✅ Accept", message_id=screen["message_id"])
        answers = []
        for _ in range(12):
            event = await volunteer.user.next_event("answerCallbackQuery", timeout=10)
            answers.append(event.params.get("text"))
        assert answers.count("Slow down a little 🙂") >= 8
        async with world.services.sessionmaker() as session:
            stored = (await session.exec(select(func.count()).select_from(Answer))).one()
            inbox = await session.exec(select(func.count()).select_from(Assignment))
            assert inbox.one() >= 1
        assert stored == 1  # one crop, one answer, however often it was pressed


async def test_a_429_storm_is_waited_out_and_nothing_is_lost(
    prepared: Path, tmp_path: Path
) -> None:
    async with running_bot(_copy(prepared, tmp_path)) as world:
        crowd = [_volunteer(world.emulator, world.oracle, 400 + i) for i in range(3)]
        for volunteer in crowd:
            await volunteer.join()
        world.emulator.fail_next("editMessageMedia", status=429, retry_after=1, times=3)
        for volunteer in crowd:
            await volunteer.answer()
        assert await _count(world.services) == 3
        retried = [c for c in world.emulator.calls if c.method.lower() == "editmessagemedia"]
        assert len(retried) >= 3 + 3  # every 429 was followed by a retry


async def test_webhook_mode_stores_before_200_and_checks_the_secret(
    prepared: Path, tmp_path: Path
) -> None:
    from bot.jobs.proposals import ProposerSpec
    from bot.telegram.app import BotOptions, bot_services, run_bot
    from bot.web.webhook import WebhookServer

    settings = _copy(prepared, tmp_path)
    emulator = await BotApiEmulator(limits=None).start()
    services = Services.from_settings(settings)
    webhook = WebhookServer(secret="s3cret_token", port=0, path="/tg/hook")
    stop = asyncio.Event()
    options = BotOptions(
        token=emulator.token, base_url=emulator.base_url, base_file_url=emulator.base_file_url
    )
    task = asyncio.create_task(
        run_bot(
            options,
            bot_services(services, ProposerSpec(), digest_seconds=3600),
            webhook=webhook,
            webhook_url="http://127.0.0.1:{port}/tg/hook",
            webhook_secret="s3cret_token",
            stop=stop,
        )
    )
    try:
        for _ in range(100):
            if webhook.port:
                break
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{webhook.port}/tg/hook"
        async with aiohttp.ClientSession() as http:
            forged = await http.post(url, json={"update_id": 1}, headers={SECRET_HEADER: "nope"})
            assert forged.status == 403
            body = {
                "update_id": 77,
                "message": {
                    "message_id": 1,
                    "date": 1_800_000_000,
                    "chat": {"id": 555, "type": "private"},
                    "from": {"id": 555, "is_bot": False, "first_name": "W"},
                    "text": "/help",
                    "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
                },
            }
            for _ in range(2):  # Telegram retries: the same update twice is handled once
                ok = await http.post(url, json=body, headers={SECRET_HEADER: "s3cret_token"})
                assert ok.status == 200
        user = emulator.user(555, "W")
        reply = await user.next_event("sendMessage", timeout=10)
        assert "/leaderboard" in reply.params["text"]
        await asyncio.sleep(0.5)
        assert [e.method for e in user.events].count("sendMessage") == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await emulator.stop()
        await services.close()


@pytest.fixture
async def emulator() -> AsyncIterator[BotApiEmulator]:
    emulator = await BotApiEmulator(limits=None).start()
    yield emulator
    await emulator.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_bot(
    settings: Settings, emulator: BotApiEmulator, log: Path, webhook_port: int | None = None
) -> subprocess.Popen[bytes]:
    webhook = {}
    if webhook_port is not None:  # webhook mode: Telegram (the emulator) POSTs the updates
        webhook = {
            "MEDCROWD_WEBHOOK_URL": f"http://127.0.0.1:{webhook_port}/telegram",
            "MEDCROWD_WEBHOOK_SECRET": "kill-9-secret",
            "MEDCROWD_WEBHOOK_LISTEN": f"127.0.0.1:{webhook_port}",
        }
    env = {
        **webhook,
        **os.environ,
        "MEDCROWD_BOT_TOKEN": emulator.token,
        "MEDCROWD_TELEGRAM_BASE_URL": emulator.base_url,
        "MEDCROWD_TELEGRAM_FILE_URL": emulator.base_file_url,
        "MEDCROWD_DATA_DIR": str(settings.data_dir),
        "MEDCROWD_DATABASE_URL": settings.resolved_database_url,
        "MEDCROWD_FLOOD_RATE": "100",
        "MEDCROWD_FLOOD_BURST": "100",
        "PTB_TIMEDELTA": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_kill_9_mid_burst_loses_no_press_and_stores_none_twice(
    prepared: Path, tmp_path: Path, emulator: BotApiEmulator, mode: str
) -> None:
    settings = _copy(prepared, tmp_path)
    services = Services.from_settings(settings)
    oracle = Oracle(services.sessionmaker, services.store)
    log = tmp_path / "bot.log"
    port = _free_port() if mode == "webhook" else None
    bot = _start_bot(settings, emulator, log, port)
    try:
        crowd = [_volunteer(emulator, oracle, 1000 + i) for i in range(16)]
        for volunteer in crowd:
            await volunteer.join()
        pressed = []
        for volunteer in crowd:  # a burst: everyone presses at once
            screen = volunteer.screen
            token = next(d for _, d in volunteer.user.buttons(screen) if d.startswith("a:"))
            pressed.append(token.split(":")[1])
            await volunteer.user.press("✅ Accept", message_id=screen["message_id"])
        await crowd[0].user.next_event("answerCallbackQuery", "editMessageMedia", timeout=15)
        bot.send_signal(signal.SIGKILL)  # in the middle of the burst
        await asyncio.to_thread(bot.wait)
        before = await _count(services)
        bot = _start_bot(settings, emulator, log, port)
        for _ in range(300):
            async with services.sessionmaker() as session:
                done = (
                    await session.exec(
                        select(func.count())
                        .select_from(Answer)
                        .join(Assignment, col(Assignment.id) == Answer.assignment_id)
                        .where(col(Assignment.token).in_(pressed))
                    )
                ).one()
            if done == len(pressed):
                break
            await asyncio.sleep(0.1)
        assert done == len(pressed), log.read_text()[-3000:]
        assert await _count(services) == len(pressed)  # each exactly once
        assert before < len(pressed), "the kill came too late to test anything"
        assert not emulator.pending_updates
    finally:
        bot.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(bot.wait), 20)
        except TimeoutError:
            bot.kill()
        await services.close()
