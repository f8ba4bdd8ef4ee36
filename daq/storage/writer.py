"""The storage writer: bus → line protocol → crash-safe spool → InfluxDB.

Three loops, so a slow or dead database never backs up the bus:

* ``consume`` turns every block and event into line protocol as soon as it arrives;
* ``commit`` puts what has gathered on disk every ``commit_interval_s`` (fsync'd, in a
  worker thread so acquisition never waits for the disk);
* ``send`` posts spooled batches oldest first and deletes each once InfluxDB confirms
  it, retrying with capped backoff while InfluxDB is unreachable.

On shutdown everything gathered is committed; what could not be sent stays in the
spool and goes first at the next start. Only the last ``commit_interval_s`` of data can
be lost to a ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from daq.bus import Subscription, Tagged
from daq.cycles import CycleResult
from daq.events import Event
from daq.storage.influx_v1 import InfluxError
from daq.storage.lineproto import block_bytes, cycle_line, event_line
from daq.storage.spool import Spool, SpoolLoss
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
    empty_samples: int = 0
    last_error: str = ""
    last_write_ns: int = 0
    last_latency_s: float = 0.0
    write_seconds_total: float = 0.0


class StorageWriter:
    """Consumes a bus subscription and keeps InfluxDB up to date through the spool.

    ``client`` is anything with ``async write(body: bytes)`` raising
    :class:`InfluxError` (the v1 and v2 clients both do).
    """

    def __init__(self, client, sub: Subscription, spool: Spool, commit_interval_s: float = 0.2,
                 run_tags: dict[str, str] | None = None, on_commit=None):
        self.client = client
        self.sub = sub
        self.spool = spool
        self.commit_interval_s = commit_interval_s
        self.run_tags = run_tags if run_tags is not None else {}
        self._buf: list[bytes] = []
        self._buf_lines = 0
        self.samples_by_device: dict[str, int] = {}
        # last sample counter per streaming device: taken in, and durably on disk
        self._taken_counters: dict[str, int] = {}
        self.committed_counters: dict[str, int] = {}
        self.on_commit = on_commit  # called (in the commit thread) after each durable commit
        self.stats = WriterStats()
        self.healthy = True
        self._committed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # -- intake ------------------------------------------------------------------------
    def _take(self, item) -> None:
        if isinstance(item, Tagged):
            tags = {"rig": item.rig}
            run = self.run_tags.get(item.rig)
            if run:
                tags["run"] = run
            body, lines, empty = block_bytes(item.block.device, tags, item.block)
            n = len(item.block)
            self.stats.samples_in += n
            self.stats.empty_samples += empty
            self.samples_by_device[item.block.device] = self.samples_by_device.get(item.block.device, 0) + n
            if lines:
                self._buf.append(body)
                self._buf_lines += lines
            counter = item.block.channels.get("sample")
            if counter is not None and len(counter):
                self._taken_counters[item.block.device] = int(counter[-1])
        elif isinstance(item, Event):
            self.record(item)
        elif isinstance(item, CycleResult):
            self._buf.append(cycle_line(item).encode() + b"\n")
            self._buf_lines += 1

    def record(self, event: Event) -> None:
        """Store an event (the writer's own, or one from the bus)."""
        self._buf.append(event_line(event, self.run_tags.get(event.rig, "")).encode() + b"\n")
        self._buf_lines += 1

    async def _consume(self) -> None:
        while True:
            self._take(await self.sub.get())
            while (more := self.sub.get_nowait()) is not None:
                self._take(more)

    # -- spool -------------------------------------------------------------------------
    def _note_loss(self, loss: SpoolLoss) -> None:
        self.stats.dropped_lines += loss.lines
        msg = f"{loss.reason}: {loss.lines} lines in {loss.files} batch(es) lost"
        log.error("storage: %s", msg)
        self._buf.append(event_line(Event("data_lost", msg, level="error",
                                          fields={"lines": loss.lines})).encode() + b"\n")
        self._buf_lines += 1

    async def commit(self) -> None:
        """Put everything gathered so far on disk."""
        if not self._buf:
            return
        body, lines = b"".join(self._buf), self._buf_lines
        self._buf, self._buf_lines = [], 0
        counters = dict(self._taken_counters)

        def durable() -> SpoolLoss | None:
            loss = self.spool.append(body, lines)
            self.committed_counters.update(counters)
            if self.on_commit is not None:
                self.on_commit(self.committed_counters)
            return loss

        loss = await asyncio.to_thread(durable)
        if loss is not None:
            self._note_loss(loss)
        level = self.spool.level_change()
        if level is True:
            msg = (f"spool above {self.spool.warn_fraction:.0%} of its {self.spool.max_bytes / 1e6:.0f} MB "
                   f"bound ({self.spool.lines} lines waiting): InfluxDB is not keeping up")
            log.warning("storage: %s", msg)
            self.record(Event("spool_high", msg, level="warning"))
        elif level is False:
            self.record(Event("spool_normal", "spool back below its alarm level"))
        self._committed.set()

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval_s)
            await self.commit()

    # -- output ------------------------------------------------------------------------
    async def _send_once(self) -> bool:
        """Send the oldest spooled batch; False when InfluxDB could not take it."""
        path = self.spool.oldest()
        if path is None:
            return True
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:  # the bound deleted it meanwhile
            self.spool.remove(path)
            return True
        lines = Spool._lines_of(path)
        t0 = time.perf_counter()
        try:
            await self.client.write(body)
        except InfluxError as e:
            self.stats.last_error = str(e)
            if e.retryable:
                if self.healthy:
                    log.warning("storage: %s; %d lines wait in the spool", e, self.spool.lines)
                    self.record(Event("storage_fault", str(e), level="warning"))
                self.healthy = False
                self.stats.retries += 1
                return False
            target = self.spool.reject(path)  # malformed data never succeeds: keep it aside
            self.stats.rejected_lines += lines
            log.error("storage: InfluxDB rejected %d lines (kept in %s): %s", lines, target, e)
            self.record(Event("storage_rejected", f"{lines} lines rejected, kept in {target}: {e}",
                              level="error", fields={"lines": lines}))
            return True
        dt = time.perf_counter() - t0
        self.spool.remove(path)
        self.stats.lines_written += lines
        self.stats.batches_written += 1
        self.stats.last_write_ns = time.time_ns()
        self.stats.last_latency_s = dt
        self.stats.write_seconds_total += dt
        if not self.healthy:
            log.info("storage: InfluxDB reachable again; sending the spool")
            self.healthy = True
            self.record(Event("storage_recovered", "InfluxDB reachable again"))
        return True

    async def _send(self) -> None:
        delay = 0.0
        while True:
            if self.spool.oldest() is None:
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
        """Start consuming, committing and sending."""
        self._tasks = [asyncio.create_task(self._consume(), name="storage-consume"),
                       asyncio.create_task(self._commit_loop(), name="storage-commit"),
                       asyncio.create_task(self._send(), name="storage-send")]

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Take what is queued, commit it, send what InfluxDB takes in time; keep the rest."""
        await cancel_and_wait(self._tasks)
        while (item := self.sub.get_nowait()) is not None:
            self._take(item)
        await self.commit()
        deadline = time.monotonic() + drain_timeout_s
        while self.spool.oldest() is not None and time.monotonic() < deadline:
            if not await self._send_once():
                await asyncio.sleep(0.5)
        await self.commit()  # events recorded while draining
        if self.spool.files:
            log.warning("storage: %d lines stay in the spool (%s) and go first at the next start",
                        self.spool.lines, self.spool.dir)
