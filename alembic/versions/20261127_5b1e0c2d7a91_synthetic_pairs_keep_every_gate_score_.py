"""synthetic pairs keep every gate score and their provenance

Revision ID: 5b1e0c2d7a91
Revises: 432d4316ca65
Create Date: 2026-11-27 14:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "5b1e0c2d7a91"
down_revision: str | None = "432d4316ca65"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("syntheticpair", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scores", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("provenance", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("syntheticpair", schema=None) as batch_op:
        batch_op.drop_column("provenance")
        batch_op.drop_column("scores")
