"""How a browser session's user proved who they are: ``amr`` (RFC 8176 method references,
space-separated) on browser sessions and on the authorization codes issued through them, for
the ID token's ``amr`` claim (OpenID Connect Core 1.0 §2).

Every existing session and code was signed in with a password: ``pwd``.

Revision ID: 0020_authentication_methods
Revises: 0019_signup_links
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020_authentication_methods"
down_revision: str | None = "0019_signup_links"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("browser_sessions", "authorization_codes")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("amr", sa.String(length=64), server_default="pwd", nullable=False)
            )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("amr")
