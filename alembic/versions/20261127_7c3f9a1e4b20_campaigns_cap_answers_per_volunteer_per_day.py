"""campaigns cap the answers a volunteer gives per day

Revision ID: 7c3f9a1e4b20
Revises: 5b1e0c2d7a91
Create Date: 2026-11-27 16:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "7c3f9a1e4b20"
down_revision: str | None = "5b1e0c2d7a91"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("daily_cap", sa.Integer(), nullable=False, server_default="300")
        )


def downgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_column("daily_cap")
