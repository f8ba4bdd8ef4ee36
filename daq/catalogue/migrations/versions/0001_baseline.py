"""Baseline: the catalogue as ``meta.create_all`` made it before migrations.

Runs, cycles, archived cycle samples, run artifacts and API keys, exactly as they were
(indexes and constraint names included), so that a catalogue from before migrations is this
revision. Tables that exist are left alone: a pre-migration catalogue missing a table gets it.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def tables() -> MetaData:
    """The baseline schema (also used by tests to make a catalogue as the old version did)."""
    meta = MetaData()
    Table(
        "runs", meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("rig", String(64), nullable=False, index=True),
        Column("started_ns", BigInteger, nullable=False, index=True),
        Column("stopped_ns", BigInteger),
        Column("operator", String(200), nullable=False),
        Column("part_number", String(200), nullable=False, index=True),
        Column("lot", String(200), nullable=False, index=True),
        Column("serial", String(200), nullable=False),
        Column("notes", Text, nullable=False),
        Column("extra", JSON, nullable=False),
        Column("started_by", String(200), nullable=False),
        Column("config", JSON, nullable=False),
    )
    Table(
        "cycles", meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("rig", String(64), nullable=False),
        Column("run_id", Integer, ForeignKey("runs.id"), index=True),
        Column("cycle_no", Integer, nullable=False),
        Column("kind", String(32), nullable=False),
        Column("t_ns", BigInteger, nullable=False),
        Column("end_ns", BigInteger, nullable=False),
        Column("verdict", String(8), nullable=False),
        Column("reasons", JSON, nullable=False),
        Column("metrics", JSON, nullable=False),
        Column("info", JSON, nullable=False),
        Column("version", String(32), nullable=False),
        Column("samples_sha256", String(64), nullable=False),
        UniqueConstraint("rig", "t_ns", name="one_cycle_per_start"),
    )
    Table(
        "cycle_samples", meta,
        Column("cycle_id", Integer, ForeignKey("cycles.id"), primary_key=True),
        Column("n", Integer, nullable=False),
        Column("channels", JSON, nullable=False),
        Column("codec", String(32), nullable=False),
        Column("data", LargeBinary, nullable=False),
    )
    Table(
        "run_artifacts", meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("rig", String(64), nullable=False),
        Column("run_id", Integer, ForeignKey("runs.id"), index=True),
        Column("name", String(64), nullable=False),
        Column("t_ns", BigInteger, nullable=False),
        Column("data", JSON, nullable=False),
    )
    Table(
        "api_keys", meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(200), nullable=False),
        Column("role", String(16), nullable=False),
        Column("prefix", String(16), nullable=False, index=True),
        Column("hash", String(400), nullable=False),
        Column("created_ns", BigInteger, nullable=False),
        Column("revoked_ns", BigInteger),
    )
    return meta


def upgrade() -> None:
    """Create the baseline tables that do not exist yet."""
    tables().create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    """Drop everything."""
    tables().drop_all(op.get_bind())
