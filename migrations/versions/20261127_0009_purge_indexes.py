"""Index what purge and revocation look up: codes by family, families by revocation time.

Revision ID: 0009_purge_indexes
Revises: 0008_sign_in_throttles
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009_purge_indexes"
down_revision: str | None = "0008_sign_in_throttles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_authorization_codes_family_id"), ["family_id"], unique=False
        )

    with op.batch_alter_table("refresh_families", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_refresh_families_revoked_at"), ["revoked_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("refresh_families", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refresh_families_revoked_at"))

    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_authorization_codes_family_id"))
