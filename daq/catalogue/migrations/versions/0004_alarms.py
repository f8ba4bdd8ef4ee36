"""Alarms: ``alarms``, one row per alarm with its lifecycle (:mod:`daq.alarms`).

* ``uid`` (UNIQUE ``one_alarm_per_uid``): the identity an alarm gets when it is raised, kept
  through the catalogue writer's outbox, so filing it again changes nothing;
* ``one_open_alarm_per_key``: a partial unique index on ``alarms(key) WHERE state != 'cleared'``
  — the same condition is one alarm, whichever node raises it.

Revision ID: 0004_alarms
Revises: 0003_signoff
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_alarms"
down_revision = "0003_signoff"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the alarms table."""
    op.create_table(
        "alarms",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column("rig", sa.String(64), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("priority", sa.String(8), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("raised_ns", sa.BigInteger, nullable=False),
        sa.Column("cleared_ns", sa.BigInteger),
        sa.Column("acked_ns", sa.BigInteger),
        sa.Column("acked_by", sa.String(200), nullable=False),
        sa.Column("ack_comment", sa.Text, nullable=False),
        sa.UniqueConstraint("uid", name="one_alarm_per_uid"),
    )
    op.create_index("ix_alarms_state", "alarms", ["state"])
    op.create_index("ix_alarms_raised_ns", "alarms", ["raised_ns"])
    op.create_index("one_open_alarm_per_key", "alarms", ["key"], unique=True,
                    sqlite_where=sa.text("state != 'cleared'"), postgresql_where=sa.text("state != 'cleared'"))


def downgrade() -> None:
    """Back to 0003 (the alarms are lost)."""
    op.drop_table("alarms")
