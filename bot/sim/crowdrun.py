"""A campaign answered by virtual volunteers through the real bot and the Bot API emulator.

Used by the demo: the bot itself is started by the caller (``launch``), so this module needs no
Telegram code; the volunteers press buttons in the emulator like people on phones. The report
compares fusion's consensus with the phantom truth, crop by crop, against the AI proposal alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func
from sqlmodel import col, select

from bot.campaign import arrays, review
from bot.campaign.crowd import proposal_of
from bot.campaign.leaderboard import leaderboard
from bot.campaign.services import Services
from bot.db.models import Answer, Consensus, Task, TaskKind, TaskStatus
from bot.db.types import utcnow
from bot.settings import Settings
from bot.sim.chat import VirtualUser
from bot.sim.emulator import BotApiEmulator, Limits
from bot.sim.volunteers import Oracle, VirtualVolunteer, profile
from bot.sim.world import task_truths
from bot.store import codecs
from inference.prediction import dice

logger = logging.getLogger(__name__)

# What the demo's crowd is made of (profiles as in fusion's simulator).
MIX = {
    "good": 0.4,
    "noisy": 0.15,
    "over-segmenter": 0.1,
    "under-segmenter": 0.1,
    "lazy": 0.15,
    "random": 0.05,
    "adversarial": 0.05,
}
EXPERT = 4999  # the demo's expert (an administrator of the demo bot)
EXPERT_ACCEPTS = 0.9  # the Dice vs truth at which the virtual expert accepts a candidate
# launch(settings, token, base_url, file_url): the bot running against the emulator.
Launcher = Callable[[Settings, str, str, str], contextlib.AbstractAsyncContextManager[Any]]


async def _work(volunteer: VirtualVolunteer, answers: int) -> None:
    for _ in range(answers):
        caption = volunteer.screen.get("caption") or ""
        if "seen every open crop" in caption or "no campaign" in caption:
            return
        try:
            await volunteer.answer()
        except (LookupError, TimeoutError) as error:  # no crop left for them
            logger.warning("volunteer %s stops: %s", volunteer.user.id, error)
            return


async def run_crowd(
    services: Services,
    settings: Settings,
    campaign_id: int,
    truth_dir: Path,
    launch: Launcher,
    *,
    volunteers: int = 12,
    answers: int = 20,
    seed: int = 0,
) -> list[str]:
    """Run the crowd and return the demo's report lines."""
    rng = np.random.default_rng(seed)
    names = list(MIX)
    profiles = rng.choice(names, size=volunteers, p=[MIX[n] for n in names])
    emulator = await BotApiEmulator(limits=Limits(per_chat_per_second=None)).start()
    oracle = Oracle(
        services.sessionmaker, services.store, await task_truths(services, truth_dir, campaign_id)
    )
    started = time.perf_counter()
    try:
        async with launch(settings, emulator.token, emulator.base_url, emulator.base_file_url):
            crowd = [
                VirtualVolunteer(
                    emulator.user(5000 + i, f"Volunteer {i}"),
                    profile(str(p), np.random.default_rng(seed + i)),
                    oracle,
                    np.random.default_rng(seed + i),
                )
                for i, p in enumerate(profiles)
            ]
            await asyncio.gather(
                *(
                    v.join(nickname=f"{p[:5]}-{i}")
                    for i, (v, p) in enumerate(zip(crowd, profiles, strict=True))
                )
            )
            await asyncio.gather(*(_work(v, answers) for v in crowd))
            await asyncio.sleep(0.5)  # the last answers' fusion updates
            seconds = time.perf_counter() - started
            lines = await _report(services, oracle, campaign_id, crowd, profiles, seconds)
            reviewed = await expert_review(services, emulator.user(EXPERT, "Expert"), oracle)
    finally:
        await emulator.stop()
    picked = sum(1 for how in reviewed if how != "own")
    lines.append(
        f"  expert /review            {len(reviewed)} escalated crops settled as gold "
        f"({picked} by picking a crowd candidate, {len(reviewed) - picked} by sending a mask)"
    )
    return lines


async def expert_review(services: Services, expert: VirtualUser, oracle: Oracle) -> list[str]:
    """An expert settles every escalated crop through /review; returns how, crop by crop.

    The expert knows the truth (the oracle): they pick the crowd's candidate closest to it when
    that is good enough, else send the true mask as a PNG file, as a radiologist would draw it.
    """
    how: list[str] = []
    await expert.send("/review")
    while True:
        event = await expert.next_event("sendPhoto", "sendMessage", timeout=30)
        caption = str(event.params.get("caption") or event.params.get("text") or "")
        if event.method == "sendMessage":
            if "No escalated crop" in caption:
                return how
            continue  # "your mask is now this crop's gold"
        task_id = int(caption.split("#", 1)[1].split(",", 1)[0])
        truth = oracle.truths[task_id]
        async with services.sessionmaker() as session:
            task = await session.get_one(Task, task_id)
            candidates = await review.candidates(session, services.store, task)
        scores = [dice(c.mask, truth) for c in candidates]
        assert event.message is not None
        if scores and max(scores) >= EXPERT_ACCEPTS:
            best = int(np.argmax(scores))
            how.append(candidates[best].label)
            await expert.press(str(best + 1), message_id=event.message["message_id"])
        else:
            how.append("own")
            await expert.send_document(codecs.encode_mask(truth), f"crop{task_id}_mask.png")


async def _report(
    services: Services,
    oracle: Oracle,
    campaign_id: int,
    crowd: list[VirtualVolunteer],
    profiles: Any,
    seconds: float,
) -> list[str]:
    verdicts: Counter[str] = Counter()
    for volunteer in crowd:
        verdicts.update(volunteer.verdicts)
    consensus_dice, proposal_dice = [], []
    async with services.sessionmaker() as session:
        rows = (
            await session.exec(
                select(Task, Consensus)
                .join(Consensus, col(Consensus.task_id) == col(Task.id))
                .where(Task.campaign_id == campaign_id, Task.kind == TaskKind.REAL)
            )
        ).all()
        statuses = Counter(
            (
                await session.exec(
                    select(Task.status).where(
                        Task.campaign_id == campaign_id, Task.kind == TaskKind.REAL
                    )
                )
            ).all()
        )
        for task, consensus in rows:
            assert task.id is not None
            truth = oracle.truths[task.id]
            proposal = await proposal_of(session, task_id=task.id)
            assert proposal is not None
            consensus_dice.append(dice(arrays.mask(services.store, consensus.mask_key), truth))
            proposal_dice.append(dice(arrays.mask(services.store, proposal.mask_key), truth))
        board = await leaderboard(session, period="all", volunteer_id=None, limit=3, now=utcnow())
        stored = (
            await session.exec(
                select(func.count())
                .select_from(Answer)
                .join(Task, col(Task.id) == Answer.task_id)
                .where(Task.campaign_id == campaign_id)
            )
        ).one()
    answered = sum(v.answers for v in crowd)
    lines = [
        f"volunteers in Telegram      {len(crowd)} virtual volunteers via the Bot API emulator "
        f"({', '.join(f'{n} {p}' for p, n in sorted(Counter(map(str, profiles)).items()))})",
        f"  answers                   {stored} stored in {seconds:.1f} s ("
        + ", ".join(f"{k} {n}" for k, n in sorted(verdicts.items()))
        + f" pressed; {answered - stored} landed on crops finished meanwhile)",
        f"  crops retired/escalated   {statuses.get(TaskStatus.RETIRED, 0)} / "
        f"{statuses.get(TaskStatus.ESCALATED, 0)} of {sum(statuses.values())} real crops",
    ]
    if consensus_dice:
        lines.append(
            f"  consensus Dice vs truth   {np.mean(consensus_dice):.3f} on {len(rows)} finished "
            f"crops (their AI proposals alone: {np.mean(proposal_dice):.3f})"
        )
    lines += [
        f"  leaderboard #{row.rank}            {row.name}: {row.points} points"
        for row in board.rows
    ]
    return lines
