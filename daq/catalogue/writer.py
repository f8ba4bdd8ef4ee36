"""The catalogue writer: files cycles and artifacts from the bus on the catalogue's own thread."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import OperationalError

from daq.bus import Subscription
from daq.catalogue.outbox import Outbox
from daq.catalogue.store import Catalogue
from daq.cycles import CycleResult, RunArtifact

log = logging.getLogger(__name__)


class CatalogueWriter:
    """Files cycles and artifacts from the bus, on the catalogue's own thread.

    While the database is unavailable (locked, full, unreachable: ``OperationalError``)
    items go to an on-disk :class:`~daq.catalogue.outbox.Outbox` in order and are filed from there,
    oldest first, once it is back; at stop whatever cannot be filed stays there and is
    filed at the next start. A kill -9 during an outage loses nothing that reached the
    outbox. An item the database refuses for itself is logged, reported and skipped.
    Filing an item twice (a retry after a crash, an outbox replay) updates the same row: items
    are filed by their ``uid``, which the outbox keeps with them.
    """

    def __init__(self, catalogue: Catalogue, sub: Subscription, archive_max_bytes: int | None = None,
                 on_event=None, outbox: Outbox | None = None):
        self.catalogue = catalogue
        self.sub = sub
        self.archive_max_bytes = archive_max_bytes
        self.on_event = on_event  # called with (kind, message, level) for the event log
        self.outbox = outbox
        self.pruned = 0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalogue")
        self.filed = 0
        self.errors = 0
        self.last_error = ""
        self._current = None  # the item being filed (kept for drain() if we are cancelled meanwhile)

    async def call(self, fn, *args, **kwargs):
        """Run a catalogue call on its thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    def max_cycle_no(self, rig: str) -> int:
        """The highest cycle number of ``rig`` filed or waiting in the outbox (blocking)."""
        waiting = [c.cycle_no for c in (self.outbox.items() if self.outbox else [])
                   if isinstance(c, CycleResult) and c.rig == rig]
        return max([self.catalogue.max_cycle_no(rig), *waiting])

    async def run(self) -> None:
        """File what an earlier run left in the outbox, then every item as it comes, in order."""
        delay = 0.5
        while True:
            if self.outbox is not None and len(self.outbox):
                if await self._file_from_outbox():
                    delay = 0.5
                    continue
                self._keep_queue()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            item = self._current = await self.sub.get()
            if await self._file(item):
                self._current = None
                delay = 0.5
            elif self.outbox is not None:
                self.outbox.put(item)  # durable while the database is away
                self._current = None
            else:
                while not await self._file(item):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                self._current = None

    def _keep_queue(self) -> None:
        """While the database is away, move what the bus queued onto disk (in order)."""
        while (item := self.sub.get_nowait()) is not None:
            self.outbox.put(item)

    async def _file_from_outbox(self) -> bool:
        """File the oldest outbox item; False if the database is still unavailable."""
        got = self.outbox.peek()
        if got is None:
            return True
        path, item = got
        if not await self._file(item):
            return False
        self.outbox.remove(path)
        if not len(self.outbox):
            log.info("catalogue: outbox filed")
        return True

    def _event(self, kind: str, message: str, level: str) -> None:
        if self.on_event is not None:
            self.on_event(kind, message, level)

    async def _file(self, item) -> bool:
        """File one item; False if the database is unavailable (try again later)."""
        try:
            if isinstance(item, CycleResult):
                item.id = await self.call(self.catalogue.file_cycle, item)
            elif isinstance(item, RunArtifact):
                await self.call(self.catalogue.file_artifact, item)
            elif hasattr(item, "file_into"):  # records that file themselves (alarms: daq.alarms.stage)
                await self.call(item.file_into, self.catalogue)
            else:
                return True
        except OperationalError as e:
            self.errors += 1
            first = not self.last_error
            self.last_error = f"{type(e).__name__}: {e}"
            log.error("catalogue: cannot file %s (will retry): %s", type(item).__name__, self.last_error)
            if first:
                where = f", items wait in {self.outbox.dir}" if self.outbox is not None else ""
                self._event("catalogue_fault", f"catalogue unavailable, filing waits{where}: {self.last_error}",
                            "error")
            return False
        except Exception as e:  # refused for itself: the next cycle must still be filed
            self.errors += 1
            self.last_error = f"{type(e).__name__}: {e}"
            log.error("catalogue: cannot file %s: %s", type(item).__name__, self.last_error)
            self._event("catalogue_refused", f"a {type(item).__name__} was not filed: {self.last_error}",
                        "error")
            return True
        if self.last_error:
            self._event("catalogue_recovered", "catalogue filing works again", "info")
        self.filed += 1
        self.last_error = ""  # health is degraded only while filing fails
        if self.archive_max_bytes and self.filed % 20 == 0:
            await self._prune()
        return True

    async def _prune(self) -> None:
        try:
            gone = await self.call(self.catalogue.prune_archive, self.archive_max_bytes)
        except Exception as e:  # the bound is kept at a later filing; filing itself goes on
            log.error("catalogue: cannot prune the archive (will try again): %s: %s", type(e).__name__, e)
            return
        if gone:
            self.pruned += gone
            msg = (f"archive above {self.archive_max_bytes / 1e6:.0f} MB: samples of the {gone} oldest "
                   "cycle(s) deleted (their results and hashes stay)")
            log.warning("catalogue: %s", msg)
            self._event("archive_pruned", msg, "warning")

    async def drain(self) -> None:
        """At stop: file what is still queued; what cannot be filed now stays in the outbox."""
        pending = [] if self._current is None else [self._current]
        self._current = None
        while (item := self.sub.get_nowait()) is not None:
            pending.append(item)
        if self.outbox is not None and len(self.outbox):
            while len(self.outbox) and await self._file_from_outbox():
                pass
        for i, item in enumerate(pending):
            if (self.outbox is not None and len(self.outbox)) or not await self._file(item):
                if self.outbox is None:
                    log.error("catalogue: %d item(s) could not be filed at stop and are lost (no outbox)",
                              len(pending) - i)
                    return
                for rest in pending[i:]:
                    self.outbox.put(rest)
                log.warning("catalogue: %d item(s) wait in %s and are filed at the next start",
                            len(self.outbox), self.outbox.dir)
                return

    def close(self) -> None:
        """Stop the thread."""
        self.executor.shutdown(wait=True)
