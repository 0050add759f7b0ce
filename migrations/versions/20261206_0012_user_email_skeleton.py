"""Add users.email_skeleton_digest: addresses that look alike (UTS #39) get one account.

Existing accounts get the digest of their address's skeleton, oldest first. Where accounts
already look alike, the oldest keeps the digest and the others get NULL, so that the unique
index can be built; one warning line says how many and names `authserver users lookalikes`,
which lists them.

The skeleton is computed here as ``authserver/services/lookalikes.py`` computes it today,
written out again because a revision must not change when application code does (a later
change of the rule comes with a revision of its own that recomputes the digests);
``tests/test_migrations.py`` checks that both agree.

Revision ID: 0012_user_email_skeleton
Revises: 0011_code_access_token
Create Date: 2026-12-06
"""

import hashlib
import logging
from collections.abc import Sequence

import icu
import sqlalchemy as sa
from alembic import op

revision: str = "0012_user_email_skeleton"
down_revision: str | None = "0011_code_access_token"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_SIZE = 1000
LOOKALIKES_COMMAND = "authserver users lookalikes"

log = logging.getLogger("authserver.migrations")

users = sa.table(
    "users",
    sa.column("id", sa.Uuid()),
    sa.column("email", sa.String(254)),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("email_skeleton_digest", sa.String(64)),
)


def _skeleton_digest(checker: "icu.SpoofChecker", email: str) -> str:
    """UTS #39 skeleton, case-folded, U+0307 dropped on a Soft_Dotted letter, to a fixed
    point (at most 8 rounds); SHA-256 hex of it."""
    text = email
    for _ in range(8):
        folded = checker.getSkeleton(0, text).casefold()
        kept: list[str] = []
        dot_hidden = False
        for char in folded:
            combining_class = icu.Char.getCombiningClass(char)
            if char == "\u0307" and dot_hidden:
                dot_hidden = False
                continue
            if combining_class == 0:
                dot_hidden = icu.Char.hasBinaryProperty(char, icu.UProperty.SOFT_DOTTED)
            elif combining_class == 230:
                dot_hidden = False
            kept.append(char)
        next_text = "".join(kept)
        if next_text == text:
            break
        text = next_text
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fill_skeleton_digests(connection: sa.Connection) -> None:
    """Every account's digest, in batches in the order of the primary key."""
    checker = icu.SpoofChecker()
    after = None
    while True:
        query = sa.select(users.c.id, users.c.email).order_by(users.c.id).limit(BATCH_SIZE)
        if after is not None:
            query = query.where(users.c.id > after)
        rows = connection.execute(query).all()
        if not rows:
            return
        connection.execute(
            users.update()
            .where(users.c.id == sa.bindparam("user_id"))
            .values(email_skeleton_digest=sa.bindparam("digest")),
            [{"user_id": row.id, "digest": _skeleton_digest(checker, row.email)} for row in rows],
        )
        after = rows[-1].id


def _keep_only_the_oldest_of_each_group(connection: sa.Connection) -> tuple[int, int]:
    """Where accounts share a digest, the oldest keeps it and the others get NULL; returns
    (accounts that look like another, groups they form)."""
    shared = connection.execute(
        sa.select(sa.func.count())
        .select_from(users)
        .where(users.c.email_skeleton_digest.is_not(None))
        .group_by(users.c.email_skeleton_digest)
        .having(sa.func.count() > 1)
    ).scalars()
    group_sizes = list(shared)
    if group_sizes:
        place = (
            sa.func.row_number()
            .over(
                partition_by=users.c.email_skeleton_digest,
                order_by=(users.c.created_at, users.c.id),
            )
            .label("place")
        )
        ranked = (
            sa.select(users.c.id, place)
            .where(users.c.email_skeleton_digest.is_not(None))
            .subquery("ranked")
        )
        younger = sa.select(ranked.c.id).where(ranked.c.place > 1)
        connection.execute(
            users.update().where(users.c.id.in_(younger)).values(email_skeleton_digest=None)
        )
    return sum(group_sizes), len(group_sizes)


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_skeleton_digest", sa.String(length=64), nullable=True))

    connection = op.get_bind()
    _fill_skeleton_digests(connection)
    colliding, groups = _keep_only_the_oldest_of_each_group(connection)
    if colliding:
        log.warning(
            "%d existing accounts have addresses that look like another account's (%d %s); "
            "the oldest of each group keeps its address's skeleton, the others have none; "
            "list them with `%s`",
            colliding,
            groups,
            "group" if groups == 1 else "groups",
            LOOKALIKES_COMMAND,
        )

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_users_email_skeleton_digest"), ["email_skeleton_digest"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_email_skeleton_digest"))
        batch_op.drop_column("email_skeleton_digest")
