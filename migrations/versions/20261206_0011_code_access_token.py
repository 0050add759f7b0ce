"""Record on each authorization code the access token it was exchanged for, so that a replay
of the code can denylist that token even when the code started no refresh family.

Revision ID: 0011_code_access_token
Revises: 0010_client_served_audiences
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_code_access_token"
down_revision: str | None = "0010_client_served_audiences"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("access_token_jti", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("access_token_expires_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.drop_column("access_token_expires_at")
        batch_op.drop_column("access_token_jti")
