"""The live crowd model of each campaign: proposal-aware fusion, updated as answers arrive.

The database is the truth; the model is rebuilt from it (one batch fit) the first time a campaign
is touched after a start, then updated online per answer and refitted every ``refit_every``
answers. Tasks are fusion's crops (crop id = task id); volunteers keep their row id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.campaign import arrays, cache
from bot.db.models import Answer, Proposal, Task, TaskKind, TaskStatus, Verdict, Volunteer
from bot.store.files import FileStore
from fusion.paf import CropResult, Decision, PAFConfig, ProposalAwareFusion, VolunteerReport
from fusion.simulate import ACCEPT, ADJUST, REJECT, SKIP, UNSURE
from fusion.simulate import Answer as FusionAnswer

logger = logging.getLogger(__name__)

GAP_SPAN = 256  # ids below a new one still looked for (answers committed out of order)
GAP_SECONDS = 60.0  # how long a missing id is looked for

VERDICT_CODES = {
    Verdict.ACCEPT: ACCEPT,
    Verdict.ADJUST: ADJUST,
    Verdict.REJECT: REJECT,
    Verdict.UNSURE: UNSURE,
    Verdict.SKIP: SKIP,
}


async def proposal_of(session: AsyncSession, *, task_id: int) -> Proposal | None:
    """The newest proposal of a task (cached for a few seconds)."""
    return await cache.proposal(session, task_id)


def drawn_by_hand(prompt_points: list[Any]) -> bool:
    """Whether an adjust's mask is the volunteer's own outline, not a tool's they chose.

    The chat stores the Redraw's box and points, or a one-tap option; the Mini App stores the
    decoder's prompt with ``brushed`` when the brush changed its outline afterwards. No entry: the
    Mini App's brush alone (or an answer stored before this was recorded).
    """
    tools = [p for p in prompt_points if isinstance(p, dict)]
    return not tools or any(bool(p.get("brushed")) for p in tools)


def to_fusion(answer: Answer, mask: np.ndarray | None) -> FusionAnswer:
    """A stored answer as fusion's answer."""
    return FusionAnswer(
        answer.task_id,
        answer.volunteer_id,
        VERDICT_CODES[answer.verdict],
        mask,
        drawn=drawn_by_hand(answer.prompt_points or []),
    )


@dataclass
class Crowd:
    """One fusion model per campaign, loaded on first use; one lock serialises each model."""

    store: FileStore
    config: PAFConfig = field(default_factory=PAFConfig)
    # A full refit after this many new answers, or a tenth of the answers so far if that is more:
    # early on, what the model learns from gold about each volunteer must reach their weights
    # quickly; later, refits grow rarer as they grow dearer (amortised cost stays linear).
    refit_every: int = 25
    refit_share: float = 0.1
    models: dict[int, ProposalAwareFusion] = field(default_factory=dict)
    added: dict[int, int] = field(default_factory=dict)  # answers since the last refit
    total: dict[int, int] = field(default_factory=dict)  # answers the model holds
    locks: dict[int, asyncio.Lock] = field(default_factory=dict)
    refitted: set[int] = field(default_factory=set)  # campaigns fitted since take_refitted
    # Several bot processes on one PostgreSQL database: each folds in the others' answers
    # (``seen``: the highest answer id folded in) under a database-wide lock per campaign.
    shared: bool = False
    seen: dict[int, int] = field(default_factory=dict)
    # Ids below ``seen`` not folded in yet: answers another process inserted earlier but
    # committed later (ids are handed out at insert), looked for again until GAP_SECONDS pass.
    gaps: dict[int, dict[int, float]] = field(default_factory=dict)
    # The banned volunteers each shared model was fitted with: a ban in another process changes
    # which answers count, so a model that sees a different list is fitted again.
    bans: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def take_refitted(self, campaign_id: int) -> bool:
        """Whether the campaign's model was fitted in full since the last call (then clears)."""
        if campaign_id in self.refitted:
            self.refitted.discard(campaign_id)
            return True
        return False

    def reports(self, campaign_id: int) -> list[VolunteerReport]:
        """What the campaign's model has learned about each volunteer (none before loading)."""
        model = self.models.get(campaign_id)
        return model.volunteers() if model is not None else []

    def lock(self, campaign_id: int) -> asyncio.Lock:
        """The lock that serialises updates of one campaign's model."""
        return self.locks.setdefault(campaign_id, asyncio.Lock())

    async def model(self, session: AsyncSession, campaign_id: int) -> ProposalAwareFusion:
        """The campaign's model, fitted from the database the first time."""
        if campaign_id not in self.models:
            self.models[campaign_id] = await self._load(session, campaign_id)
            self.added[campaign_id] = 0
            self.refitted.add(campaign_id)
        return self.models[campaign_id]

    async def _load(self, session: AsyncSession, campaign_id: int) -> ProposalAwareFusion:
        tasks = (await session.exec(select(Task).where(Task.campaign_id == campaign_id))).all()
        proposals, gold = {}, {}
        for task in tasks:
            assert task.id is not None
            mask = await self._proposal_mask(session, task)
            if mask is None:
                continue
            proposals[task.id] = mask
            if task.kind != TaskKind.REAL and task.gold_mask_key:
                gold[task.id] = arrays.mask(self.store, task.gold_mask_key)
        # A banned volunteer's answers on crops still open stop counting; those on finished crops
        # stay with the consensus they helped reach (an expert's /review can overrule it).
        banned = select(Volunteer.id).where(col(Volunteer.banned).is_(True))
        still_open = select(Task.id).where(
            Task.campaign_id == campaign_id, Task.status == TaskStatus.OPEN
        )
        rows = await session.exec(
            select(Answer)
            .where(
                col(Answer.task_id).in_(list(proposals)),
                ~(col(Answer.volunteer_id).in_(banned) & col(Answer.task_id).in_(still_open)),
            )
            .order_by(col(Answer.id))
        )
        rows_list = list(rows.all())
        answers = [
            to_fusion(a, arrays.mask(self.store, a.mask_key) if a.mask_key else None)
            for a in rows_list
        ]
        loaded = [a.id for a in rows_list if a.id is not None]
        self.seen.pop(campaign_id, None)
        self.gaps.pop(campaign_id, None)
        self._advance(campaign_id, loaded)
        model = ProposalAwareFusion(self.config)
        model.fit(proposals, answers, gold)
        self.total[campaign_id] = len(answers)
        logger.info(
            "campaign %s: crowd model fitted on %d crops and %d answers",
            campaign_id,
            len(proposals),
            len(answers),
        )
        return model

    async def _proposal_mask(self, session: AsyncSession, task: Task) -> np.ndarray | None:
        assert task.id is not None
        proposal = await proposal_of(session, task_id=task.id)
        if proposal is None:
            return None
        return arrays.mask(self.store, proposal.mask_key)

    async def add(
        self,
        session: AsyncSession,
        *,
        campaign_id: int,
        task: Task,
        answer: Answer,
        mask: np.ndarray | None,
    ) -> CropResult | None:
        """Fold one stored answer into the campaign's model; None if the task has no proposal.

        With ``shared`` (several processes on one PostgreSQL database) the caller's transaction
        first takes the campaign's advisory lock, and the answers other processes stored since
        this model last looked are folded in first, in id order.
        """
        if self.shared:
            await session.exec(select(func.pg_advisory_xact_lock(campaign_id)))
            banned = (
                await session.exec(
                    select(Volunteer.id)
                    .where(col(Volunteer.banned).is_(True))
                    .order_by(col(Volunteer.id))
                )
            ).all()
            now_banned = tuple(i for i in banned if i is not None)
            if campaign_id in self.models and self.bans.get(campaign_id) != now_banned:
                logger.info("campaign %s: bans changed elsewhere; fitting again", campaign_id)
                self._forget(campaign_id)
            self.bans[campaign_id] = now_banned
        model = await self.model(session, campaign_id)
        assert task.id is not None
        if self.shared:
            await self._catch_up(session, model, campaign_id, skip=answer.id)
        if not await self._ensure_crop(session, model, task):
            return None
        result = model.add(to_fusion(answer, mask))
        if answer.id is not None:
            self._advance(campaign_id, [answer.id])
        self.added[campaign_id] = self.added.get(campaign_id, 0) + 1
        self.total[campaign_id] = self.total.get(campaign_id, 0) + 1
        if self.added[campaign_id] >= max(
            self.refit_every, self.refit_share * self.total[campaign_id]
        ):
            self.added[campaign_id] = 0
            model.refit()
            self.refitted.add(campaign_id)
            result = model.result(task.id)
        return result

    async def _ensure_crop(
        self, session: AsyncSession, model: ProposalAwareFusion, task: Task
    ) -> bool:
        """Put the task's crop in the model if missing; False when it has no proposal."""
        assert task.id is not None
        if task.id in model.crops:
            return True
        proposal = await self._proposal_mask(session, task)
        if proposal is None:
            return False
        gold = None
        if task.kind != TaskKind.REAL and task.gold_mask_key:
            gold = arrays.mask(self.store, task.gold_mask_key)
        model.add_crop(task.id, proposal, gold)
        return True

    async def _catch_up(
        self, session: AsyncSession, model: ProposalAwareFusion, campaign_id: int, skip: int | None
    ) -> None:
        """Fold in the answers other processes stored since this model last looked."""
        gaps = list(self.gaps.get(campaign_id, {}))
        newer = col(Answer.id) > self.seen.get(campaign_id, 0)
        rows = await session.exec(
            select(Answer, Task)
            .join(Task, col(Task.id) == Answer.task_id)
            .join(Volunteer, col(Volunteer.id) == Answer.volunteer_id)
            .where(
                Task.campaign_id == campaign_id,
                or_(newer, col(Answer.id).in_(gaps)) if gaps else newer,
                col(Volunteer.banned).is_(False),
            )
            .order_by(col(Answer.id))
        )
        found = list(rows.all())
        self._advance(campaign_id, [other.id for other, _ in found if other.id is not None])
        for other, task in found:
            if other.id == skip or not await self._ensure_crop(session, model, task):
                continue
            mask = arrays.mask(self.store, other.mask_key) if other.mask_key else None
            model.add(to_fusion(other, mask))
            self.total[campaign_id] = self.total.get(campaign_id, 0) + 1

    def _advance(self, campaign_id: int, ids: list[int]) -> None:
        """Record answer ids as folded in: ``seen`` moves up, skipped ids become gaps."""
        seen = self.seen.get(campaign_id, 0)
        gaps = self.gaps.setdefault(campaign_id, {})
        now = time.monotonic()
        for i in sorted(ids):
            gaps.pop(i, None)
            if i > seen:
                for missing in range(max(seen + 1, i - GAP_SPAN), i):
                    gaps.setdefault(missing, now)
                seen = i
        self.seen[campaign_id] = seen
        for i in [i for i, since in gaps.items() if now - since > GAP_SECONDS]:
            del gaps[i]  # rolled back, or another campaign's: never coming

    async def reset(self) -> None:
        """Forget every model: each is fitted again from the database on its next use.

        Called when a ban changes which answers count. Each model is dropped under its lock, so
        no answer being folded in meanwhile is lost from the refit.
        """
        for campaign_id in list(self.models):
            async with self.lock(campaign_id):
                self._forget(campaign_id)

    def _forget(self, campaign_id: int) -> None:
        """Drop one campaign's model (the caller holds its lock)."""
        for held in (self.models, self.added, self.total, self.seen, self.gaps, self.bans):
            held.pop(campaign_id, None)

    def trust(self, campaign_id: int) -> dict[int, float]:
        """Volunteer id -> 1 - spammer score, as fusion has learned it (the campaign's model)."""
        model = self.models.get(campaign_id)
        if model is None:
            return {}
        return {r.volunteer: 1.0 - r.spammer_score for r in model.volunteers()}

    def decide(
        self,
        campaign_id: int,
        task_id: int,
        *,
        confidence: float,
        min_answers: int,
        max_answers: int,
    ) -> Decision:
        """Retire, continue or escalate a crop (the model must hold it)."""
        return self.models[campaign_id].decide(
            task_id, confidence=confidence, min_answers=min_answers, max_answers=max_answers
        )
