"""The data model: SQLModel tables, one noun each.

Masks, crops and embeddings live in the file store (``bot.store``); tables keep their store keys.
All boxes are ``xyxy`` in pixels, half-open (``x1``/``y1`` exclusive) unless a field says otherwise.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from bot.db.types import UTCDateTime, utcnow

# Stable constraint names on SQLite and PostgreSQL alike (alembic "naming conventions").
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STORE_KEY = 120  # length of a file-store key column


def _enum(cls: type[enum.Enum]) -> sa.Enum:
    """A portable enum column: VARCHAR holding the member values, no native PG type."""
    return sa.Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


def _ts(**kwargs: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kwargs)


class CampaignStatus(enum.StrEnum):
    """Whether a campaign hands out tasks."""

    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    CLOSED = "closed"


class TaskKind(enum.StrEnum):
    """What a task is for: crowd work, a hidden gold check, or a taught example."""

    REAL = "real"
    GOLD = "gold"
    TUTORIAL = "tutorial"


class TaskStatus(enum.StrEnum):
    """Life of a task: open until retired by consensus or escalated to an expert."""

    OPEN = "open"
    RETIRED = "retired"
    ESCALATED = "escalated"


class Role(enum.StrEnum):
    """What a Telegram user may do."""

    VOLUNTEER = "volunteer"
    EXPERT = "expert"
    COORDINATOR = "coordinator"
    ADMIN = "admin"


class Verdict(enum.StrEnum):
    """A volunteer's answer to one crop."""

    ACCEPT = "accept"
    ADJUST = "adjust"
    REJECT = "reject"
    UNSURE = "unsure"
    SKIP = "skip"


class JobStatus(enum.StrEnum):
    """State of a background job."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Campaign(SQLModel, table=True):
    """One labelling project: a structure to segment, its images, rules and volunteers."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=80, unique=True)
    structure: str = Field(default="lesion", max_length=80)
    instructions: str = Field(default="", max_length=4000)
    status: CampaignStatus = Field(default=CampaignStatus.ACTIVE, sa_type=_enum(CampaignStatus))
    min_answers: int = Field(default=3, ge=1)
    max_answers: int = Field(default=7, ge=1)
    retire_confidence: float = Field(default=0.9, ge=0, le=1)
    gold_rate: float = Field(default=0.1, ge=0, le=1)
    crop_size: int = Field(default=512, ge=32, description="largest side of a stored crop, px")
    crop_margin: float = Field(default=0.3, ge=0, description="context around a box, x box side")
    lease_seconds: int = Field(default=900, ge=10, description="how long a served crop is held")
    answer_floor_seconds: float = Field(
        default=1.5, ge=0, description="answers faster than this score no points"
    )
    tutorial_tasks: int = Field(default=3, ge=0, description="gold crops taught after consent")
    daily_goal: int = Field(default=10, ge=1, description="answers that make a day count")
    daily_cap: int = Field(
        default=300, ge=1, description="most answers one volunteer may give in a UTC day"
    )
    created_at: dt.datetime = _ts()


class Image(SQLModel, table=True):
    """One 2D source image; a slice of a 3D volume keeps its volume and slice index."""

    # A 2D image is stored once per campaign; a volume's slices may repeat (a still cine frame).
    __table_args__ = (
        sa.Index(
            "uq_image_campaign_id_content_hash_2d",
            "campaign_id",
            "content_hash",
            unique=True,
            sqlite_where=sa.text("volume_hash IS NULL"),
            postgresql_where=sa.text("volume_hash IS NULL"),
        ),
        sa.UniqueConstraint("campaign_id", "volume_hash", "slice_index"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    content_hash: str = Field(max_length=64, description="sha256 of the normalised PNG")
    file_key: str = Field(max_length=STORE_KEY)
    source_name: str = Field(max_length=200, description="sanitised file name, never a path")
    modality: str = Field(default="unknown", max_length=16)
    width: int
    height: int
    channels: int = 1
    volume_hash: str | None = Field(default=None, max_length=64, index=True)
    slice_index: int | None = None
    slice_count: int | None = None
    geometry: str | None = Field(
        default=None,
        sa_type=sa.Text,
        description="JSON: where the pixels sit in patient space (bot.campaign.geometry)",
    )
    gold_mask_key: str | None = Field(
        default=None, max_length=STORE_KEY, description="the expert's whole-image mask"
    )
    created_at: dt.datetime = _ts()


class Task(SQLModel, table=True):
    """One crop around one prompt box: the unit of volunteer work."""

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    image_id: int = Field(foreign_key="image.id", index=True)
    kind: TaskKind = Field(default=TaskKind.REAL, sa_type=_enum(TaskKind))
    status: TaskStatus = Field(default=TaskStatus.OPEN, sa_type=_enum(TaskStatus), index=True)
    priority: float = 0.0
    # The crop: a square region of the image (may overhang the border, padded) and its pixels.
    crop_x0: int
    crop_y0: int
    crop_side: int = Field(description="side of the crop region in image pixels")
    crop_out: int = Field(description="side of the stored crop in pixels")
    crop_key: str = Field(max_length=STORE_KEY)
    crop_hash: str = Field(max_length=64, index=True)
    # The prompt box in image pixel coordinates (float, xyxy).
    box_x0: float
    box_y0: float
    box_x1: float
    box_y1: float
    gold_mask_key: str | None = Field(default=None, max_length=STORE_KEY)
    created_at: dt.datetime = _ts()


class Proposal(SQLModel, table=True):
    """A model's mask for a crop, with its alternatives and self-assessed quality."""

    __table_args__ = (sa.UniqueConstraint("task_id", "model_id"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True)
    model_id: str = Field(max_length=120)
    mask_key: str = Field(max_length=STORE_KEY)
    prob_key: str | None = Field(default=None, max_length=STORE_KEY)
    # One-tap alternatives: [{"key": mask store key, "source": "looser", "score": 0.8}, ...]
    candidates: list[dict[str, Any]] = Field(default_factory=list, sa_type=sa.JSON)
    predicted_iou: float | None = None
    stability: float | None = None
    created_at: dt.datetime = _ts()


class Volunteer(SQLModel, table=True):
    """A Telegram user who labels (or coordinates); identified by Telegram id only."""

    id: int | None = Field(default=None, primary_key=True)
    telegram_user_id: int = Field(sa_type=sa.BigInteger, unique=True)
    nickname: str | None = Field(default=None, max_length=40, description="opt-in display name")
    role: Role = Field(default=Role.VOLUNTEER, sa_type=_enum(Role))
    consent_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    banned: bool = False
    reliability: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    points: int = 0
    streak_days: int = 0
    last_active_on: dt.date | None = None
    level: int = 1
    badges: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    paused: bool = Field(default=False, description="no pushes (digests, reminders)")
    current_campaign_id: int | None = Field(
        default=None, foreign_key="campaign.id", description="a coordinator's working campaign"
    )
    forgotten: bool = Field(default=False, description="personal data deleted by /forget")
    created_at: dt.datetime = _ts()


class Assignment(SQLModel, table=True):
    """A task handed to a volunteer, under a lease, addressed by an opaque token."""

    id: int | None = Field(default=None, primary_key=True)
    token: str = Field(max_length=32, unique=True)
    task_id: int = Field(foreign_key="task.id", index=True)
    volunteer_id: int = Field(foreign_key="volunteer.id", index=True)
    lease_expires_at: dt.datetime = Field(sa_type=UTCDateTime)
    chat_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    message_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    # A gold crop is shown augmented (see bot.campaign.render.Augment); None for real crops.
    augment: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    # The Adjust flow's working state: mode, selected grid cells, current mask key, undo stack.
    adjust: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    closed_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: dt.datetime = _ts()


class Answer(SQLModel, table=True):
    """One volunteer's verdict on one crop; stored once per (task, volunteer)."""

    __table_args__ = (sa.UniqueConstraint("task_id", "volunteer_id"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True)
    volunteer_id: int = Field(foreign_key="volunteer.id", index=True)
    assignment_id: int | None = Field(default=None, foreign_key="assignment.id")
    verdict: Verdict = Field(sa_type=_enum(Verdict))
    mask_key: str | None = Field(default=None, max_length=STORE_KEY)
    prompt_points: list[Any] = Field(default_factory=list, sa_type=sa.JSON)
    seconds_taken: float | None = None
    # Delayed credit: agreement with the retired consensus (or the gold) and the points it earned.
    agreement: float | None = None
    points: int = 0
    credited_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    notified: bool = Field(default=False, description="included in a digest")
    created_at: dt.datetime = _ts()


class VolunteerDay(SQLModel, table=True):
    """One volunteer's activity on one UTC day (streaks count days that meet the goal)."""

    __table_args__ = (sa.UniqueConstraint("volunteer_id", "day"),)

    id: int | None = Field(default=None, primary_key=True)
    volunteer_id: int = Field(foreign_key="volunteer.id", index=True)
    day: dt.date
    answers: int = 0
    gold_answers: int = 0
    gold_dice_sum: float = 0.0


class AuditEntry(SQLModel, table=True):
    """A privileged action and who did it (coordinators and admins)."""

    id: int | None = Field(default=None, primary_key=True)
    actor_telegram_id: int = Field(sa_type=sa.BigInteger, index=True)
    action: str = Field(max_length=40)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id")
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    created_at: dt.datetime = _ts()


class Consensus(SQLModel, table=True):
    """Fusion's current mask, probability map and confidence for a crop."""

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", unique=True)
    mask_key: str = Field(max_length=STORE_KEY)
    prob_key: str | None = Field(default=None, max_length=STORE_KEY)
    confidence: float
    answers_used: int
    method_version: str = Field(max_length=40)
    updated_at: dt.datetime = _ts()


class GoldScore(SQLModel, table=True):
    """How one answer on a gold task compared with the expert's mask."""

    id: int | None = Field(default=None, primary_key=True)
    answer_id: int = Field(foreign_key="answer.id", unique=True)
    task_id: int = Field(foreign_key="task.id", index=True)
    volunteer_id: int = Field(foreign_key="volunteer.id", index=True)
    dice: float
    iou: float
    created_at: dt.datetime = _ts()


class SyntheticPair(SQLModel, table=True):
    """A generated (image, mask) pair that passed the quality gate, with its provenance."""

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    image_key: str = Field(max_length=STORE_KEY)
    mask_key: str = Field(max_length=STORE_KEY)
    generator_id: str = Field(max_length=120)
    seed: int = Field(sa_type=sa.BigInteger)
    gate_score: float
    source_task_ids: list[int] = Field(default_factory=list, sa_type=sa.JSON)
    # Every gate score (judge Dice, intensity distance, nearest-neighbour correlation) and the
    # provenance (checkpoint sha256, config digest, sampler strategy, seed, draw index).
    scores: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    provenance: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    created_at: dt.datetime = _ts()


class Job(SQLModel, table=True):
    """A background job (proposals, training, export) with its progress."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=40, index=True)
    status: JobStatus = Field(default=JobStatus.QUEUED, sa_type=_enum(JobStatus), index=True)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id")
    params: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    done: int = 0
    total: int | None = None
    error: str | None = Field(default=None, max_length=4000)
    created_at: dt.datetime = _ts()
    started_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Refreshed by the process running the job: a running job whose heartbeat stopped died
    # with its process (any process: the bot's front, a bot worker, a CLI command).
    heartbeat_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)


class InboxUpdate(SQLModel, table=True):
    """A raw Telegram update, persisted before it is acknowledged, processed at most once.

    ``attempts`` counts tries; an update whose handlers keep failing is parked with ``error``.
    """

    id: int | None = Field(default=None, primary_key=True)
    update_id: int = Field(sa_type=sa.BigInteger, unique=True)
    user_id: int | None = Field(
        default=None, sa_type=sa.BigInteger, index=True, description="the sender (partitions)"
    )
    payload: dict[str, Any] = Field(sa_type=sa.JSON)
    received_at: dt.datetime = _ts()
    processed_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    attempts: int = 0
    error: str | None = Field(default=None, max_length=4000)
