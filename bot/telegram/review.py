"""``/review``: an expert settles the crops the crowd escalated, one at a time.

Each crop comes as one image with the crowd's candidates numbered; a button picks one, or the
expert sends a mask file of their own. Either becomes the crop's gold and the next crop follows.
"""

from __future__ import annotations

import logging

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Update

from bot.campaign import review
from bot.campaign.coordination import require
from bot.campaign.decode import Rejected, decode_mask
from bot.campaign.errors import InvalidInput, MedCrowdError
from bot.campaign.volunteers import volunteer_for
from bot.db.models import Task, Volunteer
from bot.telegram.context import BotContext, sender
from bot.telegram.parsing import parse_id

logger = logging.getLogger(__name__)

PREFIX = "rv:"
PENDING = "review_task"  # user_data key: the crop the expert is looking at
SKIPPED = "review_skipped"
MAX_MASK_BYTES = 5 * 1000 * 1000


async def on_review(update: Update, context: BotContext) -> None:
    """/review: the oldest escalated crop waiting for an expert."""
    assert update.effective_chat is not None
    assert update.effective_user is not None
    if context.user_data is not None:
        context.user_data[SKIPPED] = []
    await show_next(context, update.effective_user.id, update.effective_chat.id)


async def show_next(context: BotContext, user_id: int, chat_id: int) -> None:
    """Send the next escalated crop with its candidates, or say that none waits."""
    services = context.services
    user_data = context.user_data if context.user_data is not None else {}
    async with services.sessionmaker() as session:
        actor = await volunteer_for(session, telegram_user_id=user_id)
        item = await review.next_item(
            session, services.store, actor, services.admins, skip=user_data.get(SKIPPED, [])
        )
        await session.commit()
    if item is None:
        user_data.pop(PENDING, None)
        await context.bot.send_message(chat_id, "No escalated crop waits for review. Thank you!")
        return
    assert item.task.id is not None
    user_data[PENDING] = item.task.id
    lines = [f"{i}. {c.label}" for i, c in enumerate(item.candidates, start=1)]
    caption = "\n".join(
        [
            f"Crop #{item.task.id}, escalated by the crowd ({item.waiting} waiting).",
            *lines,
            "Pick the right outline, or send your own mask as a PNG file "
            f"({item.task.crop_out}x{item.task.crop_out}, white = structure).",
        ]
    )
    buttons = [
        InlineKeyboardButton(str(i), callback_data=f"{PREFIX}{item.task.id}:{i}")
        for i in range(1, len(item.candidates) + 1)
    ]
    keyboard = InlineKeyboardMarkup(
        [buttons, [InlineKeyboardButton("Skip for now", callback_data=f"{PREFIX}{item.task.id}:s")]]
    )
    await context.bot.send_photo(
        chat_id,
        InputFile(review.sheet(item), filename="review.png"),
        caption=caption[:1024],
        reply_markup=keyboard,
        protect_content=True,  # medical crops: no forwarding, no saving
    )


async def on_press(update: Update, context: BotContext) -> None:
    """A candidate's number (or Skip): checked against whoever pressed it."""
    query = update.callback_query
    assert query is not None
    assert query.message is not None
    services = context.services
    task_text, _, choice = (query.data or "").removeprefix(PREFIX).partition(":")
    task_id = parse_id(task_text)
    if task_id is None or not (choice == "s" or parse_id(choice) is not None):
        await query.answer("this button is not valid any more", show_alert=True)
        return
    user_data = context.user_data if context.user_data is not None else {}
    try:
        async with services.sessionmaker() as session:
            actor = await volunteer_for(session, telegram_user_id=query.from_user.id)
            require(actor, services.admins, *review.REVIEWERS)
            if choice == "s":
                user_data.setdefault(SKIPPED, []).append(task_id)
            else:
                found = await session.get(Task, task_id)
                if found is None:
                    raise InvalidInput("this crop is gone")
                candidates = await review.candidates(session, services.store, found)
                index = int(choice) - 1
                if not 0 <= index < len(candidates):
                    raise InvalidInput("the candidates changed: send /review again")
                await _settle(context, session, actor, task_id, candidates[index])
            await session.commit()
    except MedCrowdError as error:
        await query.answer(str(error), show_alert=True)
        return
    await query.answer("Skipped" if choice == "s" else "Saved as gold, thank you")
    await show_next(context, query.from_user.id, query.message.chat.id)


async def on_mask_document(update: Update, context: BotContext) -> None:
    """The expert's own mask for the crop under review."""
    message = update.effective_message
    assert message is not None
    assert message.document is not None
    assert update.effective_user is not None
    assert update.effective_chat is not None
    services = context.services
    assert context.user_data is not None
    task_id = int(context.user_data[PENDING])
    document = message.document
    if (document.file_size or 0) > MAX_MASK_BYTES:
        raise InvalidInput("a mask file is at most 5 MB")
    data = bytes(await (await context.bot.get_file(document.file_id)).download_as_bytearray())
    try:
        slices = decode_mask(document.file_name or "mask.png", data, services.limits)
    except Rejected as error:
        raise InvalidInput(f"this file is not a mask I can read: {error}") from None
    if len(slices) != 1:
        raise InvalidInput("send one 2D mask (a PNG), not a volume")
    async with services.sessionmaker() as session:
        actor = await sender(session, update)
        await _settle(context, session, actor, task_id, review.Candidate("own mask", slices[0]))
        await session.commit()
    await context.bot.send_message(update.effective_chat.id, "Your mask is now this crop's gold.")
    await show_next(context, update.effective_user.id, update.effective_chat.id)


async def _settle(
    context: BotContext,
    session: AsyncSession,
    actor: Volunteer,
    task_id: int,
    chosen: review.Candidate,
) -> None:
    services = context.services
    await review.settle(
        session,
        services.store,
        services.crowd,
        actor,
        services.admins,
        task_id,
        chosen.mask,
        source=chosen.label,
    )
