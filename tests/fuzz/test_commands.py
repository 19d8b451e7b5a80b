"""Coordinator commands with random arguments, through the emulator and the real bot.

Each command gets a reply, never the error handler's apology or a logged exception; and a
command that changed nothing audited changed nothing at all (a refusal writes nothing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import col, func, select

from bot.db.models import AuditEntry, Campaign, Job, Volunteer
from bot.telegram import texts
from tests.fuzz.conftest import budget, tried
from tests.helpers.bot import World, copied_world, prepare

ADMIN, COORDINATOR = 7101, 7102
COMMANDS = [
    "grant",
    "revoke",
    "projects",
    "use",
    "jobs",
    "rules",
    "campaign",
    "close",
    "export",
    "status",
    "volunteers",
    "volunteer",
    "ban",
    "unban",
    "broadcast",
    "gold",
    "review",
    "synthesize",
    "pause",
    "resume",
    "newproject",
]
RULE_NAMES = ["min_answers", "max_answers", "gold_rate", "retire_confidence", "tutorial_tasks"]
# Ids and counts as users mistype them: other scripts' digits, past 64 bits, signs, floats.
numeric = st.one_of(
    st.integers(-(10**25), 10**25).map(str),
    st.integers(2**63 - 3, 2**63 + 3).map(str),
    st.sampled_from(["²", "٣", "\uff11\uff12", "0", "00", "-0", "1e3", "0x10", "1.5", "9" * 30]),
)
word = st.one_of(
    numeric,
    st.text(alphabet=st.characters(blacklist_categories=["Z", "C"]), min_size=1, max_size=12),
    st.sampled_from(["me", "pause", "resume", "close", "expert", "admin", "volunteer", "phantoms"]),
    st.builds(
        "{}={}".format,
        st.sampled_from([*RULE_NAMES, "", "x"]),
        st.sampled_from(["nan", "inf", "-1", "1e309", "0.5", "", "=", "3"]) | st.text(max_size=6),
    ),
)
arguments = st.lists(word, max_size=3).map(" ".join) | st.text(max_size=60)


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-commands")
    asyncio.run(prepare(root, n=4))
    return root


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Desk:
    world: World
    errors: _Errors


@pytest.fixture
async def desk(prepared: Path, tmp_path: Path) -> AsyncIterator[Desk]:
    errors = _Errors()
    logging.getLogger("bot").addHandler(errors)
    try:
        async with copied_world(prepared, tmp_path / "world", frozenset({ADMIN})) as world:
            admin = world.emulator.user(ADMIN, "A")
            await admin.send(f"/grant {COORDINATOR} coordinator")
            await admin.next_event("sendMessage")
            yield Desk(world, errors)
    finally:
        logging.getLogger("bot").removeHandler(errors)


async def _state(world: World) -> tuple[int, Any]:
    """(audit entries, everything a coordinator command may change)."""
    async with world.services.sessionmaker() as session:
        audits = (await session.exec(select(func.count()).select_from(AuditEntry))).one()
        campaigns = (await session.exec(select(Campaign).order_by(col(Campaign.id)))).all()
        people = (await session.exec(select(Volunteer).order_by(col(Volunteer.id)))).all()
        jobs = (await session.exec(select(func.count()).select_from(Job))).one()
    return audits, (
        [c.model_dump(exclude={"updated_at"}) for c in campaigns],
        [(v.id, v.role, v.banned, v.current_campaign_id) for v in people],
        jobs,
    )


def _heavy(command: str, args: str) -> bool:
    """A /synthesize that would really train (a valid N, or none): minutes of CPU, skipped."""
    words = args.split()
    if command != "synthesize":
        return False
    return not words or (len(words) == 1 and words[0].isascii() and words[0].isdigit())


async def _quiet(world: World, chat: int) -> None:
    size = -1
    for _ in range(100):
        now = len(world.emulator.chat_log(chat).events)
        if now == size and not world.emulator.pending_updates:
            return
        size = now
        await asyncio.sleep(0.1)


@budget(60, long=600)
@given(st.sampled_from(COMMANDS), arguments)
async def test_coordinator_commands_with_random_arguments_reply_and_refuse_cleanly(
    desk: Desk, command: str, args: str
) -> None:
    if _heavy(command, args):
        return
    tried("coordinator command arguments")
    world = desk.world
    desk.errors.records.clear()
    actor = ADMIN if command in ("grant", "revoke") else COORDINATOR
    user = world.emulator.user(actor, "C")
    await _quiet(world, actor)
    start = len(world.emulator.chat_log(actor).events)
    audits, before = await _state(world)
    text = f"/{command} {args}".rstrip()
    await user.send(text)
    reply = await user.next_event("sendMessage", "sendPhoto", "sendDocument", timeout=30)
    await _quiet(world, actor)
    said = [e.params.get("text") or e.params.get("caption") for e in [reply]]
    assert any(said), f"{text!r} got an empty reply"
    events = world.emulator.chat_log(actor).events[start:]
    assert not [e for e in events if e.params.get("text") == texts.ERROR], f"{text!r} crashed"
    assert not desk.errors.records, desk.errors.records[0].getMessage()
    audits_after, after = await _state(world)
    if audits_after == audits:  # nothing audited: nothing changed
        assert after == before, f"{text!r} changed state without an audit entry"
