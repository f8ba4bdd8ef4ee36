"""The catalogue: runs, cycles with their results, archived cycle samples, run artifacts, API keys.

SQLAlchemy Core on any database URL (SQLite by default, under the data dir; WAL mode so
readers never block the writer). Every call is synchronous: the service writes on one
worker thread (:meth:`CatalogueWriter.call`), so SQLite sees one writer at a time, and
the API reads in worker threads.

Archived samples: the time stamps (delta-encoded int64) and every channel (float64,
exactly what the analysis used, so the SHA-256 can be checked again) are byte-shuffled
and zlib-compressed — floats compress far better with their bytes grouped by
significance. Reading them back gives bit-identical arrays.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
    and_,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine, make_url

from daq.cycles import CycleResult, RunArtifact

log = logging.getLogger(__name__)

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
    UniqueConstraint("rig", "t_ns", name="one_cycle_per_start"),
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

CODEC = "shuffle-zlib-1"


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

    @property
    def active(self) -> bool:
        """Not stopped yet."""
        return self.stopped_ns is None


def _clean(metrics: dict) -> dict:
    return {k: (None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v)
            for k, v in metrics.items()}


class Catalogue:
    """Synchronous access to the catalogue database."""

    def __init__(self, url: str):
        self.url = url
        u = make_url(url)
        if u.drivername.startswith("sqlite") and u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, future=True)
        self.archive = True  # keep each cycle's samples
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        meta.create_all(self.engine)

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    # -- runs ----------------------------------------------------------------------------
    def start_run(self, rig: str, started_ns: int, operator: str = "", part_number: str = "",
                  lot: str = "", serial: str = "", notes: str = "", extra: dict | None = None,
                  started_by: str = "", config: dict | None = None) -> RunRow:
        """A new active run."""
        with self.engine.begin() as c:
            rid = c.execute(runs.insert().values(
                rig=rig, started_ns=started_ns, operator=operator, part_number=part_number, lot=lot,
                serial=serial, notes=notes, extra=extra or {}, started_by=started_by,
                config=config or {})).inserted_primary_key[0]
        return self.run(rid)

    def stop_run(self, run_id: int, stopped_ns: int) -> RunRow | None:
        """Mark a run stopped (a stopped run stays as it was)."""
        with self.engine.begin() as c:
            c.execute(runs.update().where(and_(runs.c.id == run_id, runs.c.stopped_ns.is_(None)))
                      .values(stopped_ns=stopped_ns))
        return self.run(run_id)

    def run(self, run_id: int) -> RunRow | None:
        """One run, or None."""
        with self.engine.connect() as c:
            row = c.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
        return RunRow(**row) if row else None

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
        return total, [RunRow(**r) for r in rows]

    # -- cycles ----------------------------------------------------------------------------
    def file_cycle(self, c: CycleResult) -> int:
        """Insert a cycle with its samples, or update its result if filed before."""
        run_id = int(c.run) if c.run else None
        values = dict(rig=c.rig, run_id=run_id, cycle_no=c.cycle_no, kind=c.kind, t_ns=c.t_ns,
                      end_ns=c.end_ns, verdict=c.verdict, reasons=list(c.reasons),
                      metrics=_clean(c.metrics), info=dict(c.info), version=c.version,
                      samples_sha256=c.samples_sha256)
        with self.engine.begin() as conn:
            got = conn.execute(select(cycles.c.id).where(and_(cycles.c.rig == c.rig,
                                                              cycles.c.t_ns == c.t_ns))).first()
            if got:
                conn.execute(cycles.update().where(cycles.c.id == got[0]).values(**values))
                return got[0]
            cid = conn.execute(cycles.insert().values(**values)).inserted_primary_key[0]
            if c.samples is not None and self.archive:
                t_ns, chans = c.samples
                names, data = pack_samples(t_ns, chans)
                conn.execute(samples.insert().values(cycle_id=cid, n=len(t_ns), channels=names,
                                                     codec=CODEC, data=data))
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
        """Store a run-level result (e.g. a locked-rotor characterisation)."""
        with self.engine.begin() as c:
            return c.execute(artifacts.insert().values(
                rig=a.rig, run_id=int(a.run) if a.run else None, name=a.name, t_ns=a.t_ns,
                data=json.loads(json.dumps(a.data, default=float)))).inserted_primary_key[0]

    def artifacts_of_run(self, run_id: int) -> list[dict]:
        """A run's artifacts, oldest first."""
        with self.engine.connect() as c:
            rows = c.execute(select(artifacts).where(artifacts.c.run_id == run_id)
                             .order_by(artifacts.c.id)).mappings().all()
        return [dict(r) for r in rows]


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
