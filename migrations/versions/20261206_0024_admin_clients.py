"""Admin clients: ``clients.admin_scopes``, the scopes of the admin API (``/admin/v1``) a
client may be granted through client_credentials. Empty for every other client.

Revision ID: 0024_admin_clients
Revises: 0023_passkeys
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024_admin_clients"
down_revision: str | None = "0023_passkeys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("admin_scopes", sa.JSON(), server_default=sa.text("'[]'"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("admin_scopes")
