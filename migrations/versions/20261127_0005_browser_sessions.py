"""Browser sessions, authorization codes, consents; families tied to sessions; logout URIs.

Revision ID: 0005_browser_sessions
Revises: 0004_create_refresh_families
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_browser_sessions"
down_revision: str | None = "0004_create_refresh_families"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "browser_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idle_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=40), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_browser_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_browser_sessions")),
        sa.UniqueConstraint("token_digest", name=op.f("uq_browser_sessions_token_digest")),
    )
    with op.batch_alter_table("browser_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_browser_sessions_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_browser_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "consents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("client_pk", sa.Uuid(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_pk"],
            ["clients.id"],
            name=op.f("fk_consents_client_pk_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_consents_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
        sa.UniqueConstraint("user_id", "client_pk", name=op.f("uq_consents_user_id")),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consents_client_pk"), ["client_pk"], unique=False)

    op.create_table(
        "authorization_codes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("code_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("client_pk", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("browser_session_id", sa.Uuid(), nullable=True),
        sa.Column("redirect_uri", sa.String(length=2000), nullable=False),
        sa.Column("scope", sa.String(length=2000), nullable=False),
        sa.Column("audience", sa.String(length=2000), nullable=False),
        sa.Column("nonce", sa.String(length=512), nullable=True),
        sa.Column("code_challenge", sa.String(length=128), nullable=True),
        sa.Column("code_challenge_method", sa.String(length=10), nullable=True),
        sa.Column("auth_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("family_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["browser_session_id"],
            ["browser_sessions.id"],
            name=op.f("fk_authorization_codes_browser_session_id_browser_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["client_pk"],
            ["clients.id"],
            name=op.f("fk_authorization_codes_client_pk_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["family_id"],
            ["refresh_families.id"],
            name=op.f("fk_authorization_codes_family_id_refresh_families"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_authorization_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_authorization_codes")),
        sa.UniqueConstraint("code_digest", name=op.f("uq_authorization_codes_code_digest")),
    )
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_authorization_codes_browser_session_id"),
            ["browser_session_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_authorization_codes_client_pk"), ["client_pk"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_authorization_codes_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_authorization_codes_user_id"), ["user_id"], unique=False
        )

    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "post_logout_redirect_uris",
                sa.JSON(),
                server_default=sa.text("'[]'"),
                nullable=False,
            )
        )

    with op.batch_alter_table("refresh_families", schema=None) as batch_op:
        batch_op.add_column(sa.Column("browser_session_id", sa.Uuid(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_refresh_families_browser_session_id"),
            ["browser_session_id"],
            unique=False,
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_refresh_families_browser_session_id_browser_sessions"),
            "browser_sessions",
            ["browser_session_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("refresh_families", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_refresh_families_browser_session_id_browser_sessions"),
            type_="foreignkey",
        )
        batch_op.drop_index(batch_op.f("ix_refresh_families_browser_session_id"))
        batch_op.drop_column("browser_session_id")

    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("post_logout_redirect_uris")

    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_authorization_codes_user_id"))
        batch_op.drop_index(batch_op.f("ix_authorization_codes_expires_at"))
        batch_op.drop_index(batch_op.f("ix_authorization_codes_client_pk"))
        batch_op.drop_index(batch_op.f("ix_authorization_codes_browser_session_id"))

    op.drop_table("authorization_codes")
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consents_client_pk"))

    op.drop_table("consents")
    with op.batch_alter_table("browser_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_browser_sessions_user_id"))
        batch_op.drop_index(batch_op.f("ix_browser_sessions_expires_at"))

    op.drop_table("browser_sessions")
