"""The alarm lifecycle (daq.alarms.model): every transition, with exact states and times."""

from __future__ import annotations

import dataclasses

import pytest

from daq.alarms.model import (
    ACTIVE_ACKED,
    ACTIVE_UNACKED,
    CLEARED,
    CLEARED_UNACKED,
    AlarmError,
    acknowledge,
    clear,
    new_alarm,
    reraise,
)

T = 1_795_000_000_000_000_000


def raised():
    return new_alarm("press-01", "device", "device:press-01/press01_amp", "high", "press01_amp is down", T,
                     uid="u-1")


def fields(a) -> dict:
    return {k: v for k, v in dataclasses.asdict(a).items() if k in (
        "state", "raised_ns", "cleared_ns", "acked_ns", "acked_by", "ack_comment", "message")}


def test_a_new_alarm_is_active_and_unacknowledged():
    a = raised()
    assert dataclasses.asdict(a) == {
        "uid": "u-1", "rig": "press-01", "source": "device", "key": "device:press-01/press01_amp",
        "priority": "high", "message": "press01_amp is down", "state": ACTIVE_UNACKED, "raised_ns": T,
        "cleared_ns": None, "acked_ns": None, "acked_by": "", "ack_comment": "", "id": None}
    assert (a.active, a.acked) == (True, False)


def test_ack_then_clear_closes_it():
    a = acknowledge(raised(), T + 10, "op1", "  seen, die changed  ")
    assert fields(a) == {"state": ACTIVE_ACKED, "raised_ns": T, "cleared_ns": None, "acked_ns": T + 10,
                         "acked_by": "op1", "ack_comment": "seen, die changed", "message": "press01_amp is down"}
    assert (a.active, a.acked) == (True, True)
    c = clear(a, T + 20)
    assert fields(c) == {"state": CLEARED, "raised_ns": T, "cleared_ns": T + 20, "acked_ns": T + 10,
                         "acked_by": "op1", "ack_comment": "seen, die changed", "message": "press01_amp is down"}
    assert (c.active, c.acked) == (False, True)


def test_clear_then_ack_closes_it():
    c = clear(raised(), T + 5)
    assert fields(c) == {"state": CLEARED_UNACKED, "raised_ns": T, "cleared_ns": T + 5, "acked_ns": None,
                         "acked_by": "", "ack_comment": "", "message": "press01_amp is down"}
    assert (c.active, c.acked) == (False, False)
    d = acknowledge(c, T + 7, "op2", "was a loose cable")
    assert fields(d) == {"state": CLEARED, "raised_ns": T, "cleared_ns": T + 5, "acked_ns": T + 7,
                         "acked_by": "op2", "ack_comment": "was a loose cable", "message": "press01_amp is down"}


def test_a_condition_returning_before_the_ack_makes_the_same_alarm_active_again():
    c = clear(raised(), T + 5)
    r = reraise(c, "press01_amp is down again")
    assert fields(r) == {"state": ACTIVE_UNACKED, "raised_ns": T, "cleared_ns": None, "acked_ns": None,
                         "acked_by": "", "ack_comment": "", "message": "press01_amp is down again"}
    assert r.uid == "u-1"


def test_a_persisting_condition_changes_only_the_message():
    a = acknowledge(raised(), T + 10, "op1", "seen")
    assert reraise(a, "still down") == dataclasses.replace(a, message="still down")
    assert reraise(raised(), "still down") == dataclasses.replace(raised(), message="still down")


def test_a_closed_alarm_is_not_raised_again():
    closed = clear(acknowledge(raised(), T + 1, "op", "ok"), T + 2)
    with pytest.raises(AlarmError, match="is closed"):
        reraise(closed, "down")


def test_clearing_a_cleared_alarm_changes_nothing():
    c = clear(raised(), T + 5)
    assert clear(c, T + 9) == c
    closed = clear(acknowledge(raised(), T + 1, "op", "ok"), T + 2)
    assert clear(closed, T + 9) == closed


@pytest.mark.parametrize("state_of", [
    lambda: acknowledge(raised(), T + 1, "op1", "first"),
    lambda: clear(acknowledge(raised(), T + 1, "op1", "first"), T + 2),
])
def test_acknowledging_twice_is_refused(state_of):
    a = dataclasses.replace(state_of(), id=7)
    with pytest.raises(AlarmError) as e:
        acknowledge(a, T + 3, "op2", "again")
    assert str(e.value) == "alarm 7 was already acknowledged by op1"


def test_an_acknowledgement_needs_a_comment():
    with pytest.raises(ValueError, match="needs a comment"):
        acknowledge(raised(), T + 1, "op", "   ")


def test_priorities_are_checked():
    with pytest.raises(ValueError, match="priority must be one of high, medium, low"):
        new_alarm("", "spool", "spool:x", "urgent", "m", T)
