"""The one wiring function (every handler in one place) and the bot's run loop.

``run_bot`` is what ``medcrowd run`` calls: long polling by default, or a webhook (aiohttp,
secret token checked in constant time, updates persisted before the 200) when a public URL is
configured. Either way updates go through the durable inbox (``bot.telegram.intake``). The Mini
App editor (``bot.web.miniapp``), when configured, is handed in duck-typed: ``run_bot`` attaches
the bot's follow-up to its answers and, in polling mode, starts and stops its small server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import BotCommand
from telegram.ext import (
    AIORateLimiter,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.campaign import inbox, jobrecords, leaderboard
from bot.campaign.crowd import Crowd
from bot.campaign.editor import EditorAnswer
from bot.campaign.flood import FloodGate
from bot.campaign.health import Phase, Readiness
from bot.campaign.refine import Refiner
from bot.campaign.services import Services
from bot.campaign.synthesis import SynthesisOptions
from bot.db import notify
from bot.jobs.proposals import ProposerSpec
from bot.telegram import coordinator, probes, review, texts, uploads, volunteer
from bot.telegram.context import BotApplication, BotContext, BotServices
from bot.telegram.intake import ALLOWED_UPDATES, Intake
from bot.telegram.transport import AiohttpRequest

logger = logging.getLogger(__name__)
JOB_SWEEP_SECONDS = 60.0  # how often the front marks failed the jobs whose process died


class EditorHook(Protocol):
    """The Mini App (``bot.web.miniapp.MiniApp``) as the bot sees it."""

    def attach(self, on_answer: Callable[[EditorAnswer], Awaitable[None]]) -> None:
        """Call ``on_answer`` after each answer the editor stores."""
        ...


class Server(Protocol):
    """A web server the bot runs alongside it (the Mini App's, in polling mode)."""

    async def start(self) -> None:
        """Listen."""
        ...

    async def stop(self) -> None:
        """Stop listening."""
        ...


@dataclass(frozen=True)
class BotOptions:
    """How the bot talks to Telegram (built from the settings at the entry point)."""

    token: str
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str | None = None
    max_retries: int = 3
    rate_limit: bool = True
    poll_timeout: int = 10
    digest_seconds: float = 3600.0
    flood_rate: float = 3.0
    flood_burst: float = 8.0
    keep_updates_hours: float = 24.0  # retention of processed raw updates in the inbox
    transport: Literal["aiohttp", "httpx"] = "aiohttp"

    @property
    def file_url(self) -> str:
        """``base_file_url``, else derived from ``base_url`` (``.../bot`` -> ``.../file/bot``)."""
        if self.base_file_url:
            return self.base_file_url
        root, _, tail = self.base_url.rstrip("/").rpartition("/")
        return f"{root}/file/{tail}"


def build_application(options: BotOptions, services: BotServices) -> BotApplication:
    """The PTB application with every handler; no updater (the intake feeds it)."""
    builder: Any = (
        ApplicationBuilder()
        .token(options.token)
        .base_url(options.base_url)
        .base_file_url(options.file_url)
        .updater(None)
        .context_types(ContextTypes(context=BotContext))
    )
    if options.transport == "aiohttp":
        builder = builder.request(AiohttpRequest()).get_updates_request(
            AiohttpRequest(pool_size=1, read_timeout=options.poll_timeout + 5.0)
        )
    else:
        builder = builder.connection_pool_size(64)
    if options.rate_limit:
        builder = builder.rate_limiter(AIORateLimiter(max_retries=options.max_retries))
    app: BotApplication = builder.build()
    app.bot_data["services"] = services
    commands: list[tuple[str, Any]] = [
        ("start", volunteer.on_start),
        ("next", volunteer.on_next),
        ("help", volunteer.on_help),
        ("pause", volunteer.on_pause),
        ("resume", volunteer.on_pause),
        ("forget", volunteer.on_forget),
        ("leaderboard", volunteer.on_leaderboard),
        ("me", volunteer.on_profile),
    ]
    commands += [
        ("grant", coordinator.on_grant),
        ("revoke", coordinator.on_grant),
        ("projects", coordinator.on_projects),
        ("newproject", coordinator.on_newproject),
        ("use", coordinator.on_use),
        ("jobs", coordinator.on_jobs),
        ("rules", coordinator.on_rules),
        ("campaign", coordinator.on_campaign),
        ("export", coordinator.on_export),
        ("status", coordinator.on_status),
        ("volunteers", coordinator.on_volunteers),
        ("volunteer", coordinator.on_volunteers),
        ("ban", coordinator.on_ban),
        ("unban", coordinator.on_ban),
        ("broadcast", coordinator.on_broadcast),
        ("close", coordinator.on_campaign),
        ("gold", uploads.on_gold),
        ("review", review.on_review),
        ("synthesize", uploads.on_synthesize),
    ]
    for name, callback in commands:
        app.add_handler(CommandHandler(name, callback, filters=filters.ChatType.PRIVATE))
    app.add_handler(
        CallbackQueryHandler(coordinator.on_use_press, pattern=f"^{coordinator.USE_PREFIX}")
    )
    app.add_handler(
        CallbackQueryHandler(uploads.on_retry_press, pattern=f"^{uploads.RETRY_PREFIX}")
    )
    app.add_handler(CallbackQueryHandler(review.on_press, pattern=f"^{review.PREFIX}"))
    app.add_handler(CallbackQueryHandler(volunteer.on_press))
    private = filters.ChatType.PRIVATE
    app.add_handler(MessageHandler(filters.Document.ALL & private, uploads.on_document))
    app.add_handler(MessageHandler(filters.PHOTO & private, uploads.on_photo))
    app.add_handler(
        MessageHandler(
            filters.TEXT & ~filters.COMMAND & filters.ChatType.PRIVATE, volunteer.on_text
        )
    )
    app.add_error_handler(volunteer.on_error)
    return app


def bot_services(
    services: Services,
    spec: ProposerSpec,
    *,
    digest_seconds: float,
    admins: frozenset[int] = frozenset(),
    webapp_url: str | None = None,
    synthesis: SynthesisOptions | None = None,
) -> BotServices:
    """The handlers' services from the application's."""
    return BotServices(
        synthesis=synthesis or SynthesisOptions(),
        admins=admins,
        webapp_url=webapp_url,
        sessionmaker=services.sessionmaker,
        store=services.store,
        crowd=Crowd(services.store),
        refiner=Refiner(spec),
        limits=services.limits,
        data_dir=services.data_dir,
        digest_seconds=digest_seconds,
    )


async def send_digests(app: BotApplication) -> int:
    """Tell volunteers what their retired answers earned, in one batched message each."""
    services: BotServices = app.bot_data["services"]
    sent = 0
    async with services.sessionmaker() as session:
        digests = await leaderboard.pending_digests(session)
        # End the read before talking to Telegram: on SQLite every transaction holds the write
        # lock, and a slow or failing send must not keep the volunteers' answers waiting.
        await session.commit()
        for digest in digests:
            text = texts.DIGEST.format(
                answers=digest.answers, matched=digest.matched, points=digest.points
            )
            if digest.new_badges:
                text += "\n" + texts.DIGEST_BADGES.format(badges=", ".join(digest.new_badges))
            try:
                await app.bot.send_message(digest.telegram_user_id, text)
            except Exception:  # a blocked bot or a deleted chat: try again next time
                logger.warning("digest for volunteer %s not delivered", digest.volunteer_id)
                continue
            await leaderboard.mark_notified(
                session, volunteer_id=digest.volunteer_id, answer_ids=digest.answer_ids
            )
            await session.commit()
            sent += 1
    return sent


async def _every(
    seconds: float, stopping: asyncio.Event, work: Callable[[], Awaitable[object]], what: str
) -> None:
    """Run ``work`` every ``seconds`` until ``stopping``; a failed round is logged, not fatal."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=seconds)
        if stopping.is_set():
            break
        try:
            await work()
        except Exception:
            logger.exception("%s failed", what)


async def _sweep_jobs(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Mark failed the jobs whose process died (their heartbeat stopped)."""
    async with sessionmaker() as session:
        await jobrecords.fail_interrupted(session)
        await session.commit()


async def run_bot(
    options: BotOptions,
    services: BotServices,
    *,
    webhook: Any = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    stop: asyncio.Event | None = None,
    editor: EditorHook | None = None,
    editor_server: Server | None = None,
    readiness: Readiness | None = None,
    partition: tuple[int, int] = (0, 1),
    listen_url: str | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``): polling, or the given webhook server.

    In webhook mode the server starts first, then the webhook is registered with Telegram at
    ``webhook_url`` with ``webhook_secret``. ``editor`` (the Mini App) hears nothing until the
    bot runs; ``editor_server`` is its own server (polling mode; the webhook server hosts it
    otherwise). ``readiness`` gets the bot's probes and hears when it runs and stops.

    With ``partition`` ``(k, n)``, ``n`` processes share one PostgreSQL database: each handles
    the volunteers whose Telegram id is ``k`` modulo ``n``. Process 0 also receives the updates
    (polling or webhook), sends digests and serves the Mini App; the others only process what
    it stored, woken by PostgreSQL NOTIFY on ``listen_url``.
    """
    app = build_application(options, services)
    if editor is not None:
        editor.attach(functools.partial(volunteer.after_editor_answer, app))
    intake = Intake(
        app,
        services.sessionmaker,
        gate=FloodGate(options.flood_rate, options.flood_burst),
        poll_timeout=options.poll_timeout,
        keep_processed=dt.timedelta(hours=options.keep_updates_hours),
        partition=partition,
    )
    front = partition[0] == 0
    services.crowd.shared = partition[1] > 1  # fusion sees every process's answers
    stopping = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    if front:
        await _sweep_jobs(services.sessionmaker)  # and every minute while it runs
    async with app:
        await app.start()
        workers = [
            asyncio.create_task(intake.process(), name="process"),
            asyncio.create_task(intake.mark_loop(), name="marks"),
        ]
        if listen_url is not None:
            workers.append(
                asyncio.create_task(
                    notify.listen(listen_url, inbox.CHANNEL, intake.wake.set, intake.stopping),
                    name="listen",
                )
            )
        if front:  # worker processes receive nothing from Telegram, send no digests
            await app.bot.set_my_commands([BotCommand(c, d) for c, d in texts.COMMANDS])
            digest = _every(
                options.digest_seconds, stopping, lambda: send_digests(app), "digest round"
            )
            workers.append(asyncio.create_task(digest, name="digest"))
            sweep = _every(
                JOB_SWEEP_SECONDS, stopping, lambda: _sweep_jobs(services.sessionmaker), "job sweep"
            )
            workers.append(asyncio.create_task(sweep, name="job sweep"))
            if editor_server is not None:
                await editor_server.start()
        if not front:
            mode = f"worker {partition[0]} of {partition[1]}"
        elif webhook is None:
            await app.bot.delete_webhook()
            workers.append(asyncio.create_task(intake.poll(), name="poll"))
        else:
            await webhook.start(intake)
            if webhook_url is None:
                raise ValueError("webhook mode needs the public webhook URL")
            await app.bot.set_webhook(
                webhook_url, secret_token=webhook_secret, allowed_updates=ALLOWED_UPDATES
            )
        if readiness is not None:
            probes.register(readiness, app, intake, workers)
            readiness.phase = Phase.RUNNING
        if front:
            mode = "webhook" if webhook else "long polling"
        logger.info("bot running (%s)", mode)
        await stopping.wait()
        if readiness is not None:
            readiness.phase = Phase.STOPPING
        intake.stopping.set()
        intake.wake.set()
        for task in workers:
            if not task.done():
                task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await intake.finish()
        if webhook is not None:
            await webhook.stop()
        if editor_server is not None:
            await editor_server.stop()
        await app.stop()
    logger.info("bot stopped")
