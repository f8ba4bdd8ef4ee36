"""InfluxDB v1 HTTP API: ``/ping``, ``/write`` and InfluxQL ``/query``.

Works with InfluxDB 1.x and with 2.x/3.x through their v1 compatibility API.
"""

from __future__ import annotations

import logging

import httpx

log = logging.getLogger(__name__)


class InfluxError(Exception):
    """A request InfluxDB answered with an error. ``retryable`` is False for bad data."""

    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class InfluxV1Client:
    """Async client of one database."""

    def __init__(self, url: str, database: str, username: str | None = None,
                 password: str | None = None, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        self.database = database
        auth = {"u": username, "p": password} if username else {}
        self._auth = auth
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout_s)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def ping(self) -> bool:
        """True when the server answers ``/ping``."""
        try:
            r = await self._http.get("/ping")
        except httpx.HTTPError:
            return False
        return r.status_code == 204

    async def create_database(self, retention: str | None = None) -> None:
        """``CREATE DATABASE`` (idempotent).

        With ``retention`` (``48h``, ``30d``, ``INF``) its default policy keeps data that long.
        """
        await self.query(f'CREATE DATABASE "{self.database}"', method="POST")
        if retention:
            shard = "1h" if retention != "INF" and retention.endswith("h") else "1d"
            await self.query(f'ALTER RETENTION POLICY "autogen" ON "{self.database}" DURATION {retention} '
                             f"SHARD DURATION {shard} DEFAULT", method="POST")

    async def write(self, body: bytes) -> None:
        """POST line protocol (ns precision). Raises :class:`InfluxError`."""
        params = {"db": self.database, "precision": "ns", **self._auth}
        try:
            r = await self._http.post("/write", params=params, content=body)
        except httpx.HTTPError as e:
            raise InfluxError(f"cannot reach InfluxDB at {self.url}: {e!r}", True) from None
        if r.status_code == 204:
            return
        detail = r.text.strip()[:500]
        # 400: malformed or conflicting data (will never succeed); 404: no database
        retryable = r.status_code >= 500 or r.status_code in (404, 408, 429)
        raise InfluxError(f"InfluxDB answered {r.status_code}: {detail}", retryable)

    async def query(self, q: str, method: str = "GET", epoch: str = "ns") -> list[dict]:
        """Run InfluxQL; returns the ``results`` list. Raises :class:`InfluxError`."""
        params = {"q": q, "db": self.database, "epoch": epoch, **self._auth}
        try:
            if method == "POST":
                r = await self._http.post("/query", params=params)
            else:
                r = await self._http.get("/query", params=params)
        except httpx.HTTPError as e:
            raise InfluxError(f"cannot reach InfluxDB at {self.url}: {e!r}", True) from None
        if r.status_code != 200:
            raise InfluxError(f"query failed ({r.status_code}): {r.text.strip()[:500]}",
                              r.status_code >= 500)
        results = r.json().get("results", [])
        for res in results:
            if "error" in res:
                raise InfluxError(f"query error: {res['error']}", False)
        return results


def series_rows(results: list[dict]) -> list[dict]:
    """Flatten InfluxQL results into row dicts (column → value), tags included."""
    rows: list[dict] = []
    for res in results:
        for s in res.get("series", []):
            cols = s["columns"]
            tags = s.get("tags", {})
            for values in s["values"]:
                rows.append({**tags, **dict(zip(cols, values, strict=True))})
    return rows
