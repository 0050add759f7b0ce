"""Each revocation records the transaction that wrote it; the feed's cursor counts those.

Ids are taken when a row is written but become visible when its transaction commits, so a
cursor that counted ids passed entries committed out of id order. On PostgreSQL the column's
default is the writing transaction's 64-bit id (``pg_current_xact_id()``); see
``authserver/services/revocations.py`` for the cursor built on it. Existing rows get this
migration's own transaction id, so every entry live at the upgrade is sent again once: a
resource server may hear of an entry twice, never not at all. SQLite keeps counting ids
(one writer at a time) and leaves the column NULL.

Revision ID: 0014_revocation_txid
Revises: 0013_family_rotation_budget
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_revocation_txid"
down_revision: str | None = "0013_family_rotation_budget"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WRITING_TRANSACTION = "pg_current_xact_id()::text::bigint"


def upgrade() -> None:
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("txid", sa.BigInteger(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        revocations = sa.table("revocations", sa.column("txid", sa.BigInteger()))
        op.execute(revocations.update().values(txid=sa.text(WRITING_TRANSACTION)))
        op.alter_column("revocations", "txid", server_default=sa.text(WRITING_TRANSACTION))
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_revocations_txid"), ["txid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revocations_txid"))
        batch_op.drop_column("txid")
