"""Callback data: the parser alone, then forged, truncated, foreign and replayed presses end to end.

Telegram hands the bot whatever ``callback_data`` a client sends, so a modified client can press
buttons the bot never drew. Every such press must get a clear answer (a toast with text), never
the error handler's apology, and must store nothing.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import string
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import col, func, select

from bot.campaign import render
from bot.campaign.tasks import TAP_MODES
from bot.db.models import Answer, Assignment, Volunteer
from bot.sim.chat import CallbackAnswer, VirtualUser
from bot.sim.emulator import BotApiEmulator
from bot.sim.volunteers import VirtualVolunteer, profile
from bot.sim.wire import Json
from bot.telegram import texts
from bot.telegram.keyboards import MAX_CALLBACK_BYTES, Action, Press
from tests.fuzz.conftest import budget, tried
from tests.helpers.bot import World, copied_world, prepare

URLSAFE = string.ascii_letters + string.digits + "-_"
TOKENLESS = frozenset(
    {Action.CONSENT, Action.DECLINE, Action.SKIP_NICK, Action.FORGET, Action.KEEP, Action.NEXT}
)
TOKEN_BOUND = sorted(set(Action) - TOKENLESS)
CELLS = frozenset(render.cell_labels(render.GRID))
VICTIM, INTRUDER = 1101, 1102

# Text that looks like callback data more often than uniform text does.
fields = st.text(alphabet=URLSAFE + ":/%é\x00 ", max_size=40)
near_valid = st.builds(
    lambda action, rest: f"{action}:{rest}",
    st.sampled_from([a.value for a in Action] + ["", "x", "cu", "jr", "rv"]),
    fields,
)
garbage = st.one_of(
    st.text(max_size=120),
    st.binary(max_size=120).map(lambda b: b.decode("latin-1")),
    near_valid,
)


# -- the parser alone ---------------------------------------------------------------------------


@budget(400)
@given(garbage)
def test_press_decode_returns_a_press_or_raises_value_error(data: str) -> None:
    tried("Press.decode")
    try:
        press = Press.decode(data)
    except ValueError:
        return
    assert isinstance(press, Press)
    assert len(data.encode()) <= MAX_CALLBACK_BYTES
    assert Press.decode(press.encode()) == press  # what it accepted is something it can send


@budget(300)
@given(st.sampled_from(list(Action)), st.text(max_size=70), st.text(max_size=70))
def test_press_encode_refuses_or_round_trips(action: Action, token: str, arg: str) -> None:
    tried("Press.encode/decode")
    press = Press(action, token, arg)
    try:
        data = press.encode()
    except ValueError:
        return
    assert len(data.encode()) <= MAX_CALLBACK_BYTES
    assert Press.decode(data) == press


@budget(200)
@given(
    st.sampled_from(list(Action)),
    st.text(alphabet=URLSAFE, min_size=12, max_size=12),  # secrets.token_urlsafe(9)
    st.one_of(
        st.just(""),
        st.integers(0, 99).map(str),
        st.sampled_from(sorted(CELLS)),
        st.sampled_from(TAP_MODES),
    ),
)
def test_every_button_the_bot_draws_encodes_and_round_trips(
    action: Action, token: str, arg: str
) -> None:
    tried("Press.encode/decode")
    press = Press(action, token, arg)
    assert Press.decode(press.encode()) == press


# -- end to end ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-presses")
    asyncio.run(prepare(root))
    return root


class _Errors(logging.Handler):
    """Collects ERROR records (the error handler logs every unexpected exception)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Stage:
    """A running bot with a victim and an intruder, each on a crop after two answers."""

    world: World
    victim: VirtualVolunteer
    intruder: VirtualVolunteer
    replays: list[str]  # callback data of buttons on crops the victim already answered
    answers: int  # Answer rows when the fuzzing began
    errors: _Errors
    ids: Iterator[int] = field(default_factory=itertools.count)


async def _volunteer(world: World, user_id: int, replays: list[str]) -> VirtualVolunteer:
    rng = np.random.default_rng(user_id)
    volunteer = VirtualVolunteer(
        world.emulator.user(user_id, f"U{user_id}"), profile("good", rng), world.oracle, rng
    )
    await volunteer.join()
    while len(replays) < 4:
        replays += [d for _, d in volunteer.user.buttons(volunteer.screen) if ":" in d]
        await volunteer.answer()
    return volunteer


@pytest.fixture
async def stage(prepared: Path, tmp_path: Path) -> AsyncIterator[Stage]:
    errors = _Errors()
    logging.getLogger("bot").addHandler(errors)
    try:
        async with copied_world(prepared, tmp_path / "world") as world:
            replays: list[str] = []
            victim = await _volunteer(world, VICTIM, replays)
            intruder = await _volunteer(world, INTRUDER, [])
            await _settle(world.emulator, (VICTIM, INTRUDER))
            async with world.services.sessionmaker() as session:
                answers = (await session.exec(select(func.count()).select_from(Answer))).one()
            yield Stage(world, victim, intruder, replays, answers, errors)
    finally:
        logging.getLogger("bot").removeHandler(errors)


async def _settle(emulator: BotApiEmulator, chats: tuple[int, ...]) -> None:
    """Wait until the bot has been quiet in ``chats`` for a moment (its follow-ups are done)."""
    sizes: list[int] = []
    for _ in range(100):
        now = [len(emulator.chat_log(c).events) for c in chats]
        if now == sizes and not emulator.pending_updates:
            return
        sizes = now
        await asyncio.sleep(0.1)


async def _press(
    emulator: BotApiEmulator, user: VirtualUser, query_id: str, data: str
) -> CallbackAnswer:
    """Push a press of ``data`` on the user's latest keyboard; return the bot's answer to it."""
    message: Json = copy.deepcopy(
        next(
            m
            for m in reversed(emulator.chat_messages(user.id))
            if m["from"].get("is_bot") and m.get("reply_markup")
        )
    )
    emulator.open_callback_query(query_id, user_id=user.id, chat_id=user.id)
    await emulator.push_update(
        {
            "callback_query": {
                "id": query_id,
                "from": user.user,
                "chat_instance": "fuzz",
                "message": message,
                "data": data,
            }
        }
    )
    for _ in range(200):
        found = [a for a in emulator.callback_answers(user.id) if a.query_id == query_id]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"the bot never answered the press {data!r}")


async def _latest_token(world: World, user_id: int) -> str:
    """The token of the crop last leased to a volunteer (answered or not)."""
    async with world.services.sessionmaker() as session:
        volunteer = (
            await session.exec(select(Volunteer).where(Volunteer.telegram_user_id == user_id))
        ).one()
        latest = (
            await session.exec(
                select(Assignment)
                .where(Assignment.volunteer_id == volunteer.id)
                .order_by(col(Assignment.id).desc())
            )
        ).first()
    assert latest is not None
    return latest.token


def _bad_arg(action: Action) -> st.SearchStrategy[str]:
    """Args the bot never sends with ``action`` (for PICK: not an offered option number)."""
    if action == Action.PICK:
        return st.one_of(
            st.text(alphabet=URLSAFE, min_size=1, max_size=20).filter(lambda s: not s.isdigit()),
            st.integers(50, 10**30).map(str),
        )
    if action == Action.CELL:
        return st.text(alphabet=URLSAFE, max_size=20).filter(lambda s: s not in CELLS)
    return st.text(alphabet=URLSAFE, max_size=20).filter(lambda s: s not in TAP_MODES)


@budget(30, long=300)
@given(data=st.data())
async def test_forged_foreign_and_replayed_presses_are_refused_and_store_nothing(
    stage: Stage, data: st.DataObject
) -> None:
    emulator = stage.world.emulator
    stage.errors.records.clear()  # each example answers for itself (shrinking replays them)
    seen = {u: len(emulator.chat_log(u).events) for u in (VICTIM, INTRUDER)}
    kind = data.draw(
        st.sampled_from(
            [
                "garbage",
                "truncated",
                "over-long",
                "foreign",
                "own-bad-arg",
                "random-token",
                "replay",
                "coordinator",
            ]
        ),
        label="kind",
    )
    presser = stage.intruder.user
    if kind == "garbage":
        payload = data.draw(
            garbage.filter(lambda d: d.split(":")[0] not in TOKENLESS),
            label="data",
        )
    elif kind in ("truncated", "over-long"):
        reals = [d for _, d in presser.buttons(presser.message) if ":" in d] + stage.replays
        real = reals[data.draw(st.integers(0, 63), label="which") % len(reals)]
        if kind == "truncated":
            payload = real[: data.draw(st.integers(0, 63), label="cut") % len(real)]
        else:
            tail = data.draw(st.text(min_size=1, max_size=80), label="tail")
            payload = (real + tail).ljust(MAX_CALLBACK_BYTES + 1, "x")
    elif kind == "foreign":  # the victim's live crop, pressed by the intruder
        action = data.draw(st.sampled_from(TOKEN_BOUND), label="action")
        payload = f"{action.value}:{await _latest_token(stage.world, VICTIM)}"
    elif kind == "own-bad-arg":
        action = data.draw(st.sampled_from([Action.PICK, Action.CELL, Action.TAP]), label="action")
        token = await _latest_token(stage.world, INTRUDER)
        payload = f"{action.value}:{token}:{data.draw(_bad_arg(action), label='arg')}"
    elif kind == "random-token":
        action = data.draw(st.sampled_from(TOKEN_BOUND), label="action")
        token = data.draw(st.text(alphabet=URLSAFE, max_size=32), label="token")
        payload = f"{action.value}:{token}"
    elif kind == "coordinator":  # the other keyboards' prefixes: Use, Retry, review
        prefix = data.draw(st.sampled_from(["cu:", "jr:", "rv:"]), label="prefix")
        payload = prefix + data.draw(
            st.one_of(fields, st.from_regex(r"[0-9²]{1,30}(:[0-9s]{1,3})?", fullmatch=True)),
            label="rest",
        )
    else:  # a button of a crop the victim already answered, pressed again by either of them
        payload = stage.replays[data.draw(st.integers(0, 63), label="which") % len(stage.replays)]
        presser = data.draw(st.sampled_from([stage.victim.user, stage.intruder.user]))
    if kind != "garbage" and payload.split(":")[0] in TOKENLESS:
        return  # a truncation that became a button anyone may press (Next, Not now, ...)
    tried("callback press (end to end)")
    answer = await _press(emulator, presser, f"fuzz{next(stage.ids)}", payload)
    await _settle(emulator, (VICTIM, INTRUDER))
    assert answer.text, f"{kind} press {payload!r} got no explanation"
    assert answer.text != texts.ERROR
    assert not stage.errors.records, stage.errors.records[0].getMessage()
    for user_id, start in seen.items():
        events = emulator.chat_log(user_id).events[start:]
        apologies = [e for e in events if e.params.get("text") == texts.ERROR]
        assert not apologies, f"{kind} press {payload!r} reached the error handler"
    async with stage.world.services.sessionmaker() as session:
        answers = (await session.exec(select(func.count()).select_from(Answer))).one()
        strays = (
            await session.exec(
                select(func.count())
                .select_from(Answer)
                .join(Assignment, col(Assignment.id) == col(Answer.assignment_id))
                .where(col(Assignment.volunteer_id) != col(Answer.volunteer_id))
            )
        ).one()
    assert answers == stage.answers, f"{kind} press {payload!r} stored an answer"
    assert strays == 0
