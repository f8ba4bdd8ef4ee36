"""QA sign-off: run revisions, electronic signatures and the hash-chained audit trail.

* ``runs.revision`` (1 for a run never revised) and ``runs.supersedes`` (the revision the current
  one replaced, NULL for revision 1).
* ``run_revisions``: one row per revision after the first, with the metadata before and after,
  the reason and who made it (the old values stay recorded).
* ``signatures``: who signed which revision of which run, meaning (approved/rejected), reason,
  time and the certificate ``content_sha256`` signed.
* ``audit_log``: append-only, each entry chained to the one before by SHA-256; ``audit_head``
  holds the newest entry's number and hash (appends lock it: the chain never forks; deleting
  the newest entries shows unless the head is set back too).

Revision ID: 0003_signoff
Revises: 0002_stable_identities
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_signoff"
down_revision = "0002_stable_identities"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    """Add the revision columns and the sign-off and audit tables."""
    op.add_column("runs", sa.Column("revision", sa.Integer, nullable=False, server_default="1"))
    op.add_column("runs", sa.Column("supersedes", sa.Integer))
    op.create_table(
        "run_revisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("supersedes", sa.Integer, nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("before", sa.JSON, nullable=False),
        sa.Column("after", sa.JSON, nullable=False),
        sa.UniqueConstraint("run_id", "revision", name="one_row_per_run_revision"),
    )
    op.create_table(
        "signatures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("signer", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_id", sa.Integer, nullable=False),
        sa.Column("meaning", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("signed_ns", sa.BigInteger, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("t_ns", sa.BigInteger, nullable=False, index=True),
        sa.Column("actor", sa.String(200), nullable=False, index=True),
        sa.Column("action", sa.String(64), nullable=False, index=True),
        sa.Column("target", sa.String(200), nullable=False, index=True),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_sha256", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "sha256": GENESIS}])


def downgrade() -> None:
    """Back to 0002 (signatures, revisions and the audit trail are lost)."""
    for name in ("audit_head", "audit_log", "signatures", "run_revisions"):
        op.drop_table(name)
    with op.batch_alter_table("runs") as b:
        b.drop_column("supersedes")
        b.drop_column("revision")
