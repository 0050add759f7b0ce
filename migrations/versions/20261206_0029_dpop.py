"""DPoP (RFC 9449): ``clients.dpop_bound_access_tokens``, ``refresh_families.dpop_jkt`` (the
key a public client's family is bound to), ``authorization_codes.dpop_jkt`` (the key a code is
bound to, §10) and ``dpop_proofs_seen`` (proofs already accepted, until they expire).

Revision ID: 0029_dpop
Revises: 0028_admin_role
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029_dpop"
down_revision: str | None = "0028_admin_role"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dpop_proofs_seen",
        sa.Column("replay_key", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("replay_key", name=op.f("pk_dpop_proofs_seen")),
    )
    with op.batch_alter_table("dpop_proofs_seen", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dpop_proofs_seen_expires_at"), ["expires_at"], unique=False
        )
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "dpop_bound_access_tokens", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
    with op.batch_alter_table("refresh_families", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dpop_jkt", sa.String(length=64), nullable=True))
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dpop_jkt", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.drop_column("dpop_jkt")
    with op.batch_alter_table("refresh_families", schema=None) as batch_op:
        batch_op.drop_column("dpop_jkt")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("dpop_bound_access_tokens")
    with op.batch_alter_table("dpop_proofs_seen", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dpop_proofs_seen_expires_at"))
    op.drop_table("dpop_proofs_seen")
