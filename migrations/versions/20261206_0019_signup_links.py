"""Links for sign-up and invitations: mailed to an address that has no account yet.

``account_links.user_id`` becomes nullable (a sign-up or invitation link names its address in
``account_links.email`` and no user), a check keeps every link naming one or the other, and an
index on (email, purpose, created_at) serves the per-address hourly cap and the ending of an
address's older links.

The downgrade deletes the links that have no user (unused ones stop working; they could not
be followed by a server of the earlier revision anyway) before restoring NOT NULL.

Revision ID: 0019_signup_links
Revises: 0018_account_links
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_signup_links"
down_revision: str | None = "0018_account_links"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("account_links", schema=None) as batch_op:
        batch_op.alter_column("user_id", existing_type=sa.Uuid(), nullable=True)
        batch_op.create_check_constraint(
            op.f("ck_account_links_user_or_email"), "user_id IS NOT NULL OR email IS NOT NULL"
        )
        batch_op.create_index(
            "ix_account_links_email_purpose", ["email", "purpose", "created_at"], unique=False
        )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM account_links WHERE user_id IS NULL"))
    with op.batch_alter_table("account_links", schema=None) as batch_op:
        batch_op.drop_index("ix_account_links_email_purpose")
        batch_op.drop_constraint(op.f("ck_account_links_user_or_email"), type_="check")
        batch_op.alter_column("user_id", existing_type=sa.Uuid(), nullable=False)
