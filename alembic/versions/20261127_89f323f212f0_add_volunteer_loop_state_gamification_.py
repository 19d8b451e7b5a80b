"""add volunteer loop state: gamification, adjust flow, daily activity

Revision ID: 89f323f212f0
Revises: 4240cbe87a34
Create Date: 2026-11-27 10:57:05.232225
"""

from collections.abc import Sequence

import sqlalchemy as sa

import bot.db.types
from alembic import op

revision: str = "89f323f212f0"
down_revision: str | None = "4240cbe87a34"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "volunteerday",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("volunteer_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("answers", sa.Integer(), nullable=False),
        sa.Column("gold_answers", sa.Integer(), nullable=False),
        sa.Column("gold_dice_sum", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["volunteer_id"], ["volunteer.id"], name=op.f("fk_volunteerday_volunteer_id_volunteer")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_volunteerday")),
        sa.UniqueConstraint("volunteer_id", "day", name=op.f("uq_volunteerday_volunteer_id_day")),
    )
    with op.batch_alter_table("volunteerday", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_volunteerday_volunteer_id"), ["volunteer_id"], unique=False
        )

    with op.batch_alter_table("answer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agreement", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("points", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("credited_at", bot.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("notified", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(batch_op.f("ix_answer_credited_at"), ["credited_at"], unique=False)

    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("augment", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("adjust", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(
            sa.Column("closed_at", bot.db.types.UTCDateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lease_seconds", sa.Integer(), nullable=False, server_default="900")
        )
        batch_op.add_column(
            sa.Column("answer_floor_seconds", sa.Float(), nullable=False, server_default="1.5")
        )
        batch_op.add_column(
            sa.Column("tutorial_tasks", sa.Integer(), nullable=False, server_default="3")
        )
        batch_op.add_column(
            sa.Column("daily_goal", sa.Integer(), nullable=False, server_default="10")
        )

    with op.batch_alter_table("inboxupdate", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index(
            batch_op.f("ix_inboxupdate_processed_at"), ["processed_at"], unique=False
        )

    with op.batch_alter_table("volunteer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("badges", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(
            sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("forgotten", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("volunteer", schema=None) as batch_op:
        batch_op.drop_column("forgotten")
        batch_op.drop_column("paused")
        batch_op.drop_column("badges")

    with op.batch_alter_table("inboxupdate", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inboxupdate_processed_at"))
        batch_op.drop_column("attempts")

    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_column("daily_goal")
        batch_op.drop_column("tutorial_tasks")
        batch_op.drop_column("answer_floor_seconds")
        batch_op.drop_column("lease_seconds")

    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.drop_column("closed_at")
        batch_op.drop_column("adjust")
        batch_op.drop_column("augment")

    with op.batch_alter_table("answer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_answer_credited_at"))
        batch_op.drop_column("notified")
        batch_op.drop_column("credited_at")
        batch_op.drop_column("points")
        batch_op.drop_column("agreement")

    with op.batch_alter_table("volunteerday", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volunteerday_volunteer_id"))

    op.drop_table("volunteerday")
