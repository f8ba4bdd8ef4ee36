"""The storage writer: bus → line protocol → batched writes to InfluxDB.

Two tasks, so that a slow or dead database never backs up the bus: ``consume`` turns
every block and event into lines as soon as it arrives; ``send`` posts batches in order
and retries with capped backoff while InfluxDB is unreachable. Lines wait in a bounded
memory buffer; if an outage outlasts it, the oldest lines are given up, counted in
``dropped_lines`` and reported as a ``data_lost`` event and an error log — never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

from daq.bus import Subscription, Tagged
from daq.events import Event
from daq.storage.influx_v1 import InfluxError, InfluxV1Client
from daq.storage.lineproto import block_lines, event_line
from daq.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass
class WriterStats:
    """Counters exposed by ``/api/health``."""

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


class StorageWriter:
    """Consumes a bus subscription and keeps InfluxDB up to date."""

    def __init__(self, client: InfluxV1Client, sub: Subscription, batch_size: int = 5000,
                 flush_interval_s: float = 1.0, max_buffered_lines: int = 2_000_000,
                 run_tags: dict[str, str] | None = None):
        self.client = client
        self.sub = sub
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_buffered_lines = max_buffered_lines
        self.run_tags = run_tags if run_tags is not None else {}
        self.pending: deque[str] = deque()
        self.stats = WriterStats()
        self.healthy = True
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # -- intake ------------------------------------------------------------------------
    def _take(self, item) -> None:
        if isinstance(item, Tagged):
            tags = {"rig": item.rig}
            run = self.run_tags.get(item.rig)
            if run:
                tags["run"] = run
            lines, empty = block_lines(item.block.device, tags, item.block)
            self.stats.samples_in += len(item.block)
            self.stats.empty_samples += empty
            self.pending.extend(lines)
        else:
            self.pending.append(event_line(item))
        if len(self.pending) >= self.batch_size:
            self._wake.set()
        self._enforce_bound()

    def record(self, event: Event) -> None:
        """Store an event of the writer's own (outage, recovery, loss)."""
        self.pending.append(event_line(event))

    def _enforce_bound(self) -> None:
        excess = len(self.pending) - self.max_buffered_lines
        if excess <= 0:
            return
        for _ in range(excess):
            self.pending.popleft()
        self.stats.dropped_lines += excess
        msg = (f"InfluxDB unreachable for too long: buffer of {self.max_buffered_lines} lines "
               f"full, {excess} oldest lines given up ({self.stats.dropped_lines} in total)")
        log.error(msg)
        self.pending.append(event_line(Event("data_lost", msg, level="error",
                                             fields={"lines": excess})))

    async def _consume(self) -> None:
        while True:
            item = await self.sub.get()
            self._take(item)
            while (more := self.sub.get_nowait()) is not None:
                self._take(more)

    # -- output ------------------------------------------------------------------------
    async def _send_once(self) -> bool:
        """Send one batch; False when InfluxDB could not take it and we should wait."""
        n = min(self.batch_size, len(self.pending))
        batch = [self.pending[i] for i in range(n)]
        body = ("\n".join(batch) + "\n").encode()
        t0 = time.perf_counter()
        try:
            await self.client.write(body)
        except InfluxError as e:
            if e.retryable:
                if self.healthy:
                    log.warning("storage: %s; keeping %d lines and retrying", e, len(self.pending))
                    self.pending.append(event_line(Event("storage_fault", str(e), level="warning")))
                self.healthy = False
                self.stats.retries += 1
                self.stats.last_error = str(e)
                return False
            # malformed data never succeeds; say what and drop that batch only
            log.error("storage: InfluxDB rejected %d lines: %s", n, e)
            self.stats.rejected_lines += n
            self.stats.last_error = str(e)
            for _ in range(n):
                self.pending.popleft()
            self.pending.append(event_line(Event("storage_rejected", f"{n} lines rejected: {e}",
                                                 level="error", fields={"lines": n})))
            return True
        for _ in range(n):
            self.pending.popleft()
        self.stats.lines_written += n
        self.stats.batches_written += 1
        self.stats.last_write_ns = time.time_ns()
        self.stats.last_latency_s = time.perf_counter() - t0
        if not self.healthy:
            log.info("storage: InfluxDB reachable again")
            self.healthy = True
            self.pending.append(event_line(Event("storage_recovered", "InfluxDB reachable again")))
        return True

    async def _send(self) -> None:
        delay = 0.0
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can turn a cancel into a timeout
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            while self.pending:
                if await self._send_once():
                    delay = 0.0
                    if len(self.pending) < self.batch_size:
                        break
                else:
                    delay = min(10.0, max(0.2, delay * 2))
                    await asyncio.sleep(delay)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start consuming and sending."""
        self._tasks = [asyncio.create_task(self._consume(), name="storage-consume"),
                       asyncio.create_task(self._send(), name="storage-send")]

    async def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Take what is still queued, try to write it all, then stop."""
        while (item := self.sub.get_nowait()) is not None:
            self._take(item)
        await cancel_and_wait(self._tasks)
        deadline = time.monotonic() + drain_timeout_s
        while self.pending and time.monotonic() < deadline:
            if not await self._send_once():
                await asyncio.sleep(0.5)
        if self.pending:
            log.error("storage: %d lines could not be written before shutdown", len(self.pending))
            self.stats.dropped_lines += len(self.pending)
