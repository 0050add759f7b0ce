"""The admin role: ``users.is_admin``, whether the account may use the operator console
(``/admin``). Granted and revoked only from the command line (``authserver users
grant-admin`` / ``revoke-admin``), audited; false for every existing account.

Revision ID: 0028_admin_role
Revises: 0027_client_registration
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028_admin_role"
down_revision: str | None = "0027_client_registration"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("is_admin", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("is_admin")
