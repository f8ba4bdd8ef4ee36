"""An alarm and its lifecycle (ISA-18.2, kept small).

States and transitions::

    (condition)      active_unacked ──ack──▶ active_acked
                          │ clear                 │ clear
                          ▼                       ▼
                     cleared_unacked ──ack──▶ cleared      (closed: a new condition is a new alarm)

* a condition that returns while its alarm is ``cleared_unacked`` makes it ``active_unacked``
  again (the operator has not seen it go; it is the same alarm), with no clear time;
* a condition that persists while its alarm is active changes nothing but the message;
* acknowledging an acknowledged alarm (``active_acked``, ``cleared``) is refused.

Times are nanoseconds since the epoch (UTC).
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

ACTIVE_UNACKED = "active_unacked"
ACTIVE_ACKED = "active_acked"
CLEARED_UNACKED = "cleared_unacked"
CLEARED = "cleared"
STATES = (ACTIVE_UNACKED, ACTIVE_ACKED, CLEARED_UNACKED, CLEARED)
ACTIVE = (ACTIVE_UNACKED, ACTIVE_ACKED)
#: not yet closed: the one alarm of its key
OPEN = (ACTIVE_UNACKED, ACTIVE_ACKED, CLEARED_UNACKED)
PRIORITIES = ("high", "medium", "low")
RANK = {"high": 3, "medium": 2, "low": 1}


class AlarmError(Exception):
    """A transition the lifecycle does not allow (e.g. acknowledging twice); maps to HTTP 409."""


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm: where it comes from, how urgent, its state and when each thing happened."""

    uid: str
    rig: str
    source: str
    key: str
    priority: str
    message: str
    state: str
    raised_ns: int
    cleared_ns: int | None = None
    acked_ns: int | None = None
    acked_by: str = ""
    ack_comment: str = ""
    id: int | None = None

    @property
    def active(self) -> bool:
        """The condition holds."""
        return self.state in ACTIVE

    @property
    def acked(self) -> bool:
        """An operator acknowledged it."""
        return self.state in (ACTIVE_ACKED, CLEARED)

    def as_dict(self) -> dict:
        """Every field, JSON-able."""
        return dataclasses.asdict(self)


def new_alarm(rig: str, source: str, key: str, priority: str, message: str, t_ns: int,
              uid: str | None = None) -> Alarm:
    """A condition appeared: a new alarm, ``active_unacked``."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)} (got {priority!r})")
    return Alarm(uid=uid or str(uuid.uuid4()), rig=rig, source=source, key=key, priority=priority,
                 message=message, state=ACTIVE_UNACKED, raised_ns=t_ns)


def reraise(a: Alarm, message: str, priority: str | None = None) -> Alarm:
    """The condition of an open alarm is there (again): ``cleared_unacked`` → ``active_unacked``.

    ``priority``: the condition's priority now (a stale device that went down is high), if it changed.
    """
    if a.state == CLEARED:
        raise AlarmError(f"alarm {a.id or a.uid} is closed: the condition makes a new alarm")
    priority = priority or a.priority
    if a.state == CLEARED_UNACKED:
        return dataclasses.replace(a, state=ACTIVE_UNACKED, cleared_ns=None, message=message, priority=priority)
    return dataclasses.replace(a, message=message, priority=priority)


def clear(a: Alarm, t_ns: int) -> Alarm:
    """The condition went: ``active_unacked`` → ``cleared_unacked``, ``active_acked`` → ``cleared``."""
    if a.state == ACTIVE_UNACKED:
        return dataclasses.replace(a, state=CLEARED_UNACKED, cleared_ns=t_ns)
    if a.state == ACTIVE_ACKED:
        return dataclasses.replace(a, state=CLEARED, cleared_ns=t_ns)
    return a  # cleared already


def acknowledge(a: Alarm, t_ns: int, by: str, comment: str) -> Alarm:
    """An operator acknowledged it: ``active_unacked`` → ``active_acked``, ``cleared_unacked`` → ``cleared``."""
    if not comment.strip():
        raise ValueError("an acknowledgement needs a comment")
    if a.state == ACTIVE_UNACKED:
        state = ACTIVE_ACKED
    elif a.state == CLEARED_UNACKED:
        state = CLEARED
    else:
        raise AlarmError(f"alarm {a.id if a.id is not None else a.uid} was already acknowledged by {a.acked_by}")
    return dataclasses.replace(a, state=state, acked_ns=t_ns, acked_by=by, ack_comment=comment.strip())
