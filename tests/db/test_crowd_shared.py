"""Two bot processes' fusion models on one PostgreSQL database see every answer (shared)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import routing
from bot.campaign import volunteers as people
from bot.campaign.answers import Submitted, submit
from bot.campaign.crowd import Crowd
from bot.campaign.proposals import run_proposals
from bot.db.models import Campaign, Task, TaskKind, Verdict, Volunteer
from bot.jobs.proposals import LocalRunner, ProposerSpec
from bot.store.files import FileStore
from tests.helpers.campaigns import phantom_campaign

NOON = dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC)


async def _shared_campaign(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path, answers: int
) -> Campaign:
    """A proposed campaign on PostgreSQL whose crops take exactly ``answers`` answers."""
    async with sessionmaker() as session:
        if session.get_bind().dialect.name != "postgresql":
            pytest.skip("several bot processes share PostgreSQL only")
    campaign = await phantom_campaign(sessionmaker, store, tmp_path / "ph", n=4)
    await run_proposals(sessionmaker, store, campaign, ProposerSpec(), LocalRunner(workers=0))
    async with sessionmaker() as session:
        row = await session.get_one(Campaign, campaign.id)
        row.min_answers, row.max_answers, row.tutorial_tasks, row.gold_rate = (
            answers,
            answers,
            0,
            0.0,
        )
        session.add(row)
        await session.commit()
    return campaign


async def _accept_next(
    session: AsyncSession, crowd: Crowd, store: FileStore, telegram_id: int
) -> tuple[Volunteer, Submitted]:
    """A new volunteer joins, is leased the next crop and accepts it, through ``crowd``."""
    volunteer = await people.volunteer_for(session, telegram_user_id=telegram_id)
    await people.give_consent(session, volunteer=volunteer)
    await session.commit()
    lease = await routing.next_assignment(
        session, volunteer=volunteer, rng=np.random.default_rng(0), now=NOON
    )
    await session.commit()
    done = await submit(
        session,
        crowd=crowd,
        store=store,
        volunteer=volunteer,
        assignment=lease,
        verdict=Verdict.ACCEPT,
        now=NOON + dt.timedelta(seconds=5),
    )
    return volunteer, done


async def test_each_process_folds_in_the_others_answers(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    campaign = await _shared_campaign(sessionmaker, store, tmp_path, answers=3)
    first, second = Crowd(store, shared=True), Crowd(store, shared=True)
    decisions = []
    task_id = None
    async with sessionmaker() as session:
        for i, crowd in enumerate([first, second, first]):
            _, done = await _accept_next(session, crowd, store, 900 + i)
            task_id = task_id or done.answer.task_id
            assert done.answer.task_id == task_id  # the same crop for all three
            decisions.append(done.decision)
        task = await session.get_one(Task, task_id)
    assert task.kind == TaskKind.REAL
    assert campaign.id is not None
    assert first.models[campaign.id].result(task.id or 0).answers == 3  # one came from `second`
    assert decisions[-1] != "continue"  # the third answer finished the crop
    assert decisions[:2] == ["continue", "continue"]


async def test_a_ban_in_one_process_reaches_the_others_models(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> None:
    """/ban refits the model of the process that handled it; every other process sees the new
    list of banned volunteers with its next answer and fits again without their open answers."""
    campaign = await _shared_campaign(sessionmaker, store, tmp_path, answers=4)
    assert campaign.id is not None
    first, second = Crowd(store, shared=True), Crowd(store, shared=True)
    people_ids: list[int | None] = []
    task_id = None
    async with sessionmaker() as session:
        for i, crowd in enumerate([first, second, second]):
            if i == 2:  # the coordinator bans the first volunteer, in the first process
                target = await session.get_one(Volunteer, people_ids[0])
                target.banned = True
                session.add(target)
                await session.commit()
                await first.reset()
                assert second.models[campaign.id].result(task_id or 0).answers == 2
            volunteer, done = await _accept_next(session, crowd, store, 950 + i)
            people_ids.append(volunteer.id)
            task_id = task_id or done.answer.task_id
            assert done.answer.task_id == task_id
    # the second process's model: the two unbanned answers, not the banned volunteer's
    assert second.models[campaign.id].result(task_id or 0).answers == 2
    assert people_ids[0] not in second.models[campaign.id].crops[task_id or 0].answers
