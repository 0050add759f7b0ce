"""Pushed authorization requests (RFC 9126): ``pushed_authorization_requests`` (the pushed
parameters under the digest of their request_uri, one use), and
``clients.require_pushed_authorization_requests``.

Revision ID: 0025_pushed_requests
Revises: 0024_admin_clients
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025_pushed_requests"
down_revision: str | None = "0024_admin_clients"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pushed_authorization_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("request_uri_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("client_pk", sa.Uuid(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_pk"],
            ["clients.id"],
            name=op.f("fk_pushed_authorization_requests_client_pk_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pushed_authorization_requests")),
        sa.UniqueConstraint(
            "request_uri_digest", name=op.f("uq_pushed_authorization_requests_request_uri_digest")
        ),
    )
    with op.batch_alter_table("pushed_authorization_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pushed_authorization_requests_client_pk"), ["client_pk"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pushed_authorization_requests_expires_at"), ["expires_at"], unique=False
        )
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "require_pushed_authorization_requests",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("require_pushed_authorization_requests")
    with op.batch_alter_table("pushed_authorization_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pushed_authorization_requests_expires_at"))
        batch_op.drop_index(batch_op.f("ix_pushed_authorization_requests_client_pk"))
    op.drop_table("pushed_authorization_requests")
