"""inbox updates keep their sender's id, so several bot processes can share the inbox by sender

Revision ID: 9e2d4b6a1c33
Revises: 7c3f9a1e4b20
Create Date: 2026-11-27 17:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "9e2d4b6a1c33"
down_revision: str | None = "7c3f9a1e4b20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inboxupdate", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_inboxupdate_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("inboxupdate", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inboxupdate_user_id"))
        batch_op.drop_column("user_id")
