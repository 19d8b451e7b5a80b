"""The volunteer loop's use cases on a real (rolled-back) database: routing, answers, forget."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import cards, inbox, routing, tasks
from bot.campaign import volunteers as people
from bot.campaign.answers import submit
from bot.campaign.crowd import Crowd
from bot.campaign.errors import InvalidInput, NoConsent, NoWork, StaleTask
from bot.campaign.refine import Refiner
from bot.db.models import (
    Answer,
    Assignment,
    Campaign,
    Consensus,
    GoldScore,
    InboxUpdate,
    Task,
    TaskKind,
    TaskStatus,
    Verdict,
    Volunteer,
)
from bot.jobs.proposals import ProposerSpec
from bot.store.files import FileStore
from tests.helpers.campaigns import proposed_campaign


@pytest.fixture
async def campaign(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, tmp_path: Path
) -> Campaign:
    return await proposed_campaign(
        sessionmaker,
        store,
        tmp_path / "ph",
        n=8,
        min_answers=2,
        max_answers=3,
        tutorial_tasks=1,
        retire_confidence=0.6,
    )


async def _volunteer(session: AsyncSession, user: int, consent: bool = True) -> Volunteer:
    volunteer = await people.volunteer_for(session, telegram_user_id=user)
    if consent:
        await people.give_consent(session, volunteer=volunteer)
    await session.commit()
    return volunteer


async def test_nothing_is_served_before_consent_and_a_lease_is_handed_back(
    sessionmaker: async_sessionmaker[AsyncSession], campaign: Campaign
) -> None:
    rng = np.random.default_rng(0)
    async with sessionmaker() as session:
        stranger = await _volunteer(session, 11, consent=False)
        with pytest.raises(NoConsent):
            await routing.next_assignment(session, volunteer=stranger, rng=rng)
        volunteer = await _volunteer(session, 12)
        first = await routing.next_assignment(
            session, volunteer=volunteer, rng=rng, augment=cards.random_augment
        )
        await session.commit()
        task = await session.get_one(Task, first.task_id)
        assert task.kind != TaskKind.REAL  # the tutorial comes first
        assert first.augment is not None  # gold is shown augmented
        again = await routing.next_assignment(session, volunteer=volunteer, rng=rng)
        assert again.id == first.id  # a held lease is handed back, not a new crop


async def test_answers_are_stored_once_and_crops_retire_with_credit(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, campaign: Campaign
) -> None:
    crowd = Crowd(store)
    rng = np.random.default_rng(1)
    now = dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC)
    served: dict[int, list[int]] = {}
    async with sessionmaker() as session:
        for user in range(1, 6):
            volunteer = await _volunteer(session, 100 + user)
            for step in range(12):
                try:
                    assignment = await routing.next_assignment(
                        session, volunteer=volunteer, rng=rng, now=now
                    )
                except NoWork:
                    break
                assert assignment.task_id not in served.get(user, [])
                served.setdefault(user, []).append(assignment.task_id)
                later = now + dt.timedelta(seconds=5 + step)
                result = await submit(
                    session,
                    crowd=crowd,
                    store=store,
                    volunteer=volunteer,
                    assignment=assignment,
                    verdict=Verdict.ACCEPT,
                    now=later,
                )
                assert not result.duplicate
                again = await submit(
                    session,
                    crowd=crowd,
                    store=store,
                    volunteer=volunteer,
                    assignment=assignment,
                    verdict=Verdict.REJECT,
                    now=later,
                )
                assert again.duplicate  # a double press stores nothing twice
                assert again.answer.verdict is Verdict.ACCEPT
        answers = (await session.exec(select(Answer))).all()
        pairs = [(a.task_id, a.volunteer_id) for a in answers]
        assert len(pairs) == len(set(pairs))
        retired = (await session.exec(select(Task).where(Task.status != TaskStatus.OPEN))).all()
        assert retired, "accepting volunteers should retire some crops"
        for task in retired:
            consensus = (
                await session.exec(select(Consensus).where(Consensus.task_id == task.id))
            ).one()
            assert store.exists(consensus.mask_key)
            credited = (
                await session.exec(
                    select(Answer).where(
                        Answer.task_id == task.id, col(Answer.credited_at).is_not(None)
                    )
                )
            ).all()
            assert credited
            assert all(a.agreement is not None for a in credited)
        gold = (await session.exec(select(func.count()).select_from(GoldScore))).one()
        assert gold >= 5  # everyone did the tutorial crop
        trust = crowd.trust(campaign.id or 0)  # what scales their points at retirement
        assert len(trust) == 5
        assert all(0.0 <= t <= 1.0 for t in trust.values())
        assert crowd.trust(-1) == {}
        points = (await session.exec(select(func.sum(Volunteer.points)))).one()
        assert points is not None
        assert points > 0


async def test_stale_buttons_and_adjust_flow(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, campaign: Campaign
) -> None:
    crowd = Crowd(store)
    refiner = Refiner(ProposerSpec())
    rng = np.random.default_rng(2)
    async with sessionmaker() as session:
        volunteer = await _volunteer(session, 7)
        other = await _volunteer(session, 8)
        assignment = await routing.next_assignment(session, volunteer=volunteer, rng=rng)
        with pytest.raises(StaleTask):  # someone else's button
            await submit(
                session,
                crowd=crowd,
                store=store,
                volunteer=other,
                assignment=assignment,
                verdict=Verdict.ACCEPT,
            )
        options = await tasks.choices(session, store, assignment)
        assert {"tighter 0.70", "looser 0.30"} <= {o.name for o in options}
        assert tasks.final_mask(store, assignment=assignment) is None
        await tasks.pick(session, store, assignment=assignment, index=len(options) - 1)
        picked = tasks.final_mask(store, assignment=assignment)
        assert picked is not None
        with pytest.raises(InvalidInput):
            await tasks.refine_cells(session, store, refiner, assignment=assignment)
        for cell in ("B2", "B3", "C2", "C3", "D4"):
            await tasks.toggle_cell(session, assignment=assignment, cell=cell)
        await tasks.toggle_cell(session, assignment=assignment, cell="D4")  # untapped again
        assert assignment.adjust["cells"] == ["B2", "B3", "C2", "C3"]
        await tasks.refine_cells(session, store, refiner, assignment=assignment)
        refined = tasks.final_mask(store, assignment=assignment)
        assert refined is not None
        assert assignment.adjust["cells"] == []
        assert await tasks.undo(session, assignment=assignment)
        undone = tasks.final_mask(store, assignment=assignment)
        assert undone is not None
        np.testing.assert_array_equal(undone, picked)
        view = await tasks.view(session, store, assignment)
        assert view.crop.shape[:2] == undone.shape
        result = await submit(
            session,
            crowd=crowd,
            store=store,
            volunteer=volunteer,
            assignment=assignment,
            verdict=Verdict.ADJUST,
            mask=undone,
        )
        assert result.answer.mask_key is not None
        with pytest.raises(StaleTask):
            tasks.check_open(assignment, await tasks.task_of(session, assignment))


async def test_an_adjust_that_sends_the_proposal_back_unchanged_is_an_accept(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, campaign: Campaign
) -> None:
    """A tool that gave back the same outline (an option, a re-prompt) changed nothing: the
    answer means "accept", on every path, so fusion does not read it as the volunteer's drawing
    (nor undo their drawing bias on it)."""
    crowd = Crowd(store)
    async with sessionmaker() as session:
        volunteer = await _volunteer(session, 31)
        for _ in range(2):  # past the tutorial's gold crop, to a real one
            assignment = await routing.next_assignment(
                session, volunteer=volunteer, rng=np.random.default_rng(0)
            )
            view = await tasks.view(session, store, assignment)
            same = tasks.unshown(assignment, view.proposal)
            result = await submit(
                session,
                crowd=crowd,
                store=store,
                volunteer=volunteer,
                assignment=assignment,
                verdict=Verdict.ADJUST,
                mask=same,
                prompt_points=[{"box": [0, 0, 4, 4]}],
            )
            assert result.answer.verdict is Verdict.ACCEPT
            assert result.answer.mask_key is None
            assert result.answer.prompt_points == []
        changed = same.copy()
        changed[0, 0] = not changed[0, 0]
        assignment = await routing.next_assignment(
            session, volunteer=volunteer, rng=np.random.default_rng(0)
        )
        result = await submit(
            session,
            crowd=crowd,
            store=store,
            volunteer=volunteer,
            assignment=assignment,
            verdict=Verdict.ADJUST,
            mask=changed,
        )
        assert result.answer.verdict is Verdict.ADJUST  # one pixel is a change
        assert result.answer.mask_key is not None


async def test_gold_answers_score_against_the_expert_in_the_crop_frame(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, campaign: Campaign
) -> None:
    crowd = Crowd(store)
    async with sessionmaker() as session:
        volunteer = await _volunteer(session, 21)
        assignment = await routing.next_assignment(
            session,
            volunteer=volunteer,
            rng=np.random.default_rng(3),
            augment=cards.random_augment,
        )
        task = await session.get_one(Task, assignment.task_id)
        assert task.gold_mask_key is not None
        from bot.store import codecs

        truth = codecs.decode_mask(store.get(task.gold_mask_key))
        shown_truth = tasks.shown(assignment, truth)
        # The volunteer marks exactly what they see; the answer is scored in the crop's frame.
        back = tasks.unshown(assignment, shown_truth)
        result = await submit(
            session,
            crowd=crowd,
            store=store,
            volunteer=volunteer,
            assignment=assignment,
            verdict=Verdict.ADJUST,
            mask=back,
        )
        assert result.gold is not None
        assert result.gold.score > 0.9
        score = (await session.exec(select(GoldScore))).one()
        assert score.dice == pytest.approx(result.gold.score)


async def test_forget_keeps_answers_anonymous(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, campaign: Campaign
) -> None:
    crowd = Crowd(store)
    async with sessionmaker() as session:
        volunteer = await _volunteer(session, 31)
        await people.set_nickname(session, volunteer=volunteer, nickname="Ada L")
        with pytest.raises(InvalidInput):
            await people.set_nickname(session, volunteer=volunteer, nickname="x")
        rival = await _volunteer(session, 32)
        with pytest.raises(InvalidInput):
            await people.set_nickname(session, volunteer=rival, nickname="ada l")
        assignment = await routing.next_assignment(
            session, volunteer=volunteer, rng=np.random.default_rng(4)
        )
        await submit(
            session,
            crowd=crowd,
            store=store,
            volunteer=volunteer,
            assignment=assignment,
            verdict=Verdict.ACCEPT,
        )
        held = await routing.next_assignment(
            session, volunteer=volunteer, rng=np.random.default_rng(5)
        )
        await people.forget(session, volunteer=volunteer)
        await session.commit()
        row = await session.get_one(Volunteer, volunteer.id)
        assert row.telegram_user_id < 0
        assert (row.nickname, row.consent_at, row.forgotten) == (None, None, True)
        assert (await session.get_one(Assignment, held.id)).closed_at is not None
        kept = (await session.exec(select(Answer).where(Answer.volunteer_id == row.id))).all()
        assert len(kept) == 1
        again = await people.volunteer_for(session, telegram_user_id=31)
        assert again.id != row.id  # starting again is a new volunteer


async def test_inbox_keeps_no_names(session: AsyncSession) -> None:
    person = {
        "id": 42,
        "is_bot": False,
        "first_name": "Ann",
        "last_name": "Lee",
        "username": "ann",
        "language_code": "en",
    }
    payload = {
        "update_id": 9,
        "message": {
            "message_id": 1,
            "date": 1,
            "text": "/start",
            "from": person,
            "chat": {"id": 42, "type": "private", "first_name": "Ann", "username": "ann"},
        },
    }
    await inbox.store_updates(session, [payload])
    row = (await session.exec(select(InboxUpdate))).one()
    assert "Ann" not in str(row.payload)
    assert "ann" not in str(row.payload)
    assert row.payload["message"]["from"] == {"id": 42, "is_bot": False, "first_name": ""}
    assert row.payload["message"]["text"] == "/start"
    from telegram import Update

    assert Update.de_json(row.payload, None).effective_user.id == 42  # type: ignore[union-attr]


async def test_inbox_stores_each_update_once(session: AsyncSession) -> None:
    payloads = [{"update_id": i, "message": {"text": str(i)}} for i in (5, 6, 6, 7)]
    assert await inbox.store_updates(session, payloads) == [5, 6, 7]
    assert await inbox.store_updates(session, payloads[:2]) == []
    rows = await inbox.pending(session)
    assert [r.update_id for r in rows] == [5, 6, 7]
    await inbox.mark(session, update_id=6)
    for _ in range(inbox.MAX_ATTEMPTS):
        await inbox.mark(session, update_id=7, error="boom")
    assert [r.update_id for r in await inbox.pending(session)] == [5]
    parked = (await session.exec(select(InboxUpdate).where(InboxUpdate.update_id == 7))).one()
    assert parked.error == "boom"


async def test_point_taps_prompt_models_trained_on_points(
    sessionmaker: async_sessionmaker[AsyncSession], store: FileStore, campaign: Campaign
) -> None:
    refiner = Refiner(ProposerSpec())  # the fallback takes points; MedSAM does not
    assert refiner.takes_points
    assert not Refiner(ProposerSpec(model="medsam_vit_b")).takes_points
    async with sessionmaker() as session:
        volunteer = await _volunteer(session, 41)
        assignment = await routing.next_assignment(
            session, volunteer=volunteer, rng=np.random.default_rng(6)
        )
        with pytest.raises(InvalidInput):
            await tasks.set_tap(session, assignment=assignment, tap="lasso")
        await tasks.set_tap(session, assignment=assignment, tap="pos")
        await tasks.toggle_cell(session, assignment=assignment, cell="C3")
        await tasks.toggle_cell(session, assignment=assignment, cell="C4")
        await tasks.toggle_cell(session, assignment=assignment, cell="C4")  # tapped off again
        await tasks.set_tap(session, assignment=assignment, tap="neg")
        await tasks.toggle_cell(session, assignment=assignment, cell="A1")
        assert assignment.adjust["points"] == {"C3": 1, "A1": 0}
        assert assignment.adjust.get("cells", []) == []
        await tasks.refine_cells(session, store, refiner, assignment=assignment)
        prompt = tasks.last_prompt(assignment)
        assert len(prompt) == 1
        labels = sorted(p[2] for p in prompt[0]["points"])
        assert labels == [0, 1]
        assert assignment.adjust["points"] == {}
        assert tasks.final_mask(store, assignment=assignment) is not None


async def test_a_retried_press_runs_the_fusion_step_that_failed(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: FileStore,
    campaign: Campaign,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL stores the answer, then runs fusion in a transaction of its own. If the
    database goes away in between, the press is retried: it finds its answer stored, and must
    still fold it in and retire or escalate the crop (a full crop left open stays stuck)."""
    async with sessionmaker() as session:
        if session.get_bind().dialect.name == "sqlite":
            pytest.skip("SQLite stores the answer and runs fusion in one transaction")
        row = await session.get_one(Campaign, campaign.id)
        row.min_answers, row.max_answers, row.tutorial_tasks, row.gold_rate = 1, 1, 0, 0.0
        session.add(row)
        await session.commit()
    crowd = Crowd(store)
    real_add = Crowd.add
    calls = []

    async def add_fails_once(self: Crowd, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("the database went away")
        return await real_add(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Crowd, "add", add_fails_once)
    async with sessionmaker() as session:
        volunteer = await _volunteer(session, 41)
        assignment = await routing.next_assignment(
            session, volunteer=volunteer, rng=np.random.default_rng(0)
        )
        task_id = assignment.task_id
        with pytest.raises(ConnectionResetError):
            await submit(
                session,
                crowd=crowd,
                store=store,
                volunteer=volunteer,
                assignment=assignment,
                verdict=Verdict.ACCEPT,
            )
        await session.rollback()
    async with sessionmaker() as session:
        task = await session.get_one(Task, task_id)
        assert task.status == TaskStatus.OPEN  # stored, not fused: the crop is stuck open
        volunteer = await session.get_one(Volunteer, volunteer.id)
        assignment = await session.get_one(Assignment, assignment.id)
        again = await submit(
            session,
            crowd=crowd,
            store=store,
            volunteer=volunteer,
            assignment=assignment,
            verdict=Verdict.ACCEPT,
        )
        assert again.duplicate
    async with sessionmaker() as session:
        task = await session.get_one(Task, task_id)
        assert task.status != TaskStatus.OPEN  # one answer was all it needed
        consensus = (
            await session.exec(select(Consensus).where(Consensus.task_id == task_id))
        ).one()
        assert store.exists(consensus.mask_key)
    assert campaign.id is not None
    assert volunteer.id in crowd.models[campaign.id].crops[task_id].answers
