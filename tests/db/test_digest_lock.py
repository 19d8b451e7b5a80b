"""A digest round talks to Telegram outside any transaction: on SQLite every transaction holds the
write lock, so a slow send must not keep the volunteers' answers (or the inbox) waiting."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import leaderboard
from bot.db import migrate
from bot.db.engine import make_engine, make_sessionmaker
from bot.db.models import Campaign
from bot.telegram.app import send_digests


class _SlowBot:
    """Sends a message only once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sending = asyncio.Event()
        self.sent: list[int] = []

    async def send_message(self, chat_id: int, text: str) -> None:
        self.sending.set()
        await self.release.wait()
        self.sent.append(chat_id)


async def test_a_slow_digest_send_holds_no_database_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    engine = make_engine(url)
    sessionmaker = make_sessionmaker(engine)
    digest = leaderboard.Digest(1, 501, 2, 1, 15, [], (1, 2))

    async def pending(session: AsyncSession) -> list[leaderboard.Digest]:
        await session.exec(select(Campaign))  # a read: the transaction (and its lock) begins
        return [digest]

    async def marked(session: AsyncSession, **_: Any) -> int:
        return 2

    monkeypatch.setattr(leaderboard, "pending_digests", pending)
    monkeypatch.setattr(leaderboard, "mark_notified", marked)
    bot = _SlowBot()
    app = SimpleNamespace(
        bot=bot, bot_data={"services": SimpleNamespace(sessionmaker=sessionmaker)}
    )
    try:
        round_ = asyncio.create_task(send_digests(cast(Any, app)))
        await asyncio.wait_for(bot.sending.wait(), 5)

        async def write() -> None:  # what an answer does meanwhile
            async with sessionmaker() as session:
                session.add(Campaign(name="meanwhile"))
                await session.commit()

        await asyncio.wait_for(write(), 3)  # not the busy timeout's 10 s
        bot.release.set()
        assert await asyncio.wait_for(round_, 5) == 1
        assert bot.sent == [501]
    finally:
        bot.release.set()
        await engine.dispose()
