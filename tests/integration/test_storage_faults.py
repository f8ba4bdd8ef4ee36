"""The storage fault matrix of issue 11, each row against a real influxd of its own.

Every test runs the simulated press (10 kHz amplifier stream, 50 Hz + 1 Hz PLC poll
groups, two RS-485 units) into its own ``influxd``, induces one fault for a few
seconds, lets it recover, stops the service and then accounts for every sample
(``tests/integration/faults.py``): stored == acquired per device, no duplicates,
every hole in a stream's counter explained by a ``data_gap`` event, nothing set aside
in ``spool/rejected/`` except truly malformed lines.

The contract these tests hold the storage path (``daq/storage``, the service and the
catalogue writer) to:

* **Events** (measurement ``events``):

  - ``storage_fault`` (warning/error) when InfluxDB stops taking our data, naming the
    cause (``401``/``403`` for refused credentials);
  - ``spool_fault`` (or ``storage_fault``) when the spool cannot be written, with the OS
    error text (e.g. ``[Errno 28] No space left on device``);
  - ``storage_recovered`` once data flows again (after a ``storage_fault``);
  - ``data_lost`` for anything dropped, tagged ``device=<measurement>`` with integer field
    ``lines`` = samples of that device lost (one event per device);
  - ``data_gap`` (device tag, field ``missing_samples``) as today.

* **Health**: ``service.health()["storage"]["healthy"] is False`` while InfluxDB is
  unreachable, times out, refuses our credentials, or the spool cannot be written.
  A 413 is not a fault: the batch is split (``health()["storage"]["split_requests"]``).

* **Spool** at ``<data_dir>/spool`` (``*.lp`` batches), ``rejected/`` below it holding
  only lines InfluxDB will never accept (a 1.x partial write's refused lines, or what a
  bisection of a refused batch isolates) — never a whole batch of good samples.
  A spool write that fails (ENOSPC) keeps the data in memory and writes it when it can.

* **Database**: ``CREATE DATABASE`` is retried until it succeeds (influxd down at start).

* **Catalogue**: items that cannot be filed at stop (database locked) are kept on disk
  and filed at the next start, exactly once, with their cycle numbers.

InfluxDB 1.6 answers two type-conflicting points in one write with a *partial write*
(``dropped=1``, the first point wins); newer 1.x may refuse the whole write with
``400 field type conflict``. Either way exactly one line must end up in ``rejected/``.
Outages are seconds long here to keep CI short; ``bench/soak.py`` runs them longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time

import httpx
import pytest

from daq.cycles import CycleResult
from daq.events import Event
from daq.service import Service
from daq.storage.influxd import ManagedInfluxd, free_port
from tests.integration.faults import (
    account,
    admin_query,
    assert_nothing_lost,
    influxql,
    kinds,
    rejected_lines,
    stored_events,
    tmpfs,
)
from tests.integration.helpers import press_settings

DB = "faults"
pytestmark = [pytest.mark.fault_matrix, pytest.mark.timeout(150)]


# -- shared steps ----------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def storage_health(service: Service):
    """Collect ``health()["storage"]["healthy"]`` every 0.1 s while the block runs."""
    seen: list[bool | None] = []

    async def watch():
        while True:
            seen.append(service.health()["storage"].get("healthy"))
            await asyncio.sleep(0.1)

    task = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settle(service: Service, timeout_s: float = 30.0) -> bool:
    """Wait until storage is healthy and the spool nearly empty again (True if it got there)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        h = service.health()
        if h["storage"].get("healthy") and h["spool_depth"] < 5_000:
            await asyncio.sleep(0.5)
            return True
        await asyncio.sleep(0.2)
    return False


def assert_fault_reported(events: list[dict], seen: list[bool | None], cause: str | None = None) -> None:
    """A ``storage_fault`` (naming ``cause``), a later ``storage_recovered``, and health not ok meanwhile."""
    faults = [e for e in events if e.get("kind") == "storage_fault"]
    assert faults, f"no storage_fault event; kinds stored: {sorted(map(str, kinds(events)))}"
    if cause is not None:
        assert any(re.search(cause, e.get("message") or "") for e in faults), \
            f"no storage_fault names {cause!r}: {[e.get('message') for e in faults]}"
    first = min(e["time"] for e in faults)
    assert any(e.get("kind") == "storage_recovered" and e["time"] > first for e in events), \
        f"no storage_recovered after the storage_fault; kinds stored: {sorted(map(str, kinds(events)))}"
    assert False in seen, f"health showed storage healthy throughout the fault ({set(seen)})"


def assert_spool_empty(service: Service) -> None:
    """Nothing waits in the spool after a clean stop, and nothing was set aside."""
    spool = service.settings.data_dir / "spool"
    left = sorted(p.name for p in spool.glob("*") if p.is_file())
    assert not [n for n in left if n.endswith((".lp", ".tmp"))], f"left in the spool: {left}"
    assert rejected_lines(spool) == [], rejected_lines(spool)[:3]


async def started(tmp_path, **influxd_kwargs) -> ManagedInfluxd:
    db = ManagedInfluxd(tmp_path / "influx", port=free_port(), **influxd_kwargs)
    await db.start()
    return db


# -- the matrix ------------------------------------------------------------------------------
async def test_fault_credentials_refused(tmp_path):
    """Row "credentials refused": the service user's password changes for 6 s, then is restored."""
    db = await started(tmp_path, auth_enabled=True)
    admin = ("admin", "admin-pw")
    try:
        admin_query(db.url, "CREATE USER admin WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES")
        admin_query(db.url, "CREATE USER rigdaq WITH PASSWORD 'rigdaq-pw' WITH ALL PRIVILEGES", admin)
        service = Service(press_settings(tmp_path, db.url, DB, username="rigdaq", password="rigdaq-pw"))
        try:
            await service.start()
            await asyncio.sleep(3.0)
            async with storage_health(service) as seen:
                await asyncio.to_thread(admin_query, db.url, "SET PASSWORD FOR \"rigdaq\" = 'other'", admin)
                await asyncio.sleep(6.0)
                await asyncio.to_thread(admin_query, db.url, "SET PASSWORD FOR \"rigdaq\" = 'rigdaq-pw'",
                                        admin)
                await settle(service)
        finally:
            await service.stop()
        assert_nothing_lost(account(db.url, DB, service, admin))
        assert_fault_reported(stored_events(db.url, DB, admin), seen, cause=r"\b40[13]\b")
        assert_spool_empty(service)
    finally:
        db.stop()


async def test_fault_body_too_large(tmp_path):
    """Row "body too large": max-body-size 100 kB, smaller than one 0.2 s commit of the amplifier."""
    db = await started(tmp_path, max_body_size=100_000)
    try:
        admin_query(db.url, "CREATE DATABASE probe")
        big = httpx.post(f"{db.url}/write", params={"db": "probe"}, content=b"p v=1 1\n" * 13_000)
        assert big.status_code == 413, (big.status_code, big.text)  # the limit is real
        service = Service(press_settings(tmp_path, db.url, DB))
        try:
            await service.start()
            await asyncio.sleep(6.0)
            await settle(service, 15.0)
        finally:
            await service.stop()
        acct = account(db.url, DB, service)
        assert_nothing_lost(acct)
        assert acct["press01_amp"]["stored"] > 30_000
        storage = service.health()["storage"]
        assert storage.get("split_requests", 0) > 0, f"no batch was ever split after a 413: {storage}"
        assert_spool_empty(service)
    finally:
        db.stop()


@pytest.mark.parametrize("same_commit", [False, True], ids=["conflict-with-stored", "conflict-in-one-batch"])
async def test_fault_partial_write(tmp_path, same_commit):
    """Row "partial write": a field whose type changes mid-run; only that line is set aside."""
    db = await started(tmp_path)
    try:
        service = Service(press_settings(tmp_path, db.url, DB))
        try:
            await service.start()
            await asyncio.sleep(2.0)
            service.bus.publish(Event("note", "x", fields={"value": 1.5}))
            if not same_commit:  # let the float be stored, then send a string into the same field
                for _ in range(50):
                    await asyncio.sleep(0.2)
                    if influxql(db.url, DB, "SELECT * FROM events WHERE kind = 'note'"):
                        break
                else:
                    pytest.fail("the first note never reached InfluxDB")
            service.bus.publish(Event("note", "y", fields={"value": "text"}))
            await asyncio.sleep(3.0)  # samples keep flowing in the batches after the refusal
            await settle(service, 10.0)
        finally:
            await service.stop()
        assert_nothing_lost(account(db.url, DB, service))
        rejected = rejected_lines(service.settings.data_dir / "spool")
        assert len(rejected) == 1 and b"kind=note" in rejected[0], rejected[:5]
        notes = [e["message"] for e in influxql(db.url, DB, "SELECT message FROM events WHERE kind = 'note'")]
        assert len(notes) == 1, notes
        assert f'message="{notes[0]}"'.encode() not in rejected[0]  # one stored, the other set aside
        if not same_commit:
            assert notes == ["x"] and b'value="text"' in rejected[0]
    finally:
        db.stop()


async def test_fault_influxd_down_at_start(tmp_path):
    """Row "database missing / influxd down at start": the service starts first, influxd 5 s later."""
    db = ManagedInfluxd(tmp_path / "influx", port=free_port())  # not running yet: nothing on the port
    try:
        service = Service(press_settings(tmp_path, db.url, DB))
        try:
            await service.start()
            async with storage_health(service) as seen:
                await asyncio.sleep(5.0)
                await db.start()
                await settle(service)
        finally:
            await service.stop()
        assert DB in [r["name"] for r in influxql(db.url, "", "SHOW DATABASES")]
        assert_nothing_lost(account(db.url, DB, service))
        assert_fault_reported(stored_events(db.url, DB), seen)
        assert_spool_empty(service)
    finally:
        db.stop()


async def _influxd_fault(tmp_path, fault, **storage) -> None:
    """Run the press for 3 s, apply ``fault(db)`` (a coroutine), settle, stop; then the accounts."""
    db = await started(tmp_path)
    try:
        service = Service(press_settings(tmp_path, db.url, DB, **storage))
        try:
            await service.start()
            await asyncio.sleep(3.0)
            async with storage_health(service) as seen:
                await fault(db)
                await settle(service)
        finally:
            if db.paused:
                db.resume()
            await service.stop()
        assert_nothing_lost(account(db.url, DB, service))
        assert_fault_reported(stored_events(db.url, DB), seen)
        assert_spool_empty(service)
    finally:
        db.stop()


async def test_fault_influxd_killed_and_restarted(tmp_path):
    """Row "influxd killed and restarted": SIGKILL, 4 s down, restarted on the same data."""
    async def fault(db):
        db.kill()
        await asyncio.sleep(4.0)
        await db.start()

    await _influxd_fault(tmp_path, fault)


async def test_fault_influxd_paused(tmp_path):
    """Row "influxd stopped (SIGSTOP)": 5 s frozen, requests time out after 1 s, then SIGCONT."""
    async def fault(db):
        db.pause()
        await asyncio.sleep(5.0)
        db.resume()

    await _influxd_fault(tmp_path, fault, timeout_s=1.0)


async def test_fault_spool_disk_full(tmp_path):
    """Row "spool disk full": the spool on a 3 MB tmpfs fills while influxd is frozen for 8 s."""
    db = await started(tmp_path)
    try:
        settings = press_settings(tmp_path, db.url, DB, timeout_s=1.0)
        with tmpfs(settings.data_dir / "spool", "3m"):
            service = Service(settings)
            try:
                await service.start()
                await asyncio.sleep(2.0)
                async with storage_health(service) as seen:
                    db.pause()  # ≈1.5 MB/s of amplifier lines: the 3 MB are full after ≈2 s
                    await asyncio.sleep(8.0)
                    db.resume()
                    await settle(service, 40.0)
            finally:
                if db.paused:
                    db.resume()
                await service.stop()
            acct = account(db.url, DB, service)
            assert_spool_empty(service)
        assert_nothing_lost(acct)
        events = stored_events(db.url, DB)
        assert_fault_reported(events, seen)
        assert any(e.get("kind") in ("storage_fault", "spool_fault")
                   and re.search(r"No space left|ENOSPC|Errno 28", e.get("message") or "")
                   for e in events), \
            f"no event reports the failed spool write: {[(e.get('kind'), e.get('message')) for e in events]}"
    finally:
        db.stop()


def _filed(path) -> dict[int, int]:
    """t_ns → cycle_no of the press's cycles in the catalogue (read while a writer may hold the lock)."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as con:
        rows = con.execute("SELECT t_ns, cycle_no FROM cycles WHERE rig = 'press-01'").fetchall()
    assert len(rows) == len({t for t, _ in rows}), f"a cycle filed twice: {rows}"
    return dict(rows)


def _seen(sub, into: dict[int, int]) -> dict[int, int]:
    """Drain a CycleResult subscription into t_ns → cycle_no."""
    while (c := sub.get_nowait()) is not None:
        into[c.t_ns] = c.cycle_no
    return into


async def test_fault_catalogue_locked_at_stop(tmp_path):
    """Row "catalogue database unavailable at stop": SQLite locked while a blow waits to be filed."""
    db = await started(tmp_path)
    try:
        settings = press_settings(tmp_path, db.url, DB)
        path = settings.data_dir / "catalogue.sqlite"
        first = Service(settings)
        cycles1 = first.bus.subscribe("test-cycles", maxsize=10_000, accepts=(CycleResult,))
        seen1: dict[int, int] = {}
        lock = None
        try:
            await first.start()
            await asyncio.sleep(2.0)
            lock = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            await asyncio.to_thread(lock.execute, "BEGIN EXCLUSIVE")  # no writer gets in from now
            before = set(_seen(cycles1, seen1))
            for _ in range(100):  # a blow analysed while the catalogue is locked (one every ≈6 s)
                await asyncio.sleep(0.2)
                if set(_seen(cycles1, seen1)) - before:
                    break
            else:
                pytest.fail(f"no blow was analysed within 20 s (seen before the lock: {len(before)})")
            await asyncio.sleep(0.5)
        finally:
            await first.stop()
            stopped_ns = time.time_ns()
            unfiled = set(_seen(cycles1, seen1)) - set(await asyncio.to_thread(_filed, path))
            if lock is not None:
                with contextlib.suppress(sqlite3.Error):
                    lock.execute("ROLLBACK")
                lock.close()
        assert unfiled, "setup: every analysed blow was filed before the stop; the lock came too late"

        second = Service(settings)
        cycles2 = second.bus.subscribe("test-cycles", maxsize=10_000, accepts=(CycleResult,))
        seen2: dict[int, int] = {}
        try:
            await second.start()
            for _ in range(50):  # the first run's leftovers are filed at start
                await asyncio.sleep(0.2)
                if set(seen1) <= set(await asyncio.to_thread(_filed, path)):
                    break
            await asyncio.sleep(1.0)
        finally:
            await second.stop()
        _seen(cycles2, seen2)

        filed = _filed(path)
        assert set(seen1) - set(filed) == set(), \
            f"analysed by the first run but never filed: {sorted(set(seen1) - set(filed))}"
        assert set(filed) == set(seen1) | set(seen2), sorted(set(filed) ^ (set(seen1) | set(seen2)))
        assert {t: filed[t] for t in seen1} == seen1, "a leftover cycle was filed under another number"
        assert len(set(filed.values())) == len(filed), f"a cycle number used twice: {sorted(filed.values())}"
        events = stored_events(db.url, DB)
        assert "catalogue_fault" in kinds(events), sorted(map(str, kinds(events)))
        assert_nothing_lost(account(db.url, DB, first, until_ns=stopped_ns))
        assert_spool_empty(second)
    finally:
        db.stop()
