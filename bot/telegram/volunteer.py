"""The volunteer's handlers: thin (parse, call a use case, render), one message edited in place."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Literal

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InputFile, InputMediaPhoto, Message, Update
from telegram.error import BadRequest

from bot.campaign import cards, leaderboard, render, routing, tasks
from bot.campaign import volunteers as people
from bot.campaign.answers import Submitted, submit
from bot.campaign.editor import EditorAnswer
from bot.campaign.errors import InvalidInput, MedCrowdError, NoConsent, NoWork, StaleTask
from bot.db.models import Assignment, TaskKind, Verdict, Volunteer
from bot.db.types import utcnow
from bot.telegram import alerts, coordinator, keyboards, texts
from bot.telegram.context import BotApplication, BotContext, BotServices, sender
from bot.telegram.keyboards import Action, Press
from bot.telegram.transient import RETRY_KEY, is_late_query_answer, is_transient

logger = logging.getLogger(__name__)

VERDICTS = {
    Action.ACCEPT: Verdict.ACCEPT,
    Action.REJECT: Verdict.REJECT,
    Action.UNSURE: Verdict.UNSURE,
}
AWAITING_NICKNAME = "awaiting_nickname"
# Presses on a crop: their handlers commit before any call to Telegram.
WORK_ACTIONS = frozenset(
    {
        Action.ACCEPT,
        Action.REJECT,
        Action.UNSURE,
        Action.ADJUST,
        Action.BACK,
        Action.CHOICES,
        Action.PICK,
        Action.GRID,
        Action.CELL,
        Action.TAP,
        Action.REFINE,
        Action.UNDO,
        Action.DONE,
    }
)


# -- showing a crop -----------------------------------------------------------------------------


async def _media(services: BotServices, key: str, draw: Callable[[], bytes]) -> str | bytes:
    """A file_id for an image shown before, else the freshly rendered PNG.

    Raw bytes, not an ``InputFile``: PTB turns bytes into an ``attach://`` upload inside an
    ``InputMediaPhoto``, which a plain ``InputFile`` would not be.
    """
    cached = services.photos.get(key)
    if cached is not None:
        return cached
    return await asyncio.to_thread(draw)


async def _put_photo(
    context: BotContext,
    *,
    chat_id: int,
    message_id: int | None,
    key: str,
    draw: Callable[[], bytes],
    caption: str,
    markup: object,
) -> Message | None:
    """Edit the volunteer's one message to show this image (or send it when there is none)."""
    services = context.services
    media = await _media(services, key, draw)
    message: Message | bool | None = None
    if message_id is not None:
        try:
            message = await context.bot.edit_message_media(
                InputMediaPhoto(media, caption=caption),
                chat_id=chat_id,
                message_id=message_id,
                reply_markup=markup,  # type: ignore[arg-type]
            )
        except BadRequest as error:
            text = str(error).lower()
            if "not modified" in text:
                return None
            if "there is no media" not in text and "not found" not in text:
                raise
            await _delete(context, chat_id, message_id)
            message = None
    if not isinstance(message, Message):
        message = await context.bot.send_photo(
            chat_id,
            media,
            caption=caption,
            reply_markup=markup,  # type: ignore[arg-type]
            protect_content=True,  # a medical crop: no forwarding, no saving
        )
    if message.photo:
        services.photos[key] = message.photo[-1].file_id
    return message


async def _delete(context: BotContext, chat_id: int, message_id: int) -> None:
    try:
        await context.bot.delete_message(chat_id, message_id)
    except BadRequest:
        logger.debug("message %s already gone", message_id)


def _photo_key(view: tasks.TaskView, suffix: str = "") -> str:
    aug = view.token if view.assignment.augment else ""
    working = view.adjust.get("mask") or "p"
    return f"{view.task.id}:{working}:{aug}:{suffix}"


def _question(view: tasks.TaskView) -> str:
    if view.kind == TaskKind.REAL:
        return texts.QUESTION.format(structure=view.structure)
    return texts.QUESTION_GOLD.format(structure=view.structure)


async def _show_verdict(
    context: BotContext, view: tasks.TaskView, chat_id: int, message_id: int | None
) -> Message | None:
    return await _put_photo(
        context,
        chat_id=chat_id,
        message_id=message_id,
        key=f"{view.task.id}:proposal:{view.token if view.assignment.augment else ''}",
        draw=lambda: render.overlay(view.crop, view.proposal),
        caption=_question(view),
        markup=keyboards.verdict(view.token),
    )


async def _show_menu(
    context: BotContext, view: tasks.TaskView, chat_id: int, message_id: int | None
) -> Message | None:
    return await _put_photo(
        context,
        chat_id=chat_id,
        message_id=message_id,
        key=_photo_key(view),
        draw=lambda: render.overlay(view.crop, view.working),
        caption=texts.ADJUST_MENU,
        markup=keyboards.adjust_menu(
            view.token,
            changed=bool(view.adjust.get("mask")),
            webapp_url=context.services.webapp_url,
        ),
    )


async def _show_grid(
    context: BotContext, view: tasks.TaskView, chat_id: int, message_id: int | None
) -> Message | None:
    selected = set(view.adjust.get("cells", []))
    points: dict[str, int] = dict(view.adjust.get("points", {}))
    tap = str(view.adjust.get("tap", "box"))
    takes_points = context.services.refiner.takes_points
    labels = render.cell_labels(render.GRID)
    shown = selected | set(points)
    caption = texts.GRID_HELP.format(
        structure=view.structure,
        cells=", ".join(
            [*sorted(selected), *(("+" if v else "-") + k for k, v in sorted(points.items()))]
        )
        or "none",
    )
    if takes_points:
        caption += texts.GRID_POINTS_HELP.format(structure=view.structure)
    return await _put_photo(
        context,
        chat_id=chat_id,
        message_id=message_id,
        key=_photo_key(view, "grid:" + ",".join(sorted(shown))),
        draw=lambda: render.grid_overlay(view.crop, view.working, selected=frozenset(shown)),
        caption=caption,
        markup=keyboards.grid(
            view.token,
            labels,
            render.GRID,
            selected,
            points=points,
            tap=tap,
            takes_points=takes_points,
        ),
    )


async def _serve_next(
    context: BotContext,
    session: AsyncSession,
    volunteer: Volunteer,
    chat_id: int,
    message_id: int | None,
) -> None:
    """Lease the next crop and show it in the volunteer's message; commits."""
    services = context.services
    try:
        assignment = await routing.next_assignment(
            session, volunteer=volunteer, rng=services.rng, augment=cards.random_augment
        )
    except NoWork as error:
        await session.commit()
        text = texts.NO_WORK.format(reason=error)
        if message_id is not None:
            try:
                await context.bot.edit_message_caption(chat_id, message_id, caption=text)
            except BadRequest:
                logger.debug("message %s cannot take a caption", message_id)
            else:
                return
        await context.bot.send_message(chat_id, text)
        return
    view = await tasks.view(session, services.store, assignment)
    if message_id is not None:  # shown in the volunteer's message: known before sending
        assignment.chat_id, assignment.message_id = chat_id, message_id
        session.add(assignment)
    await session.commit()  # no transaction stays open across a call to Telegram
    mode = assignment.adjust.get("mode")
    shower = _show_menu if mode in ("menu", "choices") else _show_grid if mode == "grid" else None
    message = await (shower or _show_verdict)(context, view, chat_id, message_id)
    if message is not None and message.message_id != message_id:
        assignment.chat_id, assignment.message_id = chat_id, message.message_id
        session.add(assignment)
        await session.commit()


# -- commands -------------------------------------------------------------------------------------


async def on_start(update: Update, context: BotContext) -> None:
    """Welcome and terms; a volunteer who already agreed goes straight to a crop."""
    assert update.effective_chat is not None
    async with context.services.sessionmaker() as session:
        volunteer = await sender(session, update)
        if volunteer.consent_at is not None:
            await _serve_next(context, session, volunteer, update.effective_chat.id, None)
            return
        await session.commit()
    await context.bot.send_message(update.effective_chat.id, texts.WELCOME)
    await context.bot.send_message(
        update.effective_chat.id, texts.TERMS, reply_markup=keyboards.consent()
    )


async def on_next(update: Update, context: BotContext) -> None:
    """/next: the current or next crop, as a fresh message at the bottom of the chat."""
    assert update.effective_chat is not None
    async with context.services.sessionmaker() as session:
        volunteer = await sender(session, update)
        await _serve_next(context, session, volunteer, update.effective_chat.id, None)


async def on_help(update: Update, context: BotContext) -> None:
    """/help."""
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, texts.HELP)


async def on_pause(update: Update, context: BotContext) -> None:
    """/pause and /resume (a coordinator's pause the working campaign; "/pause me" reminders)."""
    assert update.effective_chat is not None
    assert update.effective_message is not None
    if await coordinator.pauses_campaign(update, context):
        return
    paused = (update.effective_message.text or "").startswith("/pause")
    async with context.services.sessionmaker() as session:
        volunteer = await sender(session, update)
        await people.set_paused(session, volunteer=volunteer, paused=paused)
        await session.commit()
    await context.bot.send_message(
        update.effective_chat.id, texts.PAUSED if paused else texts.RESUMED
    )


async def on_forget(update: Update, context: BotContext) -> None:
    """/forget: ask for confirmation."""
    assert update.effective_chat is not None
    await context.bot.send_message(
        update.effective_chat.id, texts.FORGET_CONFIRM, reply_markup=keyboards.forget()
    )


async def on_leaderboard(update: Update, context: BotContext) -> None:
    """/leaderboard: this week and all time, nicknames only, and the volunteer's own rank."""
    assert update.effective_chat is not None
    lines = []
    async with context.services.sessionmaker() as session:
        volunteer = await sender(session, update)
        periods: tuple[tuple[Literal["week", "all"], str], ...] = (
            ("week", texts.WEEK),
            ("all", texts.ALL_TIME),
        )
        for period, name in periods:
            board = await leaderboard.leaderboard(
                session, period=period, volunteer_id=volunteer.id, now=utcnow()
            )
            lines.append(texts.LEADERBOARD_HEAD.format(period=name))
            if not board.rows:
                lines.append(texts.LEADERBOARD_EMPTY.format(period=name))
            for row in board.rows:
                lines.append(f"{row.rank}. {row.name}: {row.points}")
            if board.you is not None:
                lines.append(
                    texts.LEADERBOARD_YOU.format(rank=board.you.rank, points=board.you.points)
                )
            else:
                lines.append(texts.LEADERBOARD_YOU_NONE)
            lines.append("")
        await session.commit()
    await context.bot.send_message(update.effective_chat.id, "\n".join(lines).strip())


async def on_profile(update: Update, context: BotContext) -> None:
    """/me: the profile card image."""
    assert update.effective_chat is not None
    async with context.services.sessionmaker() as session:
        volunteer = await sender(session, update)
        assert volunteer.id is not None
        profile = await leaderboard.profile(session, volunteer_id=volunteer.id)
        await session.commit()
    png = await asyncio.to_thread(
        functools.partial(
            cards.profile_card,
            nickname=profile.nickname,
            points=profile.points,
            level=profile.level,
            streak_days=profile.streak_days,
            accuracy=profile.gold_accuracy,
            rank=profile.rank,
            badges=profile.badges,
            answers=profile.answers,
        )
    )
    await context.bot.send_photo(update.effective_chat.id, InputFile(png, filename="me.png"))


async def on_text(update: Update, context: BotContext) -> None:
    """A plain message: the nickname, when one was asked for."""
    assert update.effective_chat is not None
    assert update.effective_message is not None
    user_data = context.user_data
    if user_data is not None and coordinator.NEWPROJECT in user_data:
        await coordinator.on_newproject_text(update, context)
        return
    if user_data is None or not user_data.get(AWAITING_NICKNAME):
        await context.bot.send_message(update.effective_chat.id, texts.HELP)
        return
    async with context.services.sessionmaker() as session:
        volunteer = await sender(session, update)
        try:
            await people.set_nickname(
                session, volunteer=volunteer, nickname=update.effective_message.text or ""
            )
        except InvalidInput as error:
            await session.rollback()
            await context.bot.send_message(
                update.effective_chat.id, str(error), reply_markup=keyboards.skip_nickname()
            )
            return
        await session.commit()
        user_data[AWAITING_NICKNAME] = False
        await context.bot.send_message(
            update.effective_chat.id, texts.NICKNAME_SET.format(nickname=volunteer.nickname)
        )
        await _begin(context, session, volunteer, update.effective_chat.id)


async def _begin(
    context: BotContext, session: AsyncSession, volunteer: Volunteer, chat_id: int
) -> None:
    campaign = await routing.active_campaign(session)
    await session.commit()
    if campaign is not None and campaign.tutorial_tasks:
        await context.bot.send_message(
            chat_id, texts.TUTORIAL.format(n=campaign.tutorial_tasks, structure=campaign.structure)
        )
    await _serve_next(context, session, volunteer, chat_id, None)


# -- button presses -----------------------------------------------------------------------------


async def on_press(update: Update, context: BotContext) -> None:
    """Every inline button: parse, then one use case, then show the result in place."""
    query = update.callback_query
    assert query is not None
    assert update.effective_chat is not None
    try:
        press = Press.decode(query.data or "")
    except ValueError:
        await query.answer(texts.UNKNOWN_BUTTON)
        return
    chat_id = update.effective_chat.id
    message_id = query.message.message_id if query.message is not None else None
    services = context.services
    async with services.sessionmaker() as session:
        volunteer = await sender(session, update)
        if press.action not in WORK_ACTIONS:  # these talk to Telegram before writing
            await session.commit()
        try:
            note = await _handle(context, session, volunteer, press, chat_id, message_id)
        except StaleTask as error:
            await session.rollback()  # expires every loaded row: load the volunteer again
            await query.answer(texts.STALE.format(reason=error))
            volunteer = await sender(session, update)
            await _serve_next(context, session, volunteer, chat_id, message_id)
            return
        except NoConsent:
            await session.rollback()
            await query.answer(texts.NEED_CONSENT, show_alert=True)
            return
        except InvalidInput as error:
            await session.rollback()
            await query.answer(str(error), show_alert=True)
            return
    await query.answer(note)


async def _handle(
    context: BotContext,
    session: AsyncSession,
    volunteer: Volunteer,
    press: Press,
    chat_id: int,
    message_id: int | None,
) -> str | None:
    """Do what a press asks; returns the short toast for the button (None: none)."""
    services = context.services
    action = press.action
    if action == Action.CONSENT:
        await people.give_consent(session, volunteer=volunteer)
        await session.commit()
        if context.user_data is not None:
            context.user_data[AWAITING_NICKNAME] = True
        if message_id is not None:
            await context.bot.edit_message_text(
                texts.ASK_NICKNAME, chat_id, message_id, reply_markup=keyboards.skip_nickname()
            )
        return texts.THANKS
    if action == Action.DECLINE:
        if message_id is not None:
            await context.bot.edit_message_text(texts.DECLINED, chat_id, message_id)
        return None
    if action == Action.SKIP_NICK:
        if context.user_data is not None:
            context.user_data[AWAITING_NICKNAME] = False
        if message_id is not None:
            await context.bot.edit_message_text(texts.NICKNAME_SKIPPED, chat_id, message_id)
        await _begin(context, session, volunteer, chat_id)
        return None
    if action == Action.FORGET:
        await people.forget(session, volunteer=volunteer)
        await session.commit()
        if message_id is not None:
            await context.bot.edit_message_text(texts.FORGOTTEN, chat_id, message_id)
        return None
    if action == Action.KEEP:
        if message_id is not None:
            await context.bot.edit_message_text(texts.CANCELLED, chat_id, message_id)
        return None
    if action == Action.NEXT:
        await _serve_next(context, session, volunteer, chat_id, message_id)
        return None
    if volunteer.consent_at is None:
        raise NoConsent("no consent")
    assignment = await routing.assignment_by_token(session, token=press.token)
    if assignment.volunteer_id != volunteer.id:
        raise StaleTask("that button belongs to someone else's crop")
    if action in VERDICTS:
        return await _answer(
            context, session, volunteer, assignment, VERDICTS[action], None, chat_id, message_id
        )
    if action == Action.DONE:
        mask = tasks.final_mask(services.store, assignment=assignment)
        if mask is None:
            return texts.NO_CHANGE
        return await _answer(
            context, session, volunteer, assignment, Verdict.ADJUST, mask, chat_id, message_id
        )
    task = await tasks.task_of(session, assignment)
    tasks.check_open(assignment, task)
    note: str | None = None
    if action == Action.ADJUST:
        await tasks.set_mode(session, assignment=assignment, mode="menu")
    elif action == Action.BACK:
        mode = assignment.adjust.get("mode")
        await tasks.set_mode(
            session, assignment=assignment, mode="verdict" if mode == "menu" else "menu"
        )
    elif action == Action.CHOICES:
        await tasks.set_mode(session, assignment=assignment, mode="choices")
    elif action == Action.PICK:
        index = int(press.arg) if press.arg.isdigit() else -1  # ASCII: Press.decode checked
        await tasks.pick(session, services.store, assignment=assignment, index=index)
    elif action == Action.GRID:
        await tasks.set_mode(session, assignment=assignment, mode="grid")
    elif action == Action.CELL:
        await tasks.toggle_cell(session, assignment=assignment, cell=press.arg)
    elif action == Action.TAP:
        if not services.refiner.takes_points and press.arg != "box":
            raise InvalidInput("this model was trained with boxes only: select cells")
        await tasks.set_tap(session, assignment=assignment, tap=press.arg)
    elif action == Action.REFINE:
        await tasks.refine_cells(session, services.store, services.refiner, assignment=assignment)
    elif action == Action.UNDO and not await tasks.undo(session, assignment=assignment):
        note = texts.NOTHING_TO_UNDO
    view = await tasks.view(session, services.store, assignment)
    options = []
    if assignment.adjust.get("mode") == "choices":
        options = await tasks.choices(session, services.store, assignment)
    await session.commit()  # no transaction stays open across a call to Telegram
    mode = assignment.adjust.get("mode")
    if mode == "grid":
        await _show_grid(context, view, chat_id, message_id)
    elif mode == "choices":
        await _put_photo(
            context,
            chat_id=chat_id,
            message_id=message_id,
            key=_photo_key(view),
            draw=lambda: render.overlay(view.crop, view.working),
            caption=texts.CHOICES_HELP,
            markup=keyboards.choices(view.token, [o.name for o in options]),
        )
    elif mode == "menu":
        await _show_menu(context, view, chat_id, message_id)
    else:
        await _show_verdict(context, view, chat_id, message_id)
    return note


async def _answer(
    context: BotContext,
    session: AsyncSession,
    volunteer: Volunteer,
    assignment: Assignment,
    verdict: Verdict,
    mask: object,
    chat_id: int,
    message_id: int | None,
) -> str:
    """Store the answer, then gold feedback or the next crop in the same message."""
    services = context.services
    volunteer_id = volunteer.id
    submitted: Submitted = await submit(
        session,
        crowd=services.crowd,
        store=services.store,
        volunteer=volunteer,
        assignment=assignment,
        verdict=verdict,
        mask=mask,  # type: ignore[arg-type]
        prompt_points=tasks.last_prompt(assignment) if verdict == Verdict.ADJUST else None,
    )
    if submitted.duplicate:
        # A double press, or the retry of a press whose first run stored the answer and then
        # failed to show the next crop: show it (a held lease comes back; the same crop again
        # is "not modified" for Telegram). A concurrent duplicate rolled back: load them again.
        volunteer = await session.get_one(Volunteer, volunteer_id)
        await _serve_next(context, session, volunteer, chat_id, message_id)
        return texts.STORED_ALREADY
    await _after_answer(context, session, volunteer, assignment, submitted, chat_id, message_id)
    return texts.THANKS


async def _after_answer(
    context: BotContext,
    session: AsyncSession,
    volunteer: Volunteer,
    assignment: Assignment,
    submitted: Submitted,
    chat_id: int,
    message_id: int | None,
) -> None:
    """What follows a stored answer: gold feedback (then Next), else the next crop."""
    await alerts.send_alerts(context, session, submitted.alerts)
    if submitted.gold is not None:
        view = await tasks.view(session, context.services.store, assignment)
        gold = submitted.gold
        answer_shown = tasks.shown(assignment, gold.answer_mask)
        truth_shown = tasks.shown(assignment, gold.truth)
        if submitted.answer.verdict == Verdict.REJECT:
            caption = (
                texts.GOLD_REJECT_RIGHT
                if gold.score >= 1.0
                else texts.GOLD_REJECT_WRONG.format(dice=gold.proposal_dice)
            )
            answer_shown = view.proposal
        else:
            emoji = "🎯" if gold.score >= 0.9 else "👍" if gold.score >= 0.75 else "🧐"
            caption = texts.GOLD_FEEDBACK.format(emoji=emoji, score=gold.score)
        await session.commit()
        png, _ = await asyncio.to_thread(cards.gold_feedback, view.crop, answer_shown, truth_shown)
        await _put_photo(
            context,
            chat_id=chat_id,
            message_id=message_id,
            key=f"gold:{assignment.token}",
            draw=lambda: png,
            caption=caption,
            markup=keyboards.next_crop(),
        )
        return
    await _serve_next(context, session, volunteer, chat_id, message_id)


async def after_editor_answer(app: BotApplication, done: EditorAnswer) -> None:
    """The Mini App stored an answer: the chat moves on as after a button press.

    The volunteer's crop message (known from the lease) shows the gold feedback or the next
    crop; without a known message a new one is sent.
    """
    context = BotContext(app)
    lease = done.assignment
    chat_id = lease.chat_id or done.volunteer.telegram_user_id  # a private chat's id is the user's
    async with context.services.sessionmaker() as session:
        assert done.volunteer.id is not None
        assert lease.id is not None
        volunteer = await session.get_one(Volunteer, done.volunteer.id)
        assignment = await session.get_one(Assignment, lease.id)
        await _after_answer(
            context, session, volunteer, assignment, done.submitted, chat_id, lease.message_id
        )


async def on_error(update: object, context: BotContext) -> None:
    """One error handler: user errors become their message, anything else an apology."""
    error = context.error
    chat_id = (
        update.effective_chat.id if isinstance(update, Update) and update.effective_chat else None
    )
    if isinstance(error, MedCrowdError):
        text = str(error)
    elif is_transient(error) and isinstance(update, Update):
        # The database, the disk or Telegram failed for a moment: the intake runs the update
        # again shortly (no apology: the retry answers the press).
        logger.warning("update %s met %r; it will be retried", update.update_id, error)
        context.application.bot_data.setdefault(RETRY_KEY, set()).add(update.update_id)
        return
    elif is_late_query_answer(error):
        logger.info("a button press was answered too late (after a retry): %s", error)
        return
    else:
        logger.error("handler failed", exc_info=error)
        text = texts.ERROR
    if chat_id is not None:
        try:
            await context.bot.send_message(chat_id, text)
        except Exception:  # the apology itself may fail; nothing more to do
            logger.warning("could not tell chat %s about an error", chat_id)
