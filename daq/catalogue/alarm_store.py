"""Alarms in the catalogue: raised, cleared and acknowledged rows, one open alarm per key.

The part of :class:`daq.catalogue.store.Catalogue` that :mod:`daq.alarms` files through and the
alarm routes read; the lifecycle itself is :mod:`daq.alarms.model`'s.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from daq.alarms.model import ACTIVE, OPEN, Alarm, acknowledge, reraise
from daq.alarms.model import clear as cleared
from daq.catalogue.tables import alarms, insert_new


class AlarmRecords:
    """Mixed into :class:`daq.catalogue.store.Catalogue` (``engine`` is its)."""

    def raise_alarm(self, a: Alarm) -> tuple[Alarm, bool]:
        """File a condition: a new alarm, or the open alarm of its key again; (alarm, became active).

        Idempotent by ``uid`` (an outbox replay returns the filed alarm). The database holds one
        open alarm per key (``one_open_alarm_per_key``), so two nodes raising one condition get one alarm.
        """
        for _ in range(5):
            with self.engine.begin() as c:
                row = c.execute(select(alarms).where(alarms.c.uid == a.uid)).mappings().first()
                if row is not None:
                    return _alarm_of(row), False
                row = c.execute(select(alarms).where(and_(alarms.c.key == a.key, alarms.c.state.in_(OPEN))))\
                    .mappings().first()
                if row is None:
                    values = {k: v for k, v in a.as_dict().items() if k != "id"}
                    got = insert_new(c, alarms, values)
                    if got is not None:
                        return Alarm(**dict(values, id=got)), True
                    continue  # opened meanwhile by another writer
                old = _alarm_of(row)
                new = reraise(old, a.message, a.priority)
                if new == old:
                    return old, False
                done = c.execute(alarms.update().where(and_(alarms.c.id == old.id, alarms.c.state == old.state))
                                 .values(state=new.state, cleared_ns=new.cleared_ns, message=new.message,
                                         priority=new.priority)).rowcount
                if done:
                    return new, old.state != new.state
        raise RuntimeError(f"alarm {a.key}: the open alarm of this key keeps changing")

    def clear_alarm(self, key: str, t_ns: int) -> Alarm | None:
        """The condition of ``key`` went: its active alarm is cleared (None if none is active)."""
        for _ in range(5):
            with self.engine.begin() as c:
                row = c.execute(select(alarms).where(and_(alarms.c.key == key, alarms.c.state.in_(ACTIVE))))\
                    .mappings().first()
                if row is None:
                    return None
                old = _alarm_of(row)
                new = cleared(old, t_ns)
                done = c.execute(alarms.update().where(and_(alarms.c.id == old.id, alarms.c.state == old.state))
                                 .values(state=new.state, cleared_ns=new.cleared_ns)).rowcount
                if done:
                    return new
        raise RuntimeError(f"alarm {key}: the active alarm of this key keeps changing")

    def ack_alarm(self, alarm_id: int, by: str, comment: str, t_ns: int,
                  record: Callable[[Connection, Alarm, Alarm], object] | None = None) -> tuple[Alarm, Alarm]:
        """Acknowledge an alarm; (before, after). KeyError if there is none, AlarmError if acknowledged.

        ``record(conn, before, after)`` runs in the same transaction (the audit entry: both or neither).
        """
        for _ in range(5):
            with self.write_lock() as c:
                row = c.execute(select(alarms).where(alarms.c.id == alarm_id)).mappings().first()
                if row is None:
                    raise KeyError(f"no alarm {alarm_id}")
                old = _alarm_of(row)
                new = acknowledge(old, t_ns, by, comment)
                done = c.execute(alarms.update().where(and_(alarms.c.id == old.id, alarms.c.state == old.state))
                                 .values(state=new.state, acked_ns=new.acked_ns, acked_by=new.acked_by,
                                         ack_comment=new.ack_comment)).rowcount
                if done:
                    if record is not None:
                        record(c, old, new)
                    return old, new
        raise RuntimeError(f"alarm {alarm_id} keeps changing")

    def alarm(self, alarm_id: int) -> Alarm | None:
        """One alarm, or None."""
        with self.engine.connect() as c:
            row = c.execute(select(alarms).where(alarms.c.id == alarm_id)).mappings().first()
        return _alarm_of(row) if row else None

    def list_alarms(self, state: str | None = None, rig: str | None = None, active: bool | None = None,
                    limit: int = 100, offset: int = 0) -> tuple[int, list[Alarm]]:
        """(total matching, one page of alarms, newest first); ``active``: only (or no) active ones."""
        cond = []
        if state:
            cond.append(alarms.c.state == state)
        if rig is not None:
            cond.append(alarms.c.rig == rig)
        if active is not None:
            cond.append(alarms.c.state.in_(ACTIVE) if active else alarms.c.state.not_in(ACTIVE))
        where = and_(True, *cond)
        with self.engine.connect() as c:
            total = c.execute(select(func.count()).select_from(alarms).where(where)).scalar_one()
            rows = c.execute(select(alarms).where(where).order_by(alarms.c.id.desc())
                             .limit(limit).offset(offset)).mappings().all()
        return total, [_alarm_of(r) for r in rows]

    def open_alarms(self) -> list[Alarm]:
        """Alarms not closed (active, or cleared and not acknowledged), oldest first."""
        with self.engine.connect() as c:
            rows = c.execute(select(alarms).where(alarms.c.state.in_(OPEN)).order_by(alarms.c.id)).mappings().all()
        return [_alarm_of(r) for r in rows]

    def alarm_counts(self) -> dict[tuple[str, str], int]:
        """How many alarms per (state, priority)."""
        with self.engine.connect() as c:
            rows = c.execute(select(alarms.c.state, alarms.c.priority, func.count())
                             .group_by(alarms.c.state, alarms.c.priority)).all()
        return {(s, p): int(n) for s, p, n in rows}


def _alarm_of(row) -> Alarm:
    return Alarm(**{k: row[k] for k in Alarm.__dataclass_fields__})
