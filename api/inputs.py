"""Checks and conversions shared by requests: text a certificate and the audit trail can hold, time filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def printable(v: str | None) -> str | None:
    """``v`` unless it holds a control character (newline and tab aside): a 422 naming it."""
    if v is not None:
        bad = [c for c in v if ord(c) < 32 and c not in "\n\t"]
        if bad:
            raise ValueError(f"control character {bad[0]!r} is not allowed")
    return v


def printable_extra(v: dict[str, str] | None) -> dict[str, str] | None:
    """Further metadata (name → text): names and texts as :func:`printable` takes them."""
    for name, text in (v or {}).items():
        try:
            printable(name)
            printable(text)
        except ValueError as e:
            raise ValueError(f"extra[{name!r}]: {e}") from None
    return v


def epoch_ns(when: datetime | None) -> int | None:
    """A query's time filter in ns since the epoch (naive times are UTC), clamped to int64; None for None."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ns = (when - EPOCH) // timedelta(microseconds=1) * 1000  # exact (a float would be off by ~100 ns)
    return max(-(2**63), min(ns, 2**63 - 1))  # any date filters; the database holds int64
