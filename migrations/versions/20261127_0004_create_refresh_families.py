"""Create refresh_families and refresh_tokens.

Revision ID: 0004_create_refresh_families
Revises: 0003_create_signing_keys
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_create_refresh_families"
down_revision: str | None = "0003_create_signing_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "refresh_families",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("client_pk", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=2000), nullable=False),
        sa.Column("audience", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idle_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=40), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_pk"],
            ["clients.id"],
            name=op.f("fk_refresh_families_client_pk_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_refresh_families_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_families")),
    )
    op.create_index(op.f("ix_refresh_families_client_pk"), "refresh_families", ["client_pk"])
    op.create_index(op.f("ix_refresh_families_expires_at"), "refresh_families", ["expires_at"])
    op.create_index(op.f("ix_refresh_families_user_id"), "refresh_families", ["user_id"])

    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("family_id", sa.Uuid(), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("token_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("successor_ciphertext", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["family_id"],
            ["refresh_families.id"],
            name=op.f("fk_refresh_tokens_family_id_refresh_families"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["refresh_tokens.id"],
            name=op.f("fk_refresh_tokens_parent_id_refresh_tokens"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_digest", name=op.f("uq_refresh_tokens_token_digest")),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_index(op.f("ix_refresh_tokens_parent_id"), "refresh_tokens", ["parent_id"])
    # At most one unused token per family: the database itself refuses a forked lineage.
    op.create_index(
        "uq_refresh_tokens_one_unused_per_family",
        "refresh_tokens",
        ["family_id"],
        unique=True,
        postgresql_where=sa.text("used_at IS NULL"),
        sqlite_where=sa.text("used_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("refresh_tokens")
    op.drop_index(op.f("ix_refresh_families_user_id"), table_name="refresh_families")
    op.drop_index(op.f("ix_refresh_families_expires_at"), table_name="refresh_families")
    op.drop_index(op.f("ix_refresh_families_client_pk"), table_name="refresh_families")
    op.drop_table("refresh_families")
