"""The update inbox: raw Telegram updates persisted before they are confirmed, processed once.

Polling confirms an update to Telegram only on the next ``getUpdates`` call, which happens after
the batch is committed here; a webhook answers 200 only after the insert. A crash therefore loses
nothing: on restart every stored but unprocessed update is processed. An update id seen twice
(a webhook retry) is stored once.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.db.models import InboxUpdate
from bot.db.types import utcnow

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5


async def store_updates(session: AsyncSession, payloads: list[dict[str, Any]]) -> int:
    """Persist updates (commits); returns how many were new. Duplicates are ignored."""
    if not payloads:
        return 0
    ids = [int(p["update_id"]) for p in payloads]
    known = await session.exec(
        select(InboxUpdate.update_id).where(col(InboxUpdate.update_id).in_(ids))
    )
    seen = set(known.all())
    new = 0
    for payload in payloads:
        update_id = int(payload["update_id"])
        if update_id in seen:
            continue
        seen.add(update_id)
        session.add(InboxUpdate(update_id=update_id, payload=payload))
        new += 1
    try:
        await session.commit()
    except IntegrityError:  # a concurrent writer stored some: fall back to one at a time
        await session.rollback()
        new = 0
        for payload in payloads:
            try:
                session.add(InboxUpdate(update_id=int(payload["update_id"]), payload=payload))
                await session.commit()
                new += 1
            except IntegrityError:
                await session.rollback()
    return new


async def pending(session: AsyncSession, *, limit: int = 100) -> list[InboxUpdate]:
    """Stored updates not processed yet, oldest first (parked ones excluded)."""
    result = await session.exec(
        select(InboxUpdate)
        .where(col(InboxUpdate.processed_at).is_(None), InboxUpdate.attempts < MAX_ATTEMPTS)
        .order_by(col(InboxUpdate.update_id))
        .limit(limit)
    )
    return list(result.all())


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


async def mark(session: AsyncSession, *, update_id: int, error: str | None = None) -> None:
    """Record one processing attempt (commits): done, or failed with ``error``.

    An update that fails ``MAX_ATTEMPTS`` times is parked (kept, with its error) instead of
    blocking its volunteer forever.
    """
    found = await session.exec(select(InboxUpdate).where(InboxUpdate.update_id == update_id))
    row = found.one()
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
