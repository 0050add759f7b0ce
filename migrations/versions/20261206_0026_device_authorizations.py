"""The device authorization grant (RFC 8628): ``device_authorizations``, a device's request
with the digests of its device code and user code, its client, scope and audience, and the
user's decision.

Revision ID: 0026_device_authorizations
Revises: 0025_pushed_requests
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026_device_authorizations"
down_revision: str | None = "0025_pushed_requests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_authorizations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("device_code_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("user_code_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("client_pk", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=2000), nullable=False),
        sa.Column("audience", sa.String(length=2000), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("browser_session_id", sa.Uuid(), nullable=True),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("amr", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["browser_session_id"],
            ["browser_sessions.id"],
            name=op.f("fk_device_authorizations_browser_session_id_browser_sessions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["client_pk"],
            ["clients.id"],
            name=op.f("fk_device_authorizations_client_pk_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_device_authorizations_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_authorizations")),
        sa.UniqueConstraint(
            "device_code_digest", name=op.f("uq_device_authorizations_device_code_digest")
        ),
        sa.UniqueConstraint(
            "user_code_digest", name=op.f("uq_device_authorizations_user_code_digest")
        ),
    )
    with op.batch_alter_table("device_authorizations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_authorizations_browser_session_id"),
            ["browser_session_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_device_authorizations_client_pk"), ["client_pk"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_device_authorizations_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_device_authorizations_user_id"), ["user_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("device_authorizations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_authorizations_user_id"))
        batch_op.drop_index(batch_op.f("ix_device_authorizations_expires_at"))
        batch_op.drop_index(batch_op.f("ix_device_authorizations_client_pk"))
        batch_op.drop_index(batch_op.f("ix_device_authorizations_browser_session_id"))
    op.drop_table("device_authorizations")
