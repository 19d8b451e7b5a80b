"""Coordinators' uploads (documents and zips, ``/gold``), the proposals job they start, retries.

An upload is downloaded, ingested exactly as ``medcrowd ingest`` would (``bot.campaign.upload``)
with a progress message edited in place, summarised with every rejected file and its reason, and
followed by the proposals job in the background. Ingest and proposals are idempotent, so an
upload interrupted by a crash can simply be sent again (and a failed job retried from /jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import tempfile
from pathlib import Path
from types import TracebackType

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, Update
from telegram.error import TelegramError

from bot.campaign import coordination
from bot.campaign.errors import InvalidInput, MedCrowdError
from bot.campaign.export import export_campaign
from bot.campaign.jobrecords import tracked
from bot.campaign.proposals import run_proposals
from bot.campaign.sources import sanitise_name
from bot.campaign.synthesis import SynthesisOptions, run_synthesis
from bot.campaign.upload import ingest_upload
from bot.campaign.volunteers import volunteer_for
from bot.db.models import Campaign, Job
from bot.telegram import review as review_handlers
from bot.telegram import texts
from bot.telegram.context import BotContext, sender
from bot.telegram.parsing import parse_id

logger = logging.getLogger(__name__)

MAX_DOWNLOAD = 20 * 1000 * 1000  # Telegram lets bots download files up to 20 MB
MAX_DOCUMENT = 50 * 1000 * 1000  # and upload documents up to 50 MB
GOLD_PENDING = "gold_upload"
RETRY_PREFIX = "jr:"
MAX_SYNTHETIC = 5000
PHOTO_REFUSED = (
    "Please send images as files (📎 → File), not as photos: Telegram recompresses photos, "
    "which changes the very pixels volunteers would outline. A zip of images works too."
)
GOLD_PROMPT = (
    "Send the expert masks now, as a file or a zip. A mask is named after its image "
    "(case1.png -> case1_mask.png; also _seg, _gt, _label, _truth), white = structure, the "
    "image's size. Masks for images already in {campaign} turn those images' crops into gold; "
    "images sent with their masks are added as gold crops."
)


class LiveMessage:
    """A status message edited in place at most once per ``interval`` while work runs."""

    def __init__(self, message: Message, interval: float = 1.0) -> None:
        self.message = message
        self.interval = interval
        self.text = message.text or ""
        self._shown = self.text
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveMessage:
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._ticker is not None
        self._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticker

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.show(self.text)

    async def show(self, text: str) -> None:
        """Edit the message now, if its text changed (a failed edit is only logged)."""
        self.text = text
        if text == self._shown:
            return
        try:
            await self.message.edit_text(text)
            self._shown = text
        except TelegramError as error:
            logger.warning("progress message not edited: %s", error)


async def on_photo(update: Update, context: BotContext) -> None:
    """A photo: coordinators are told to send files; volunteers that photos are not used."""
    assert update.effective_user is not None
    assert update.effective_chat is not None
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        await session.commit()
    allowed = coordination.role_of(actor, context.services.admins) in coordination.PRIVILEGED
    text = PHOTO_REFUSED if allowed else "Thanks, but I only need your button presses here."
    await context.bot.send_message(update.effective_chat.id, text)


async def on_gold(update: Update, context: BotContext) -> None:
    """/gold: the next file holds expert masks."""
    assert update.effective_user is not None
    assert update.effective_chat is not None
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        campaign = await coordination.working(session, actor, context.services.admins)
        await session.commit()
    if context.user_data is not None:
        context.user_data[GOLD_PENDING] = True
    await context.bot.send_message(
        update.effective_chat.id, GOLD_PROMPT.format(campaign=campaign.name)
    )


async def on_document(update: Update, context: BotContext) -> None:
    """A file: an expert's review mask, or a coordinator's upload."""
    message = update.effective_message
    assert message is not None
    assert message.document is not None
    assert update.effective_user is not None
    assert update.effective_chat is not None
    user_data = context.user_data if context.user_data is not None else {}
    if review_handlers.PENDING in user_data:
        await review_handlers.on_mask_document(update, context)
        return
    services = context.services
    async with services.sessionmaker() as session:
        actor = await sender(session, update)
        campaign = await coordination.working(session, actor, services.admins)
        await session.commit()
    document = message.document
    name = sanitise_name(document.file_name or "upload")
    if (document.file_size or 0) > MAX_DOWNLOAD:
        await context.bot.send_message(
            update.effective_chat.id,
            f"{name} is over 20 MB, the most a bot may download from Telegram. Split it into "
            "smaller zips, or copy it to the server and run: medcrowd ingest",
        )
        return
    gold = bool(user_data.pop(GOLD_PENDING, False))
    status = await context.bot.send_message(update.effective_chat.id, f"Receiving {name}...")
    telegram_file = await context.bot.get_file(document.file_id)
    data = await telegram_file.download_as_bytearray()
    seen = 0
    async with LiveMessage(status) as live:

        def progress(outcome: str) -> None:
            nonlocal seen
            seen += 1
            live.text = f"Ingesting {name}: {seen} files read (last: {outcome})..."

        with tempfile.TemporaryDirectory(prefix="medcrowd-upload-") as folder:
            path = Path(folder) / name
            await asyncio.to_thread(path.write_bytes, bytes(data))
            report = await ingest_upload(
                services.sessionmaker,
                services.store,
                campaign,
                path,
                services.limits,
                gold=gold,
                progress=progress,
            )
        text, shortened = report.summary(name)
        await live.show(text)
    counts = report.ingest.counts()
    async with services.sessionmaker() as session:
        actor = await sender(session, update)
        await coordination.audit(
            session, actor, "upload", campaign.id, file=name, gold=gold, **counts
        )
        await session.commit()
    if shortened:
        await context.bot.send_document(
            update.effective_chat.id,
            InputFile(report.ingest.to_json().encode(), filename="ingest-report.json"),
        )
    if counts["tasks"]:
        context.application.create_task(
            propose(context, campaign, update.effective_chat.id), name="proposals"
        )


async def propose(context: BotContext, campaign: Campaign, chat_id: int) -> None:
    """Run the proposals job for a campaign's pending crops, reporting to ``chat_id``."""
    services = context.services
    status = await context.bot.send_message(chat_id, f"Proposals for {campaign.name}: starting...")
    async with LiveMessage(status) as live:
        try:
            run = await run_proposals(
                services.sessionmaker,
                services.store,
                campaign,
                services.refiner.spec,
                services.runner,
                progress=lambda done, total: setattr(
                    live, "text", f"Proposals for {campaign.name}: {done} of {total} crops..."
                ),
            )
        except Exception as error:
            logger.exception("proposals for campaign %s failed", campaign.id)
            await live.show(f"Proposals for {campaign.name} failed: {error!r}. Retry from /jobs.")
            return
        await live.show(
            f"Proposals for {campaign.name} done: {run.written} new crops are open to "
            f"volunteers (job #{run.job_id})."
        )


async def send_export(context: BotContext, campaign: Campaign, chat_id: int) -> None:
    """Build the campaign's export zip as a job; send it, or its path when too big."""
    services = context.services
    folder = Path(tempfile.mkdtemp(prefix="medcrowd-export-"))
    async with tracked(services.sessionmaker, "export", campaign.id) as job:
        async with services.sessionmaker() as session:
            report = await export_campaign(session, services.store, campaign, folder)
        await job.progress(report.crops, report.crops)
    caption = (
        f"{campaign.name}: {report.crops} finished crops, {report.gold} gold, "
        f"{report.answers} answers"
    )
    if report.bytes <= MAX_DOCUMENT:
        await context.bot.send_document(
            chat_id, InputFile(report.path.read_bytes(), filename=report.path.name), caption=caption
        )
    else:
        await context.bot.send_message(
            chat_id, f"{caption}; too big for Telegram, written to {report.path}"
        )


async def on_synthesize(update: Update, context: BotContext) -> None:
    """/synthesize [N]: train (or resume) pix2pix on the working campaign, keep gated pairs."""
    message = update.effective_message
    assert message is not None
    assert update.effective_user is not None
    assert update.effective_chat is not None
    words = (message.text or "").split()
    n = parse_id(words[1]) if len(words) == 2 else context.services.synthesis.n
    if len(words) > 2 or n is None:
        await context.bot.send_message(update.effective_chat.id, "usage: /synthesize [N]")
        return
    if not 1 <= n <= MAX_SYNTHETIC:
        raise InvalidInput(f"N is 1 to {MAX_SYNTHETIC} candidate pairs")
    services = context.services
    async with services.sessionmaker() as session:
        actor = await sender(session, update)
        campaign = await coordination.working(session, actor, services.admins)
        await coordination.audit(session, actor, "synthesize", campaign.id, n=n)
        await session.commit()
    options = dataclasses.replace(services.synthesis, n=n)
    context.application.create_task(
        synthesize(context, campaign, options, update.effective_chat.id), name="synthesis"
    )


async def synthesize(
    context: BotContext, campaign: Campaign, options: SynthesisOptions, chat_id: int
) -> None:
    """The synthesis job in the background, with a progress message edited in place."""
    services = context.services
    status = await context.bot.send_message(chat_id, f"Synthesis for {campaign.name}: starting...")
    async with LiveMessage(status, interval=2.0) as live:

        def report(phase: str, done: int, total: int) -> None:
            live.text = f"Synthesis for {campaign.name}: {phase} {done} of {total}..."

        try:
            run = await run_synthesis(
                services.sessionmaker,
                services.store,
                campaign,
                options,
                services.data_dir,
                report=report,
            )
        except Exception as error:
            logger.exception("synthesis for campaign %s failed", campaign.id)
            await live.show(f"Synthesis for {campaign.name} failed: {error}. Retry from /jobs.")
            return
        await live.show(
            f"Synthesis for {campaign.name} done (job #{run.job_id}): trained on "
            f"{run.trained_on} finished crops to step {run.steps}; the quality gate kept "
            f"{len(run.kept)} of {run.candidates} synthetic pairs ({100 * run.acceptance:.0f} %). "
            "They are in the next /export, in synthetic/."
        )


def retry_buttons(jobs: list[Job]) -> InlineKeyboardMarkup | None:
    """A Retry button for each failed job that the chat can start again."""
    rows = [
        [
            InlineKeyboardButton(
                f"Retry #{job.id} ({job.kind})",
                callback_data=f"{RETRY_PREFIX}{job.id}",
            )
        ]
        for job in jobs
        if job.status.value == "failed"
        and job.kind in coordination.RETRYABLE
        and not job.params.get("retried")
    ]
    return InlineKeyboardMarkup(rows) if rows else None


async def on_retry_press(update: Update, context: BotContext) -> None:
    """A Retry button: checked against whoever pressed it, then the job runs again."""
    query = update.callback_query
    assert query is not None
    assert query.message is not None
    services = context.services
    job_id = parse_id((query.data or "").removeprefix(RETRY_PREFIX))
    if job_id is None:
        await query.answer(texts.UNKNOWN_BUTTON, show_alert=True)
        return
    try:
        async with services.sessionmaker() as session:
            actor = await volunteer_for(session, telegram_user_id=query.from_user.id)
            job = await coordination.retry(session, actor, services.admins, job_id)
            campaign = await session.get(Campaign, job.campaign_id) if job.campaign_id else None
            await session.commit()
    except MedCrowdError as error:
        await query.answer(str(error), show_alert=True)
        return
    if campaign is None:
        await query.answer("the job's campaign is gone", show_alert=True)
        return
    await query.answer(f"Retrying #{job_id}")
    chat_id = query.message.chat.id
    if job.kind == "proposals":
        context.application.create_task(propose(context, campaign, chat_id), name="proposals")
    elif job.kind == "synthesis":
        options = dataclasses.replace(
            services.synthesis,
            n=int(job.params.get("n", services.synthesis.n)),
            seed=int(job.params.get("seed", services.synthesis.seed)),
        )
        context.application.create_task(synthesize(context, campaign, options, chat_id))
    else:
        context.application.create_task(_export_reported(context, campaign, chat_id))


async def _export_reported(context: BotContext, campaign: Campaign, chat_id: int) -> None:
    """``send_export`` in the background: a failure is told to the chat (and kept in /jobs)."""
    try:
        await send_export(context, campaign, chat_id)
    except Exception as error:
        logger.exception("export of campaign %s failed", campaign.id)
        await context.bot.send_message(
            chat_id, f"Export of {campaign.name} failed: {error!r}. Retry from /jobs."
        )
