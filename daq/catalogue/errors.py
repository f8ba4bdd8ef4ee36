"""What the catalogue refuses, with the HTTP status each maps to; waiting out a locked SQLite file."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import OperationalError

T = TypeVar("T")

#: SQLite: waits before trying again when another writer kept the file locked past its busy timeout
BUSY_RETRIES_S = (0.1, 0.5, 1.0, 2.0)


def when_unlocked(fn: Callable[[], T], waits: tuple[float, ...] = BUSY_RETRIES_S) -> T:
    """``fn()``, tried again after each of ``waits`` while SQLite answers "database is locked".

    For what a request can wait for (a run's start or stop, a signature, an audit entry): a
    writer that held the file past the 5 s busy timeout (a slow disk's checkpoint) then
    costs seconds, not a 503. ``fn`` must be one transaction (rolled back when it fails).
    """
    for wait_s in (*waits, None):
        try:
            return fn()
        except OperationalError as e:
            if wait_s is None or "database is locked" not in str(e):
                raise
            time.sleep(wait_s)
    raise AssertionError("unreachable")


class RunError(Exception):
    """A run request that cannot be done; ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


class ResultLockedError(RunError):
    """A changed result for a run whose certificate was approved: refused (the approved results stay)."""
