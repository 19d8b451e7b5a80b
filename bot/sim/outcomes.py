"""What a crowd run achieved, measured against the phantom truth the volunteers never saw.

For every finished crop (retired or escalated): Dice against the truth of fusion's consensus, of
the raw proposal, and of plain pixel majority vote over the very same answers. For every
volunteer: their hidden profile beside what fusion learned about them. The demo's report is
drawn from these numbers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sqlalchemy import func
from sqlmodel import col, select

from bot.campaign import arrays
from bot.campaign.crowd import Crowd, proposal_of, to_fusion
from bot.campaign.leaderboard import leaderboard
from bot.campaign.services import Services
from bot.db.models import Answer, Campaign, Consensus, GoldScore, Task, TaskKind, Volunteer
from bot.db.types import utcnow
from bot.sim.volunteers import Oracle
from fusion.baselines import answer_masks, majority_vote
from inference.prediction import dice

Mask = npt.NDArray[np.bool_]


@dataclass
class CropOutcome:
    """One finished crop's Dice against the truth, three ways, and its answers."""

    task_id: int
    status: str
    answers: int
    consensus: float
    proposal: float
    majority: float


@dataclass
class Sample:
    """One crop to show: the image, the proposal, the crowd's masks, the consensus, the truth."""

    task_id: int
    crop: npt.NDArray[np.uint8]
    proposal: Mask
    answers: list[Mask]
    consensus: Mask
    truth: Mask
    outcome: CropOutcome


@dataclass
class VolunteerOutcome:
    """A volunteer's hidden profile beside what fusion learned about them."""

    volunteer_id: int
    name: str
    profile: str
    answers: int
    points: int
    reliability: float  # of their masks (p + q - 1; 0 when they drew none)
    vote_skill: float  # P(accept | acceptable) - P(accept | not)
    trust: float  # 1 - spammer score: the weight fusion gives them
    adversary: bool
    gold_dice: float | None


@dataclass
class CrowdOutcome:
    """Everything the report shows about the Telegram crowd."""

    crops: list[CropOutcome] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    volunteers: list[VolunteerOutcome] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    answers_stored: int = 0
    max_answers: int = 0
    leaderboard: list[tuple[int, str, int]] = field(default_factory=list)  # rank, name, points

    def mean(self, which: str) -> float | None:
        """Mean Dice of ``consensus``, ``proposal`` or ``majority`` over finished crops."""
        values = [getattr(c, which) for c in self.crops]
        return float(np.mean(values)) if values else None

    def answers_per_finished_crop(self) -> float | None:
        """Answers the crowd spent per finished crop (adaptive retirement)."""
        return float(np.mean([c.answers for c in self.crops])) if self.crops else None


async def collect(
    services: Services,
    oracle: Oracle,
    campaign_id: int,
    profiles: dict[int, str],
    *,
    samples: int = 4,
) -> CrowdOutcome:
    """Measure a finished crowd run; ``profiles`` maps Telegram ids to hidden profile names."""
    out = CrowdOutcome()
    store = services.store
    async with services.sessionmaker() as session:
        campaign = await session.get_one(Campaign, campaign_id)
        out.max_answers = campaign.max_answers
        real = select(Task.status).where(
            Task.campaign_id == campaign_id, Task.kind == TaskKind.REAL
        )
        out.statuses = dict(Counter(str(s) for s in (await session.exec(real)).all()))
        rows = (
            await session.exec(
                select(Task, Consensus)
                .join(Consensus, col(Consensus.task_id) == col(Task.id))
                .where(Task.campaign_id == campaign_id, Task.kind == TaskKind.REAL)
                .where(col(Task.status).in_(["retired", "escalated"]))
                .order_by(col(Task.id))
            )
        ).all()
        shown: list[tuple[Task, Mask, list[Mask], Mask, CropOutcome]] = []
        for task, consensus in rows:
            assert task.id is not None
            proposal_row = await proposal_of(session, task_id=task.id)
            assert proposal_row is not None
            proposal = arrays.mask(store, proposal_row.mask_key)
            answers = (await session.exec(select(Answer).where(Answer.task_id == task.id))).all()
            masks = answer_masks(
                proposal,
                [
                    to_fusion(a, arrays.mask(store, a.mask_key) if a.mask_key else None)
                    for a in answers
                ],
            )
            truth = oracle.truths[task.id]
            fused = arrays.mask(store, consensus.mask_key)
            outcome = CropOutcome(
                task.id,
                str(task.status),
                len(answers),
                dice(fused, truth),
                dice(proposal, truth),
                dice(majority_vote(masks, proposal), truth),
            )
            out.crops.append(outcome)
            shown.append((task, proposal, masks, fused, outcome))
        # The crops where the crowd changed the outcome most, then the rest.
        shown.sort(key=lambda s: -(s[4].consensus - s[4].proposal))
        for task, proposal, masks, fused, outcome in shown[:samples]:
            assert task.id is not None
            out.samples.append(
                Sample(
                    task.id,
                    arrays.image(store, task.crop_key),
                    proposal,
                    masks,
                    fused,
                    oracle.truths[task.id],
                    outcome,
                )
            )
        out.answers_stored = (
            await session.exec(
                select(func.count())
                .select_from(Answer)
                .join(Task, col(Task.id) == Answer.task_id)
                .where(Task.campaign_id == campaign_id)
            )
        ).one()
        model = await Crowd(store).model(session, campaign_id)
        learned = {r.volunteer: r for r in model.volunteers()}
        gold = dict(
            (
                await session.exec(
                    select(GoldScore.volunteer_id, func.avg(GoldScore.dice)).group_by(
                        col(GoldScore.volunteer_id)
                    )
                )
            ).all()
        )
        board = await leaderboard(session, period="all", volunteer_id=None, limit=5, now=utcnow())
        out.leaderboard = [(r.rank, r.name, r.points) for r in board.rows]
        for telegram_id, name in profiles.items():
            row = (
                await session.exec(
                    select(Volunteer).where(Volunteer.telegram_user_id == telegram_id)
                )
            ).first()
            if row is None or row.id is None:
                continue
            counted = (
                await session.exec(
                    select(func.count(), func.coalesce(func.sum(Answer.points), 0)).where(
                        Answer.volunteer_id == row.id
                    )
                )
            ).one()
            report = learned.get(row.id)
            out.volunteers.append(
                VolunteerOutcome(
                    row.id,
                    row.nickname or f"#{row.id}",
                    name,
                    int(counted[0]),
                    int(counted[1]),
                    report.reliability if report else 0.0,
                    report.vote_skill if report else 0.0,
                    1.0 - report.spammer_score if report else 0.0,
                    bool(report and report.adversary),
                    float(gold[row.id]) if row.id in gold else None,
                )
            )
    return out
