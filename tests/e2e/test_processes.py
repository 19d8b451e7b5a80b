"""Several bot processes on one PostgreSQL database (``medcrowd run --processes 3``).

The front process receives every update; each process answers its share of the volunteers;
fusion folds in every process's answers. A worker killed with SIGKILL is restarted by the front
and its volunteers' presses are processed, each once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import col, func, select

from bot.campaign.services import Services
from bot.db.models import Answer, Assignment, Campaign, Consensus, InboxUpdate, Task, TaskKind
from bot.settings import Settings
from bot.sim.emulator import BotApiEmulator
from bot.sim.volunteers import Oracle, VirtualVolunteer, profile
from tests.helpers.bot import prepare
from tests.helpers.pg import scratch_database

pytestmark = pytest.mark.postgres


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


async def _until(predicate: object, seconds: float = 60.0) -> None:
    for _ in range(int(seconds * 10)):
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def test_three_processes_share_the_volunteers_and_survive_a_killed_worker(
    tmp_path: Path,
) -> None:
    async with scratch_database("medcrowd_procs") as url:
        settings = await prepare(tmp_path / "w", database_url=url, n=12)
        services = Services.from_settings(Settings(data_dir=settings.data_dir, database_url=url))
        async with services.sessionmaker() as session:
            campaign = (await session.exec(select(Campaign))).one()
            campaign.min_answers, campaign.max_answers = 3, 3
            campaign.tutorial_tasks, campaign.gold_rate = 0, 0.0  # real crops only
            session.add(campaign)
            await session.commit()
        emulator = await BotApiEmulator(limits=None).start()
        env = {
            **os.environ,
            "MEDCROWD_BOT_TOKEN": emulator.token,
            "MEDCROWD_TELEGRAM_BASE_URL": emulator.base_url,
            "MEDCROWD_TELEGRAM_FILE_URL": emulator.base_file_url,
            "MEDCROWD_DATA_DIR": str(settings.data_dir),
            "MEDCROWD_DATABASE_URL": url,
            "MEDCROWD_FLOOD_RATE": "100",
            "MEDCROWD_FLOOD_BURST": "100",
            "PTB_TIMEDELTA": "1",
        }
        log = tmp_path / "bot.log"
        front = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for in a thread
            [sys.executable, "-m", "bot", "run", "--processes", "3"],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        try:
            oracle = Oracle(services.sessionmaker, services.store)
            crowd = []
            for i in range(9):  # ids 0..8 modulo 3: three volunteers per process
                rng = np.random.default_rng(i)
                user = emulator.user(6000 + i, f"P{i}")
                crowd.append(VirtualVolunteer(user, profile("lazy", rng), oracle, rng))  # accepts
            await asyncio.gather(*(v.join() for v in crowd))
            for _ in range(3):
                await asyncio.gather(*(v.answer() for v in crowd))
            workers = _children(front.pid)
            assert len(workers) == 2, log.read_text()[-3000:]
            os.kill(workers[0], signal.SIGKILL)  # one worker dies; its volunteers press on
            pressed = []
            for volunteer in crowd:
                screen = volunteer.screen
                data = next(
                    (d for _, d in volunteer.user.buttons(screen) if d.startswith("a:")), None
                )
                if data is not None:
                    pressed.append(data.split(":")[1])
                    await volunteer.user.press("✅ Accept", message_id=screen["message_id"])

            try:  # every update processed to its end, the dead worker's included
                await _until(lambda: _zero(services))
            except AssertionError:
                raise AssertionError(log.read_text()[-5000:]) from None
            assert len(_children(front.pid)) == 2  # the front restarted the dead worker
            async with services.sessionmaker() as session:
                leases = (
                    await session.exec(select(Assignment).where(col(Assignment.token).in_(pressed)))
                ).all()
                answered = set(
                    (
                        await session.exec(
                            select(Answer.assignment_id).where(
                                col(Answer.assignment_id).in_([a.id for a in leases])
                            )
                        )
                    ).all()
                )
            # each press became its answer, or was refused because its crop had filled up
            # meanwhile (the lease is then closed, and the volunteer served another crop)
            assert all(a.id in answered or a.closed_at is not None for a in leases)
            assert len(answered) >= len(pressed) // 2
            async with services.sessionmaker() as session:
                pairs = (await session.exec(select(Answer.task_id, Answer.volunteer_id))).all()
                assert len(pairs) == len(set(pairs))  # nothing stored twice
                per_task = (
                    await session.exec(
                        select(Answer.task_id, func.count())
                        .join(Task, col(Task.id) == Answer.task_id)
                        .where(Task.kind == TaskKind.REAL)  # gold is for everyone
                        .group_by(col(Answer.task_id))
                    )
                ).all()
                assert max(n for _, n in per_task) <= 3  # no crop over-answered
                finished = (await session.exec(select(func.count()).select_from(Consensus))).one()
                assert finished > 0  # fusion retired crops from answers stored by every process

            text = log.read_text()
            assert "worker 1 of 3" in text
            assert "worker 2 of 3" in text
            assert "restarting it" in text
        finally:
            front.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(front.wait), 40)
            except TimeoutError:
                front.kill()
                for pid in _children(front.pid):
                    os.kill(pid, signal.SIGKILL)
            await emulator.stop()
            await services.close()
        assert front.returncode == 0, log.read_text()[-3000:]


async def _zero(services: Services) -> bool:
    async with services.sessionmaker() as session:
        left = (
            await session.exec(
                select(func.count())
                .select_from(InboxUpdate)
                .where(col(InboxUpdate.processed_at).is_(None))
            )
        ).one()
    return left == 0
