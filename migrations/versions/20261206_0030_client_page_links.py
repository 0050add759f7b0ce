"""What a consent page shows of a client besides its name: ``clients.logo_uri``,
``policy_uri`` and ``tos_uri`` (RFC 7591 §2), NULL for every existing client.

Revision ID: 0030_client_page_links
Revises: 0029_dpop
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0030_client_page_links"
down_revision: str | None = "0029_dpop"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("logo_uri", "policy_uri", "tos_uri")


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.String(length=2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
