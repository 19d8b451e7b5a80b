"""images keep their geometry and the expert's whole mask; a volume's slices may repeat

Revision ID: e7b1d3a9c514
Revises: c4a8e2f61d05
Create Date: 2026-12-07 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "e7b1d3a9c514"
down_revision: str | None = "c4a8e2f61d05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_2D = sa.text("volume_hash IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.add_column(sa.Column("geometry", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("gold_mask_key", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True)
        )
        batch_op.drop_constraint("uq_image_campaign_id_content_hash", type_="unique")
        batch_op.create_unique_constraint(
            "uq_image_campaign_id_volume_hash_slice_index",
            ["campaign_id", "volume_hash", "slice_index"],
        )
    op.create_index(
        "uq_image_campaign_id_content_hash_2d",
        "image",
        ["campaign_id", "content_hash"],
        unique=True,
        sqlite_where=_2D,
        postgresql_where=_2D,
    )


def downgrade() -> None:
    op.drop_index("uq_image_campaign_id_content_hash_2d", table_name="image")
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_constraint("uq_image_campaign_id_volume_hash_slice_index", type_="unique")
        batch_op.create_unique_constraint(
            "uq_image_campaign_id_content_hash", ["campaign_id", "content_hash"]
        )
        batch_op.drop_column("gold_mask_key")
        batch_op.drop_column("geometry")
