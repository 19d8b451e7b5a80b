"""Abuse limits on a real database: the daily cap, the speed floor, bans and reliability alerts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import arrays, routing
from bot.campaign import volunteers as people
from bot.campaign.alerts import MIN_EVIDENCE, coordinator_chats, new_alerts
from bot.campaign.answers import Submitted, submit
from bot.campaign.crowd import Crowd, proposal_of
from bot.campaign.errors import NoWork, StaleTask
from bot.db.models import Answer, Campaign, Role, Task, TaskKind, Verdict, Volunteer
from bot.store.files import FileStore
from fusion.paf import VolunteerReport
from tests.helpers.campaigns import proposed_campaign

NOON = dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC)


@pytest.fixture
async def campaign(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> Campaign:
    return await proposed_campaign(
        sessionmaker,
        store,
        tmp_path / "ph",
        n=12,
        min_answers=3,
        max_answers=3,
        tutorial_tasks=0,
        gold_rate=0.0,
        retire_confidence=0.99,
    )


async def _volunteer(session: AsyncSession, user: int) -> Volunteer:
    volunteer = await people.volunteer_for(session, telegram_user_id=user)
    await people.give_consent(session, volunteer=volunteer)
    await session.commit()
    return volunteer


async def _answer(
    session: AsyncSession,
    crowd: Crowd,
    store: FileStore,
    volunteer: Volunteer,
    *,
    now: dt.datetime,
    seconds: float,
    verdict: Verdict = Verdict.ACCEPT,
    invert: bool = False,
) -> Submitted:
    """Lease the next crop at ``now`` and answer it ``seconds`` later."""
    rng = np.random.default_rng(0)
    assignment = await routing.next_assignment(session, volunteer=volunteer, rng=rng, now=now)
    await session.commit()
    mask = None
    if invert:  # the adversary's outline: everything the proposal leaves out
        proposal = await proposal_of(session, task_id=assignment.task_id)
        assert proposal is not None
        mask = ~arrays.mask(store, proposal.mask_key)
        verdict = Verdict.ADJUST
    return await submit(
        session,
        crowd=crowd,
        store=store,
        volunteer=volunteer,
        assignment=assignment,
        verdict=verdict,
        mask=mask,
        now=now + dt.timedelta(seconds=seconds),
    )


async def test_the_daily_cap_stops_serving_until_the_next_utc_day(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, campaign: Campaign
) -> None:
    crowd = Crowd(store)
    async with sessionmaker() as session:
        row = await session.get_one(Campaign, campaign.id)
        row.daily_cap = 2
        session.add(row)
        await session.commit()
        volunteer = await _volunteer(session, 501)
        for i in range(2):
            await _answer(
                session, crowd, store, volunteer, now=NOON + dt.timedelta(minutes=i), seconds=5
            )
        with pytest.raises(NoWork, match="tomorrow"):
            await routing.next_assignment(
                session, volunteer=volunteer, rng=np.random.default_rng(0), now=NOON
            )
        tomorrow = NOON + dt.timedelta(days=1)
        assert await routing.next_assignment(
            session, volunteer=volunteer, rng=np.random.default_rng(0), now=tomorrow
        )


async def test_answers_under_the_speed_floor_earn_a_cool_down(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, campaign: Campaign
) -> None:
    crowd = Crowd(store)
    floor = campaign.answer_floor_seconds
    assert floor > 0
    async with sessionmaker() as session:
        volunteer = await _volunteer(session, 502)
        now = NOON
        # fast answers ending in a slow one: no streak, still served
        for i in range(routing.FAST_STREAK):
            slow = i == routing.FAST_STREAK - 1
            await _answer(
                session, crowd, store, volunteer, now=now, seconds=floor * (3 if slow else 0.2)
            )
            now += dt.timedelta(seconds=10)
        assert await routing.next_assignment(
            session, volunteer=volunteer, rng=np.random.default_rng(0), now=now
        )
        await session.commit()  # the lease is held: the next answer takes it
        for _ in range(routing.FAST_STREAK):
            await _answer(session, crowd, store, volunteer, now=now, seconds=floor * 0.2)
            now += dt.timedelta(seconds=1)
        with pytest.raises(NoWork, match="take a breath"):
            await routing.next_assignment(
                session, volunteer=volunteer, rng=np.random.default_rng(0), now=now
            )
        later = now + routing.FAST_COOL_DOWN
        assert await routing.next_assignment(
            session, volunteer=volunteer, rng=np.random.default_rng(0), now=later
        )


async def test_a_banned_volunteers_open_answers_stop_counting(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, campaign: Campaign
) -> None:
    crowd = Crowd(store)
    assert campaign.id is not None
    async with sessionmaker() as session:
        bad = await _volunteer(session, 503)
        first = await _answer(
            session, crowd, store, bad, now=NOON, seconds=5, verdict=Verdict.REJECT
        )
        task_id = first.answer.task_id
        model = await crowd.model(session, campaign.id)
        assert model.result(task_id).answers == 1
        # a lease taken before the ban: pressing it afterwards stores nothing
        held = await routing.next_assignment(
            session, volunteer=bad, rng=np.random.default_rng(0), now=NOON
        )
        await session.commit()
        bad.banned = True
        session.add(bad)
        await session.commit()
        await crowd.reset()
        with pytest.raises(StaleTask, match="paused"):
            await submit(
                session,
                crowd=crowd,
                store=store,
                volunteer=bad,
                assignment=held,
                verdict=Verdict.ACCEPT,
                now=NOON,
            )
        await session.rollback()
        stored = (
            await session.exec(
                select(func.count()).select_from(Answer).where(Answer.volunteer_id == bad.id)
            )
        ).one()
        assert stored == 1
        with pytest.raises(NoWork, match="paused"):
            await routing.next_assignment(
                session, volunteer=bad, rng=np.random.default_rng(0), now=NOON
            )
        # the refitted model no longer holds the banned answer; the crop takes three others
        model = await crowd.model(session, campaign.id)
        assert task_id not in model.crops or model.result(task_id).answers == 0
        takers = []
        for user in range(3):
            volunteer = await _volunteer(session, 600 + user)
            while True:
                assignment = await routing.next_assignment(
                    session, volunteer=volunteer, rng=np.random.default_rng(0), now=NOON
                )
                await session.commit()
                if assignment.task_id == task_id:
                    takers.append(volunteer.id)
                    break
                # answer other crops on the way; none is the banned one's crop twice
                await submit(
                    session,
                    crowd=crowd,
                    store=store,
                    volunteer=volunteer,
                    assignment=assignment,
                    verdict=Verdict.ACCEPT,
                    now=NOON + dt.timedelta(seconds=5),
                )
            await submit(
                session,
                crowd=crowd,
                store=store,
                volunteer=volunteer,
                assignment=assignment,
                verdict=Verdict.ACCEPT,
                now=NOON + dt.timedelta(seconds=5),
            )
        assert len(takers) == 3  # max_answers is 3: the banned answer freed its place
        assert (await crowd.model(session, campaign.id)).result(task_id).answers == 3


async def test_a_collapsing_volunteer_is_reported_once(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, campaign: Campaign
) -> None:
    crowd = Crowd(store, refit_every=1, refit_share=0.0)  # judge after every answer
    async with sessionmaker() as session:
        row = await session.get_one(Campaign, campaign.id)
        row.max_answers, row.min_answers = 50, 50  # nothing retires: every crop stays open
        session.add(row)
        await session.commit()
        good = [await _volunteer(session, 700 + i) for i in range(3)]
        adversary = await _volunteer(session, 799)
        alerts: list[int] = []
        now = NOON
        tasks = (
            await session.exec(
                select(func.count()).select_from(Task).where(Task.kind == TaskKind.REAL)
            )
        ).one()
        for _ in range(tasks):
            for volunteer in good:
                done = await _answer(session, crowd, store, volunteer, now=now, seconds=5)
                alerts += [a.volunteer_id for a in done.alerts]
            done = await _answer(session, crowd, store, adversary, now=now, seconds=5, invert=True)
            alerts += [a.volunteer_id for a in done.alerts]
            now += dt.timedelta(minutes=1)
        assert alerts == [adversary.id]
        await session.refresh(adversary)
        assert adversary.reliability["alerted_campaigns"] == [campaign.id]


async def test_alerts_need_evidence_skip_the_banned_and_reach_coordinators(
    session: AsyncSession, campaign: Campaign
) -> None:
    assert campaign.id is not None
    weak = await _volunteer(session, 801)
    banned = await _volunteer(session, 802)
    banned.banned = True
    coordinator = await _volunteer(session, 803)
    coordinator.role = Role.COORDINATOR
    session.add_all([banned, coordinator])
    await session.commit()

    def report(volunteer: Volunteer, evidence: int) -> VolunteerReport:
        assert volunteer.id is not None
        return VolunteerReport(
            volunteer=volunteer.id,
            sensitivity=0.5,
            specificity=0.5,
            offset_px=0.0,
            spread_px=0.0,
            reliability=0.0,
            vote_skill=0.0,
            spammer_score=1.0,
            adversary=False,
            masks=0,
            verdicts=evidence,
        )

    few = await new_alerts(session, campaign.id, [report(weak, MIN_EVIDENCE - 1)])
    assert few == []
    skipped = await new_alerts(session, campaign.id, [report(banned, MIN_EVIDENCE)])
    assert skipped == []
    enough = await new_alerts(session, campaign.id, [report(weak, MIN_EVIDENCE)])
    assert [a.volunteer_id for a in enough] == [weak.id]
    assert await new_alerts(session, campaign.id, [report(weak, MIN_EVIDENCE + 5)]) == []
    assert await coordinator_chats(session, [42]) == [42, 803]
