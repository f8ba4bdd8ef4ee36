"""Checks shared by request bodies: text a certificate and the audit trail can hold."""

from __future__ import annotations


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
