"""The authentication behind a refresh family, for its access tokens' ``auth_time`` and
``acr`` (RFC 9068 §2.2.1): ``refresh_families.auth_time`` and ``amr`` (NULL for families
from before: their tokens carry neither claim). And ``clients.require_second_factor``: a
client whose users must have signed in with two factors.

Revision ID: 0022_authentication_context
Revises: 0021_second_factors
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_authentication_context"
down_revision: str | None = "0021_second_factors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("refresh_families", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auth_time", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("amr", sa.String(length=64), nullable=True))
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "require_second_factor", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("require_second_factor")
    with op.batch_alter_table("refresh_families", schema=None) as batch_op:
        batch_op.drop_column("amr")
        batch_op.drop_column("auth_time")
