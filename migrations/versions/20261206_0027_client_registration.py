"""Dynamic client registration (RFC 7591, RFC 7592): ``initial_access_tokens``, the tokens
the operator hands out for ``POST /register`` (digests only), and
``clients.registration_access_token_digest``, the digest of the token with which a client
registered there reads, replaces and deletes its registration.

Revision ID: 0027_client_registration
Revises: 0026_device_authorizations
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027_client_registration"
down_revision: str | None = "0026_device_authorizations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "initial_access_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uses_allowed", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_initial_access_tokens")),
        sa.UniqueConstraint("token_digest", name=op.f("uq_initial_access_tokens_token_digest")),
    )
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("registration_access_token_digest", sa.LargeBinary(length=32), nullable=True)
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_clients_registration_access_token_digest"),
            ["registration_access_token_digest"],
        )


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("uq_clients_registration_access_token_digest"), type_="unique"
        )
        batch_op.drop_column("registration_access_token_digest")
    op.drop_table("initial_access_tokens")
