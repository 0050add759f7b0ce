"""Clients as resource servers: the audiences a client serves.

A client may introspect tokens issued for the audiences it serves (RFC 7662 §4) and read the
revocation feed only if it serves one. Existing clients serve none until an operator says so
(`authserver clients serve CLIENT_ID AUDIENCE...`).

Revision ID: 0010_client_served_audiences
Revises: 0009_purge_indexes
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_client_served_audiences"
down_revision: str | None = "0009_purge_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("served_audiences", sa.JSON(), server_default=sa.text("'[]'"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("served_audiences")
