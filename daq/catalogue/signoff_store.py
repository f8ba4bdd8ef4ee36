"""Sign-off in the catalogue: signatures, run revisions and the lock after approval.

The part of :class:`daq.catalogue.store.Catalogue` that :mod:`daq.catalogue.signatures` and the
run-metadata routes use; every change holds :meth:`SignoffRecords.write_lock`, so of two signers or
editors at once (any node) the second sees the first's work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from daq.catalogue.errors import RunError
from daq.catalogue.tables import run_revisions, runs, signatures

if TYPE_CHECKING:
    from daq.catalogue.store import RunRow

#: records a metadata change in its transaction: (conn, before, after, revision, supersedes)
Recorder = Callable[[Connection, dict, dict, int, "int | None"], object]

#: what a run revision or metadata edit may change
RUN_METADATA = ("operator", "part_number", "lot", "serial", "notes", "extra")


class SignoffRecords:
    """Mixed into :class:`daq.catalogue.store.Catalogue` (``engine`` and ``run()`` are its)."""

    @contextlib.contextmanager
    def write_lock(self, key: int = 0x7369_676E) -> Iterator[Connection]:
        """A transaction holding a write lock from its start: writers under one ``key`` go one at a time.

        Across processes and machines: SQLite begins ``IMMEDIATE`` (the database's write lock),
        PostgreSQL takes a transaction-scoped advisory lock on ``key``. Never call it while this
        thread holds another write transaction on the same SQLite file (it would wait for itself).
        """
        with self.engine.begin() as c:
            if c.dialect.name == "sqlite":
                c.exec_driver_sql("BEGIN IMMEDIATE")
            elif c.dialect.name == "postgresql":
                c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            yield c

    def signatures_of_run(self, run_id: int, with_key_id: bool = False) -> list[dict]:
        """A run's signatures (every revision), oldest first."""
        with self.engine.connect() as c:
            rows = c.execute(select(signatures).where(signatures.c.run_id == run_id)
                             .order_by(signatures.c.id)).mappings().all()
        return [_signature_dict(r, with_key_id) for r in rows]

    def approval(self, run_id: int) -> dict | None:
        """The ``approved`` signature of a run's current revision, or None (not approved: not locked)."""
        with self.engine.connect() as c:
            rev = c.execute(select(runs.c.revision).where(runs.c.id == run_id)).scalar()
            return None if rev is None else _approval(c, run_id, rev)

    def add_signature(self, run_id: int, revision: int, *, signer: str, role: str, key_id: int, meaning: str,
                      reason: str, signed_ns: int, content_sha256: str,
                      recheck: Callable[[], str] | None = None,
                      record: Callable[[Connection, dict], object] | None = None) -> dict:
        """File a signature of ``revision`` of a stopped run; :class:`RunError` if the run is not in that state.

        Under the write lock: of two signers at once, the second sees the first's approval, and a
        metadata edit cannot slip in between; ``recheck`` (the certificate's content hash now) is
        called under it and must still give ``content_sha256``. ``record(conn, signature)`` runs in
        the same transaction (the audit entry: both are filed or neither).
        """
        with self.write_lock() as c:
            row = c.execute(select(runs.c.revision, runs.c.stopped_ns).where(runs.c.id == run_id)
                            .with_for_update()).first()  # filings of the run wait (or are seen)
            if row is None:
                raise RunError(f"no run {run_id}", 404)
            if row.stopped_ns is None:
                raise RunError(f"run {run_id} is still active: stop it before signing its certificate")
            if row.revision != revision:
                raise RunError(f"run {run_id} is at revision {row.revision} now, not {revision}: "
                               "the certificate changed since you reviewed it")
            done = _approval(c, run_id, revision)
            if done is not None:
                raise RunError(f"revision {revision} of run {run_id} was approved by {done['signer']} at "
                               f"{done['signed_at']}; a change needs a new revision "
                               f"(POST /api/runs/{run_id}/revisions), which is then signed")
            if recheck is not None and (now := recheck()) != content_sha256:
                raise RunError(f"the certificate changed since you reviewed it: content sha256 {content_sha256} "
                               f"became {now}; review it again")
            sid = c.execute(signatures.insert().values(
                run_id=run_id, revision=revision, signer=signer, role=role, key_id=key_id, meaning=meaning,
                reason=reason, signed_ns=signed_ns, content_sha256=content_sha256)).inserted_primary_key[0]
            got = _signature_dict(c.execute(select(signatures).where(signatures.c.id == sid)).mappings().one(), True)
            if record is not None:
                record(c, got)
        return got

    def edit_run(self, run_id: int, changes: dict, record: Recorder | None = None) -> tuple[dict, dict, RunRow]:
        """Change a run's metadata in place: (before, after — the fields that changed —, the run).

        ``record(conn, before, after, revision, supersedes)`` runs in the same transaction (the audit entry).

        :class:`RunError` 409 once the run is approved (a change then needs :meth:`revise_run`),
        404 for no such run, 422 when nothing would change.
        """
        with self.write_lock() as c:
            row = _run_for_change(c, run_id)
            done = _approval(c, run_id, row["revision"])
            if done is not None:
                raise RunError(f"run {run_id} is locked: revision {row['revision']} was approved by "
                               f"{done['signer']} at {done['signed_at']}. To change it, make a new revision "
                               f"(POST /api/runs/{run_id}/revisions with the changes and a reason); "
                               "it is then unsigned until signed again")
            before, after = _metadata_change(row, changes)
            c.execute(runs.update().where(runs.c.id == run_id).values(**after))
            if record is not None:
                record(c, before, after, row["revision"], row["supersedes"])
        return before, after, self.run(run_id)

    def revise_run(self, run_id: int, changes: dict, by: str, reason: str, t_ns: int,
                   record: Recorder | None = None) -> tuple[dict, dict, RunRow]:
        """A new revision of a stopped run with changed metadata: (before, after, the run).

        The revision number goes up by one, the new one names the one it supersedes, the old values
        stay in ``run_revisions``; the new revision is unsigned (not approved) until signed.
        ``record`` as for :meth:`edit_run`, in the same transaction.
        """
        if not reason.strip():
            raise RunError("a revision needs a reason (why the metadata change)", 422)
        with self.write_lock() as c:
            row = _run_for_change(c, run_id)
            if row["stopped_ns"] is None:
                raise RunError(f"run {run_id} is still active: change its metadata with PATCH /api/runs/{run_id}; "
                               "revisions are for stopped runs")
            before, after = _metadata_change(row, changes)
            new = row["revision"] + 1
            c.execute(run_revisions.insert().values(run_id=run_id, revision=new, supersedes=row["revision"],
                                                    created_ns=t_ns, created_by=by, reason=reason,
                                                    before=before, after=after))
            c.execute(runs.update().where(runs.c.id == run_id).values(**after, revision=new,
                                                                      supersedes=row["revision"]))
            if record is not None:
                record(c, before, after, new, row["revision"])
        return before, after, self.run(run_id)

    def revisions_of_run(self, run_id: int) -> list[dict]:
        """A run's revisions after the first (what each changed, by whom and why), oldest first."""
        with self.engine.connect() as c:
            rows = c.execute(select(run_revisions).where(run_revisions.c.run_id == run_id)
                             .order_by(run_revisions.c.revision)).mappings().all()
        return [dict(r, created=_iso(r["created_ns"])) for r in rows]


def _iso(t_ns: int) -> str:
    """ISO 8601 UTC (milliseconds) of a nanosecond time (as daq.reports.records.iso)."""
    return datetime.fromtimestamp(t_ns / 1e9, UTC).isoformat(timespec="milliseconds")


def _signature_dict(r, with_key_id: bool = False) -> dict:
    out = {"id": r["id"], "run_id": r["run_id"], "revision": r["revision"], "signer": r["signer"],
           "role": r["role"], "meaning": r["meaning"], "reason": r["reason"], "signed_at": _iso(r["signed_ns"]),
           "signed_ns": r["signed_ns"], "content_sha256": r["content_sha256"]}
    if with_key_id:
        out["key_id"] = r["key_id"]
    return out


def _approval(conn: Connection, run_id: int, revision: int) -> dict | None:
    row = conn.execute(select(signatures).where(signatures.c.run_id == run_id, signatures.c.revision == revision,
                                                signatures.c.meaning == "approved")
                       .order_by(signatures.c.id).limit(1)).mappings().first()
    return None if row is None else _signature_dict(row)


def _run_for_change(conn: Connection, run_id: int):
    row = conn.execute(select(runs).where(runs.c.id == run_id).with_for_update()).mappings().first()
    if row is None:
        raise RunError(f"no run {run_id}", 404)
    return row


def _metadata_change(row, changes: dict) -> tuple[dict, dict]:
    """(before, after) of the fields ``changes`` really changes; RunError 422 if none or an unknown one."""
    unknown = sorted(set(changes) - set(RUN_METADATA))
    if unknown:
        raise RunError(f"{', '.join(unknown)} cannot be changed; a run's metadata is {', '.join(RUN_METADATA)}", 422)
    after = {k: v for k, v in changes.items() if v != row[k]}
    if not after:
        raise RunError("nothing to change: the values given are the run's values already", 422)
    return {k: row[k] for k in after}, after
