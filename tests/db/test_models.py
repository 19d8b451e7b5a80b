from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.db.models import (
    Answer,
    Campaign,
    Image,
    InboxUpdate,
    Task,
    TaskKind,
    TaskStatus,
    Verdict,
    Volunteer,
)
from bot.db.types import utcnow


async def _task(session: AsyncSession) -> tuple[Campaign, Image, Task]:
    campaign = Campaign(name="c1")
    session.add(campaign)
    await session.flush()
    assert campaign.id is not None
    image = Image(
        campaign_id=campaign.id,
        content_hash="a" * 64,
        file_key="images/" + "a" * 64 + ".png",
        source_name="x.png",
        width=10,
        height=10,
    )
    session.add(image)
    await session.flush()
    assert image.id is not None
    task = Task(
        campaign_id=campaign.id,
        image_id=image.id,
        crop_x0=0,
        crop_y0=0,
        crop_side=10,
        crop_out=10,
        crop_key="crops/" + "b" * 64 + ".png",
        crop_hash="b" * 64,
        box_x0=1,
        box_y0=1,
        box_x1=5,
        box_y1=5,
    )
    session.add(task)
    await session.flush()
    return campaign, image, task


async def test_models_round_trip_enums_json_and_aware_times(session: AsyncSession) -> None:
    _, _, task = await _task(session)
    volunteer = Volunteer(telegram_user_id=9_000_000_001, reliability={"sens": 0.9, "spec": 0.95})
    session.add(volunteer)
    await session.flush()
    assert task.id is not None
    assert volunteer.id is not None
    session.add(
        Answer(
            task_id=task.id,
            volunteer_id=volunteer.id,
            verdict=Verdict.ADJUST,
            prompt_points=[[1, 2, 1]],
        )
    )
    await session.commit()
    session.expunge_all()
    answer = (await session.exec(select(Answer))).one()
    assert answer.verdict is Verdict.ADJUST
    assert answer.prompt_points == [[1, 2, 1]]
    assert answer.created_at.tzinfo is not None
    assert abs(answer.created_at - utcnow()) < dt.timedelta(minutes=1)
    stored = (await session.exec(select(Task))).one()
    assert stored.kind is TaskKind.REAL
    assert stored.status is TaskStatus.OPEN
    loaded = (await session.exec(select(Volunteer))).one()
    assert loaded.telegram_user_id == 9_000_000_001
    assert loaded.reliability["spec"] == 0.95


async def test_models_one_answer_per_task_and_volunteer(session: AsyncSession) -> None:
    _, _, task = await _task(session)
    volunteer = Volunteer(telegram_user_id=42)
    session.add(volunteer)
    await session.flush()
    assert task.id is not None
    assert volunteer.id is not None
    session.add(Answer(task_id=task.id, volunteer_id=volunteer.id, verdict=Verdict.ACCEPT))
    await session.flush()
    session.add(Answer(task_id=task.id, volunteer_id=volunteer.id, verdict=Verdict.REJECT))
    with pytest.raises(IntegrityError):
        await session.flush()


async def test_models_image_hash_unique_within_campaign(session: AsyncSession) -> None:
    _campaign, image, _ = await _task(session)
    twin = Image(
        campaign_id=image.campaign_id,
        content_hash=image.content_hash,
        file_key=image.file_key,
        source_name="twin.png",
        width=10,
        height=10,
    )
    session.add(twin)
    with pytest.raises(IntegrityError):
        await session.flush()


async def test_models_unique_telegram_user_and_update_id(session: AsyncSession) -> None:
    session.add_all([Volunteer(telegram_user_id=7), Volunteer(telegram_user_id=7)])
    with pytest.raises(IntegrityError):
        await session.flush()
    await session.rollback()
    session.add_all([InboxUpdate(update_id=1, payload={}), InboxUpdate(update_id=1, payload={})])
    with pytest.raises(IntegrityError):
        await session.flush()


async def test_models_foreign_keys_are_enforced(session: AsyncSession) -> None:
    session.add(Answer(task_id=999_999, volunteer_id=999_999, verdict=Verdict.SKIP))
    with pytest.raises(IntegrityError):
        await session.flush()


async def test_models_refuse_naive_datetimes(session: AsyncSession) -> None:
    session.add(Campaign(name="naive", created_at=dt.datetime(2026, 1, 1)))  # noqa: DTZ001
    with pytest.raises(Exception, match="naive datetime"):
        await session.flush()
