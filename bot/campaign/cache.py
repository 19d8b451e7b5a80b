"""Short-lived caches of rows that every press reads and that rarely change.

A campaign's rules and a crop's proposal are read on every answer; a coordinator's change (or a
new proposal) is seen after at most ``TTL_SECONDS``. Cached rows are detached copies: read them,
never change them.
"""

from __future__ import annotations

import itertools
import time
import weakref
from typing import Any, TypeVar

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.db.models import Campaign, CampaignStatus, Proposal

T = TypeVar("T")
TTL_SECONDS = 5.0
_entries: dict[tuple[str, Any], tuple[float, Any]] = {}
# One number per engine (or connection) ever seen. Not ``id()``: once an engine is gone, a new one
# (another database) can get its address, and would read the old one's rows for 5 seconds.
_binds: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_numbers = itertools.count()


def _bind_number(bind: Any) -> int:
    number = _binds.get(bind)
    if number is None:
        number = _binds[bind] = next(_numbers)
    return number


def _key(session: AsyncSession, kind: str, ident: Any) -> tuple[str, Any]:
    """Entries are per database: keyed by the engine (or connection) the session is bound to."""
    return (kind, (_bind_number(session.bind), ident))


def _get(key: tuple[str, Any]) -> tuple[bool, Any]:
    hit = _entries.get(key)
    if hit is not None and time.monotonic() - hit[0] < TTL_SECONDS:
        return True, hit[1]
    return False, None


def _put(key: tuple[str, Any], value: T) -> T:
    if len(_entries) > 10_000:
        _entries.clear()
    _entries[key] = (time.monotonic(), value)
    return value


def clear() -> None:
    """Forget everything (tests, and after a coordinator changes rules)."""
    _entries.clear()


async def campaign(session: AsyncSession, campaign_id: int) -> Campaign:
    """A campaign's row (at most ``TTL_SECONDS`` old)."""
    found, value = _get(_key(session, "campaign", campaign_id))
    if found:
        assert isinstance(value, Campaign)
        return value
    row = await session.get_one(Campaign, campaign_id)
    return _put(_key(session, "campaign", campaign_id), row)


async def active_campaign(session: AsyncSession) -> Campaign | None:
    """The oldest campaign that hands out crops (at most ``TTL_SECONDS`` old)."""
    found, value = _get(_key(session, "active", None))
    if found:
        assert value is None or isinstance(value, Campaign)
        return value
    result = await session.exec(
        select(Campaign).where(Campaign.status == CampaignStatus.ACTIVE).order_by(col(Campaign.id))
    )
    return _put(_key(session, "active", None), result.first())


async def proposal(session: AsyncSession, task_id: int) -> Proposal | None:
    """The newest proposal of a task (at most ``TTL_SECONDS`` old)."""
    found, value = _get(_key(session, "proposal", task_id))
    if found:
        assert isinstance(value, Proposal)
        return value
    result = await session.exec(
        select(Proposal)
        .where(Proposal.task_id == task_id)
        .order_by(col(Proposal.created_at).desc(), col(Proposal.id).desc())
    )
    row = result.first()
    return _put(_key(session, "proposal", task_id), row) if row is not None else None
