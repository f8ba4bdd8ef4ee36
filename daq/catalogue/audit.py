"""The audit trail: an append-only, hash-chained log of who did what, when, with before and after.

Each entry (``audit_log``) has a number (``id``: 1, 2, 3, … without gaps), a time, an actor (an
API key's name, ``cli:<user>`` or ``service``), an action, a target, its details (canonical JSON,
with ``before``/``after`` where something changed), the previous entry's hash and its own:

    sha256 = SHA-256( prev_sha256 + newline + canonical JSON of {id, t_ns, actor, action, target, details} )

(the first entry's ``prev_sha256`` is 64 zeros). ``audit_head`` holds the newest entry's number and
hash. Appends are serialised across processes and machines (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: a transaction-scoped advisory lock), so the chain never forks; the primary key on the
number would refuse a fork anyway.

:meth:`AuditTrail.verify` walks the chain and names the first broken entry: *altered* (its content
no longer matches its hash), *deleted* (a gap in the numbers, or entries missing after the last
one the head names) or *inserted* (an entry past the head, or one the chain does not link
through). A deleted head is named too, and an append that finds it deleted first records that
in the trail (``audit_head_rebuilt``), which verify names from then on. A chain hash detects
changes made without recomputing the hashes. It does not detect, on its own, someone with write
access to the database who recomputes every later hash and the head, or who deletes the newest
entries and sets the head back to the last one kept: keep copies of the head hash elsewhere
(``daq audit verify`` prints it) to compare.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Connection

from daq.catalogue.errors import BUSY_RETRIES_S, when_unlocked
from daq.catalogue.store import Catalogue
from daq.catalogue.tables import audit_head, audit_log

GENESIS = "0" * 64
#: the entry an append writes first when it finds the head row deleted (verify names it as a break)
HEAD_REBUILT = "audit_head_rebuilt"
#: the advisory lock key of appends (PostgreSQL)
LOCK_KEY = 0x6175_6469_74  # "audit"


def canonical(obj) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 kept (what the hashes cover)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(prev_sha256: str, id: int, t_ns: int, actor: str, action: str, target: str, details: str) -> str:
    """An entry's hash from the previous one's and its fields (``details`` as stored: canonical JSON text)."""
    body = canonical({"id": int(id), "t_ns": int(t_ns), "actor": actor, "action": action, "target": target,
                      "details": details})
    return hashlib.sha256(f"{prev_sha256}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :meth:`AuditTrail.verify`."""

    ok: bool
    entries: int
    first_broken: int | None = None
    reason: str = ""
    kind: str | None = None  # "altered", "deleted" or "inserted" when broken
    head_sha256: str = GENESIS


class AuditTrail:
    """Append to and verify a catalogue's audit trail (synchronous: call it off the event loop)."""

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue

    def append(self, actor: str, action: str, target: str, *, before: dict | None = None,
               after: dict | None = None, details: dict | None = None, conn: Connection | None = None,
               patient: bool = True) -> int:
        """Append one entry; its number. Serialised with every other append, on any node.

        ``conn``: a transaction of the caller's holding :meth:`Catalogue.write_lock`, to record a
        change in the same transaction as the change itself (both or neither); else one of its own,
        which, ``patient``, tries again a few times when SQLite stays locked past its busy timeout
        (a request can wait; the service's own entries at stop and the catalogue writer cannot).
        """
        body = dict(details or {})
        if before is not None:
            body["before"] = before
        if after is not None:
            body["after"] = after
        text = canonical(body)
        if conn is not None:
            return _append(conn, actor, action, target, text)

        def append() -> int:
            with self.catalogue.write_lock(LOCK_KEY) as c:
                return _append(c, actor, action, target, text)

        return when_unlocked(append, BUSY_RETRIES_S if patient else ())

    def entries(self, *, action: str | None = None, actor: str | None = None, target: str | None = None,
                since_ns: int | None = None, until_ns: int | None = None, limit: int = 100, offset: int = 0,
                newest_first: bool = True) -> tuple[int, list[dict]]:
        """(total matching, one page of entries with their details parsed), newest first by default."""
        cond = []
        if action:
            cond.append(audit_log.c.action == action)
        if actor:
            cond.append(audit_log.c.actor == actor)
        if target:
            cond.append(audit_log.c.target == target)
        if since_ns is not None:
            cond.append(audit_log.c.t_ns >= since_ns)
        if until_ns is not None:
            cond.append(audit_log.c.t_ns < until_ns)
        order = audit_log.c.id.desc() if newest_first else audit_log.c.id
        with self.catalogue.engine.connect() as c:
            total = c.execute(select(func.count()).select_from(audit_log).where(*cond)).scalar_one()
            rows = c.execute(select(audit_log).where(*cond).order_by(order).limit(limit).offset(offset)
                             ).mappings().all()
        out = []
        for r in rows:
            try:
                details = json.loads(r["details"])
            except ValueError:
                details = {"unreadable": r["details"]}
            out.append({**dict(r), "details": details})
        return total, out

    def verify(self) -> VerifyResult:
        """Walk the chain from the first entry; the first broken one, if any.

        Head and entries are read under the appends' lock, so an append committing meanwhile is
        never mistaken for an insertion or a deletion.
        """
        with self.catalogue.write_lock(LOCK_KEY) as c:
            head = c.execute(select(audit_head.c.seq, audit_head.c.sha256).where(audit_head.c.id == 1)).first()
            rows = c.execute(select(audit_log).order_by(audit_log.c.id)).mappings().all()
        if head is None and rows:
            return _broken(len(rows), int(rows[-1]["id"]), "deleted",
                           "the trail's head (its record of the newest entry) was deleted: entries after "
                           f"{rows[-1]['id']} may have been cut off")
        head_seq = int(head.seq) if head else None
        prev_id, prev_hash = 0, GENESIS
        for i, r in enumerate(rows):
            rid = int(r["id"])
            if r["action"] == HEAD_REBUILT:
                return _broken(len(rows), rid, "deleted",
                               f"entry {rid} records that the trail's head was found deleted: entries before it "
                               "may have been cut off")
            if head_seq is not None and rid > head_seq:
                return _broken(len(rows), rid, "inserted", f"entry {rid} was inserted: it is past the newest entry the "
                                                   f"trail recorded ({head_seq})")
            own = entry_hash(r["prev_sha256"], rid, r["t_ns"], r["actor"], r["action"], r["target"], r["details"])
            if own != r["sha256"]:
                return _broken(len(rows), rid, "altered",
                               f"entry {rid} was altered: its content does not match its hash")
            if rid != prev_id + 1:
                gone = f"{prev_id + 1}" if rid == prev_id + 2 else f"{prev_id + 1}-{rid - 1}"
                return _broken(len(rows), prev_id + 1, "deleted",
                               f"entry {gone} was deleted: the numbers jump from {prev_id} to {rid}")
            if r["prev_sha256"] != prev_hash:
                after = rows[i + 1] if i + 1 < len(rows) else None
                if after is not None and after["prev_sha256"] == prev_hash:
                    return _broken(len(rows), rid, "inserted", f"entry {rid} was inserted: the entries around it "
                                                       "link to each other, not to it")
                if prev_id == 0:
                    return _broken(len(rows), rid, "altered", f"entry {rid} was altered: the first entry must link "
                                                      "to the genesis hash")
                return _broken(len(rows), prev_id, "altered", f"entry {prev_id} was altered (and its hash recomputed): "
                                                      f"entry {rid} no longer links to it")
            prev_id, prev_hash = rid, r["sha256"]
        if head_seq is not None and prev_id < head_seq:
            gone = f"{prev_id + 1}" if head_seq == prev_id + 1 else f"{prev_id + 1}-{head_seq}"
            return _broken(len(rows), prev_id + 1, "deleted",
                           f"entry {gone} was deleted: the trail recorded {head_seq} entries, the newest is {prev_id}")
        if head is not None and head.sha256 != prev_hash:
            return _broken(len(rows), prev_id, "altered",
                           f"entry {prev_id} was altered: its hash is not the one the trail recorded")
        return VerifyResult(True, len(rows), None, f"{len(rows)} entries intact", None, prev_hash)


def _append(c: Connection, actor: str, action: str, target: str, text: str) -> int:
    """Append under the caller's write transaction (PostgreSQL: take the appends' lock in it too)."""
    if c.dialect.name == "postgresql":
        c.execute(sql_text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})  # re-entrant
    head = c.execute(select(audit_head.c.seq, audit_head.c.sha256).where(audit_head.c.id == 1)).first()
    if head is None:  # no head: a new trail, or its head was deleted
        last = c.execute(select(audit_log.c.id, audit_log.c.sha256).order_by(audit_log.c.id.desc())
                         .limit(1)).first()
        seq, prev = (int(last.id), last.sha256) if last else (0, GENESIS)
        c.execute(audit_head.insert().values(id=1, seq=seq, sha256=prev))
        if last is not None:  # deleted: say so in the trail itself (verify names this entry), then go on
            seq, prev = _write(c, seq, prev, "audit", HEAD_REBUILT, "audit_head",
                               canonical({"after_entry": seq, "why": "the head row was missing"}))
    else:
        seq, prev = int(head.seq), head.sha256
    return _write(c, seq, prev, actor, action, target, text)[0]


def _write(c: Connection, seq: int, prev: str, actor: str, action: str, target: str, text: str) -> tuple[int, str]:
    """Write entry ``seq + 1`` after ``prev`` and move the head to it; (its number, its hash)."""
    n, t_ns = seq + 1, time.time_ns()
    digest = entry_hash(prev, n, t_ns, actor, action, target, text)
    c.execute(audit_log.insert().values(id=n, t_ns=t_ns, actor=actor, action=action, target=target,
                                        details=text, prev_sha256=prev, sha256=digest))
    c.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=n, sha256=digest))
    return n, digest


def _broken(entries: int, at: int, kind: str, reason: str) -> VerifyResult:
    return VerifyResult(False, entries, at, reason, kind)


def config_sha256(config: dict) -> str:
    """SHA-256 of a run's stored config (limits, envelope, analysis settings) as canonical JSON."""
    return hashlib.sha256(canonical(config or {}).encode()).hexdigest()


def run_metadata(run) -> dict:
    """What identifies a run on its certificate (a :class:`RunRow`), as the audit trail records it."""
    return {"rig": run.rig, "operator": run.operator, "part_number": run.part_number, "lot": run.lot,
            "serial": run.serial, "notes": run.notes, "extra": run.extra or {}, "revision": run.revision}


def record_run_start(catalogue: Catalogue, run, actor: str, conn: Connection | None = None) -> list[int]:
    """Audit a run's start: its metadata and the hash of the rig file content it is judged by.

    When the rig's limits differ from those of the rig's previous run, a ``limits_changed`` entry
    (before/after) follows. The entries' numbers. ``conn``: the transaction that created the run
    (:meth:`Catalogue.start_run`'s ``record``), so the run and its entries are filed together.
    """
    from daq.catalogue.tables import runs  # the table (a name of its own here: ``run`` is the row)

    cfg_hash = config_sha256(run.config)
    trail = AuditTrail(catalogue)
    done = [trail.append(actor or "service", "run_start", f"run {run.id}", conn=conn,
                         after=run_metadata(run), details={"started_ns": run.started_ns, "config_sha256": cfg_hash})]
    with contextlib.nullcontext(conn) if conn is not None else catalogue.engine.connect() as c:
        prev = c.execute(select(runs.c.id, runs.c.config).where(runs.c.rig == run.rig, runs.c.id < run.id)
                         .order_by(runs.c.id.desc()).limit(1)).first()
    if prev is not None:
        before, after = (prev.config or {}).get("limits", {}), (run.config or {}).get("limits", {})
        if canonical(before) != canonical(after):
            done.append(trail.append(actor or "service", "limits_changed", f"rig {run.rig}", before=before,
                                     after=after, details={"previous_run": prev.id, "run": run.id}, conn=conn))
    return done
