"""Virtual volunteers: simulated people who use the real bot through the emulator.

Each has a persistent profile, as in fusion's crowd simulator (good, noisy, over-/under-segmenter,
lazy, random, adversarial). It reads the photo it was sent, judges the outline it shows against
the hidden truth of that crop (looked up through the button's token by the ``Oracle``, in the
displayed frame, so augmented gold is judged as shown), and answers by pressing buttons: Accept,
Reject, Can't tell, or Adjust through the chat tools (a one-tap option, or the grid and Redraw).
"""

from __future__ import annotations

import io
import logging
import urllib.parse
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import render, routing, tasks
from bot.db.models import Task, TaskKind
from bot.sim.chat import Event, VirtualUser
from bot.sim.wire import Json
from bot.store import codecs
from bot.store.files import FileStore
from fusion.simulate import blob, signed_distance, smooth_field
from inference.prediction import dice

logger = logging.getLogger(__name__)

Mask = npt.NDArray[np.bool_]
EDITOR_SHARE = 0.75  # of fixes made in the Mini App editor when the bot offers it
PROFILES = ("good", "noisy", "over-segmenter", "under-segmenter", "lazy", "random", "adversarial")


@dataclass(frozen=True)
class Seen:
    """What the oracle knows of the crop behind a token, in the displayed frame."""

    truth: Mask
    proposal: Mask
    options: list[tuple[str, Mask]]
    gold: bool


@dataclass
class Oracle:
    """The hidden truth: gold crops' expert masks, plus a truth per real task (demo, tests)."""

    sessionmaker: async_sessionmaker[AsyncSession]
    store: FileStore
    truths: dict[int, Mask] = field(default_factory=dict)

    async def seen(self, token: str) -> Seen | None:
        """The truth and the outlines behind a button token (None: no truth known)."""
        async with self.sessionmaker() as session:
            assignment = await routing.assignment_by_token(session, token=token)
            task = await session.get_one(Task, assignment.task_id)
            assert task.id is not None
            if task.gold_mask_key:
                truth = codecs.decode_mask(self.store.get(task.gold_mask_key))
            elif task.id in self.truths:
                truth = self.truths[task.id]
            else:
                return None
            view = await tasks.view(session, self.store, assignment)
            options = [
                (o.name, tasks.shown(assignment, o.mask))
                for o in await tasks.choices(session, self.store, assignment)
            ]
            return Seen(
                tasks.shown(assignment, truth), view.proposal, options, task.kind != TaskKind.REAL
            )

    async def working(self, token: str) -> Mask:
        """The outline on the volunteer's screen now (their working mask, displayed frame)."""
        async with self.sessionmaker() as session:
            assignment = await routing.assignment_by_token(session, token=token)
            return (await tasks.view(session, self.store, assignment)).working


@dataclass
class Profile:
    """How a virtual volunteer answers (the same profiles as ``fusion.simulate``).

    ``bias`` (boundary offset, + over-segments), ``amp`` and ``grid`` (amplitude and smoothness
    of their boundary noise) shape the outlines they draw in the Mini App editor, in pixels of a
    256-pixel crop.
    """

    name: str
    tau: float = 0.90
    perception: float = 0.03
    adjust: float = 0.6
    care: float = 1.0  # how hard they try to get a fix right (1: pick the best option)
    bias: float = 0.0
    amp: float = 2.0
    grid: int = 8


def profile(name: str, rng: np.random.Generator) -> Profile:
    """A profile's parameters, drawn once per volunteer."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {PROFILES}")
    adjust = float(rng.uniform(0.4, 0.8))
    if name == "noisy":
        return Profile(name, 0.90, 0.08, adjust, 0.5, rng.normal(0, 1), rng.uniform(4, 7), 24)
    if name == "over-segmenter":
        return Profile(name, 0.85, 0.03, adjust, 1.0, rng.uniform(3, 8), rng.uniform(1.5, 3))
    if name == "under-segmenter":
        return Profile(name, 0.95, 0.03, adjust, 1.0, -rng.uniform(3, 8), rng.uniform(1.5, 3))
    if name == "good":
        return Profile(name, 0.90, 0.03, adjust, 1.0, rng.normal(0, 1), rng.uniform(1.5, 3))
    return Profile(name, 0.90, 0.03, adjust, grid=16)


def draw(profile: Profile, truth: Mask, rng: np.random.Generator) -> Mask:
    """The outline a volunteer of ``profile`` draws for ``truth`` (a square crop) in the editor."""
    size = truth.shape[0]
    scale = size / 256
    if profile.name == "random":
        radii = rng.uniform(15, 50, 2) * scale
        return blob(rng, size, *rng.uniform(0.25 * size, 0.75 * size, 2), *radii)
    noise = profile.amp * scale * smooth_field(rng, size, profile.grid)
    return np.asarray(signed_distance(truth) + profile.bias * scale + noise > 0, dtype=bool)


def _token(user: VirtualUser, screen: Json) -> str:
    for _, data in user.buttons(screen):
        parts = data.split(":")
        if len(parts) >= 2 and parts[1]:
            return parts[1]
    raise LookupError("no crop buttons on the latest message")


@dataclass
class VirtualVolunteer:
    """One simulated person at a phone."""

    user: VirtualUser
    profile: Profile
    oracle: Oracle
    rng: np.random.Generator
    timeout: float = 20.0
    screen: Json = field(default_factory=dict)
    answers: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    # Set to open the Mini App editor when the bot offers it (else the chat tools are used).
    http: aiohttp.ClientSession | None = None

    async def join(self, nickname: str | None = None) -> Event:
        """/start, agree, nickname or skip; returns the first crop the bot sent."""
        await self.user.send("/start")
        await self.user.next_event("sendMessage", timeout=self.timeout)  # welcome
        await self.user.next_event("sendMessage", timeout=self.timeout)  # terms + consent
        await self.user.press("✅ I agree")
        await self.user.next_event("editMessageText", timeout=self.timeout)
        if nickname:
            await self.user.send(nickname)
        else:
            await self.user.press("Skip")
        return await self._await_screen("sendPhoto")

    def _look(self) -> None:
        """Read the photo the bot sent (a phone would show it)."""
        with PILImage.open(io.BytesIO(self.user.photo(self.screen))) as image:
            image.verify()

    async def _await_screen(self, *methods: str) -> Event:
        """The bot's next photo or edit of the crop message; it becomes the screen."""
        event = await self.user.next_event(
            *(methods or ("editMessageMedia", "sendPhoto")), timeout=self.timeout
        )
        if event.message is not None:
            self.screen = event.message
        return event

    async def _press(self, label: str) -> None:
        await self.user.press(label, message_id=self.screen.get("message_id"))

    async def answer(self) -> str:
        """Answer the crop on screen; returns what was done (accept, adjust, ...)."""
        self._look()
        caption = self.screen.get("caption") or ""
        if "score" in caption or "Right" in caption or "actually fine" in caption:
            await self._press("Next")  # gold feedback: move on
            await self._await_screen()
            return "next"
        token = _token(self.user, self.screen)
        # A lazy volunteer does not look: no truth lookup (it also keeps load tests light).
        seen = None if self.profile.name == "lazy" else await self.oracle.seen(token)
        verdict = self._decide(seen)
        if verdict == "adjust" and seen is not None:
            try:
                verdict = await self._adjust(token, seen)
            except LookupError:
                # The crop finished while they were fixing it and the bot already shows the
                # next one (the buttons they wanted are gone): carry on with that.
                return "moved on"
        else:
            label = {"accept": "✅", "reject": "❌", "unsure": "🤷"}[verdict]
            await self._press(label)
        await self._await_screen()
        if verdict == "late":
            return verdict
        self.answers += 1
        self.verdicts[verdict] = self.verdicts.get(verdict, 0) + 1
        return verdict

    def _decide(self, seen: Seen | None) -> str:
        p = self.profile
        if p.name == "lazy":
            return "accept"
        if seen is None:
            return "unsure"
        if p.name == "random":
            return str(self.rng.choice(["accept", "reject", "adjust", "unsure"]))
        quality = dice(seen.proposal, seen.truth)
        ok = quality + self.rng.normal(0, p.perception) >= p.tau
        if p.name == "adversarial":
            return "reject" if ok else "accept"
        if ok:
            return "accept"
        return "adjust" if self.rng.random() < p.adjust else "reject"

    async def _draw_in_editor(self, url: str, seen: Seen) -> bool:
        """Open the Mini App (as Telegram would, with signed initData), draw, and submit.

        Returns False when the crop was no longer theirs to answer (it finished meanwhile).
        """
        assert self.http is not None
        page, _, query = url.partition("?")
        token = urllib.parse.parse_qs(query)["t"][0]
        api = page.rsplit("/app", 1)[0] + "/api"
        headers = {"Authorization": f"tma {self.user.init_data()}"}
        async with self.http.get(f"{api}/crop", params={"t": token}, headers=headers) as reply:
            if reply.status == 409:
                return False
            reply.raise_for_status()
            opened = await reply.json()
        mask = draw(self.profile, seen.truth, self.rng)
        body = {"t": token, "mask": codecs.encode_runs(mask), "size": list(mask.shape)}
        assert [opened["height"], opened["width"]] == list(mask.shape)
        async with self.http.post(f"{api}/submit", json=body, headers=headers) as reply:
            if reply.status == 409:  # the crop finished (or the lease ran out) meanwhile
                return False
            reply.raise_for_status()
        return True

    async def _adjust(self, token: str, seen: Seen) -> str:
        """Fix the outline with the chat tools, as well as this volunteer manages.

        A careful volunteer checks the result before sending it: a fix that came out worse than
        the proposal is abandoned, and the proposal rejected instead. Returns the verdict sent.
        """
        await self._press("✏️")
        await self._await_screen()
        editors = self.user.web_apps(self.screen)
        if editors and self.http is not None and self.rng.random() < EDITOR_SHARE:
            if await self._draw_in_editor(editors[0][1], seen):
                return "adjust"
            await self.user.send("/next")  # as a person would: on to another crop
            return "late"
        scores = [dice(mask, seen.truth) for _, mask in seen.options]
        before = dice(seen.proposal, seen.truth)
        best = int(np.argmax(scores)) if scores else -1
        careful = self.profile.care >= 1.0
        if scores and (scores[best] >= max(0.85, before) or not careful):
            pick = (
                best
                if self.rng.random() < self.profile.care
                else int(self.rng.integers(len(scores)))
            )
            await self._press("Options")
            await self._await_screen()
            await self._press(tasks.option_label(pick, seen.options[pick][0]))
            await self._await_screen()
        else:
            await self._press("Tap the grid")
            await self._await_screen()
            for cell in _cells_covering(seen.truth):
                await self._press(cell)
                await self._await_screen()
            await self._press("🔄")
            await self._await_screen()
        if careful and dice(await self.oracle.working(token), seen.truth) < before:
            await self._press("⬅️")  # back to the verdict buttons
            await self._await_screen()
            await self._press("❌")
            return "reject"
        await self._press("✔️")
        return "adjust"


def _cells_covering(truth: Mask, cells: int = render.GRID) -> list[str]:
    """The grid cells the truth's bounding box spans (what a careful volunteer taps)."""
    ys, xs = np.nonzero(truth)
    if ys.size == 0:
        return ["A1"]
    h, w = truth.shape
    labels = render.cell_labels(cells)
    rows = range(int(ys.min() * cells // h), int(ys.max() * cells // h) + 1)
    cols = range(int(xs.min() * cells // w), int(xs.max() * cells // w) + 1)
    return [labels[r * cells + c] for r in rows for c in cols]
