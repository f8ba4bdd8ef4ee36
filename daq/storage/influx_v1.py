"""InfluxDB v1 HTTP API: ``/ping``, ``/write`` and InfluxQL ``/query``.

Works with InfluxDB 1.x and with 2.x/3.x through their v1 compatibility API.
Credentials travel as HTTP basic auth (never as ``u``/``p`` in the URL, where proxies
and access logs would keep them).
"""

from __future__ import annotations

import asyncio
import logging
import re
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import orjson

log = logging.getLogger(__name__)

_DROPPED = re.compile(r"dropped=(\d+)")

#: what a curve leaves out: the tags and the per-sample counter
CURVE_SKIP = frozenset({"rig", "run", "sample"})

Curve = tuple[np.ndarray, dict[str, np.ndarray]]


class InfluxError(Exception):
    """A write or query InfluxDB did not take, classified by what the writer must do about it.

    ``kind`` is one of:

    * ``unreachable`` — connection refused or reset, timeout: retry;
    * ``server`` — 5xx, 408, 429: retry;
    * ``no_database`` — 404 (database or bucket missing): create it, retry;
    * ``credentials`` — 401/403: retry (a password or token may be restored any time);
    * ``too_large`` — 413: split the batch;
    * ``bad_data`` — 400/422 (parse error, field type conflict): these lines will never be
      accepted; ``dropped`` is the number of lines a 1.x *partial write* refused (the
      others were stored), None when the whole batch was refused.
    """

    def __init__(self, message: str, kind: str, status: int = 0, dropped: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.dropped = dropped

    @property
    def retryable(self) -> bool:
        """True when sending the same lines again later can succeed."""
        return self.kind not in ("bad_data", "too_large")


def masked_url(url: str) -> str:
    """``url`` with any user name and password replaced by ``***``, for logs, events and health."""
    u = urlsplit(url)
    if "@" not in u.netloc:
        return url
    return urlunsplit(u._replace(netloc="***@" + u.netloc.rsplit("@", 1)[1]))


def classify(status: int, detail: str, server: str) -> InfluxError:
    """The :class:`InfluxError` for an HTTP status and the body InfluxDB sent with it."""
    if status in (401, 403):
        return InfluxError(f"{server} refuses our credentials ({status}): {detail}", "credentials", status)
    if status == 404:
        return InfluxError(f"{server} has no such database or bucket (404): {detail}", "no_database", status)
    if status == 413:
        return InfluxError(f"{server} finds the request too large (413): {detail}", "too_large", status)
    if status >= 500 or status in (408, 429):
        return InfluxError(f"{server} answered {status}: {detail}", "server", status)
    if 400 <= status < 500:
        m = _DROPPED.search(detail) if "partial write" in detail else None
        return InfluxError(f"{server} refused the data ({status}): {detail}", "bad_data", status,
                           int(m.group(1)) if m else None)
    return InfluxError(f"{server} answered {status}: {detail}", "server", status)


def unreachable(url: str, e: Exception) -> InfluxError:
    """The error for a request that got no answer."""
    what = "timed out" if isinstance(e, httpx.TimeoutException | TimeoutError) else "unreachable"
    return InfluxError(f"InfluxDB at {url} {what}: {type(e).__name__}: {e}", "unreachable")


class InfluxV1Client:
    """Async client of one database."""

    def __init__(self, url: str, database: str, username: str | None = None,
                 password: str | None = None, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        self.shown_url = masked_url(self.url)
        self.database = database
        auth = httpx.BasicAuth(username, password or "") if username else None
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout_s, auth=auth)

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
        try:
            r = await self._http.post("/write", params={"db": self.database, "precision": "ns"}, content=body)
        except httpx.HTTPError as e:
            raise unreachable(self.shown_url, e) from None
        if r.status_code == 204:
            return
        raise classify(r.status_code, r.text.strip()[:500], "InfluxDB")

    async def _answer(self, q: str, method: str = "GET", epoch: str = "ns") -> httpx.Response:
        """Run InfluxQL; the 200 answer, body unparsed. Raises :class:`InfluxError`."""
        params = {"q": q, "db": self.database, "epoch": epoch}
        try:
            if method == "POST":
                r = await self._http.post("/query", params=params)
            else:
                r = await self._http.get("/query", params=params)
        except httpx.HTTPError as e:
            raise unreachable(self.shown_url, e) from None
        if r.status_code != 200:
            raise classify(r.status_code, r.text.strip()[:500], "InfluxDB")
        return r

    async def query(self, q: str, method: str = "GET", epoch: str = "ns") -> list[dict]:
        """Run InfluxQL; returns the ``results`` list. Raises :class:`InfluxError`."""
        return _results(orjson.loads((await self._answer(q, method, epoch)).content))

    async def curve(self, measurement: str, rig: str, start_ns: int, end_ns: int) -> Curve | None:
        """A rig's samples of one measurement from ``start_ns`` to ``end_ns`` (both included).

        Returns (time in ns as int64, every numeric field as a float64 array, None → NaN),
        without the tags (``rig``, ``run``) and the ``sample`` counter; None when there is
        no sample in the window. Raises :class:`InfluxError`.
        """
        rig_q = rig.replace("\\", "\\\\").replace("'", "\\'")
        meas = measurement.replace('"', '\\"')
        q = f"SELECT * FROM \"{meas}\" WHERE rig = '{rig_q}' AND time >= {int(start_ns)} AND time <= {int(end_ns)}"
        body = (await self._answer(q)).content
        # a 10 kHz curve is tens of thousands of rows: decoded off the event loop, column by column
        return await asyncio.to_thread(curve_of, body)


_NUMERIC_TYPES = frozenset({int, float, bool, type(None)})


def _results(answer: dict) -> list[dict]:
    """A ``/query`` answer's ``results``; a statement's error raised as :class:`InfluxError`."""
    results = answer.get("results", [])
    for res in results:
        if "error" in res:
            raise InfluxError(f"query error: {res['error']}", "bad_data", 200)
    return results


def curve_of(body: bytes) -> Curve | None:
    """The answer to a ``SELECT *`` as a curve (see :meth:`InfluxV1Client.curve`); None when it has no row.

    Column-wise: a column becomes one array at once. (A dict per row, on the event loop, held
    the loop for half a second on a loaded machine for a blow's 1.5 s of the press's 10 kHz
    amplifier: the PLC polls, and the in-process simulator's scans, waited.) Series that lack
    a column get NaN there.
    """
    columns: dict[str, list] = {}
    n = 0
    for res in _results(orjson.loads(body)):
        for s in res.get("series", []):
            values = s.get("values") or []
            for name, col in zip(s["columns"], zip(*values, strict=True), strict=True):
                columns.setdefault(name, [None] * n).extend(col)
            n += len(values)
            for col in columns.values():
                col.extend([None] * (n - len(col)))
    if n == 0:
        return None
    t = np.array(columns.pop("time"), dtype=np.int64)
    chans = {k: np.array(col, dtype=np.float64) for k, col in columns.items()  # None → NaN
             if k not in CURVE_SKIP and set(map(type, col)) <= _NUMERIC_TYPES}
    return t, chans


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
