"""add audit log and a coordinator's working campaign

Revision ID: 432d4316ca65
Revises: 89f323f212f0
Create Date: 2026-11-27 12:48:03.700709
"""

from collections.abc import Sequence

import sqlalchemy as sa

import bot.db.types
from alembic import op

revision: str = "432d4316ca65"
down_revision: str | None = "89f323f212f0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auditentry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor_telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", bot.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaign.id"], name=op.f("fk_auditentry_campaign_id_campaign")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auditentry")),
    )
    with op.batch_alter_table("auditentry", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_auditentry_actor_telegram_id"), ["actor_telegram_id"], unique=False
        )

    with op.batch_alter_table("volunteer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("current_campaign_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_volunteer_current_campaign_id_campaign"),
            "campaign",
            ["current_campaign_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("volunteer", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_volunteer_current_campaign_id_campaign"), type_="foreignkey"
        )
        batch_op.drop_column("current_campaign_id")

    with op.batch_alter_table("auditentry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auditentry_actor_telegram_id"))

    op.drop_table("auditentry")
