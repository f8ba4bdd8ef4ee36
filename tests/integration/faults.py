"""Tools for the storage fault matrix: a real tmpfs, and an exact account of every sample.

``account`` compares what the service acquired with what InfluxDB holds, per device
(acquisition label: the PLC's poll groups are ``press01_plc`` and ``press01_plc/slow``,
both stored in measurement ``press01_plc``). ``assert_nothing_lost`` turns that
account into the promise of the README's "Storage that loses nothing".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

Auth = tuple[str, str] | None


# -- a real, small file system -------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(path: str | Path, size: str = "3m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``path`` (created if missing) for the block; skip if we cannot."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip(f"mounting a {size} tmpfs on {path} needs root (euid {os.geteuid()})")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {path}: {(r.stderr or r.stdout).strip()}")
    try:
        yield path
    finally:
        r = subprocess.run(["umount", str(path)], capture_output=True, text=True, check=False)
        if r.returncode != 0:  # still busy (a test failed half-way): detach it anyway
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


# -- InfluxQL ------------------------------------------------------------------------------
def influxql(influx_url: str, database: str, q: str, auth: Auth = None, method: str = "GET") -> list[dict]:
    """Rows (tags and columns, ``time`` in ns) of every series the statement(s) return.

    Chunked, so no server row limit cuts a long answer short. Raises on any error.
    """
    params = {"db": database, "q": q, "epoch": "ns", "chunked": "true", "chunk_size": "20000"}
    with httpx.Client(timeout=60.0, auth=auth) as http:
        r = http.request(method, f"{influx_url.rstrip('/')}/query", params=params)
    r.raise_for_status()
    rows: list[dict] = []
    for chunk in r.text.splitlines():
        if not chunk.strip():
            continue
        body = json.loads(chunk)
        if "error" in body:
            raise RuntimeError(f"InfluxQL {q!r}: {body['error']}")
        for res in body.get("results", []):
            if "error" in res:
                raise RuntimeError(f"InfluxQL {q!r}: {res['error']}")
            for s in res.get("series", []):
                tags = s.get("tags", {})
                rows.extend({**tags, **dict(zip(s["columns"], v, strict=True))} for v in s["values"])
    return rows


def admin_query(influx_url: str, q: str, auth: Auth = None) -> None:
    """POST an administrative statement (users, passwords, databases); raises on error."""
    with httpx.Client(timeout=30.0, auth=auth) as http:
        r = http.post(f"{influx_url.rstrip('/')}/query", params={"q": q})
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    errors = [res["error"] for res in body.get("results", []) if "error" in res]
    if r.status_code != 200 or errors or "error" in body:
        raise RuntimeError(f"{q!r}: {r.status_code} {r.text.strip()}")


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _time_where(since_ns: int | None, until_ns: int | None) -> str:
    cond = []
    if since_ns is not None:
        cond.append(f"time >= {int(since_ns)}")
    if until_ns is not None:
        cond.append(f"time <= {int(until_ns)}")
    return f" WHERE {' AND '.join(cond)}" if cond else ""


def stored_events(influx_url: str, database: str, auth: Auth = None, since_ns: int | None = None,
                  until_ns: int | None = None) -> list[dict]:
    """Every point of measurement ``events`` (all tags and fields), oldest first."""
    return influxql(influx_url, database, f"SELECT * FROM events{_time_where(since_ns, until_ns)}", auth)


def field_keys(influx_url: str, database: str, measurement: str, auth: Auth = None) -> list[str]:
    """The measurement's field names (empty if it does not exist)."""
    rows = influxql(influx_url, database, f"SHOW FIELD KEYS FROM {_ident(measurement)}", auth)
    return [r["fieldKey"] for r in rows]


# -- the account ---------------------------------------------------------------------------
def _num(v) -> int:
    return int(v) if v is not None else 0


def rejected_files(spool_dir: str | Path) -> list[Path]:
    """The batches set aside in ``<spool>/rejected/``."""
    return sorted((Path(spool_dir) / "rejected").glob("*.lp"))


def rejected_lines(spool_dir: str | Path) -> list[bytes]:
    """Every non-empty line set aside in ``<spool>/rejected/*.lp``."""
    return [ln for p in rejected_files(spool_dir) for ln in p.read_bytes().splitlines() if ln.strip()]


def _devices(service_or_counts) -> tuple[dict[str, int], dict[str, tuple[str, list[str] | None]], Path | None]:
    """(acquired per label, (measurement, fields or None) per label, spool dir or None)."""
    services = (service_or_counts if isinstance(service_or_counts, list | tuple) else
                [] if isinstance(service_or_counts, Mapping) else [service_or_counts])
    acquired: dict[str, int] = {}
    where: dict[str, tuple[str, list[str] | None]] = {}
    spool = None
    if isinstance(service_or_counts, Mapping):
        for label, n in service_or_counts.items():
            acquired[label] = int(n)
            where[label] = (label.split("/")[0], None)
        return acquired, where, spool
    for service in services:
        spool = Path(service.settings.data_dir) / "spool"
        for acq in service.acquisitions:
            label = acq.status.device
            acquired[label] = acquired.get(label, 0) + int(acq.status.samples)
            poller = getattr(acq, "poller", None)
            if poller is not None:  # a Modbus poll group: its own fields in the device's measurement
                where[label] = (poller.measurement, [f.name for f in poller.fields])
            else:
                where[label] = (label, None)
    return acquired, where, spool


def account(influx_url: str, database: str, service_or_counts, auth: Auth = None, *,
            spool_dir: str | Path | None = None, since_ns: int | None = None,
            until_ns: int | None = None) -> dict[str, dict]:
    """Per device: what was acquired, what InfluxDB holds, and what events account for.

    ``service_or_counts`` is a (stopped) :class:`daq.service.Service`, a list of them run
    one after the other on the same data (acquired counts add up), or a mapping
    device → acquired samples (then a device's points are all points of the measurement
    of that name). ``auth`` is (user, password) for basic auth. ``since_ns``/``until_ns``
    restrict the count to a time range (e.g. one service's run when another followed).

    Each device's entry:

    * ``stored``: points in InfluxDB (for a poll group, points with any of its fields);
    * ``acquired``: the acquisition's ``status.samples``;
    * ``distinct``: streams: distinct ``sample`` counter values; polled: distinct timestamps;
    * ``stream``: whether its measurement has a ``sample`` field;
    * ``missing``: streams: ``max − min + 1 − distinct`` (holes in the counter), else 0;
    * ``gap_events``: Σ ``missing_samples`` of ``data_gap`` events tagged with the device;
    * ``lost_events``: Σ ``lines`` of ``data_lost`` events tagged with the device;
    * ``rejected_lines``: lines of its measurement in ``<spool>/rejected/*.lp``.
    """
    acquired, where, spool = _devices(service_or_counts)
    spool = Path(spool_dir) if spool_dir is not None else spool
    tw = _time_where(since_ns, until_ns)
    events = stored_events(influx_url, database, auth, since_ns, until_ns)
    rejected = rejected_lines(spool) if spool is not None else []
    out: dict[str, dict] = {}
    for label, n_acquired in acquired.items():
        measurement, fields = where[label]
        keys = field_keys(influx_url, database, measurement, auth)
        stream = "sample" in keys
        m = _ident(measurement)
        entry = {"stored": 0, "acquired": n_acquired, "distinct": 0, "stream": stream, "missing": 0}
        if stream:
            [r] = influxql(influx_url, database, f"SELECT count(sample), min(sample), max(sample) FROM {m}{tw}",
                           auth) or [{}]
            [d] = influxql(influx_url, database, f"SELECT count(distinct(sample)) FROM {m}{tw}", auth) or [{}]
            entry["stored"] = _num(r.get("count"))
            entry["distinct"] = _num(d.get("count"))
            if entry["distinct"]:
                entry["missing"] = _num(r.get("max")) - _num(r.get("min")) + 1 - entry["distinct"]
        elif keys:
            wanted = [f for f in (fields or keys) if f in keys]
            if wanted:
                rows = influxql(influx_url, database,
                                f"SELECT {', '.join(_ident(f) for f in wanted)} FROM {m}{tw}", auth)
                entry["stored"] = len(rows)
                entry["distinct"] = len({r["time"] for r in rows})
        mine = [e for e in events if e.get("device") == measurement]
        entry["gap_events"] = sum(_num(e.get("missing_samples")) for e in mine if e.get("kind") == "data_gap")
        entry["lost_events"] = sum(_num(e.get("lines")) for e in mine if e.get("kind") == "data_lost")
        prefix = re.escape(measurement.replace(",", r"\,").replace(" ", r"\ ").encode())
        line_of = re.compile(rb"^" + prefix + rb"[, ]")
        entry["rejected_lines"] = sum(1 for ln in rejected if line_of.match(ln))
        out[label] = entry
    return out


def assert_nothing_lost(acct: dict[str, dict], allow_lost: bool = False) -> None:
    """Every device: no duplicates, every acquired sample stored or reported lost, counter holes explained.

    * ``stored == distinct`` (a stream's counter value is never stored twice);
    * ``stored + lost_events == acquired``;
    * streams: ``missing == gap_events + lost_events`` (each hole is a reported gap or loss);
    * no sample line in ``rejected/``;
    * unless ``allow_lost``: ``lost_events == 0`` (nothing may be lost at all).
    """
    problems: list[str] = []
    for device, a in acct.items():
        if a["acquired"] == 0:
            problems.append(f"{device}: acquired nothing, the account proves nothing ({a})")
        if a["stored"] != a["distinct"]:
            problems.append(f"{device}: {a['stored'] - a['distinct']} duplicated samples ({a})")
        if a["stored"] + a["lost_events"] != a["acquired"]:
            problems.append(f"{device}: stored {a['stored']} + reported lost {a['lost_events']} "
                            f"!= acquired {a['acquired']} "
                            f"({a['acquired'] - a['stored'] - a['lost_events']} unaccounted; {a})")
        if a["stream"] and a["missing"] != a["gap_events"] + a["lost_events"]:
            problems.append(f"{device}: {a['missing']} counter values missing, events explain "
                            f"{a['gap_events']} (gaps) + {a['lost_events']} (lost) ({a})")
        if a["rejected_lines"]:
            problems.append(f"{device}: {a['rejected_lines']} sample lines set aside in rejected/ ({a})")
        if not allow_lost and a["lost_events"]:
            problems.append(f"{device}: {a['lost_events']} samples reported lost ({a})")
    assert not problems, "\n".join(problems)


def kinds(events: Iterable[dict]) -> set[str]:
    """The event kinds among ``events``."""
    return {e.get("kind") for e in events}
