"""Raw updates are purged after MEDCROWD_RETENTION_UPDATES_HOURS; unprocessed ones stay."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import inbox
from bot.db.models import InboxUpdate
from bot.db.types import utcnow
from bot.settings import Settings
from bot.telegram.intake import Intake


async def _seed(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    now = utcnow()

    def update(update_id: int, *, hours_ago: float, processed: bool, attempts: int = 1) -> None:
        at = now - dt.timedelta(hours=hours_ago)
        session.add(
            InboxUpdate(
                update_id=update_id,
                payload={"update_id": update_id},
                received_at=at,
                processed_at=at if processed else None,
                attempts=attempts,
            )
        )

    async with sessionmaker() as session:
        update(1, hours_ago=0.5, processed=True)
        update(2, hours_ago=5, processed=True)
        update(3, hours_ago=30, processed=True)
        update(4, hours_ago=30, processed=False, attempts=0)  # never processed: kept
        update(5, hours_ago=30, processed=False, attempts=inbox.MAX_ATTEMPTS)  # parked
        update(6, hours_ago=5, processed=False, attempts=inbox.MAX_ATTEMPTS)
        await session.commit()


async def _left(sessionmaker: async_sessionmaker[AsyncSession]) -> list[int]:
    async with sessionmaker() as session:
        rows = await session.exec(
            select(InboxUpdate.update_id).order_by(col(InboxUpdate.update_id))
        )
        return list(rows.all())


@pytest.mark.parametrize(
    ("hours", "left"),
    [(48.0, [1, 2, 3, 4, 5, 6]), (24.0, [1, 2, 4, 6]), (2.0, [1, 4]), (0.1, [4])],
)
async def test_the_intake_purges_updates_past_the_retention_setting(
    sessionmaker: async_sessionmaker[AsyncSession], hours: float, left: list[int]
) -> None:
    await _seed(sessionmaker)
    settings = Settings(retention_updates_hours=hours)
    intake = Intake(
        None,  # type: ignore[arg-type]
        sessionmaker,
        keep_processed=dt.timedelta(hours=settings.retention_updates_hours),
    )
    purged = await intake.purge()
    assert await _left(sessionmaker) == left
    assert purged == 6 - len(left)


def test_the_retention_setting_must_be_positive() -> None:
    with pytest.raises(ValueError, match="retention_updates_hours"):
        Settings(retention_updates_hours=0)
