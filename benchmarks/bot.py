"""Bot load benchmark: MedCrowd against a bare python-telegram-bot bot, on the same emulator.

Both bots run as their own process against the local Bot API emulator (no flood limits, and
no outgoing rate limiter in either bot: this measures the software, not Telegram's ~30
messages/s, which is the real ceiling in production). Virtual volunteers live in this process.

* throughput: ``--volunteers`` (200) join, then each answers ``--answers`` (10) crops, pressing
  Accept and waiting for the next crop before the next press, all volunteers at once. It reports
  answers per second, the bot process's CPU ms per answer (user + system, from /proc) and the
  press-to-next-crop latency (p50/p95);
* burst: ``--burst`` (50) fresh volunteers press at the same moment, ten times; p95 latency.

MedCrowd runs on SQLite and on PostgreSQL (``--db``); the bare bot, which stores nothing, once.
The last line is one JSON object.

    .venv/bin/python benchmarks/bot.py [--volunteers 200] [--answers 10] [--burst 50]
        [--db sqlite,postgres] [--pg postgresql+asyncpg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.campaign.services import Services  # noqa: E402
from bot.db import migrate  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.sim.chat import VirtualUser  # noqa: E402
from bot.sim.emulator import BotApiEmulator  # noqa: E402
from bot.sim.volunteers import Oracle, VirtualVolunteer, profile  # noqa: E402
from bot.sim.world import phantom_world  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
RULES = {
    "tutorial_tasks": 0,
    "gold_rate": 0.0,
    "min_answers": 10,
    "max_answers": 10,
    "retire_confidence": 1.0,
    "answer_floor_seconds": 0.0,
}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else float("nan")


async def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.to_thread(process.wait), 60)
    except TimeoutError:
        print("the bot did not stop within 60 s; killed", flush=True)
        process.kill()


async def _wait_ready(emulator: BotApiEmulator) -> None:
    for _ in range(600):
        if any(c.method.lower() == "getupdates" for c in emulator.calls):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the bot never polled")


async def _phase(
    users: list[Any], answers: int, step: Callable[[Any], Awaitable[float]], pid: int
) -> dict[str, float]:
    """Every user answers ``answers`` times concurrently; returns throughput and latency."""
    latencies: list[float] = []

    async def run(user: Any) -> None:
        for _ in range(answers):
            latencies.append(await step(user))

    cpu0, t0 = _cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(run(u) for u in users))
    wall, cpu = time.perf_counter() - t0, _cpu_seconds(pid) - cpu0
    n = len(latencies)
    return {
        "answers": n,
        "seconds": round(wall, 2),
        "answers_per_s": round(n / wall, 1),
        "cpu_ms_per_answer": round(cpu * 1000 / n, 2),
        "p50_ms": _pct(latencies, 50),
        "p95_ms": _pct(latencies, 95),
    }


async def _burst(
    users: list[Any], rounds: int, step: Callable[[Any], Awaitable[float]]
) -> dict[str, float]:
    latencies: list[float] = []
    for _ in range(rounds):
        latencies += await asyncio.gather(*(step(u) for u in users))
    return {"presses": len(latencies), "p50_ms": _pct(latencies, 50), "p95_ms": _pct(latencies, 95)}


def start_bare(emulator: BotApiEmulator) -> subprocess.Popen[bytes]:
    """The reference: a bare python-telegram-bot bot (``bare_bot.py``) on the emulator."""
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bare_bot.py"),
            "--token",
            emulator.token,
            "--base-url",
            emulator.base_url,
            "--file-url",
            emulator.base_file_url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def medcrowd_env(emulator: BotApiEmulator, data_dir: Path, url: str) -> dict[str, str]:
    """``medcrowd run``'s environment for a benchmark: no limits, warnings only in its log."""
    return {
        **os.environ,
        "MEDCROWD_BOT_TOKEN": emulator.token,
        "MEDCROWD_TELEGRAM_BASE_URL": emulator.base_url,
        "MEDCROWD_TELEGRAM_FILE_URL": emulator.base_file_url,
        "MEDCROWD_TELEGRAM_RATE_LIMIT": "false",
        "MEDCROWD_DATA_DIR": str(data_dir),
        "MEDCROWD_DATABASE_URL": url,
        "MEDCROWD_FLOOD_RATE": "1000",
        "MEDCROWD_FLOOD_BURST": "1000",
        "MEDCROWD_LOG_LEVEL": "WARNING",
        "PTB_TIMEDELTA": "1",
    }


async def join_bare(emulator: BotApiEmulator, i: int, *, wait_s: float) -> VirtualUser:
    """User ``i`` starts the bare bot and gets its first photo."""
    user = emulator.user(10_000 + i, "B")
    await user.send("/start")
    await user.next_event("sendPhoto", timeout=wait_s)
    return user


async def press_bare(user: VirtualUser) -> float:
    """Accept on the bare bot; seconds until the photo is edited."""
    t = time.perf_counter()
    await user.press("✅ Accept")
    await user.next_event("editMessageMedia", timeout=60)
    return time.perf_counter() - t


async def join_lazy(emulator: BotApiEmulator, oracle: Oracle, i: int) -> VirtualVolunteer:
    """Volunteer ``i`` (who accepts without looking) joins MedCrowd and gets a first crop."""
    rng = np.random.default_rng(i)
    volunteer = VirtualVolunteer(
        emulator.user(10_000 + i, "V"), profile("lazy", rng), oracle, rng, timeout=60
    )
    await volunteer.join()
    return volunteer


async def answer_timed(volunteer: VirtualVolunteer) -> float:
    """One answer; seconds from the press to the next crop."""
    t = time.perf_counter()
    await volunteer.answer()
    return time.perf_counter() - t


async def _bare(args: argparse.Namespace) -> dict[str, Any]:
    emulator = await BotApiEmulator(limits=None).start()
    process = start_bare(emulator)
    try:
        await _wait_ready(emulator)

        join = functools.partial(join_bare, emulator, wait_s=60.0)
        step = press_bare
        users = await asyncio.gather(*(join(i) for i in range(args.volunteers)))
        result = await _phase(list(users), args.answers, step, process.pid)
        burst = await asyncio.gather(*(join(50_000 + i) for i in range(args.burst)))
        result["burst"] = await _burst(list(burst), 10, step)
        return result
    finally:
        await _stop(process)
        await emulator.stop()


async def _pg_database(server: str) -> str:
    import asyncpg  # type: ignore[import-untyped]

    name = f"medcrowd_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(server.replace("+asyncpg", ""))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server.rsplit("/", 1)[0] + "/" + name


async def _medcrowd(args: argparse.Namespace, db: str, folder: Path) -> dict[str, Any]:
    url = await _pg_database(args.pg) if db == "postgres" else f"sqlite:///{folder / 'bot.db'}"
    settings = Settings(data_dir=folder / "data", database_url=url)
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    services = Services.from_settings(settings)
    needed = (args.volunteers + args.burst) * args.answers // 10 + 60
    print(f"[{db}] preparing a campaign with about {needed} crops...", flush=True)
    await phantom_world(services, folder / "phantoms", n=max(needed // 2, 20), rules=RULES)
    emulator = await BotApiEmulator(limits=None).start()
    env = medcrowd_env(emulator, settings.data_dir, url)
    log = (folder / "bot.log").open("wb")
    command = [sys.executable, "-m", "bot", "run"]
    if args.profile and args.profile.suffix == ".prof":
        command[1:1] = ["-m", "cProfile", "-o", str(args.profile)]
    elif args.profile:  # a sampling profile of every thread (needs py-spy installed)
        command[:0] = ["py-spy", "record", "-r", "200", "-f", "raw", "-o", str(args.profile), "--"]
    process = subprocess.Popen(  # noqa: ASYNC220 - started once; waited for in a thread
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    oracle = Oracle(services.sessionmaker, services.store)
    try:
        await _wait_ready(emulator)

        join = functools.partial(join_lazy, emulator, oracle)
        step = answer_timed
        users = await asyncio.gather(*(join(i) for i in range(args.volunteers)))
        result = await _phase(list(users), args.answers, step, process.pid)
        burst = await asyncio.gather(*(join(50_000 + i) for i in range(args.burst)))
        result["burst"] = await _burst(list(burst), 10, step)
    except BaseException:
        log.flush()
        tail = (folder / "bot.log").read_text(errors="replace").splitlines()[-60:]
        print("the MedCrowd bot's log ends with:\n" + "\n".join(tail), flush=True)
        raise
    else:
        return result
    finally:
        await _stop(process)
        await emulator.stop()
        await services.close()


async def main() -> None:
    """Run the bare bot, then MedCrowd on each database, and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volunteers", type=int, default=200)
    parser.add_argument("--answers", type=int, default=10)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "MEDCROWD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="profile the MedCrowd bot: cProfile for *.prof, else a py-spy raw profile",
    )
    args = parser.parse_args()
    bare = await _bare(args)
    print(f"bare python-telegram-bot: {bare}", flush=True)
    out: dict[str, Any] = {
        "volunteers": args.volunteers,
        "answers": args.answers,
        "burst": args.burst,
        "bare": bare,
    }
    for db in [d for d in args.db.split(",") if d]:
        with tempfile.TemporaryDirectory(prefix=f"medcrowd-bench-{db}-") as folder:
            result = await _medcrowd(args, db, Path(folder))
        result["ratio_vs_bare"] = round(result["answers_per_s"] / bare["answers_per_s"], 2)
        print(f"medcrowd on {db}: {result}", flush=True)
        out[db] = result
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
