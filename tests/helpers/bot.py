"""A whole bot world for end-to-end tests: database, phantom campaign, emulator, running bot."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import select

from bot.campaign.proposals import run_proposals
from bot.campaign.services import Services
from bot.db import migrate
from bot.db.models import Campaign
from bot.jobs.proposals import LocalRunner, ProposerSpec
from bot.settings import Settings
from bot.sim.emulator import BotApiEmulator, Limits
from bot.sim.volunteers import Oracle
from bot.sim.wire import Json
from bot.telegram.app import BotOptions, bot_services, run_bot
from bot.telegram.context import BotServices
from bot.web.miniapp import MiniApp, MiniAppServer
from tests.helpers.campaigns import phantom_campaign


@dataclass
class World:
    """Everything a test talks to."""

    settings: Settings
    services: Services
    emulator: BotApiEmulator
    handlers: BotServices
    oracle: Oracle
    campaign_id: int
    editor: MiniAppServer | None = None


async def prepare(root: Path, *, database_url: str | None = None, n: int = 8) -> Settings:
    """A migrated database with a proposed phantom campaign under ``root``."""
    settings = Settings(
        data_dir=root / "data", database_url=database_url or f"sqlite:///{root / 'bot.db'}"
    )
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    services = Services.from_settings(settings)
    try:
        campaign = await phantom_campaign(
            services.sessionmaker, services.store, root / "phantoms", n=n
        )
        await run_proposals(
            services.sessionmaker, services.store, campaign, ProposerSpec(), LocalRunner(0)
        )
        async with services.sessionmaker() as session:
            row = await session.get_one(Campaign, campaign.id)
            row.min_answers, row.max_answers, row.tutorial_tasks = 2, 4, 1
            row.retire_confidence, row.answer_floor_seconds = 0.6, 0.0
            session.add(row)
            await session.commit()
    finally:
        await services.close()
    return settings


@contextlib.asynccontextmanager
async def running_bot(
    settings: Settings,
    *,
    limits: Limits | None = None,
    digest_seconds: float = 3600.0,
    flood: tuple[float, float] = (50.0, 50.0),
    admins: frozenset[int] = frozenset(),
    editor: bool = False,
) -> AsyncIterator[World]:
    """The emulator and the real bot (polling) in this event loop; stops both on exit.

    With ``editor`` the Mini App runs too, on an ephemeral port, and the Adjust step offers it.
    """
    emulator = await BotApiEmulator(limits=limits).start()
    services = Services.from_settings(settings)
    options = BotOptions(
        token=emulator.token,
        base_url=emulator.base_url,
        base_file_url=emulator.base_file_url,
        poll_timeout=1,
        digest_seconds=digest_seconds,
        flood_rate=flood[0],
        flood_burst=flood[1],
    )
    handlers = bot_services(services, ProposerSpec(), digest_seconds=digest_seconds, admins=admins)
    server = None
    if editor:
        miniapp = MiniApp(
            sessionmaker=handlers.sessionmaker,
            store=handlers.store,
            crowd=handlers.crowd,
            refiner=handlers.refiner,
            bot_token=emulator.token,
        )
        server = MiniAppServer(miniapp, port=0)
        await server.start()  # first: the keyboard needs its URL
        handlers.webapp_url = f"{server.base_url}/app/"
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_bot(options, handlers, stop=stop, editor=server.miniapp if server else None)
    )
    async with services.sessionmaker() as session:
        campaign = (await session.exec(select(Campaign))).one()
        assert campaign.id is not None
    try:
        yield World(
            settings,
            services,
            emulator,
            handlers,
            Oracle(services.sessionmaker, services.store),
            campaign.id,
            server,
        )
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 20)
        finally:
            if server is not None:
                await server.stop()
            await emulator.stop()
            await services.close()


async def press_as(
    emulator: BotApiEmulator,
    intruder_id: int,
    message: Json | None,
    data: str,
    query_id: str = "intrude",
) -> None:
    """Someone else presses a button of a message they saw (e.g. forwarded, or in a group)."""
    assert message is not None
    intruder = emulator.user(intruder_id, "Intruder")
    emulator.open_callback_query(query_id, user_id=intruder_id, chat_id=message["chat"]["id"])
    await emulator.push_update(
        {
            "callback_query": {
                "id": query_id,
                "from": intruder.user,
                "chat_instance": "x",
                "message": message,
                "data": data,
            }
        }
    )


def copied_settings(prepared: Path, root: Path) -> Settings:
    """Settings for a private copy at ``root`` of a prepared campaign (one per test module)."""
    shutil.copytree(prepared, root)
    return Settings(data_dir=root / "data", database_url=f"sqlite:///{root / 'bot.db'}")


@contextlib.asynccontextmanager
async def copied_world(
    prepared: Path,
    root: Path,
    admins: frozenset[int] = frozenset(),
    *,
    digest_seconds: float = 3600.0,
) -> AsyncIterator[World]:
    """The bot on a private copy of a prepared campaign."""
    settings = copied_settings(prepared, root)
    async with running_bot(settings, admins=admins, digest_seconds=digest_seconds) as world:
        yield world
