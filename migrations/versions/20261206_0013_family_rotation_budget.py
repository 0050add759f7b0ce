"""A refresh family's rotation budget: when its window began and how many rotations it made.

The rotating statement updates the family row anyway (its idle expiry slides), so counting
there costs no round trip. Existing families start with no window.

Revision ID: 0013_family_rotation_budget
Revises: 0012_user_email_skeleton
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_family_rotation_budget"
down_revision: str | None = "0012_user_email_skeleton"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("refresh_families", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rotation_window_started_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "rotations_in_window", sa.Integer(), server_default=sa.text("0"), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("refresh_families", schema=None) as batch_op:
        batch_op.drop_column("rotations_in_window")
        batch_op.drop_column("rotation_window_started_at")
