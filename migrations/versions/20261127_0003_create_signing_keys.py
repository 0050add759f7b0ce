"""Create signing_keys.

Revision ID: 0003_create_signing_keys
Revises: 0002_create_clients
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_create_signing_keys"
down_revision: str | None = "0002_create_clients"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=10), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("private_key_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column(
            "state",
            sa.Enum("current", "retired", name="keystate", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    op.create_index(op.f("ix_signing_keys_state"), "signing_keys", ["state"])


def downgrade() -> None:
    op.drop_index(op.f("ix_signing_keys_state"), table_name="signing_keys")
    op.drop_table("signing_keys")
