"""What every handler reaches through ``context.services``: one object built at the entry point."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import Update
from telegram.ext import Application, CallbackContext, ExtBot

from bot.campaign.crowd import Crowd
from bot.campaign.refine import Refiner
from bot.campaign.sources import ArchiveLimits
from bot.campaign.synthesis import SynthesisOptions
from bot.campaign.volunteers import volunteer_for
from bot.db.models import Volunteer
from bot.jobs.proposals import LocalRunner, Runner
from bot.store.files import FileStore


@dataclass
class BotServices:
    """Sessions, files, the live crowd model, the refiner and the photo cache.

    ``photos`` maps a rendered image's content key to the Telegram ``file_id`` it got, so a crop
    shown before is re-sent without uploading it again.
    """

    sessionmaker: async_sessionmaker[AsyncSession]
    store: FileStore
    crowd: Crowd
    refiner: Refiner
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng())
    photos: dict[str, str] = field(default_factory=dict)
    digest_seconds: float = 3600.0
    admins: frozenset[int] = frozenset()
    limits: ArchiveLimits = field(default_factory=ArchiveLimits)
    # Runs the proposals job that follows an upload (in-process by default: one bot, one machine).
    runner: Runner = field(default_factory=lambda: LocalRunner(workers=0))
    # The synthesis job's defaults (/synthesize) and where it keeps its checkpoints.
    synthesis: SynthesisOptions = field(default_factory=SynthesisOptions)
    data_dir: Path = Path("var")
    webapp_url: str | None = None  # the Mini App editor's page; None: chat grid only


class BotContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """The handlers' context: PTB's, plus ``services``."""

    @property
    def services(self) -> BotServices:
        """The services the entry point put into ``bot_data``."""
        services = self.bot_data["services"]
        assert isinstance(services, BotServices)
        return services


BotApplication = Application[
    ExtBot[None], BotContext, dict[Any, Any], dict[Any, Any], dict[Any, Any], Any
]


async def sender(session: AsyncSession, update: Update) -> Volunteer:
    """The volunteer row of whoever sent the update (created on first contact).

    Roles are checked by the use cases, per action, never here.
    """
    assert update.effective_user is not None
    return await volunteer_for(session, telegram_user_id=update.effective_user.id)
