"""Create sign_in_throttles: failed guesses per account and address.

Revision ID: 0008_sign_in_throttles
Revises: 0007_audit_events
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_sign_in_throttles"
down_revision: str | None = "0007_audit_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sign_in_throttles",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account", sa.String(length=300), nullable=False),
        sa.Column("ip_address", sa.String(length=45), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_throttles")),
        sa.UniqueConstraint("account", "ip_address", name=op.f("uq_sign_in_throttles_account")),
    )
    with op.batch_alter_table("sign_in_throttles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sign_in_throttles_last_failure_at"), ["last_failure_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sign_in_throttles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sign_in_throttles_last_failure_at"))

    op.drop_table("sign_in_throttles")
