"""Tell coordinators when fusion judges a volunteer's answers worthless or adversarial."""

from __future__ import annotations

import logging

from sqlmodel.ext.asyncio.session import AsyncSession
from telegram.error import TelegramError

from bot.campaign.alerts import CollapseAlert, coordinator_chats
from bot.telegram import texts
from bot.telegram.context import BotContext

logger = logging.getLogger(__name__)


async def send_alerts(
    context: BotContext, session: AsyncSession, alerts: list[CollapseAlert]
) -> int:
    """Message every coordinator about each alert; returns the messages delivered.

    The session's transaction ends before the first call to Telegram.
    """
    if not alerts:
        return 0
    chats = await coordinator_chats(session, context.services.admins)
    await session.commit()
    sent = 0
    for alert in alerts:
        text = texts.RELIABILITY_ALERT.format(
            name=alert.name,
            id=alert.volunteer_id,
            evidence=alert.evidence,
            judged="work against the truth" if alert.adversary else "ignore the image",
        )
        for chat_id in chats:
            try:
                await context.bot.send_message(chat_id, text)
            except TelegramError:  # a coordinator who blocked the bot: the others still hear
                logger.warning("reliability alert to a coordinator not delivered")
            else:
                sent += 1
    return sent
