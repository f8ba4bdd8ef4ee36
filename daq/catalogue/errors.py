"""What the catalogue refuses, with the HTTP status each maps to."""

from __future__ import annotations


class RunError(Exception):
    """A run request that cannot be done; ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


class ResultLockedError(RunError):
    """A changed result for a run whose certificate was approved: refused (the approved results stay)."""
