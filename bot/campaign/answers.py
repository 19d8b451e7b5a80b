"""Storing an answer: once, whatever happens; then gold scoring, fusion, retirement and credit.

An answer is keyed by (task, volunteer) and reached through its assignment's token, so a double
press, a re-delivered update or a press on an old message stores nothing twice. Masks always
arrive in the crop's own frame (gold augmentation is undone before this point).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import arrays, cache, scoring
from bot.campaign.alerts import CollapseAlert, new_alerts
from bot.campaign.crowd import Crowd, proposal_of
from bot.campaign.errors import StaleTask
from bot.db import queries
from bot.db.models import (
    Answer,
    Assignment,
    Campaign,
    Consensus,
    GoldScore,
    Task,
    TaskKind,
    TaskStatus,
    Verdict,
    Volunteer,
)
from bot.db.types import utcnow
from bot.store import codecs
from bot.store.files import FileStore
from fusion.paf import METHOD_VERSION, CropResult, Decision
from inference.prediction import dice, mask_iou

logger = logging.getLogger(__name__)

Mask = npt.NDArray[np.bool_]
ACCEPTABLE_DICE = 0.90  # a proposal at least this close to the truth deserved an accept


@dataclass(frozen=True)
class GoldOutcome:
    """How a gold answer compared with the expert's mask (all in the crop's own frame)."""

    score: float
    answer_mask: Mask
    truth: Mask
    proposal_dice: float


@dataclass(frozen=True)
class Submitted:
    """What storing an answer did."""

    answer: Answer
    duplicate: bool
    gold: GoldOutcome | None = None
    decision: Decision | None = None
    day_counted: bool = False
    alerts: list[CollapseAlert] = field(default_factory=list)  # for the coordinators


def answer_mask(verdict: Verdict, mask: Mask | None, proposal: Mask) -> Mask | None:
    """The mask an answer stands for: the proposal for accept, the drawn mask for adjust."""
    if verdict == Verdict.ACCEPT:
        return proposal
    if verdict == Verdict.ADJUST:
        return mask
    return None


def gold_score(verdict: Verdict, mask: Mask | None, proposal: Mask, truth: Mask) -> float | None:
    """A gold answer's score in [0, 1].

    Accept and adjust score the Dice of their mask with the truth; a reject scores 1 when the
    proposal was indeed not acceptable (Dice < 0.90) and 0 when it was; unsure and skip score
    nothing.
    """
    shown = answer_mask(verdict, mask, proposal)
    if shown is not None:
        return dice(shown, truth)
    if verdict == Verdict.REJECT:
        return 1.0 if dice(proposal, truth) < ACCEPTABLE_DICE else 0.0
    return None


def agreement(verdict: Verdict, mask: Mask | None, proposal: Mask, consensus: Mask) -> float | None:
    """How far an answer agreed with the retired consensus (None for unsure and skip)."""
    return gold_score(verdict, mask, proposal, consensus)


async def _existing(session: AsyncSession, task_id: int, volunteer_id: int) -> Answer | None:
    result = await session.exec(
        select(Answer).where(Answer.task_id == task_id, Answer.volunteer_id == volunteer_id)
    )
    return result.first()


async def submit(
    session: AsyncSession,
    *,
    crowd: Crowd,
    store: FileStore,
    volunteer: Volunteer,
    assignment: Assignment,
    verdict: Verdict,
    mask: Mask | None = None,
    prompt_points: list[Any] | None = None,
    now: dt.datetime | None = None,
) -> Submitted:
    """Store one answer and let everything that follows from it happen; commits.

    Raises:
        StaleTask: the assignment is someone else's, its crop is finished, or the volunteer
            is banned.
        ValueError: an adjust without a mask, or a mask of the wrong shape.
    """
    now = now or utcnow()
    assert volunteer.id is not None
    if assignment.volunteer_id != volunteer.id:
        raise StaleTask("that button belongs to someone else's crop")
    if volunteer.banned:
        raise StaleTask("your account is paused by the coordinators")
    if session.get_bind().dialect.name == "postgresql":
        # Answers to one crop queue here, so two at once cannot both take its last place.
        # (SQLite's BEGIN IMMEDIATE already serialises every writer.)
        # FOR NO KEY UPDATE: rows that merely reference the crop (leases) are not held up.
        locked = select(Task).where(Task.id == assignment.task_id).with_for_update(key_share=True)
        task = (await session.exec(locked.execution_options(populate_existing=True))).one()
    else:
        task = await session.get_one(Task, assignment.task_id)
    assert task.id is not None
    existing = await _existing(session, task.id, volunteer.id)
    if existing is not None:
        if session.get_bind().dialect.name != "sqlite" and task.status == TaskStatus.OPEN:
            # On PostgreSQL the answer is committed before fusion runs: a retried press may
            # follow a fusion step that failed (the database went away in between). Run it
            # again; folding an answer in twice is the same as once.
            await _settle_again(session, crowd, store, task, existing, now)
        return Submitted(existing, duplicate=True)
    if task.status != TaskStatus.OPEN:
        raise StaleTask("that crop is already finished: here is a fresh one")
    campaign = await cache.campaign(session, task.campaign_id)
    if (
        task.kind == TaskKind.REAL
        and (await session.exec(queries.counted_answers(task.id))).one() >= campaign.max_answers
    ):
        # A lease that outlived its time, or two leases of the last place: the crop is full.
        # The lease ends, so the volunteer is served another crop.
        assignment.closed_at = now
        session.add(assignment)
        await session.commit()
        raise StaleTask("that crop has all the answers it needs: here is a fresh one")
    proposal_row = await proposal_of(session, task_id=task.id)
    if proposal_row is None:
        raise StaleTask("that crop has no proposal yet")
    proposal = arrays.mask(store, proposal_row.mask_key)
    if verdict == Verdict.ADJUST:
        if mask is None or mask.shape != proposal.shape:
            got = None if mask is None else mask.shape
            raise ValueError(f"an adjust needs a mask of shape {proposal.shape}, got {got}")
        if np.array_equal(mask, proposal):
            # Sending the proposal back unchanged (a tool that gave the same outline) is an
            # accept, whatever the path: fusion must not read it as the volunteer's drawing.
            verdict, prompt_points = Verdict.ACCEPT, None
    if verdict != Verdict.ADJUST:
        mask = None
    mask_key = store.put("masks", codecs.encode_mask(mask), "png")[0] if mask is not None else None
    answer = Answer(
        task_id=task.id,
        volunteer_id=volunteer.id,
        assignment_id=assignment.id,
        verdict=verdict,
        mask_key=mask_key,
        prompt_points=prompt_points or [],
        seconds_taken=max((now - assignment.created_at).total_seconds(), 0.0),
        created_at=now,
    )
    session.add(answer)
    assignment.closed_at = now
    session.add(assignment)
    try:
        await session.flush()
    except IntegrityError:  # the same press, processed concurrently: it is stored already
        task_id, volunteer_id = task.id, volunteer.id
        await session.rollback()  # (expires every loaded row)
        existing = await _existing(session, task_id, volunteer_id)
        assert existing is not None
        return Submitted(existing, duplicate=True)
    assert answer.id is not None

    gold = None
    gold_dice = None
    if task.kind != TaskKind.REAL and task.gold_mask_key:
        truth = arrays.mask(store, task.gold_mask_key)
        score = gold_score(verdict, mask, proposal, truth)
        if score is not None:
            shown = answer_mask(verdict, mask, proposal)
            iou = mask_iou(shown, truth) if shown is not None else score
            session.add(
                GoldScore(
                    answer_id=answer.id,
                    task_id=task.id,
                    volunteer_id=volunteer.id,
                    dice=score,
                    iou=iou,
                )
            )
            gold_dice = score
            gold = GoldOutcome(
                score,
                shown if shown is not None else np.zeros_like(proposal),
                truth,
                dice(proposal, truth),
            )
            await scoring.credit_answers(
                session,
                agreements={answer.id: score},
                difficulty=0.5,
                floor_seconds=campaign.answer_floor_seconds,
                now=now,
            )
    day_counted = await scoring.record_answer(
        session,
        volunteer=volunteer,
        day=now.date(),
        daily_goal=campaign.daily_goal,
        gold_dice=gold_dice,
    )
    if session.get_bind().dialect.name != "sqlite":
        # PostgreSQL locks rows: store the answer for good first, then run fusion and retirement
        # under the campaign's lock in a transaction of their own, so the lock is always taken
        # before any row lock and two answers never wait for each other. (A crash between the
        # two commits loses nothing: the model is refitted from the answers on start.) SQLite
        # needs no split: its transactions hold the one write lock from their first statement.
        await session.commit()
    decision, alerts = await _fuse(
        session, crowd, store, campaign, task, proposal, answer, mask, now
    )
    return Submitted(
        answer,
        duplicate=False,
        gold=gold,
        decision=decision,
        day_counted=day_counted,
        alerts=alerts,
    )


async def _fuse(
    session: AsyncSession,
    crowd: Crowd,
    store: FileStore,
    campaign: Campaign,
    task: Task,
    proposal: Mask,
    answer: Answer,
    mask: Mask | None,
    now: dt.datetime,
) -> tuple[Decision | None, list[CollapseAlert]]:
    """Fold a stored answer into fusion and retire or escalate its crop if that is due; commits."""
    assert task.id is not None
    decision = None
    async with crowd.lock(task.campaign_id):
        result = await crowd.add(
            session, campaign_id=task.campaign_id, task=task, answer=answer, mask=mask
        )
        if session.get_bind().dialect.name != "sqlite":
            await session.refresh(task)  # another process may have finished it meanwhile
        if result is not None and task.kind == TaskKind.REAL and task.status == TaskStatus.OPEN:
            decision = crowd.decide(
                task.campaign_id,
                task.id,
                confidence=campaign.retire_confidence,
                min_answers=campaign.min_answers,
                max_answers=campaign.max_answers,
            )
            task.priority = _priority(result, campaign.min_answers)
            if decision != "continue":
                trust = crowd.trust(task.campaign_id)
                await _close(session, store, campaign, task, proposal, result, decision, now, trust)
            session.add(task)
        alerts = []
        if crowd.take_refitted(task.campaign_id):  # new judgements of the volunteers
            alerts = await new_alerts(session, task.campaign_id, crowd.reports(task.campaign_id))
        await session.commit()
    return decision, alerts


async def _settle_again(
    session: AsyncSession,
    crowd: Crowd,
    store: FileStore,
    task: Task,
    answer: Answer,
    now: dt.datetime,
) -> None:
    """The fusion step of an answer stored earlier, run again (idempotent)."""
    assert task.id is not None
    proposal_row = await proposal_of(session, task_id=task.id)
    if proposal_row is None:
        return
    campaign = await cache.campaign(session, task.campaign_id)
    proposal = arrays.mask(store, proposal_row.mask_key)
    mask = arrays.mask(store, answer.mask_key) if answer.mask_key else None
    await session.commit()  # the task's row lock: fusion takes the campaign's lock first
    await _fuse(session, crowd, store, campaign, task, proposal, answer, mask, now)


def _priority(result: CropResult, min_answers: int) -> float:
    """Uncertain crops first, and among them those closest to retiring."""
    uncertainty = 1.0 - abs(2.0 * result.accept_probability - 1.0)
    progress = min(result.answers / max(min_answers, 1), 1.0)
    return round(uncertainty * (0.5 + 0.5 * progress), 4)


async def _close(
    session: AsyncSession,
    store: FileStore,
    campaign: Campaign,
    task: Task,
    proposal: Mask,
    result: CropResult,
    decision: Decision,
    now: dt.datetime,
    trust: dict[int, float],
) -> None:
    """Retire or escalate a crop: write its consensus and credit every answer on it.

    Points are scaled by ``trust`` (1 - fusion's spammer score per volunteer).
    """
    assert task.id is not None
    task.status = TaskStatus.RETIRED if decision == "retire" else TaskStatus.ESCALATED
    found = await session.exec(select(Consensus).where(Consensus.task_id == task.id))
    consensus = found.first() or Consensus(
        task_id=task.id, mask_key="", confidence=0.0, answers_used=0, method_version=""
    )
    consensus.mask_key = store.put("masks", codecs.encode_mask(result.mask), "png")[0]
    consensus.prob_key = store.put("probs", codecs.encode_prob(result.prob), "png")[0]
    consensus.confidence = float(result.confidence)
    consensus.answers_used = result.answers
    consensus.method_version = METHOD_VERSION
    consensus.updated_at = now
    session.add(consensus)
    rows = await session.exec(
        select(Answer).where(Answer.task_id == task.id, col(Answer.credited_at).is_(None))
    )
    agreements = {}
    for row in rows.all():
        assert row.id is not None
        drawn = arrays.mask(store, row.mask_key) if row.mask_key else None
        value = agreement(row.verdict, drawn, proposal, result.mask)
        if value is not None:
            agreements[row.id] = value
    await scoring.credit_answers(
        session,
        agreements=agreements,
        difficulty=float(1.0 - result.accept_probability),
        floor_seconds=campaign.answer_floor_seconds,
        now=now,
        trust=trust,
    )
    logger.info("task %s %s after %d answers", task.id, task.status.value, result.answers)
