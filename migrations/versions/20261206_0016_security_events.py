"""Security Event Tokens: how a client receives them, and the queue of those it polls for.

Revision ID: 0016_security_events
Revises: 0015_backchannel_logout
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_security_events"
down_revision: str | None = "0015_backchannel_logout"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("security_event_delivery", sa.String(length=8), nullable=True)
        )
        batch_op.add_column(
            sa.Column("security_event_push_url", sa.String(length=2000), nullable=True)
        )
    op.create_table(
        "security_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("jti", sa.String(length=43), nullable=False),
        sa.Column("receiver_pk", sa.Uuid(), nullable=False),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["receiver_pk"],
            ["clients.id"],
            name=op.f("fk_security_events_receiver_pk_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_events")),
        sa.UniqueConstraint("jti", name=op.f("uq_security_events_jti")),
    )
    with op.batch_alter_table("security_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_security_events_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            "ix_security_events_receiver_pending", ["receiver_pk", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("security_events", schema=None) as batch_op:
        batch_op.drop_index("ix_security_events_receiver_pending")
        batch_op.drop_index(batch_op.f("ix_security_events_created_at"))
    op.drop_table("security_events")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("security_event_push_url")
        batch_op.drop_column("security_event_delivery")
