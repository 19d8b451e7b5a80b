"""The bot's readiness probes: its intake workers are alive, and Telegram was reached lately."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from telegram.error import TelegramError

from bot.campaign.health import Readiness
from bot.telegram.context import BotApplication
from bot.telegram.intake import Intake

logger = logging.getLogger(__name__)

STALE_SECONDS = 60.0  # no word from Telegram for this long: ask it (getMe) before saying ready


def register(
    readiness: Readiness,
    app: BotApplication,
    intake: Intake,
    workers: Sequence[asyncio.Task[Any]],
    *,
    stale_seconds: float = STALE_SECONDS,
) -> None:
    """Add the ``intake`` and ``telegram`` probes of a running bot to ``readiness``."""

    async def workers_alive() -> str | None:
        stopped = sorted(t.get_name() for t in workers if t.done())
        return f"workers stopped: {', '.join(stopped)}" if stopped else None

    async def telegram_reached() -> str | None:
        age = intake.contact_age()
        if age is not None and age <= stale_seconds:
            return None
        try:  # a quiet webhook, or polling stuck: ask Telegram directly
            await app.bot.get_me()
        except TelegramError as error:
            since = "never" if age is None else f"not for {age:.0f} s"
            return f"not reached ({since}; {type(error).__name__})"
        intake.touch()
        return None

    readiness.add("intake", workers_alive, vital=True)
    readiness.add("telegram", telegram_reached)
