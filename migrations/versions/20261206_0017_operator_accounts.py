"""Operator commands: whether a user's address is verified, when they last signed in, and the
overlap of a rotated client secret.

``users.email_verified`` (existing accounts: not verified; nothing verified them) and
``users.last_sign_in_at`` (existing accounts: unknown). ``clients.previous_secret_digest`` and
``clients.previous_secret_expires_at``: the secret replaced by ``clients rotate-secret``, which
keeps authenticating until then.

Revision ID: 0017_operator_accounts
Revises: 0016_security_events
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_operator_accounts"
down_revision: str | None = "0016_security_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("email_verified", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("last_sign_in_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("previous_secret_digest", sa.LargeBinary(), nullable=True))
        batch_op.add_column(
            sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("previous_secret_expires_at")
        batch_op.drop_column("previous_secret_digest")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("last_sign_in_at")
        batch_op.drop_column("email_verified")
