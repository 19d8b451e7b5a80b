"""The coordinator's commands (issue 6, first part): roles, campaigns, rules, status, export.

Thin handlers: every privileged check happens in ``bot.campaign.coordination`` with the user who
sent the command or pressed the button, so a coordinator's keyboard seen by someone else is
refused there too.
"""

from __future__ import annotations

import asyncio

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Update
from telegram.error import TelegramError

from bot.campaign import coordination, progress
from bot.campaign.errors import MedCrowdError
from bot.campaign.volunteers import volunteer_for
from bot.db.models import CampaignStatus, Role, Volunteer
from bot.telegram import texts, uploads
from bot.telegram.context import BotContext, sender
from bot.telegram.parsing import parse_id

USE_PREFIX = "cu:"
PAUSE_USAGE = (
    "usage: /pause or /resume (the working campaign), /pause me or /resume me (your reminders)"
)
ROLES = frozenset(r.value for r in Role)
STATUSES = {
    "pause": CampaignStatus.PAUSED,
    "resume": CampaignStatus.ACTIVE,
    "close": CampaignStatus.CLOSED,
}


async def _actor(context: BotContext, update: Update) -> tuple[Volunteer, frozenset[int]]:
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        await session.commit()
    return actor, context.services.admins


async def _reply(update: Update, context: BotContext, text: str) -> None:
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, text)


async def on_grant(update: Update, context: BotContext) -> None:
    """/grant TELEGRAM_ID [coordinator|expert], /revoke TELEGRAM_ID (admins only)."""
    assert update.effective_message is not None
    words = (update.effective_message.text or "").split()
    revoke = words[0].startswith("/revoke")
    target = parse_id(words[1]) if len(words) > 1 else None
    named = words[2] if len(words) > 2 and not revoke else "coordinator"
    if target is None or named not in ROLES:
        await _reply(
            update, context, "usage: /grant TELEGRAM_ID [coordinator|expert] or /revoke TELEGRAM_ID"
        )
        return
    role = Role.VOLUNTEER if revoke else Role(named)
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        await coordination.set_role(session, actor, context.services.admins, target, role)
        await session.commit()
    await _reply(update, context, f"{target} is now {role.value}")


async def on_projects(update: Update, context: BotContext) -> None:
    """/projects: every campaign, with a button to work on it."""
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        coordination.require(actor, context.services.admins, *coordination.PRIVILEGED)
        every = await coordination.campaigns(session)
        await session.commit()
    if not every:
        await _reply(update, context, "No campaign yet: ingest images first (medcrowd ingest).")
        return
    lines = [f"#{c.id} {c.name} ({c.structure}, {c.status.value})" for c in every]
    buttons = [
        [InlineKeyboardButton(f"Use {c.name}", callback_data=f"{USE_PREFIX}{c.id}")] for c in every
    ]
    assert update.effective_chat is not None
    await context.bot.send_message(
        update.effective_chat.id, "\n".join(lines), reply_markup=InlineKeyboardMarkup(buttons)
    )


async def on_use_press(update: Update, context: BotContext) -> None:
    """A "Use" button: checked against whoever pressed it."""
    query = update.callback_query
    assert query is not None
    campaign_id = parse_id((query.data or "").removeprefix(USE_PREFIX))
    if campaign_id is None:
        await query.answer(texts.UNKNOWN_BUTTON, show_alert=True)
        return
    try:
        async with context.services.sessionmaker() as session:
            actor = await volunteer_for(session, telegram_user_id=query.from_user.id)
            campaign = await coordination.use(session, actor, context.services.admins, campaign_id)
            await session.commit()
    except MedCrowdError as error:
        await query.answer(str(error), show_alert=True)
        return
    await query.answer(f"Working on {campaign.name}")


NEWPROJECT = "newproject"
STEPS = (
    ("name", "Name of the new campaign (letters, digits, _ . -; no spaces)?"),
    ("structure", "Which structure do volunteers outline (e.g. liver lesion)?"),
    ("instructions", "One or two sentences of instructions for volunteers (or - for none)?"),
)


async def on_newproject(update: Update, context: BotContext) -> None:
    """/newproject: a short guided dialogue (name, structure, instructions); rules via /rules."""
    actor, admins = await _actor(context, update)
    coordination.require(actor, admins, *coordination.PRIVILEGED)
    if context.user_data is not None:
        context.user_data[NEWPROJECT] = {}
    await _reply(update, context, STEPS[0][1])


async def on_newproject_text(update: Update, context: BotContext) -> None:
    """One answer of the /newproject dialogue."""
    assert update.effective_message is not None
    assert context.user_data is not None
    answers: dict[str, str] = context.user_data[NEWPROJECT]
    step = STEPS[len(answers)][0]
    answers[step] = (update.effective_message.text or "").strip()
    if len(answers) < len(STEPS):
        await _reply(update, context, STEPS[len(answers)][1])
        return
    del context.user_data[NEWPROJECT]
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        instructions = "" if answers["instructions"] == "-" else answers["instructions"]
        campaign = await coordination.create_campaign(
            session,
            actor,
            context.services.admins,
            name=answers["name"],
            structure=answers["structure"],
            instructions=instructions,
        )
        await session.commit()
    await _reply(
        update,
        context,
        f"Created {campaign.name} ({campaign.structure}), now your working campaign. "
        "Change its rules with /rules; add images with medcrowd ingest.",
    )


async def on_use(update: Update, context: BotContext) -> None:
    """/use NAME: make a campaign the working one."""
    assert update.effective_message is not None
    name = (update.effective_message.text or "").partition(" ")[2].strip()
    if not name:
        await _reply(update, context, "usage: /use NAME (see /projects)")
        return
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        campaign = await coordination.use_by_name(session, actor, context.services.admins, name)
        await session.commit()
    await _reply(update, context, f"Working on {campaign.name}")


async def on_jobs(update: Update, context: BotContext) -> None:
    """/jobs: the latest background jobs with their progress (and why a failed one failed)."""
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        rows = await coordination.jobs(session, actor, context.services.admins)
        await session.commit()
    if not rows:
        await _reply(update, context, "No background jobs yet.")
        return
    lines = []
    for job in rows:
        done = f"{job.done}/{job.total}" if job.total is not None else f"{job.done}"
        line = f"#{job.id} {job.kind}: {job.status.value}, {done}"
        if job.error:
            line += f" - {job.error[:200]}"
        lines.append(line)
    assert update.effective_chat is not None
    await context.bot.send_message(
        update.effective_chat.id, "\n".join(lines), reply_markup=uploads.retry_buttons(rows)
    )


async def on_rules(update: Update, context: BotContext) -> None:
    """/rules [name=value ...]: show (and change) the working campaign's rules."""
    assert update.effective_message is not None
    pairs = (update.effective_message.text or "").split()[1:]
    changes = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            await _reply(update, context, f"write rules as name=value, got {pair!r}")
            return
        changes[name] = value
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        campaign = await coordination.working(session, actor, context.services.admins)
        if changes:
            rules = await coordination.set_rules(
                session, actor, context.services.admins, campaign, changes
            )
        else:
            rules = coordination.rules_of(campaign)
        await session.commit()
    text = "\n".join([f"Rules of {campaign.name}:"] + [f"{k} = {v}" for k, v in rules.items()])
    await _reply(update, context, text)


async def pauses_campaign(update: Update, context: BotContext) -> bool:
    """Whether /pause or /resume is a coordinator's: bare for the working campaign, "me" not.

    Anything else after it gets the usage (and changes nothing): a typo must not pause a campaign.
    """
    assert update.effective_message is not None
    words = (update.effective_message.text or "").split()
    actor, admins = await _actor(context, update)
    if coordination.role_of(actor, admins) not in coordination.PRIVILEGED or words[1:] == ["me"]:
        return False
    if words[1:]:
        await _reply(update, context, PAUSE_USAGE)
        return True
    await _set_status(update, context, words[0].lstrip("/").partition("@")[0])
    return True


async def on_campaign(update: Update, context: BotContext) -> None:
    """/campaign pause|resume|close and /close: the working campaign's status."""
    assert update.effective_message is not None
    words = (update.effective_message.text or "").split()
    if words[0].startswith("/close"):  # takes nothing: "/close x" is a typo, not a close
        words = ["/campaign", "close", *words[1:]]
    if len(words) != 2 or words[1] not in STATUSES:
        await _reply(update, context, "usage: /campaign pause|resume|close")
        return
    await _set_status(update, context, words[1])


async def _set_status(update: Update, context: BotContext, word: str) -> None:
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        campaign = await coordination.working(session, actor, context.services.admins)
        await coordination.set_status(
            session, actor, context.services.admins, campaign, STATUSES[word]
        )
        await session.commit()
    hint = " (/pause me and /resume me are for your own reminders)" if word != "close" else ""
    await _reply(update, context, f"{campaign.name} is now {campaign.status.value}{hint}")


async def on_status(update: Update, context: BotContext) -> None:
    """/status: the working campaign's chart and a short summary."""
    services = context.services
    async with services.sessionmaker() as session:
        actor = await sender(session, update)
        campaign = await coordination.working(session, actor, services.admins)
        numbers = await progress.progress(session, services.store, campaign)
        await session.commit()
    png = await asyncio.to_thread(progress.chart, numbers)
    assert update.effective_chat is not None
    await context.bot.send_photo(
        update.effective_chat.id, InputFile(png, filename="status.png"), caption=numbers.text()
    )


async def on_volunteers(update: Update, context: BotContext) -> None:
    """/volunteers: the most and least accurate on gold; /volunteer ID: one volunteer's card."""
    assert update.effective_message is not None
    words = (update.effective_message.text or "").split()
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        campaign = await coordination.working(session, actor, context.services.admins)
        lines = await coordination.volunteer_lines(
            session, actor, context.services.admins, campaign
        )
        await session.commit()

    def line(v: coordination.VolunteerLine) -> str:
        accuracy = "no gold" if v.gold_accuracy is None else f"gold {v.gold_accuracy:.0%}"
        flags = " (banned)" if v.banned else ""
        return (
            f"#{v.volunteer_id} {v.name}: {v.answers} answers, {accuracy} of {v.gold_answers}, "
            f"{v.points} points{flags}"
        )

    if words[0].startswith("/volunteer") and not words[0].startswith("/volunteers"):
        wanted = parse_id(words[1]) if len(words) > 1 else None
        found = [v for v in lines if v.volunteer_id == wanted]
        text = line(found[0]) if found else "usage: /volunteer ID (see /volunteers)"
    elif not lines:
        text = f"No answers in {campaign.name} yet."
    else:
        text = "\n".join(
            [f"Most reliable in {campaign.name}:", *map(line, lines[:5])]
            + (["Least reliable:", *map(line, lines[-5:][::-1])] if len(lines) > 5 else [])
        )
    await _reply(update, context, text)


async def on_ban(update: Update, context: BotContext) -> None:
    """/ban ID, /unban ID: stop (or restart) serving a volunteer crops.

    A ban also takes their answers on crops still open out of the consensus (the crowd model is
    fitted again without them); those on finished crops stay. An unban counts them again.
    """
    assert update.effective_message is not None
    words = (update.effective_message.text or "").split()
    target = parse_id(words[1]) if len(words) == 2 else None
    if target is None:
        await _reply(update, context, "usage: /ban ID or /unban ID (ids from /volunteers)")
        return
    banned = words[0].startswith("/ban")
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        await coordination.set_banned(session, actor, context.services.admins, target, banned)
        await session.commit()
    await context.services.crowd.reset()
    await _reply(update, context, f"volunteer #{target} {'banned' if banned else 'unbanned'}")


async def on_broadcast(update: Update, context: BotContext) -> None:
    """/broadcast TEXT: to the campaign's volunteers who have not paused, with progress."""
    assert update.effective_message is not None
    assert update.effective_chat is not None
    text = (update.effective_message.text or "").partition(" ")[2].strip()
    if not text:
        await _reply(update, context, "usage: /broadcast TEXT")
        return
    async with context.services.sessionmaker() as session:
        actor = await sender(session, update)
        campaign = await coordination.working(session, actor, context.services.admins)
        targets = await coordination.broadcast_targets(
            session, actor, context.services.admins, campaign
        )
        await coordination.audit(session, actor, "broadcast", campaign.id, recipients=len(targets))
        await session.commit()
    status = await context.bot.send_message(
        update.effective_chat.id, f"Broadcasting to {len(targets)} volunteers..."
    )
    sent = failed = 0
    for n, chat_id in enumerate(targets, start=1):
        try:
            await context.bot.send_message(chat_id, f"📢 {campaign.name}: {text}")
            sent += 1
        except TelegramError:  # blocked the bot, deleted the chat: skip them
            failed += 1
        if n % 25 == 0:
            await status.edit_text(f"Broadcasting: {n} of {len(targets)}...")
    await status.edit_text(f"Broadcast done: {sent} delivered, {failed} failed.")


async def on_export(update: Update, context: BotContext) -> None:
    """/export: the working campaign's dataset zip, as a document (or its path if too big)."""
    services = context.services
    async with services.sessionmaker() as session:
        actor = await sender(session, update)
        campaign = await coordination.working(session, actor, services.admins)
        await coordination.audit(session, actor, "export", campaign.id)
        await session.commit()
    assert update.effective_chat is not None
    await uploads.send_export(context, campaign, update.effective_chat.id)
