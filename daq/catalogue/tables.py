"""The catalogue's tables: the newest revision of its schema (Alembic keeps the database at it).

:mod:`daq.catalogue.migrations` takes a database from any earlier revision to this one;
:mod:`daq.catalogue.store` and its parts read and write them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

meta = MetaData()

runs = Table(
    "runs", meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rig", String(64), nullable=False, index=True),
    Column("started_ns", BigInteger, nullable=False, index=True),
    Column("stopped_ns", BigInteger),
    Column("operator", String(200), nullable=False, default=""),
    Column("part_number", String(200), nullable=False, default="", index=True),
    Column("lot", String(200), nullable=False, default="", index=True),
    Column("serial", String(200), nullable=False, default=""),
    Column("notes", Text, nullable=False, default=""),
    Column("extra", JSON, nullable=False, default=dict),
    Column("started_by", String(200), nullable=False, default=""),
    Column("config", JSON, nullable=False, default=dict),  # limits etc. as they were at the start
    Column("revision", Integer, nullable=False, default=1, server_default="1"),  # 1: never revised
    Column("supersedes", Integer),  # the revision the current one replaced (None for revision 1)
    Index("one_active_run_per_rig", "rig", unique=True,  # the database holds one active run per rig
          sqlite_where=text("stopped_ns IS NULL"), postgresql_where=text("stopped_ns IS NULL")),
)

cycles = Table(
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
    Column("uid", String(36), nullable=False),
    UniqueConstraint("rig", "t_ns", name="one_cycle_per_start"),
    UniqueConstraint("uid", name="one_cycle_per_uid"),
)

samples = Table(
    "cycle_samples", meta,
    Column("cycle_id", Integer, ForeignKey("cycles.id"), primary_key=True),
    Column("n", Integer, nullable=False),
    Column("channels", JSON, nullable=False),
    Column("codec", String(32), nullable=False),
    Column("data", LargeBinary, nullable=False),
)

artifacts = Table(
    "run_artifacts", meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rig", String(64), nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id"), index=True),
    Column("name", String(64), nullable=False),
    Column("t_ns", BigInteger, nullable=False),
    Column("data", JSON, nullable=False),
    Column("uid", String(36), nullable=False),
    UniqueConstraint("uid", name="one_artifact_per_uid"),
)

api_keys = Table(
    "api_keys", meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("prefix", String(16), nullable=False, index=True),
    Column("hash", String(400), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("revoked_ns", BigInteger),
)

run_revisions = Table(  # a run's metadata before and after each revision (the old values stay recorded)
    "run_revisions", meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False, index=True),
    Column("revision", Integer, nullable=False),
    Column("supersedes", Integer, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("before", JSON, nullable=False),
    Column("after", JSON, nullable=False),
    UniqueConstraint("run_id", "revision", name="one_row_per_run_revision"),
)

signatures = Table(  # electronic signatures of a run revision's certificate (daq.catalogue.signatures)
    "signatures", meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False, index=True),
    Column("revision", Integer, nullable=False),
    Column("signer", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("key_id", Integer, nullable=False),
    Column("meaning", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("signed_ns", BigInteger, nullable=False),
    Column("content_sha256", String(64), nullable=False),
)

audit_log = Table(  # append-only, hash-chained (daq.catalogue.audit)
    "audit_log", meta,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("t_ns", BigInteger, nullable=False, index=True),
    Column("actor", String(200), nullable=False, index=True),
    Column("action", String(64), nullable=False, index=True),
    Column("target", String(200), nullable=False, index=True),
    Column("details", Text, nullable=False),  # canonical JSON, exactly what the hash covers
    Column("prev_sha256", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
)

audit_head = Table(  # one row: the newest audit entry's number and hash (appends lock it)
    "audit_head", meta,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
)

alarms = Table(  # alarms and their lifecycle (daq.alarms): one open alarm per key
    "alarms", meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uid", String(36), nullable=False),
    Column("rig", String(64), nullable=False, default=""),
    Column("source", String(32), nullable=False),
    Column("key", String(200), nullable=False),
    Column("priority", String(8), nullable=False),
    Column("message", Text, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("raised_ns", BigInteger, nullable=False, index=True),
    Column("cleared_ns", BigInteger),
    Column("acked_ns", BigInteger),
    Column("acked_by", String(200), nullable=False, default=""),
    Column("ack_comment", Text, nullable=False, default=""),
    UniqueConstraint("uid", name="one_alarm_per_uid"),
    Index("one_open_alarm_per_key", "key", unique=True,
          sqlite_where=text("state != 'cleared'"), postgresql_where=text("state != 'cleared'")),
)


def insert_new(conn: Connection, table: Table, values: dict) -> int | None:
    """Insert a row; its id, or None if a unique key of it is filed already (nothing changes then)."""
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):  # INSERT … ON CONFLICT DO NOTHING RETURNING id
        ins = (sqlite_insert if dialect == "sqlite" else pg_insert)(table).values(**values)
        return conn.execute(ins.on_conflict_do_nothing().returning(table.c.id)).scalar()
    try:
        with conn.begin_nested():
            return conn.execute(table.insert().values(**values)).inserted_primary_key[0]
    except IntegrityError:
        return None
