"""InfluxDB v2 write API through influxdb-client (InfluxDB 2.x/3.x, Cloud; token, org, bucket).

The writer hands over line protocol it has already serialised and spooled; the client
posts it with the library's synchronous write API in a worker thread, with the
library's own retries off: the spool is the retry mechanism, so a batch is either
confirmed or kept on disk.

Curves (:meth:`InfluxV2Client.curve`) are read back the way the v2 path is tested: from
VictoriaMetrics, which takes ``/api/v2/write`` and serves ``/api/v1/export`` (it has no
Flux). A real InfluxDB 2.x/3.x has no such endpoint: its curves come from the catalogue's
archive (the curve raises :class:`InfluxError` and the API falls back).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import httpx
import numpy as np
import orjson
import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from daq.storage.influx_v1 import CURVE_SKIP, Curve, InfluxError, classify, masked_url, unreachable

log = logging.getLogger(__name__)


class InfluxV2Client:
    """Writes into one bucket."""

    def __init__(self, url: str, token: str, org: str, bucket: str, timeout_s: float = 10.0):
        self.url, self.org, self.bucket = url, org, bucket
        self._client = InfluxDBClient(url=url, token=token, org=org, timeout=int(timeout_s * 1000),
                                      retries=False)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout_s,
                                       headers={"Authorization": f"Token {token}"})

    def _write(self, body: bytes) -> None:
        try:
            self._api.write(bucket=self.bucket, org=self.org, record=body,
                            write_precision=WritePrecision.NS)
        except ApiException as e:
            raise classify(e.status or 0, str(e.body or e.reason or "")[:500], "InfluxDB v2") from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            what = "timed out" if isinstance(e, urllib3.exceptions.TimeoutError | TimeoutError) else "unreachable"
            raise InfluxError(f"InfluxDB at {masked_url(self.url)} {what}: {type(e).__name__}: {e}",
                              "unreachable") from None

    async def write(self, body: bytes) -> None:
        """POST line protocol to ``/api/v2/write``. Raises :class:`InfluxError`."""
        await asyncio.to_thread(self._write, body)

    async def create_database(self, retention: str | None = None) -> None:
        """Buckets are created by whoever owns the InfluxDB organisation; nothing to do."""

    async def curve(self, measurement: str, rig: str, start_ns: int, end_ns: int) -> Curve | None:
        """A rig's samples of one measurement from ``start_ns`` to ``end_ns``, read back from VictoriaMetrics.

        Returns (time in ns as int64, every field as a float64 array) without the tags
        (``rig``, ``run``) and the ``sample`` counter, None when there is no sample in the
        window; raises :class:`InfluxError` (also when the server has no
        ``/api/v1/export``, as a real InfluxDB 2.x/3.x has not).

        It asks ``/api/v1/export`` for ``{__name__=~"<measurement>_.+", rig="<rig>"}``: the
        server keeps a line's fields as the series ``<measurement>_<field>``. What it keeps
        differs from InfluxDB's copy:

        * timestamps in milliseconds only: ``t_ns`` is the millisecond times 10⁶ (every
          sample is there, several at the same time when it was sampled faster than 1 kHz),
          and the window is cut at whole milliseconds (every sample whose millisecond is in
          [start, end]);
        * no order within a millisecond: its samples come back in some order per field, and
          the fields are lined up by position within the millisecond, so there one row's
          values need not be one sample's;
        * values with about 12 significant decimal digits (fewer where one stored block
          mixes very different magnitudes), not every bit of the float64 written;
        * every field is a number (booleans 1/0; string fields arrive as 0);
        * the series of another measurement named ``<measurement>_…`` match as well.
        """
        start_ms, end_ms = int(start_ns) // 1_000_000, int(end_ns) // 1_000_000
        label = rig.replace("\\", "\\\\").replace('"', '\\"')
        name = _string_literal(_regex_literal(measurement) + "_.+")
        params = {"match[]": f'{{__name__=~"{name}",rig="{label}"}}',
                  # a millisecond wider each side (the server parses seconds as a float), cut exactly below
                  "start": f"{(start_ms - 1) / 1000:.3f}", "end": f"{(end_ms + 1) / 1000:.3f}"}
        try:
            r = await self._http.get("/api/v1/export", params=params)
        except httpx.HTTPError as e:
            raise unreachable(masked_url(self.url), e) from None
        if r.status_code == 404:
            raise InfluxError(f"{masked_url(self.url)} has no /api/v1/export (404): curves are read back only "
                              "from VictoriaMetrics, not from InfluxDB 2.x/3.x", "bad_data", 404)
        if r.status_code != 200:
            raise classify(r.status_code, r.text.strip()[:500], "InfluxDB v2 (export)")
        try:  # megabytes of JSON lines for a blow: decoded off the event loop
            return await asyncio.to_thread(_export_curve, r.content, measurement, start_ms, end_ms)
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # orjson's errors are ValueErrors
            raise InfluxError(f"{masked_url(self.url)}: unexpected /api/v1/export answer: {e}", "server",
                              r.status_code) from None

    async def aclose(self) -> None:
        """Close the connection pools."""
        await self._http.aclose()
        await asyncio.to_thread(self._client.close)


def _export_curve(content: bytes, measurement: str, start_ms: int, end_ms: int) -> Curve | None:
    """``/api/v1/export``'s JSON lines for ``<measurement>_<field>`` series → one curve (see ``curve``)."""
    prefix = measurement + "_"
    fields: dict[str, list[tuple[list, list]]] = defaultdict(list)
    for line in content.splitlines():
        if not line.strip():
            continue
        s = orjson.loads(line)
        metric = s["metric"].get("__name__", "")
        field = metric[len(prefix):] if metric.startswith(prefix) else ""
        if field and field not in CURVE_SKIP:
            fields[field].append((s["timestamps"], s["values"]))
    return _line_up(fields, start_ms, end_ms)


_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def _regex_literal(text: str) -> str:
    """``text`` as a regular expression (RE2) matching exactly it."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def _string_literal(text: str) -> str:
    """``text`` inside a double-quoted series-selector string."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _line_up(fields: dict[str, list[tuple[list, list]]], start_ms: int, end_ms: int) -> Curve | None:
    """Per-field (ms, value) series (a field may come in several series: one per ``run``) → one table.

    Samples outside [start_ms, end_ms] are left out. Rows are (millisecond, n-th sample of
    the field in that millisecond); a field without that row is NaN there.
    """
    per_field: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for field, parts in fields.items():
        ts = np.concatenate([np.asarray(t, dtype=np.int64) for t, _ in parts])
        vs = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in parts])
        keep = (ts >= start_ms) & (ts <= end_ms)
        ts, vs = ts[keep], vs[keep]
        order = np.argsort(ts, kind="stable")
        if len(ts):
            per_field[field] = ts[order], vs[order]
    if not per_field:
        return None
    stamps = [ts for ts, _ in per_field.values()]
    if all(len(ts) == len(stamps[0]) and np.array_equal(ts, stamps[0]) for ts in stamps):
        return stamps[0] * 1_000_000, {k: v for k, (_, v) in per_field.items()}
    keyed = {k: _occurrences(ts) for k, (ts, _) in per_field.items()}
    rows = sorted(set().union(*(keys for keys in keyed.values())))
    where = {key: i for i, key in enumerate(rows)}
    chans = {}
    for k, (_, vs) in per_field.items():
        col = np.full(len(rows), np.nan)
        col[[where[key] for key in keyed[k]]] = vs
        chans[k] = col
    return np.array([ms for ms, _ in rows], dtype=np.int64) * 1_000_000, chans


def _occurrences(ts: np.ndarray) -> list[tuple[int, int]]:
    """(millisecond, how many samples of that millisecond came before) of each sorted timestamp."""
    nth = np.arange(len(ts)) - np.searchsorted(ts, ts, side="left")
    return list(zip(ts.tolist(), nth.tolist(), strict=True))
