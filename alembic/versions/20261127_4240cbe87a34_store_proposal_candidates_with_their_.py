"""store proposal candidates with their source and score

Revision ID: 4240cbe87a34
Revises: dad48df9880e
Create Date: 2026-11-27 05:55:59.622145
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "4240cbe87a34"
down_revision: str | None = "dad48df9880e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _proposal() -> sa.TableClause:
    return sa.table(
        "proposal",
        sa.column("id", sa.Integer),
        sa.column("candidate_keys", sa.JSON),
        sa.column("candidates", sa.JSON),
    )


def upgrade() -> None:
    with op.batch_alter_table("proposal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("candidates", sa.JSON(), nullable=True))
    proposal = _proposal()
    connection = op.get_bind()
    rows = connection.execute(sa.select(proposal.c.id, proposal.c.candidate_keys)).all()
    for row_id, keys in rows:
        candidates = [{"key": key, "source": "unknown", "score": None} for key in keys or []]
        connection.execute(
            proposal.update().where(proposal.c.id == row_id).values(candidates=candidates)
        )
    with op.batch_alter_table("proposal", schema=None) as batch_op:
        batch_op.alter_column("candidates", existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column("candidate_keys")


def downgrade() -> None:
    with op.batch_alter_table("proposal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("candidate_keys", sa.JSON(), nullable=True))
    proposal = _proposal()
    connection = op.get_bind()
    rows = connection.execute(sa.select(proposal.c.id, proposal.c.candidates)).all()
    for row_id, candidates in rows:
        keys = [c["key"] for c in candidates or []]
        connection.execute(
            proposal.update().where(proposal.c.id == row_id).values(candidate_keys=keys)
        )
    with op.batch_alter_table("proposal", schema=None) as batch_op:
        batch_op.alter_column("candidate_keys", existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column("candidates")
