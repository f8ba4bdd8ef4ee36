"""The light part of the export (no pyarrow): its errors and where samples are read from."""

from __future__ import annotations

from dataclasses import dataclass


class ExportError(Exception):
    """An export that cannot be made; ``status`` is the HTTP status it maps to (CLI: exit 1)."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.status = status


@dataclass
class InfluxTarget:
    """The line InfluxDB's v1 query API (InfluxQL)."""

    url: str
    database: str
    username: str | None = None
    password: str | None = None
    timeout_s: float = 60.0
