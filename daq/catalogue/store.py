"""The catalogue: runs, cycles with their results, archived cycle samples, run artifacts, API keys.

SQLAlchemy Core on any database URL: SQLite by default, under the data dir (WAL mode so
readers never block the writer), or one PostgreSQL that several acquisition agents and API
nodes share. Every call is synchronous: the service writes on one worker thread
(:meth:`CatalogueWriter.call`), so SQLite sees one writer at a time, and the API reads in
worker threads.

The schema is kept by Alembic migrations (:mod:`daq.catalogue.migrations`), run when a
:class:`Catalogue` opens the database; :mod:`daq.catalogue.tables` describes the newest revision.
Sign-off (signatures, revisions, the lock after approval) and alarms are the parts of
:class:`Catalogue` in :mod:`daq.catalogue.signoff_store` and :mod:`daq.catalogue.alarm_store`.

Identities hold across machines: run, cycle and artifact ids come from the database's own
sequences (every agent files into the one database); a cycle or artifact is filed by its
``uid`` (made with the result, UNIQUE here), so a retry or an outbox replay updates the one
row instead of adding another; the database itself allows one active run per rig (a partial
unique index), so two API nodes starting a run on one rig at once get one run and a refusal.

Archived samples: the time stamps (delta-encoded int64) and every channel (float64,
exactly what the analysis used, so the SHA-256 can be checked again) are byte-shuffled
and zlib-compressed — floats compress far better with their bytes grouped by
significance. Reading them back gives bit-identical arrays.
"""

from __future__ import annotations

import json
import logging
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import (
    Table,
    and_,
    create_engine,
    event,
    func,
    pool,
    select,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError

from daq.catalogue.alarm_store import AlarmRecords
from daq.catalogue.errors import ResultLockedError, RunError, when_unlocked
from daq.catalogue.signoff_store import SignoffRecords
from daq.catalogue.tables import (
    artifacts,
    cycles,
    insert_new,
    runs,
    samples,
    signatures,
)
from daq.cycles import CycleResult, RunArtifact

log = logging.getLogger(__name__)
# Alembic (the schema migrations) tells at INFO about its plugins and every context it configures
# (each open of a catalogue checks the revision): quiet unless the application chose a level for it;
# the migrations log what they changed themselves. Set here, before anything imports alembic.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)

CODEC = "shuffle-zlib-1"

#: UUIDv5 namespace of the uids of results made before results had one (migration 0002 keeps a frozen copy)
LEGACY_UID_NS = uuid.UUID("5b0c6a1e-3f0d-4a55-9d35-6a0f4b7e2c11")


def legacy_cycle_uid(rig: str, t_ns: int) -> str:
    """The uid of a cycle made before cycles had one (its natural key: rig and start)."""
    return str(uuid.uuid5(LEGACY_UID_NS, f"cycle/{rig}/{int(t_ns)}"))


def legacy_artifact_uid(rig: str, run_id: int | None, name: str, t_ns: int) -> str:
    """The uid of an artifact made before artifacts had one (rig, run, name and time)."""
    return str(uuid.uuid5(LEGACY_UID_NS, f"artifact/{rig}/{run_id or ''}/{name}/{int(t_ns)}"))


def cycle_uid(c: CycleResult) -> str:
    """A cycle's uid (one pickled into an outbox by an older version has none: its legacy uid)."""
    return getattr(c, "uid", None) or legacy_cycle_uid(c.rig, c.t_ns)


def artifact_uid(a: RunArtifact) -> str:
    """An artifact's uid (or its legacy uid, as for cycles)."""
    return getattr(a, "uid", None) or legacy_artifact_uid(a.rig, int(a.run) if a.run else None, a.name, a.t_ns)


def pack_samples(t_ns: np.ndarray, channels: dict[str, np.ndarray]) -> tuple[list[str], bytes]:
    """(channel names, compressed bytes): delta-coded time, then each channel as float64."""
    names = sorted(channels)
    t = np.asarray(t_ns, dtype=np.int64)
    cols = [np.diff(t, prepend=0).astype("<i8")] + [np.asarray(channels[k], dtype="<f8") for k in names]
    raw = np.stack([c.view(np.uint8).reshape(-1, 8) for c in cols])  # (cols, n, 8)
    shuffled = np.ascontiguousarray(raw.transpose(0, 2, 1))  # group bytes by significance
    return names, zlib.compress(shuffled.tobytes(), 6)


def unpack_samples(n: int, names: list[str], data: bytes) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Inverse of :func:`pack_samples`: bit-identical arrays."""
    raw = np.frombuffer(zlib.decompress(data), dtype=np.uint8).reshape(len(names) + 1, 8, n)
    cols = np.ascontiguousarray(raw.transpose(0, 2, 1)).reshape(len(names) + 1, n * 8)
    t = np.cumsum(cols[0].view("<i8"))
    return t, {k: cols[i + 1].view("<f8").copy() for i, k in enumerate(names)}


@dataclass
class RunRow:
    """A run as the API shows it."""

    id: int
    rig: str
    started_ns: int
    stopped_ns: int | None
    operator: str
    part_number: str
    lot: str
    serial: str
    notes: str
    extra: dict
    started_by: str
    config: dict
    revision: int = 1  # 1 for a run never revised
    supersedes: int | None = None  # the revision this one replaced
    approved: bool = False  # its current revision has an ``approved`` signature (then it is locked)

    @property
    def active(self) -> bool:
        """Not stopped yet."""
        return self.stopped_ns is None


def _clean(metrics: dict) -> dict:
    return {k: (None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v)
            for k, v in metrics.items()}


class Catalogue(SignoffRecords, AlarmRecords):
    """Synchronous access to the catalogue database."""

    def __init__(self, url: str):
        self.url = url
        u = make_url(url)
        if u.drivername.startswith("sqlite") and u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        sqlite = u.get_backend_name() == "sqlite"
        self.engine: Engine = create_engine(url, future=True, **({} if sqlite else {"pool_pre_ping": True}))
        self.archive = True  # keep each cycle's samples
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._migrate()

    def _migrate(self) -> None:
        """Bring the schema to the newest revision (creating it, or upgrading an older catalogue in place)."""
        from daq.catalogue.migrations import current, head, upgrade

        u = self.engine.url
        if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
            with self.engine.connect() as conn:  # a read only, when it is up to date (the usual case)
                if current(conn) == head():
                    return
            with self.engine.connect() as conn:
                upgrade(conn)
            return
        # SQLite: a connection of its own, without foreign-key enforcement (a batch ALTER copies a
        # table, drops the old one and renames the copy) and taking the write lock at BEGIN, so the
        # whole upgrade is one transaction. Both wait for another process's upgrade (or its switch to
        # WAL) as long as it may take: sqlite3's default busy timeout is 5 s
        check = create_engine(u, poolclass=pool.NullPool, connect_args={"timeout": 120})
        try:
            with check.connect() as conn:  # a read only, when it is up to date (the usual case)
                if current(conn) == head():
                    return
        finally:
            check.dispose()
        eng = create_engine(u, poolclass=pool.NullPool, connect_args={"timeout": 120})
        event.listen(eng, "connect", _sqlite_driver_transactions)
        event.listen(eng, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        try:
            with eng.connect() as conn:
                upgrade(conn)
        finally:
            eng.dispose()

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    # -- runs ----------------------------------------------------------------------------
    def start_run(self, rig: str, started_ns: int, operator: str = "", part_number: str = "",
                  lot: str = "", serial: str = "", notes: str = "", extra: dict | None = None,
                  started_by: str = "", config: dict | None = None,
                  record: Callable[[Connection, RunRow], object] | None = None) -> RunRow:
        """A new active run; :class:`RunError` (409) if one is active on ``rig``, here or on another node.

        The database holds one active run per rig (``one_active_run_per_rig``): of two starts at
        once, from any two processes or machines, one gets the run and the other this refusal.
        A SQLite file locked past its busy timeout is waited out (:func:`when_unlocked`).
        ``record(conn, run)`` runs in the same transaction (the audit entry: both are filed or neither).
        """
        def insert() -> int:
            with self.engine.begin() as c:
                rid = c.execute(runs.insert().values(
                    rig=rig, started_ns=started_ns, operator=operator, part_number=part_number, lot=lot,
                    serial=serial, notes=notes, extra=extra or {}, started_by=started_by,
                    config=config or {})).inserted_primary_key[0]
                if record is not None:
                    record(c, RunRow(**c.execute(select(runs).where(runs.c.id == rid)).mappings().one()))
            return rid

        try:
            rid = when_unlocked(insert)
        except IntegrityError as e:
            other = [r.id for r in self.active_runs() if r.rig == rig]
            if not other and "one_active_run_per_rig" not in str(e) and "runs.rig" not in str(e):
                raise
            who = f"run {other[0]}" if other else "a run"
            raise RunError(f"{who} is still active on {rig}; stop it first") from None
        return self.run(rid)

    def stop_run(self, run_id: int, stopped_ns: int,
                 record: Callable[[Connection, RunRow], object] | None = None) -> RunRow | None:
        """Mark a run stopped (a stopped run stays as it was).

        ``record(conn, run)`` runs in the same transaction when this call stopped it (the audit entry).
        """
        def update() -> None:
            with self.engine.begin() as c:
                done = c.execute(runs.update().where(and_(runs.c.id == run_id, runs.c.stopped_ns.is_(None)))
                                 .values(stopped_ns=stopped_ns)).rowcount
                if done and record is not None:
                    record(c, RunRow(**c.execute(select(runs).where(runs.c.id == run_id)).mappings().one()))

        when_unlocked(update)
        return self.run(run_id)

    def run(self, run_id: int) -> RunRow | None:
        """One run, or None."""
        with self.engine.connect() as c:
            row = c.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
            return RunRow(**row, approved=bool(_approved_ids(c, [row["id"]]))) if row else None

    def active_runs(self) -> list[RunRow]:
        """Runs not stopped."""
        with self.engine.connect() as c:
            rows = c.execute(select(runs).where(runs.c.stopped_ns.is_(None))).mappings().all()
        return [RunRow(**r) for r in rows]

    def list_runs(self, rig: str | None = None, part_number: str | None = None, lot: str | None = None,
                  since_ns: int | None = None, until_ns: int | None = None, limit: int = 100,
                  offset: int = 0) -> tuple[int, list[RunRow]]:
        """(total matching, one page of runs, newest first)."""
        cond = []
        if rig:
            cond.append(runs.c.rig == rig)
        if part_number:
            cond.append(runs.c.part_number == part_number)
        if lot:
            cond.append(runs.c.lot == lot)
        if since_ns is not None:
            cond.append(runs.c.started_ns >= since_ns)
        if until_ns is not None:
            cond.append(runs.c.started_ns < until_ns)
        where = and_(True, *cond)
        with self.engine.connect() as c:
            total = c.execute(select(func.count()).select_from(runs).where(where)).scalar_one()
            rows = c.execute(select(runs).where(where).order_by(runs.c.id.desc())
                             .limit(limit).offset(offset)).mappings().all()
            approved = _approved_ids(c, [r["id"] for r in rows])
        return total, [RunRow(**r, approved=r["id"] in approved) for r in rows]

    # -- cycles ----------------------------------------------------------------------------
    def file_cycle(self, c: CycleResult) -> int:
        """Insert a cycle with its samples, or update its result if filed before; its id.

        Idempotent: a cycle is filed by its ``uid`` (UNIQUE), so filing it again — a retry, an
        outbox replay, or the same result once its cycle time is known — updates its one row.
        A result with another uid for a filed (rig, start) updates that row too (as before uids).
        """
        uid = cycle_uid(c)
        values = dict(rig=c.rig, run_id=int(c.run) if c.run else None, cycle_no=c.cycle_no, kind=c.kind,
                      t_ns=c.t_ns, end_ns=c.end_ns, verdict=c.verdict, reasons=list(c.reasons),
                      metrics=_clean(c.metrics), info=dict(c.info), version=c.version,
                      samples_sha256=c.samples_sha256)
        try:
            with self.engine.begin() as conn:
                cid = _filed_cycle(conn, uid, c.rig, c.t_ns)
                if _approved_ids(conn, _locked(conn, _run_ids(conn, cycles, cid, values))):
                    if _unchanged(conn, cycles, cid, values):
                        return cid  # a replay of what was approved: nothing changes
                    raise ResultLockedError(f"cycle {c.cycle_no} of run {values['run_id']} ({uid}) was not filed: the "
                                       "run's results are approved and locked; the approved result stays")
                return self._file_cycle(conn, c, uid, cid, values)
        except ResultLockedError as e:
            self._audit_refusal(values["run_id"], f"cycle {uid}", str(e), values)
            raise

    def _file_cycle(self, conn: Connection, c: CycleResult, uid: str, cid: int | None, values: dict) -> int:
        if cid is None:
            cid = insert_new(conn, cycles, dict(values, uid=uid))
            if cid is not None:
                if c.samples is not None and self.archive:
                    t_ns, chans = c.samples
                    names, data = pack_samples(t_ns, chans)
                    conn.execute(samples.insert().values(cycle_id=cid, n=len(t_ns), channels=names,
                                                         codec=CODEC, data=data))
                return cid
            cid = _filed_cycle(conn, uid, c.rig, c.t_ns)  # filed meanwhile by another writer
            if cid is None:
                raise RuntimeError(f"cycle {uid} conflicts with a row that cannot be found")
        conn.execute(cycles.update().where(cycles.c.id == cid).values(**values))
        return cid

    def cycle(self, cycle_id: int) -> dict | None:
        """One cycle's row (no samples)."""
        with self.engine.connect() as c:
            row = c.execute(select(cycles).where(cycles.c.id == cycle_id)).mappings().first()
        return dict(row) if row else None

    def cycles_of_run(self, run_id: int, limit: int = 1000, offset: int = 0, verdict: str | None = None,
                      since_ns: int | None = None, until_ns: int | None = None) -> tuple[int, list[dict]]:
        """(total, one page of a run's cycles in time order), optionally by verdict and start time."""
        where = cycles.c.run_id == run_id
        if verdict:
            where = and_(where, cycles.c.verdict == verdict)
        if since_ns is not None:
            where = and_(where, cycles.c.t_ns >= since_ns)
        if until_ns is not None:
            where = and_(where, cycles.c.t_ns < until_ns)
        with self.engine.connect() as c:
            total = c.execute(select(func.count()).select_from(cycles).where(where)).scalar_one()
            rows = c.execute(select(cycles).where(where).order_by(cycles.c.t_ns)
                             .limit(limit).offset(offset)).mappings().all()
        return total, [dict(r) for r in rows]

    def verdict_counts(self, run_id: int) -> dict[str, int]:
        """How many of a run's cycles have each verdict (one ``SELECT COUNT(*) … GROUP BY verdict``)."""
        with self.engine.connect() as c:
            rows = c.execute(select(cycles.c.verdict, func.count()).where(cycles.c.run_id == run_id)
                             .group_by(cycles.c.verdict)).all()
        return {v: int(n) for v, n in rows}

    def iter_cycles_of_run(self, run_id: int, page: int = 1000) -> Iterator[dict]:
        """A run's cycles in time order, streamed from one query ``page`` rows at a time.

        The rows are fetched as they are consumed (a server-side cursor on PostgreSQL, SQLite's
        own stepping), so a run of any length is read once, in linear time, and never held
        whole here. The read holds its connection (a consistent snapshot) until the last row.
        """
        query = select(cycles).where(cycles.c.run_id == run_id).order_by(cycles.c.t_ns, cycles.c.id)
        with self.engine.connect() as c:
            result = c.execution_options(stream_results=True, yield_per=page).execute(query)
            for part in result.mappings().partitions():
                for r in part:
                    yield dict(r)

    def cycle_samples(self, cycle_id: int) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """The archived samples of a cycle, or None if none were archived."""
        with self.engine.connect() as c:
            row = c.execute(select(samples).where(samples.c.cycle_id == cycle_id)).mappings().first()
        if row is None:
            return None
        return unpack_samples(row["n"], list(row["channels"]), row["data"])

    def archive_bytes(self) -> int:
        """Bytes of archived samples."""
        with self.engine.connect() as c:
            return int(c.execute(select(func.coalesce(func.sum(func.length(samples.c.data)), 0))).scalar_one())

    def prune_archive(self, max_bytes: int) -> int:
        """Delete the oldest cycles' archived samples until the archive fits ``max_bytes``.

        The cycles themselves (results, hashes) stay. Returns how many archives went.
        """
        total = self.archive_bytes()
        if total <= max_bytes:
            return 0
        gone = 0
        with self.engine.begin() as c:
            rows = c.execute(select(samples.c.cycle_id, func.length(samples.c.data))
                             .order_by(samples.c.cycle_id)).all()
            doomed = []
            for cid, size in rows:
                if total <= max_bytes:
                    break
                doomed.append(cid)
                total -= int(size)
            for k in range(0, len(doomed), 500):
                c.execute(samples.delete().where(samples.c.cycle_id.in_(doomed[k:k + 500])))
            gone = len(doomed)
        return gone

    def max_cycle_no(self, rig: str) -> int:
        """The highest cycle number filed for a rig (0 if none)."""
        with self.engine.connect() as c:
            return int(c.execute(select(func.max(cycles.c.cycle_no)).where(cycles.c.rig == rig))
                       .scalar() or 0)

    # -- artifacts ---------------------------------------------------------------------------
    def file_artifact(self, a: RunArtifact) -> int:
        """Store a run-level result (e.g. a locked-rotor characterisation); its id.

        Idempotent by ``uid`` as :meth:`file_cycle`: filing it again updates its one row.
        """
        uid = artifact_uid(a)
        values = dict(rig=a.rig, run_id=int(a.run) if a.run else None, name=a.name, t_ns=a.t_ns,
                      data=json.loads(json.dumps(a.data, default=float)))
        find = select(artifacts.c.id).where(artifacts.c.uid == uid)
        try:
            with self.engine.begin() as c:
                got = c.execute(find).scalar()
                if _approved_ids(c, _locked(c, _run_ids(c, artifacts, got, values))):
                    if _unchanged(c, artifacts, got, values):
                        return got  # a replay of what was approved
                    raise ResultLockedError(f"artifact {a.name} of run {values['run_id']} ({uid}) was not filed: the "
                                       "run's results are approved and locked; the approved result stays")
                return _file_artifact(c, find, got, uid, values)
        except ResultLockedError as e:
            self._audit_refusal(values["run_id"], f"artifact {uid}", str(e), values)
            raise

    def _audit_refusal(self, run_id: int | None, what: str, message: str, values: dict) -> None:
        from daq.catalogue.audit import AuditTrail

        try:
            AuditTrail(self).append("service", "result_refused", f"run {run_id}",
                                    details={"result": what, "message": message,
                                             "refused": json.loads(json.dumps(values, default=str))},
                                    patient=False)  # on the catalogue writer's thread: never stall it
        except Exception:  # the refusal itself is reported by the caller
            log.exception("audit: cannot record the refusal of %s", what)

    def artifacts_of_run(self, run_id: int) -> list[dict]:
        """A run's artifacts, oldest first."""
        with self.engine.connect() as c:
            rows = c.execute(select(artifacts).where(artifacts.c.run_id == run_id)
                             .order_by(artifacts.c.id)).mappings().all()
        return [dict(r) for r in rows]

def _file_artifact(c: Connection, find, got: int | None, uid: str, values: dict) -> int:
    if got is None:
        got = insert_new(c, artifacts, dict(values, uid=uid))
        if got is not None:
            return got
        got = c.execute(find).scalar_one()  # filed meanwhile by another writer
    c.execute(artifacts.update().where(artifacts.c.id == got).values(**values))
    return got


def _run_ids(conn: Connection, table: Table, row_id: int | None, values: dict) -> list[int]:
    """The run a result is filed into, and the one its filed row is in (if another)."""
    ids = [values["run_id"]] if values.get("run_id") is not None else []
    if row_id is not None:
        was = conn.execute(select(table.c.run_id).where(table.c.id == row_id)).scalar()
        if was is not None and was not in ids:
            ids.append(was)
    return ids


def _unchanged(conn: Connection, table: Table, row_id: int | None, values: dict) -> bool:
    """Whether the filed row holds exactly ``values`` (compared as canonical JSON)."""
    if row_id is None:
        return False
    row = conn.execute(select(*[table.c[k] for k in values]).where(table.c.id == row_id)).mappings().first()

    def canon(d) -> str:
        return json.dumps(json.loads(json.dumps(dict(d), default=float)), sort_keys=True)

    return row is not None and canon(row) == canon(values)


def _locked(conn: Connection, run_ids: list[int]) -> list[int]:
    """Hold the runs' rows (PostgreSQL ``FOR SHARE``) until the filing commits.

    A signature, which takes them ``FOR UPDATE``, waits for the filing, or the filing waits for the
    signature and then sees it. SQLite needs nothing: one writer at a time, and a snapshot that
    moved refuses the write.
    """
    if run_ids and conn.dialect.name == "postgresql":
        conn.execute(select(runs.c.id).where(runs.c.id.in_(run_ids)).with_for_update(read=True))
    return run_ids


def _approved_ids(conn: Connection, run_ids: list[int]) -> set[int]:
    """Those of ``run_ids`` whose current revision has an ``approved`` signature."""
    if not run_ids:
        return set()
    q = (select(signatures.c.run_id).join(runs, and_(runs.c.id == signatures.c.run_id,
                                                     runs.c.revision == signatures.c.revision))
         .where(signatures.c.run_id.in_(run_ids), signatures.c.meaning == "approved"))
    return {r[0] for r in conn.execute(q).all()}


def _filed_cycle(conn: Connection, uid: str, rig: str, t_ns: int) -> int | None:
    """The id of the row filed under ``uid``, else of the one filed for (rig, start), else None."""
    got = conn.execute(select(cycles.c.id).where(cycles.c.uid == uid)).scalar()
    if got is None:
        got = conn.execute(select(cycles.c.id).where(and_(cycles.c.rig == rig, cycles.c.t_ns == t_ns))).scalar()
    return got


def _sqlite_driver_transactions(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # the driver begins nothing itself: SQLAlchemy's "begin" event does


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
