"""Stable identities: cycles and run artifacts filed by ``uid``; one active run per rig in the database.

* ``cycles.uid`` and ``run_artifacts.uid`` (36 characters, NOT NULL, UNIQUE
  ``one_cycle_per_uid`` / ``one_artifact_per_uid``): the identity a result gets when it is made and
  keeps through retries and outbox replays; filing is an upsert on it. Rows filed before this
  revision get the uid a result from before it (one without a uid, e.g. still in an outbox) is
  filed under: a UUIDv5 of its natural key — (rig, start) for a cycle, (rig, run, name, time)
  for an artifact (a repeated artifact row gets a random one).
* ``one_active_run_per_rig``: a partial unique index on ``runs(rig) WHERE stopped_ns IS NULL``.
  Should a catalogue hold two active runs of one rig (only the newest was followed), the older
  ones are stopped at the newest's start first.

Revision ID: 0002_stable_identities
Revises: 0001_baseline
Create Date: 2026-05-20
"""

from __future__ import annotations

import logging
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002_stable_identities"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

log = logging.getLogger("daq.catalogue.migrations")

# frozen copies of daq.catalogue.store.legacy_cycle_uid / legacy_artifact_uid (never change them)
_NS = uuid.UUID("5b0c6a1e-3f0d-4a55-9d35-6a0f4b7e2c11")


def _cycle_uid(rig: str, t_ns: int) -> str:
    return str(uuid.uuid5(_NS, f"cycle/{rig}/{int(t_ns)}"))


def _artifact_uid(rig: str, run_id: int | None, name: str, t_ns: int) -> str:
    return str(uuid.uuid5(_NS, f"artifact/{rig}/{run_id or ''}/{name}/{int(t_ns)}"))


def _stop_extra_active_runs(bind) -> None:
    runs = sa.table("runs", sa.column("id"), sa.column("rig"), sa.column("started_ns"), sa.column("stopped_ns"))
    active = bind.execute(sa.select(runs.c.id, runs.c.rig, runs.c.started_ns).where(runs.c.stopped_ns.is_(None))
                          .order_by(runs.c.rig, runs.c.id)).all()
    newest: dict[str, tuple[int, int]] = {}
    for rid, rig, started in active:
        newest[rig] = (rid, started)
    for rid, rig, _ in active:
        keep, at = newest[rig]
        if rid != keep:
            log.warning("catalogue: run %d on %s was active beside run %d: stopped at its start", rid, rig, keep)
            bind.execute(runs.update().where(runs.c.id == rid).values(stopped_ns=at))


def _backfill(bind, name: str, cols: list[str], make) -> None:
    t = sa.table(name, sa.column("id"), sa.column("uid"), *[sa.column(c) for c in cols])
    seen: set[str] = set()
    rows = []
    for row in bind.execute(sa.select(t.c.id, *[t.c[c] for c in cols]).order_by(t.c.id)).all():
        uid = make(*row[1:])
        if uid in seen:  # the same result filed twice (artifacts had no key): the later copy gets its own
            uid = str(uuid.uuid4())
        seen.add(uid)
        rows.append({"row_id": row[0], "new_uid": uid})
    if rows:
        bind.execute(t.update().where(t.c.id == sa.bindparam("row_id")).values(uid=sa.bindparam("new_uid")), rows)


def upgrade() -> None:
    """Add the uids (filled for existing rows) and the one-active-run index."""
    bind = op.get_bind()
    _stop_extra_active_runs(bind)
    op.add_column("cycles", sa.Column("uid", sa.String(36)))
    op.add_column("run_artifacts", sa.Column("uid", sa.String(36)))
    _backfill(bind, "cycles", ["rig", "t_ns"], _cycle_uid)
    _backfill(bind, "run_artifacts", ["rig", "run_id", "name", "t_ns"], _artifact_uid)
    with op.batch_alter_table("cycles") as b:
        b.alter_column("uid", existing_type=sa.String(36), nullable=False)
        b.create_unique_constraint("one_cycle_per_uid", ["uid"])
    with op.batch_alter_table("run_artifacts") as b:
        b.alter_column("uid", existing_type=sa.String(36), nullable=False)
        b.create_unique_constraint("one_artifact_per_uid", ["uid"])
    op.create_index("one_active_run_per_rig", "runs", ["rig"], unique=True,
                    sqlite_where=sa.text("stopped_ns IS NULL"), postgresql_where=sa.text("stopped_ns IS NULL"))


def downgrade() -> None:
    """Back to the baseline (uids are lost)."""
    op.drop_index("one_active_run_per_rig", table_name="runs")
    with op.batch_alter_table("run_artifacts") as b:
        b.drop_constraint("one_artifact_per_uid", type_="unique")
        b.drop_column("uid")
    with op.batch_alter_table("cycles") as b:
        b.drop_constraint("one_cycle_per_uid", type_="unique")
        b.drop_column("uid")
