"""The update inbox: raw Telegram updates persisted before they are confirmed, processed once.

Polling confirms an update to Telegram only on the next ``getUpdates`` call, which happens after
the batch is committed here; a webhook answers 200 only after the insert. A crash therefore loses
nothing: on restart every stored but unprocessed update is processed. An update id seen twice
(a webhook retry) is stored once.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import and_, col, delete, or_, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign.flood import user_of
from bot.db.models import InboxUpdate
from bot.db.types import utcnow

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
CHANNEL = "medcrowd_inbox"  # PostgreSQL NOTIFY channel: new updates are stored
KEEP_PROCESSED = dt.timedelta(days=1)
# What an update may keep of a person or chat: ids and kinds, never names or handles.
_KEEP = {"id", "is_bot", "type"}


def scrub(payload: Any) -> Any:
    """A copy of an update without names, usernames, language or profile details.

    Users and chats keep their id (and is_bot / type); ``first_name`` becomes "" because the
    Bot API requires the field. Message texts stay (commands, nicknames a volunteer chose).
    """
    if isinstance(payload, list):
        return [scrub(item) for item in payload]
    if not isinstance(payload, dict):
        return payload
    if "id" in payload and ("is_bot" in payload or "type" in payload):  # a User or a Chat
        kept = {k: v for k, v in payload.items() if k in _KEEP}
        if "is_bot" in payload:
            kept["first_name"] = ""
        return kept
    return {k: scrub(v) for k, v in payload.items()}


async def store_updates(session: AsyncSession, payloads: list[dict[str, Any]]) -> list[int]:
    """Persist updates (commits); returns the ids that were new. Duplicates are ignored."""
    if not payloads:
        return []
    rows = {int(p["update_id"]): p for p in payloads}  # a batch may repeat an update
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    statement = (
        insert(InboxUpdate)
        .values(
            [
                {
                    "update_id": i,
                    "user_id": user_of(p),
                    "payload": scrub(p),
                    "received_at": now,
                    "attempts": 0,
                }
                for i, p in rows.items()
            ]
        )
        .on_conflict_do_nothing(index_elements=["update_id"])
        .returning(col(InboxUpdate.update_id))
    )
    result = await session.exec(statement)
    new = sorted(int(i) for i in result.scalars().all())
    if new and dialect == "postgresql":  # wakes the other bot processes (delivered on commit)
        await session.exec(select(func.pg_notify(CHANNEL, "")))
    await session.commit()
    return new


async def purge(session: AsyncSession, *, older_than: dt.timedelta = KEEP_PROCESSED) -> int:
    """Delete updates past their retention (commits); returns how many.

    Processed updates go ``older_than`` after they were processed, parked ones (failed
    ``MAX_ATTEMPTS`` times) ``older_than`` after they arrived; unprocessed ones stay.
    """
    cutoff = utcnow() - older_than
    processed = col(InboxUpdate.processed_at)
    result = await session.exec(
        delete(InboxUpdate).where(
            or_(
                and_(processed.is_not(None), processed < cutoff),
                and_(
                    processed.is_(None),
                    col(InboxUpdate.attempts) >= MAX_ATTEMPTS,
                    col(InboxUpdate.received_at) < cutoff,
                ),
            )
        )
    )
    await session.commit()
    return int(result.rowcount or 0)


async def forget_user(session: AsyncSession, *, user_id: int) -> None:
    """Delete the stored updates of one Telegram user (``/forget``; the caller commits)."""
    rows = await session.exec(select(InboxUpdate))
    for row in rows.all():
        sender = user_of(row.payload)
        if sender == user_id:
            await session.delete(row)


async def pending(
    session: AsyncSession, *, limit: int = 100, partition: tuple[int, int] = (0, 1)
) -> list[InboxUpdate]:
    """Stored updates not processed yet, oldest first (parked ones excluded).

    ``partition`` ``(k, n)``: only those of senders whose id is ``k`` modulo ``n`` (updates
    without a sender go to partition 0), for ``n`` bot processes sharing one database.
    """
    k, n = partition
    statement = select(InboxUpdate).where(
        col(InboxUpdate.processed_at).is_(None), InboxUpdate.attempts < MAX_ATTEMPTS
    )
    if n > 1:
        statement = statement.where(func.coalesce(col(InboxUpdate.user_id), 0) % n == k)
    result = await session.exec(statement.order_by(col(InboxUpdate.update_id)).limit(limit))
    return list(result.all())


def owner(user_id: int | None, processes: int) -> int:
    """The partition (bot process) that handles a sender's updates."""
    return (user_id or 0) % processes


async def mark_done(session: AsyncSession, *, update_ids: list[int]) -> None:
    """Mark processed updates done, many in one statement (commits)."""
    if not update_ids:
        return
    await session.exec(
        update(InboxUpdate)
        .where(col(InboxUpdate.update_id).in_(update_ids))
        .values(processed_at=utcnow(), attempts=InboxUpdate.attempts + 1, error=None)
    )
    await session.commit()


async def mark(
    session: AsyncSession, *, update_id: int, error: str | None = None, counts: bool = True
) -> None:
    """Record one processing attempt (commits): done, or failed with ``error``.

    An update that fails ``MAX_ATTEMPTS`` times is parked (kept, with its error) instead of
    blocking its volunteer forever. A failure that passes by itself (the database or the disk
    for a moment: ``counts`` False) does not count toward that, so an outage parks nothing.
    """
    found = await session.exec(select(InboxUpdate).where(InboxUpdate.update_id == update_id))
    row = found.one()
    if counts or error is None:
        row.attempts += 1
    if error is None:
        row.processed_at = utcnow()
        row.error = None
    else:
        row.error = error[:4000]
        if row.attempts >= MAX_ATTEMPTS:
            logger.error("update %s parked after %d failures", update_id, row.attempts)
    session.add(row)
    await session.commit()
