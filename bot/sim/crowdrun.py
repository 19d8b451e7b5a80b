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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from sqlmodel import select

from bot.campaign import review
from bot.campaign.services import Services
from bot.db.models import Image, Task, Volunteer
from bot.settings import Settings
from bot.sim.chat import VirtualUser
from bot.sim.emulator import BotApiEmulator, Limits
from bot.sim.outcomes import CrowdOutcome, collect
from bot.sim.privacy import PrivacyAudit, audit, secrets_of
from bot.sim.screenshot import EditorUnavailable, editor_screenshot
from bot.sim.volunteers import Oracle, VirtualVolunteer, profile
from bot.sim.world import task_truths
from bot.store import codecs
from inference.prediction import dice

logger = logging.getLogger(__name__)

# What the demo's crowd is made of (profiles as in fusion's simulator).
MIX = {
    "good": 0.35,
    "noisy": 0.15,
    "over-segmenter": 0.1,
    "under-segmenter": 0.1,
    "lazy": 0.15,
    "random": 0.05,
    "adversarial": 0.1,
}
VISITOR = 4998  # a newcomer who opens the Mini App editor for the report's screenshot
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


@dataclass
class CrowdRun:
    """What the Telegram step did: the report lines, the measured outcome, the harvest."""

    lines: list[str]
    outcome: CrowdOutcome
    seconds: float
    reviewed: list[str]
    status_png: bytes
    export_zip: bytes
    export_name: str
    editor_png: bytes | None
    editor_note: str
    synthesis: str  # what /synthesize reported
    privacy: PrivacyAudit | None = None  # every payload the bot sent, inspected


def crowd_mix(volunteers: int) -> list[str]:
    """Hidden profiles for ``volunteers`` people in ``MIX``'s proportions (largest remainder)."""
    names = list(MIX)
    shares = {n: MIX[n] * volunteers for n in names}
    counts = {n: int(shares[n]) for n in names}
    missing = volunteers - sum(counts.values())
    for n in sorted(names, key=lambda n: counts[n] - shares[n])[:missing]:
        counts[n] += 1
    return [n for n in names for _ in range(counts[n])]


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
) -> CrowdRun:
    """Run the crowd, an expert's review and the coordinator's harvest; measure the outcome."""
    profiles = crowd_mix(volunteers)
    emulator = await BotApiEmulator(limits=Limits(per_chat_per_second=None)).start()
    oracle = Oracle(
        services.sessionmaker, services.store, await task_truths(services, truth_dir, campaign_id)
    )
    started = time.perf_counter()
    try:
        async with (
            launch(settings, emulator.token, emulator.base_url, emulator.base_file_url),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        ):
            crowd = [
                VirtualVolunteer(
                    emulator.user(5000 + i, f"Volunteer {i}"),
                    profile(p, np.random.default_rng(seed + i)),
                    oracle,
                    np.random.default_rng(seed + i),
                    http=http,
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
            outcome = await collect(
                services,
                oracle,
                campaign_id,
                {v.user.id: p for v, p in zip(crowd, profiles, strict=True)},
            )
            lines = _lines(outcome, crowd, profiles, seconds)
            editor_png, editor_note = await editor_view(
                VirtualVolunteer(
                    emulator.user(VISITOR, "Visitor"),
                    profile("good", np.random.default_rng(seed)),
                    oracle,
                    np.random.default_rng(seed),
                )
            )
            coordinator = emulator.user(EXPERT, "Expert")
            flagged = await _alerted(services, coordinator, profiles)
            reviewed = await expert_review(services, coordinator, oracle)
            status_png, export_zip, export_name, synthesis = await harvest(coordinator)
            privacy = await _privacy(services, settings, emulator, truth_dir)
    finally:
        await emulator.stop()
    lines.append(
        f"  privacy audit             {privacy.payloads} payloads the bot sent: "
        f"{privacy.crops_to_volunteers} crops to volunteers, "
        + (
            "every new one protected; no source name or path"
            if privacy.clean
            else f"LEAKS {privacy.leaks[:3]} UNPROTECTED {privacy.unprotected[:3]}"
        )
    )
    lines.append(
        f"  reliability alerts        {len(flagged)} volunteers reported to the coordinators"
        + (f" (their hidden profiles: {', '.join(sorted(flagged))})" if flagged else "")
    )
    picked = sum(1 for how in reviewed if how != "own")
    lines.append(
        f"  expert /review            {len(reviewed)} escalated crops settled as gold "
        f"({picked} by picking a crowd candidate, {len(reviewed) - picked} by sending a mask)"
    )
    return CrowdRun(
        lines,
        outcome,
        seconds,
        reviewed,
        status_png,
        export_zip,
        export_name,
        editor_png,
        editor_note,
        synthesis,
        privacy,
    )


async def _privacy(
    services: Services, settings: Settings, emulator: BotApiEmulator, truth_dir: Path
) -> PrivacyAudit:
    """Inspect every payload the bot sent during the demo for what must not leave."""
    async with services.sessionmaker() as session:
        names = (await session.exec(select(Image.source_name))).all()
    secrets = secrets_of(names, [settings.data_dir, truth_dir])
    return audit(emulator.calls, secrets, staff={EXPERT})


async def _alerted(services: Services, coordinator: VirtualUser, profiles: list[str]) -> list[str]:
    """The hidden profiles of the volunteers the bot's reliability alerts named."""
    named = set()
    for event in coordinator.events:
        text = event.params.get("text") or ""
        if event.method == "sendMessage" and text.startswith("⚠️ Volunteer #"):
            named.add(int(text.removeprefix("⚠️ Volunteer #").split()[0]))
    found = []
    async with services.sessionmaker() as session:
        for volunteer_id in sorted(named):
            row = await session.get(Volunteer, volunteer_id)
            if row is not None and 0 <= row.telegram_user_id - 5000 < len(profiles):
                found.append(profiles[row.telegram_user_id - 5000])
    return found


async def editor_view(visitor: VirtualVolunteer) -> tuple[bytes | None, str]:
    """A newcomer opens the Mini App editor on their first crop; its screenshot, or why not."""
    await visitor.join(nickname=None)
    await visitor.user.press("✏️", message_id=visitor.screen.get("message_id"))
    event = await visitor.user.next_event("editMessageMedia", "editMessageReplyMarkup", timeout=30)
    apps = visitor.user.web_apps(event.message)
    if not apps:
        return None, "the bot offered no Mini App button"
    try:
        png = await editor_screenshot(apps[0][1], visitor.user.init_data(), visitor.user.id)
    except EditorUnavailable as error:
        return None, f"no screenshot: {error}"
    return png, "the Mini App editor as a phone shows it inside Telegram"


async def harvest(coordinator: VirtualUser) -> tuple[bytes, bytes, str, str]:
    """The coordinator's /synthesize, /status chart and /export zip, as Telegram delivers them."""
    await coordinator.send("/synthesize")
    synthesis = ""
    while not ("done (job" in synthesis or "failed" in synthesis):
        event = await coordinator.next_event("sendMessage", "editMessageText", timeout=600)
        synthesis = str(event.params.get("text") or "")
    await coordinator.send("/status")
    status = await coordinator.next_event("sendPhoto", timeout=60)
    await coordinator.send("/export")
    export = await coordinator.next_event("sendDocument", timeout=120)
    name = str((export.message or {}).get("document", {}).get("file_name") or "export.zip")
    return status.upload("photo"), export.upload("document"), name, synthesis


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


def _lines(
    outcome: CrowdOutcome, crowd: list[VirtualVolunteer], profiles: list[str], seconds: float
) -> list[str]:
    verdicts: Counter[str] = Counter()
    for volunteer in crowd:
        verdicts.update(volunteer.verdicts)
    answered = sum(v.answers for v in crowd)
    stored = outcome.answers_stored
    lines = [
        f"volunteers in Telegram      {len(crowd)} virtual volunteers via the Bot API emulator "
        f"({', '.join(f'{n} {p}' for p, n in sorted(Counter(profiles).items()))})",
        f"  answers                   {stored} stored in {seconds:.1f} s ("
        + ", ".join(f"{k} {n}" for k, n in sorted(verdicts.items()))
        + f" pressed; {answered - stored} landed on crops finished meanwhile)",
        f"  crops retired/escalated   {outcome.statuses.get('retired', 0)} / "
        f"{outcome.statuses.get('escalated', 0)} of {sum(outcome.statuses.values())} real crops",
    ]
    if outcome.crops:
        lines.append(
            f"  Dice vs truth             consensus {outcome.mean('consensus'):.3f}, "
            f"majority vote {outcome.mean('majority'):.3f}, proposal {outcome.mean('proposal'):.3f}"
            f" on {len(outcome.crops)} finished crops"
        )
        lines.append(
            f"  answers per finished crop {outcome.answers_per_finished_crop():.1f} "
            f"(fixed redundancy would spend {outcome.max_answers})"
        )
    lines += [
        f"  leaderboard #{rank}            {name}: {points} points"
        for rank, name, points in outcome.leaderboard[:3]
    ]
    return lines
