"""Load benchmark: 1,000 volunteers answering for a bounded time, then an audit of what was stored.

Virtual volunteers (``--volunteers``, 1000) join through the local Bot API emulator, then each
answers crops for ``--seconds`` (90): think (exponential, mean ``--think`` seconds, 30: a look at
a crop on a phone), press Accept, wait for the next crop. 1,000 volunteers thinking 30 s offer
about 33 answers a second. The same load runs against:

* the reference: a bare python-telegram-bot bot that edits a photo and stores nothing;
* MedCrowd (``medcrowd run``) on SQLite, on PostgreSQL, and on PostgreSQL with
  ``--processes`` (3) bot processes.

Each prints answers per second (and the ratio to the reference's in the same run), p50/p95/p99
press-to-next-crop latency, errors (presses that got no next crop within 60 s), and, for
MedCrowd, the audit once the bot has drained its inbox:

* every press the emulator delivered was processed, and became exactly one answer, or was
  refused with another crop because its crop finished (or filled up) while the volunteer looked:
  ``lost`` and ``duplicated`` must be 0;
* no real crop holds more answers than the campaign's ``max_answers``;
* the leaderboard's all-time total equals the sum of the points stored on answers.

The last line is one JSON object.

    .venv/bin/python benchmarks/load.py [--volunteers 1000] [--seconds 90] [--think 30]
        [--runs sqlite,postgres,postgres-3] [--processes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bot import (  # noqa: E402
    _cpu_seconds,
    _pg_database,
    _stop,
    _wait_ready,
    answer_timed,
    join_bare,
    join_lazy,
    medcrowd_env,
    press_bare,
    start_bare,
)
from bot.campaign import leaderboard  # noqa: E402
from bot.campaign.services import Services  # noqa: E402
from bot.db import migrate  # noqa: E402
from bot.db.models import (  # noqa: E402
    Answer,
    Assignment,
    Campaign,
    InboxUpdate,
    Task,
    TaskKind,
    TaskStatus,
)
from bot.db.types import utcnow  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.sim.emulator import BotApiEmulator  # noqa: E402
from bot.sim.volunteers import Oracle  # noqa: E402
from bot.sim.world import phantom_world  # noqa: E402

RULES = {
    "tutorial_tasks": 0,
    "gold_rate": 0.0,
    "min_answers": 3,
    "max_answers": 5,
    "retire_confidence": 0.95,
    "answer_floor_seconds": 0.0,
    "daily_cap": 10_000,
}
JOIN_AT_ONCE = 50  # volunteers joining concurrently (a join is five round trips)


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else float("nan")


async def _drive(
    users: list[Any], seconds: float, think: float, step: Any, pid: int, seed: int
) -> dict[str, Any]:
    """Every user answers until ``seconds`` pass, thinking between answers."""
    rng = random.Random(seed)
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def pause(seconds: float) -> None:  # never past the end of the window
        await asyncio.sleep(max(min(seconds, deadline - time.perf_counter()), 0.0))

    async def run(user: Any) -> None:
        await pause(rng.uniform(0, think))  # arrivals spread out, not in lockstep
        while time.perf_counter() < deadline:
            try:
                latencies.append(await step(user))
            except (TimeoutError, LookupError) as error:
                errors.append(type(error).__name__)
                return
            if think > 0:
                await pause(rng.expovariate(1 / think))

    cpu0, t0 = _cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(run(u) for u in users))
    wall, cpu = time.perf_counter() - t0, _cpu_seconds(pid) - cpu0
    n = len(latencies)
    return {
        "answers": n,
        "seconds": round(wall, 1),
        "answers_per_s": round(n / wall, 1),
        "bot_cpu_ms_per_answer": round(cpu * 1000 / max(n, 1), 1),
        "p50_ms": _pct(latencies, 50),
        "p95_ms": _pct(latencies, 95),
        "p99_ms": _pct(latencies, 99),
        "errors": len(errors),
    }


async def _join_all(join: Any, count: int) -> list[Any]:
    users: list[Any] = []
    for start in range(0, count, JOIN_AT_ONCE):
        batch = range(start, min(start + JOIN_AT_ONCE, count))
        users += await asyncio.gather(*(join(i) for i in batch))
        print(f"  joined {len(users)}/{count}", end="\r", flush=True)
    print(flush=True)
    return users


async def _bare(args: argparse.Namespace) -> dict[str, Any]:
    emulator = await BotApiEmulator(limits=None).start()
    process = start_bare(emulator)
    try:
        await _wait_ready(emulator)

        join = functools.partial(join_bare, emulator, wait_s=120.0)
        step = press_bare
        users = await _join_all(join, args.volunteers)
        return await _drive(users, args.seconds, args.think, step, process.pid, args.seed)
    finally:
        await _stop(process)
        await emulator.stop()


async def _audit(services: Services, emulator: BotApiEmulator) -> dict[str, Any]:
    """What the bot stored, checked against what the volunteers pressed."""
    from sqlmodel import col, func, select

    async with services.sessionmaker() as session:
        for _ in range(1200):  # let the bot drain its inbox (up to two minutes)
            left = (
                await session.exec(
                    select(func.count())
                    .select_from(InboxUpdate)
                    .where(col(InboxUpdate.processed_at).is_(None))
                )
            ).one()
            if left == 0:
                break
            await asyncio.sleep(0.1)
        delivered = set(emulator.delivered_update_ids)
        processed = set(
            (
                await session.exec(
                    select(InboxUpdate.update_id).where(col(InboxUpdate.processed_at).is_not(None))
                )
            ).all()
        )
        pressed = _accept_tokens(emulator)
        leases = {
            a.token: a
            for a in (
                await session.exec(select(Assignment).where(col(Assignment.token).in_(pressed)))
            ).all()
        }
        per_lease = dict(
            (
                await session.exec(
                    select(Answer.assignment_id, func.count())
                    .where(col(Answer.assignment_id).in_([a.id for a in leases.values()]))
                    .group_by(col(Answer.assignment_id))
                )
            ).all()
        )
        tasks = {
            t.id: t
            for t in (
                await session.exec(
                    select(Task).where(col(Task.id).in_([a.task_id for a in leases.values()]))
                )
            ).all()
        }
        lost, refused = 0, 0
        for token in pressed:
            lease = leases.get(token)
            if lease is not None and per_lease.get(lease.id, 0) > 0:
                continue  # stored
            # Refused, and told so with another crop: the crop finished (or filled up) while
            # the volunteer looked at it. Anything else is a lost press.
            if lease is not None and (
                lease.closed_at is not None or tasks[lease.task_id].status != TaskStatus.OPEN
            ):
                refused += 1
            else:
                lost += 1
        duplicated = sum(n - 1 for n in per_lease.values() if n > 1)
        campaign = (await session.exec(select(Campaign))).one()
        per_task = (
            await session.exec(
                select(func.count())
                .select_from(Answer)
                .join(Task, col(Task.id) == Answer.task_id)
                .where(Task.kind == TaskKind.REAL)
                .group_by(col(Answer.task_id))
            )
        ).all()
        over = sum(1 for n in per_task if n > campaign.max_answers)
        stored_points = int((await session.exec(select(func.sum(Answer.points)))).one() or 0)
        board = await leaderboard.leaderboard(
            session, period="all", volunteer_id=None, limit=100_000, now=utcnow()
        )
        board_points = sum(row.points for row in board.rows)
        answers = int((await session.exec(select(func.count()).select_from(Answer))).one())
    return {
        "answers_stored": answers,
        "presses_audited": len(pressed),
        "updates_delivered": len(delivered),
        "updates_unprocessed": len(delivered - processed),
        "lost": lost,
        "duplicated": duplicated,
        "refused_crop_finished": refused,
        "crops_over_answered": over,
        "leaderboard_points": board_points,
        "stored_points": stored_points,
        "points_match": board_points == stored_points,
    }


def _accept_tokens(emulator: BotApiEmulator) -> set[str]:
    """The lease tokens of every Accept the volunteers pressed (as the emulator delivered)."""
    tokens = set()
    for update in emulator.delivered_updates:
        data = (update.get("callback_query") or {}).get("data", "")
        if data.startswith("a:"):
            tokens.add(data.split(":")[1])
    return tokens


async def _medcrowd(args: argparse.Namespace, run: str, folder: Path) -> dict[str, Any]:
    db, _, processes = run.partition("-")
    url = await _pg_database(args.pg) if db == "postgres" else f"sqlite:///{folder / 'bot.db'}"
    settings = Settings(data_dir=folder / "data", database_url=url)
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    services = Services.from_settings(settings)
    crops = int(args.volunteers * args.seconds / max(args.think, 0.5) / 3) + 100
    print(f"[{run}] preparing a campaign with about {crops} crops...", flush=True)
    await phantom_world(services, folder / "phantoms", n=max(crops // 2, 20), rules=RULES)
    emulator = await BotApiEmulator(limits=None).start()
    env = medcrowd_env(emulator, settings.data_dir, url)
    command = [sys.executable, "-m", "bot", "run", "--processes", processes or "1"]
    log_path = folder / "bot.log"
    process = subprocess.Popen(  # noqa: ASYNC220 - started once; waited for in a thread
        command, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT
    )
    oracle = Oracle(services.sessionmaker, services.store)
    try:
        await _wait_ready(emulator)

        join = functools.partial(join_lazy, emulator, oracle)
        step = answer_timed
        users = await _join_all(join, args.volunteers)
        result = await _drive(users, args.seconds, args.think, step, process.pid, args.seed)
        result["audit"] = await _audit(services, emulator)
        result["processes"] = int(processes or 1)
    except BaseException:
        tail = log_path.read_text(errors="replace").splitlines()[-60:]
        print("the MedCrowd bot's log ends with:\n" + "\n".join(tail), flush=True)
        raise
    else:
        return result
    finally:
        await _stop(process)
        await emulator.stop()
        await services.close()


async def main() -> None:
    """Run the reference, then MedCrowd in each configuration, and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volunteers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--think", type=float, default=30.0, help="mean think time, s (30)")
    parser.add_argument("--runs", default="sqlite,postgres,postgres-3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "MEDCROWD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    print(f"reference: bare python-telegram-bot, {args.volunteers} volunteers", flush=True)
    bare = await _bare(args)
    print(f"bare python-telegram-bot: {bare}", flush=True)
    out: dict[str, Any] = {
        "volunteers": args.volunteers,
        "seconds": args.seconds,
        "think_s": args.think,
        "started": started.isoformat(timespec="seconds"),
        "bare": bare,
    }
    for run in [r for r in args.runs.split(",") if r]:
        with tempfile.TemporaryDirectory(prefix=f"medcrowd-load-{run}-") as folder:
            result = await _medcrowd(args, run, Path(folder))
        result["ratio_vs_bare"] = round(result["answers_per_s"] / bare["answers_per_s"], 2)
        print(f"medcrowd {run}: {result}", flush=True)
        out[run] = result
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
