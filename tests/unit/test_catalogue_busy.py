"""daq.catalogue.errors.when_unlocked: a SQLite file locked past its busy timeout is waited out."""

import pytest
from sqlalchemy.exc import OperationalError

from daq.catalogue.errors import when_unlocked


def _failing(errors: list[str]):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= len(errors):
            raise OperationalError("INSERT INTO runs …", {}, Exception(errors[len(calls) - 1]))
        return "filed"
    return fn, calls


def test_locked_twice_then_filed():
    fn, calls = _failing(["database is locked", "database is locked"])
    assert when_unlocked(fn, (0.0, 0.0, 0.0)) == "filed" and len(calls) == 3


def test_locked_after_every_wait_raises_the_last_lock():
    fn, calls = _failing(["database is locked"] * 3)
    with pytest.raises(OperationalError, match="database is locked"):
        when_unlocked(fn, (0.0, 0.0))
    assert len(calls) == 3  # the first try and one after each wait


def test_another_operational_error_is_not_retried():
    fn, calls = _failing(["disk I/O error"])
    with pytest.raises(OperationalError, match="disk I/O error"):
        when_unlocked(fn, (0.0, 0.0))
    assert len(calls) == 1
