"""The storage writer: bus → line protocol → crash-safe spool → InfluxDB.

Three loops, so a slow or dead database never backs up the bus:

* ``consume`` turns every block and event into line protocol as soon as it arrives;
* ``commit`` puts what has gathered on disk every ``commit_interval_s`` (fsync'd, in a
  worker thread so acquisition never waits for the disk). When the disk refuses it
  (full, I/O error, read-only) the spool holds the batch in memory and storage is
  *unhealthy*; past the memory bound the loss is counted exactly (``data_lost``);
* ``send`` posts batches oldest first and deletes each once InfluxDB confirms it.

What InfluxDB answers decides what happens to a batch (see :class:`InfluxError`):

* unreachable, timeouts, 5xx, 404 (the database is created again), 401/403
  (credentials): the batch waits and is retried with capped backoff while storage is
  *degraded*, with a ``storage_fault`` event naming the cause, since when, and how much
  is waiting; ``storage_recovered`` when writes go through again;
* 413: the batch is sent in halves (and the size remembered for the next ones);
* 400/422 (a line InfluxDB will never accept): only the offending lines are set aside
  in ``rejected/``. A 1.x *partial write* says how many lines it dropped; the batch is
  bisected until every refused line is isolated, and the good lines are stored
  (re-sending a line InfluxDB already has is harmless: same series and time).

On shutdown everything gathered is committed; what could not be sent stays in the
spool and goes first at the next start. Only the last ``commit_interval_s`` of data can
be lost to a ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from daq.bus import Subscription, Tagged
from daq.cycles import CycleResult
from daq.cycles.stage import RUN_BEGINS, RUN_ENDS
from daq.events import Event
from daq.storage.influx_v1 import InfluxError
from daq.storage.lineproto import block_bytes, cycle_line, event_line
from daq.storage.spool import Batch, Spool, SpoolLoss
from daq.supervisor import Supervisor
from daq.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass
class WriterStats:
    """Counters for ``/api/health`` and ``/metrics``."""

    samples_in: int = 0
    lines_written: int = 0
    batches_written: int = 0
    retries: int = 0
    rejected_lines: int = 0
    dropped_lines: int = 0
    dropped_by_device: dict[str, int] = field(default_factory=dict)  # "" for events and results
    empty_samples: int = 0
    split_requests: int = 0
    last_error: str = ""
    last_write_ns: int = 0
    last_latency_s: float = 0.0
    write_seconds_total: float = 0.0


@dataclass
class Fault:
    """Why InfluxDB does not take our writes right now, and since when."""

    kind: str
    status: int
    since_ns: int
    message: str


def _clock(t_ns: int) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(t_ns / 1e9))


def _line_count(body: bytes) -> int:
    return body.count(b"\n") + (0 if body.endswith(b"\n") else 1)


def _halves(body: bytes) -> tuple[bytes, bytes] | None:
    """Split line protocol at the newline nearest its middle; None for a single line."""
    body = body.rstrip(b"\n")
    mid = len(body) // 2
    i = body.rfind(b"\n", 0, mid + 1)
    if i < 0:
        i = body.find(b"\n", mid)
    if i < 0:
        return None
    return body[: i + 1], body[i + 1:] + b"\n"


def _chunks(body: bytes, max_bytes: int) -> list[bytes]:
    """Line protocol cut at newlines into pieces of at most ``max_bytes`` (a longer line stays whole)."""
    out, start = [], 0
    while len(body) - start > max_bytes:
        end = body.rfind(b"\n", start, start + max_bytes)
        if end < start:
            end = body.find(b"\n", start + max_bytes)
            if end < 0:
                break
        out.append(body[start:end + 1])
        start = end + 1
    if start < len(body):
        out.append(body[start:])
    return out


class StorageWriter:
    """Consumes a bus subscription and keeps InfluxDB up to date through the spool.

    A size learnt from a 413 is forgotten after ``MAX_BODY_MEMORY_S`` (the limit may have
    been raised again); the next 413 teaches it anew.

    ``client`` is anything with ``async write(body: bytes)`` and
    ``async create_database(retention)`` raising :class:`InfluxError` (the v1 and v2
    clients both do).
    """

    SPOOL_SETTLE_S = 2.0
    MAX_BODY_MEMORY_S = 300.0

    def __init__(self, client, sub: Subscription, spool: Spool, commit_interval_s: float = 0.2,
                 on_commit=None, retention: str | None = None,
                 supervisor: Supervisor | None = None):
        self.client = client
        self.sub = sub
        self.spool = spool
        self.commit_interval_s = commit_interval_s
        #: rig → active run id, as the run events on the bus said (they travel with the data, in
        #: order: every block after a run's start event carries its run tag, up to its stop event)
        self.active_runs: dict[str, str] = {}
        self.retention = retention
        self.supervisor = supervisor or Supervisor()
        self._buf: list[bytes] = []
        self._buf_lines = 0
        self._buf_bytes = 0
        self.commit_max_bytes = 4 * 1024 * 1024  # commit early when this much has gathered
        self._commit_now = asyncio.Event()
        self._buf_counts: dict[str, int] = {}  # sample lines per device in the buffer
        self._buf_reports: dict[str, int] = {}  # lines the buffer's data_lost events report, per device
        self.samples_by_device: dict[str, int] = {}
        # last sample counter per streaming device: taken in, and durably on disk
        self._taken_counters: dict[str, int] = {}
        self.committed_counters: dict[str, int] = {}  # on disk
        self.confirmed_counters: dict[str, int] = {}  # confirmed by InfluxDB (held in memory or not)
        self.on_commit = on_commit  # called (in the commit thread, no arguments) after each durable commit
        # the newest batch the sender may take: a commit's batch only once on_commit has recorded its
        # counters (else it could be sent and its file removed first, and a kill -9 then leave no trace
        # of it: the restart would count its stored samples as missing); an earlier run's at once
        self._sendable_seq = spool.last_seq
        self.stats = WriterStats()
        self.fault: Fault | None = None
        self._spool_fault = False
        self._spool_fault_since = (0, "")
        self._disk_ok_since = 0.0
        self._need_database = True
        self._max_body: int | None = None  # learnt from 413s
        self._max_body_at = 0.0
        self.send_max_bytes = 2 * 1024 * 1024  # per request: a backlog goes in pieces this size
        self.send_concurrency = 2  # requests in flight while a backlog drains
        self._bus_lost_seen: dict[str, int] = {}
        self._bus_other_seen = 0
        self._committed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # -- state -------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """Storage health: ``ok``, ``degraded`` or ``unhealthy``.

        ``degraded``: InfluxDB does not take writes, they wait in the spool;
        ``unhealthy``: the spool cannot write to disk, data is held in memory.
        """
        if self.spool.disk_error:
            return "unhealthy"
        return "degraded" if self.fault is not None else "ok"

    @property
    def healthy(self) -> bool:
        """True while everything reaches disk and InfluxDB takes writes."""
        return self.state == "ok"

    # -- intake ------------------------------------------------------------------------
    def _add(self, body: bytes, lines: int) -> None:
        self._buf.append(body)
        self._buf_lines += lines
        self._buf_bytes += len(body)
        if self._buf_bytes >= self.commit_max_bytes:
            self._commit_now.set()  # a burst (catch-up after a stall): commit it without waiting

    def _take(self, item) -> None:
        try:
            self._take_one(item)
        except Exception as e:  # a bug in serialisation must cost only this item, and say so
            log.exception("storage: cannot serialise a %s", type(item).__name__)
            if isinstance(item, Tagged):
                self._lost(item.block.device, len(item.block), f"cannot serialise a block: {e!r}")
            else:
                self._lost("", 1, f"cannot serialise a {type(item).__name__}: {e!r}")

    def _take_one(self, item) -> None:
        if isinstance(item, Tagged):
            tags = {"rig": item.rig}
            run = self.active_runs.get(item.rig)
            if run:
                tags["run"] = run
            dev = item.block.device
            body, lines, empty = block_bytes(dev, tags, item.block)
            n = len(item.block)
            self.stats.samples_in += n
            self.stats.empty_samples += empty
            self.samples_by_device[dev] = self.samples_by_device.get(dev, 0) + n
            if lines:
                self._add(body, lines)
                self._buf_counts[dev] = self._buf_counts.get(dev, 0) + lines
            counter = item.block.channels.get("sample")
            if counter is not None and len(counter):
                self._taken_counters[dev] = int(counter[-1])
        elif isinstance(item, Event):
            if item.kind in RUN_BEGINS and "run_id" in item.fields:
                self.active_runs[item.rig] = str(item.fields["run_id"])
            self.record(item)
            if item.kind in RUN_ENDS:  # the stop event itself still belongs to the run
                self.active_runs.pop(item.rig, None)
        elif isinstance(item, CycleResult):
            self._add(cycle_line(item).encode() + b"\n", 1)

    def record(self, event: Event) -> None:
        """Store an event (the writer's own, or one from the bus)."""
        self._add(event_line(event, self.active_runs.get(event.rig, "")).encode() + b"\n", 1)

    def _lost(self, device: str, lines: int, reason: str, counted: bool = False) -> None:
        """Count lines that will never reach InfluxDB and record a ``data_lost`` event for them.

        ``counted``: a loss already counted whose event was itself lost (reported again).
        """
        if not counted:
            self.stats.dropped_lines += lines
            self.stats.dropped_by_device[device] = self.stats.dropped_by_device.get(device, 0) + lines
        where = f"{device}: " if device else ""
        msg = f"{where}{lines} lines lost: {reason}"
        log.error("storage: %s", msg)
        fields = {"lines": lines, "repeated": counted}
        self.record(Event("data_lost", msg, device=device, level="error", fields=fields))
        self._buf_reports[device] = self._buf_reports.get(device, 0) + lines

    def _check_bus_losses(self) -> None:
        """Blocks the bus could not queue for us (we fell behind) are lost: count them."""
        for dev, n in self.sub.lost_by_device.items():
            new = n - self._bus_lost_seen.get(dev, 0)
            if new:
                self._bus_lost_seen[dev] = n
                self._lost(dev, new, "the storage queue was full (the writer fell behind)")
        if self.sub.lost_other != self._bus_other_seen:
            new = self.sub.lost_other - self._bus_other_seen
            self._bus_other_seen = self.sub.lost_other
            self._lost("", new, "events or results dropped: the storage queue was full")

    async def _consume(self) -> None:
        while True:
            self._take(await self.sub.get())
            taken = 1
            while (more := self.sub.get_nowait()) is not None:
                self._take(more)
                taken += 1
                if taken % 64 == 0:
                    await asyncio.sleep(0)  # a long backlog: let commit and send run meanwhile
            self._check_bus_losses()

    def safe_counters(self) -> dict[str, int]:
        """Per stream, the last sample counter that is safe from a crash: on disk or in InfluxDB.

        What the service keeps in its state file, so that after a kill -9 exactly the
        samples after these are reported missing.
        """
        out = dict(self.committed_counters)
        for dev, c in list(self.confirmed_counters.items()):
            if c > out.get(dev, -1):
                out[dev] = c
        return out

    # -- spool -------------------------------------------------------------------------
    def _note_loss(self, loss: SpoolLoss) -> None:
        for dev, n in loss.reported.items():
            self._lost(dev, n, "reported earlier, but that report was lost with its batch", counted=True)
        attributed = 0
        for dev, n in loss.by_device.items():
            self._lost(dev, n, loss.reason)
            attributed += n
        if loss.lines > attributed:
            self._lost("", loss.lines - attributed, f"{loss.reason} (events, results, or batches of an earlier run)")

    async def commit(self) -> None:
        """Put everything gathered so far on disk (or, while the disk refuses it, in memory)."""
        if not self._buf:
            return
        chunks, lines, counts, reports = self._buf, self._buf_lines, self._buf_counts, self._buf_reports
        self._buf, self._buf_lines, self._buf_counts, self._buf_reports = [], 0, {}, {}
        self._buf_bytes = 0
        counters = dict(self._taken_counters)

        def durable() -> list[SpoolLoss]:
            losses = self.spool.append(b"".join(chunks), lines, counts, reports, counters)
            if not self.spool.disk_error:  # this batch and every held one are on disk
                self.committed_counters.update(counters)
                if self.on_commit is not None:
                    try:
                        self.on_commit()
                    except Exception:
                        log.exception("storage: cannot record the committed counters")
            self._sendable_seq = self.spool.last_seq
            return losses

        job = asyncio.ensure_future(asyncio.to_thread(durable))
        cancelled = False
        try:
            try:
                losses = await asyncio.shield(job)
            except asyncio.CancelledError:  # the thread goes on regardless: let it finish first
                cancelled = True
                losses = await job
        except Exception:
            # not taken: put it back in front of what arrived meanwhile, for the next commit
            self._buf[:0] = chunks
            self._buf_lines += lines
            self._buf_bytes += sum(len(c) for c in chunks)
            for mine, theirs in ((self._buf_counts, counts), (self._buf_reports, reports)):
                for dev, n in theirs.items():
                    mine[dev] = mine.get(dev, 0) + n
            raise
        self._after_commit(losses)
        if cancelled:
            raise asyncio.CancelledError

    def _after_commit(self, losses: list[SpoolLoss]) -> None:
        for loss in losses:
            self._note_loss(loss)
        self._spool_state()
        level = self.spool.level_change()
        if level is True:
            msg = (f"spool above {self.spool.warn_fraction:.0%} of its {self.spool.max_bytes / 1e6:.0f} MB "
                   f"bound ({self.spool.lines} lines waiting): InfluxDB is not keeping up")
            log.warning("storage: %s", msg)
            self.record(Event("spool_high", msg, level="warning"))
        elif level is False:
            self.record(Event("spool_normal", "spool back below its alarm level"))
        self._committed.set()

    def _spool_state(self) -> None:
        """Report the spool's disk: ``spool_fault`` at once, ``spool_recovered`` once settled.

        Recovered means the disk took every write for ``SPOOL_SETTLE_S``: a nearly full disk
        that each sent batch frees a little of would otherwise flap.
        """
        sp = self.spool
        if sp.disk_error:
            self._disk_ok_since = 0.0
        elif not self._disk_ok_since:
            self._disk_ok_since = time.monotonic()
        if sp.disk_error and not self._spool_fault:
            self._spool_fault = True
            self._spool_fault_since = (time.time_ns(), sp.disk_error)
            msg = (f"cannot write the spool in {sp.dir} ({sp.disk_error}): {sp.memory_bytes / 1e6:.1f} MB held in "
                   f"memory (bound {sp.memory_max_bytes / 1e6:.0f} MB); storage unhealthy")
            log.error("storage: %s", msg)
            self.record(Event("spool_fault", msg, level="error"))
        elif (self._spool_fault and not sp.disk_error
              and time.monotonic() - self._disk_ok_since >= self.SPOOL_SETTLE_S):
            self._spool_fault = False
            log.info("storage: the spool writes to disk again")
            since, error = self._spool_fault_since
            self.record(Event("spool_recovered", f"the spool in {sp.dir} writes to disk again after "
                              f"{(time.time_ns() - since) / 1e9:.1f} s of {error}; nothing held in memory"))

    async def _commit_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.commit_interval_s):
                    await self._commit_now.wait()
            self._commit_now.clear()
            await self.commit()

    # -- output ------------------------------------------------------------------------
    def _failed(self, e: InfluxError) -> None:
        self.stats.retries += 1
        self.stats.last_error = str(e)
        if e.kind == "no_database":
            self._need_database = True
        if self.fault is not None and (self.fault.kind, self.fault.status) == (e.kind, e.status):
            return
        since = self.fault.since_ns if self.fault is not None else time.time_ns()
        msg = f"{e} — since {_clock(since)}; {self.spool.lines} lines waiting"
        self.fault = Fault(e.kind, e.status, since, msg)
        log.warning("storage: %s", msg)
        self.record(Event("storage_fault", msg, level="warning",
                          fields={"cause": e.kind, "status": e.status, "lines_waiting": self.spool.lines}))

    def _recovered(self) -> None:
        if self.fault is None:
            return
        took = (time.time_ns() - self.fault.since_ns) / 1e9
        msg = (f"InfluxDB takes writes again after {took:.1f} s ({self.fault.kind}); "
               f"{self.spool.lines} lines waiting are being sent")
        log.info("storage: %s", msg)
        self.record(Event("storage_recovered", msg, fields={"outage_s": took}))
        self.fault = None

    async def _ensure_database(self) -> bool:
        """``CREATE DATABASE`` (and its retention policy) until it succeeds; False to retry later."""
        if not self._need_database:
            return True
        try:
            await self.client.create_database(self.retention)
        except InfluxError as e:
            if e.kind != "credentials":
                self._failed(e)
                return False
            # a user allowed to write but not to create databases: the writes will tell
            log.warning("storage: cannot create the database (%s); assuming it exists", e)
        self._need_database = False
        return True

    async def _post(self, body: bytes) -> list[bytes]:
        """Send ``body``; returns the lines InfluxDB will never accept. Raises retryable errors."""
        try:
            await self.client.write(body)
            return []
        except InfluxError as e:
            if e.kind == "too_large":
                self._max_body = min(self._max_body or len(body), max(1, len(body) // 2))
                self._max_body_at = time.monotonic()
            elif e.kind != "bad_data":
                raise
            self.stats.last_error = str(e)
            halves = _halves(body)
            if halves is None:  # one line: refused for itself
                return [body]
            if e.kind == "bad_data" and e.dropped is not None and e.dropped >= _line_count(body):
                return [ln + b"\n" for ln in body.rstrip(b"\n").split(b"\n")]
            self.stats.split_requests += 1
            return await self._post(halves[0]) + await self._post(halves[1])

    async def _deliver(self, body: bytes) -> list[bytes]:
        """Post ``body`` in pieces of at most ``send_max_bytes`` (or what a 413 taught), two at a time.

        Returns the lines InfluxDB will never accept; raises the first retryable error
        (pieces already stored are then sent again with the rest: harmless).
        """
        if self._max_body is not None and time.monotonic() - self._max_body_at > self.MAX_BODY_MEMORY_S:
            self._max_body = None  # try whole requests again
        limit = min(self.send_max_bytes, self._max_body or self.send_max_bytes)
        pieces = _chunks(body, limit) if len(body) > limit else [body]
        if len(pieces) == 1:
            return await self._post(body)
        gate = asyncio.Semaphore(self.send_concurrency)

        async def one(piece: bytes) -> list[bytes]:
            async with gate:
                return await self._post(piece)

        results = await asyncio.gather(*(one(p) for p in pieces), return_exceptions=True)
        bad: list[bytes] = []
        for r in results:
            if isinstance(r, BaseException):
                raise r
            bad += r
        return bad

    async def _send_once(self) -> bool:
        """Send the oldest spooled batches; False when InfluxDB could not take them (retry later).

        Several small batches (a backlog after an outage) go in one request of up to
        ``send_max_bytes``.
        """
        if not await self._ensure_database():
            return False
        batches = self.spool.head(self.send_max_bytes, self._sendable_seq)
        if not batches:
            return True
        try:
            body = await asyncio.to_thread(lambda: b"".join(self.spool.read(b) for b in batches))
        except OSError as e:
            if any(b not in self.spool.batches for b in batches):  # the bound deleted one meanwhile
                return True
            self.stats.last_error = f"cannot read the spool batches from {batches[0].path}: {e}"
            log.error("storage: %s", self.stats.last_error)
            return False
        t0 = time.perf_counter()
        try:
            bad = await self._deliver(body)
        except InfluxError as e:
            self._failed(e)
            return False
        dt = time.perf_counter() - t0
        if bad:
            self._set_aside(batches[0], bad)
        for b in batches:
            self.spool.remove(b)
            self.confirmed_counters.update(b.counters)  # batches go out in order
        self.stats.lines_written += sum(b.lines for b in batches) - len(bad)
        self.stats.batches_written += len(batches)
        self.stats.last_write_ns = time.time_ns()
        self.stats.last_latency_s = dt
        self.stats.write_seconds_total += dt
        self._recovered()
        return True

    def _set_aside(self, batch: Batch, bad: list[bytes]) -> None:
        try:
            target = self.spool.reject(batch, b"".join(bad))
            where = f"kept in {target}"
        except OSError as e:
            where = f"NOT kept: cannot write {self.spool.dir / 'rejected'} ({e})"
            self.stats.dropped_lines += len(bad)
        self.stats.rejected_lines += len(bad)
        first = bad[0].decode(errors="replace").strip()[:200]
        msg = f"InfluxDB will never accept {len(bad)} line(s), {where}; the first: {first}"
        log.error("storage: %s (last answer: %s)", msg, self.stats.last_error)
        self.record(Event("storage_rejected", msg, level="error", fields={"lines": len(bad)}))

    async def _send(self) -> None:
        delay = 0.0
        while True:
            oldest = self.spool.oldest()
            if (oldest is None or oldest.seq > self._sendable_seq) and not self._need_database:
                self._committed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._committed.wait()
                continue
            if await self._send_once():
                delay = 0.0
            else:
                delay = min(10.0, max(0.2, delay * 2))
                await asyncio.sleep(delay)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start consuming, committing and sending (supervised: a failing loop is restarted)."""
        self._tasks = [self.supervisor.spawn("storage-consume", self._consume),
                       self.supervisor.spawn("storage-commit", self._commit_loop),
                       self.supervisor.spawn("storage-send", self._send)]

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Take what is queued, commit it, send what InfluxDB takes in time; keep the rest."""
        await cancel_and_wait(self._tasks)
        while (item := self.sub.get_nowait()) is not None:
            self._take(item)
        self._check_bus_losses()
        deadline = time.monotonic() + drain_timeout_s
        while True:
            await self.commit()  # including events recorded while draining
            if self.spool.oldest() is None or time.monotonic() >= deadline:
                break
            if not await self._send_once():
                await asyncio.sleep(0.5)
        held = [b for b in self.spool.batches if b.in_memory]
        if held:
            lines = sum(b.lines for b in held)
            self.stats.dropped_lines += lines
            log.error("storage: %d lines held in memory are lost at exit: the spool could not write to %s (%s) "
                      "and InfluxDB did not take them in time", lines, self.spool.dir, self.spool.disk_error)
        if self.spool.batches:
            log.warning("storage: %d lines stay in the spool (%s) and go first at the next start",
                        self.spool.lines - sum(b.lines for b in held), self.spool.dir)
