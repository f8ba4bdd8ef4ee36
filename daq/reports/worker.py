"""Certificates rendered in a process of their own, never in the acquisition process's interpreter.

A production-length run's certificate (tens of thousands of cycles) takes seconds of pure
Python (building the content, laying out the PDF); done in the service's process it would
hold the GIL for those seconds and stall acquisition, the live feed and every other API call.
So :class:`ReportWorker` hands it to a worker process (a spawned
:class:`~concurrent.futures.ProcessPoolExecutor` of one process, started on the first report
and kept for the next): the worker opens the catalogue itself by its URL, builds the report
and writes the rendering into a file in the system's temporary directory; the caller gets the
file's path and what the response headers need, and streams the file. The worker process is
replaced if it dies; :meth:`ReportWorker.shutdown` (also at exit) ends it.

:func:`render_report` is the one function both the worker and ``daq report`` (in its own
process already) run.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing
import os
import resource
import tempfile
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from daq.catalogue import Catalogue
from daq.reports.certificate import WRITE, ReportError, build_report

_catalogues: dict[str, Catalogue] = {}  # in the worker: one open catalogue per URL, kept between reports


@dataclass
class Rendered:
    """A rendered certificate: the file it is in (the caller deletes it) and what identifies it."""

    path: str
    format: str
    media_type: str
    certificate_number: str
    content_sha256: str
    cycles: int
    build_s: float  # reading the catalogue and building the content
    render_s: float  # writing the format
    max_rss_kb: int  # the rendering process's peak resident set so far

    @property
    def filename(self) -> str:
        """The download's file name."""
        return f"{self.certificate_number}.{self.format}"


def render_report(url_or_catalogue, run_id: int, fmt: str, rigs: dict | None = None,
                  directory: str | None = None) -> Rendered:
    """Build a run's certificate and write it as ``fmt`` into a new file (:class:`ReportError` if no such run)."""
    write, media = WRITE[fmt]
    cat = url_or_catalogue
    if isinstance(url_or_catalogue, str):
        cat = _catalogues.get(url_or_catalogue)
        if cat is None:
            cat = _catalogues[url_or_catalogue] = Catalogue(url_or_catalogue)
    t0 = time.perf_counter()
    content = build_report(cat, run_id, rigs)
    t1 = time.perf_counter()
    fd, path = tempfile.mkstemp(prefix="rigdaq-report-", suffix=f".{fmt}", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(content, f)
    except BaseException:
        os.unlink(path)
        raise
    t2 = time.perf_counter()
    return Rendered(path, fmt, media, content["certificate_number"], content["content_sha256"],
                    content["summary"]["cycles"], t1 - t0, t2 - t1,
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _discard(fut: Future) -> None:
    if not fut.cancelled() and fut.exception() is None:
        with contextlib.suppress(OSError):
            os.unlink(fut.result().path)


def _warm() -> int:
    """Import what rendering needs (run once in a new worker, so the first report does not wait for it)."""
    import reportlab.platypus  # noqa: F401

    import daq.reports.plots  # noqa: F401  (matplotlib)

    return os.getpid()


class ReportWorker:
    """One worker process that renders certificates, started on first use (``spawn``: a fresh interpreter)."""

    def __init__(self, method: str = "spawn"):
        self.method = method
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(self.method))
            return self._pool

    def submit(self, url: str, run_id: int, fmt: str, rigs: dict | None = None) -> Future:
        """Render in the worker; a future of :class:`Rendered` (or the :class:`ReportError`)."""
        try:
            return self._executor().submit(render_report, url, run_id, fmt, rigs)
        except BrokenProcessPool:  # the worker died (killed, out of memory): a new one
            self._reset()
            return self._executor().submit(render_report, url, run_id, fmt, rigs)

    async def render(self, url: str, run_id: int, fmt: str, rigs: dict | None = None) -> Rendered:
        """:meth:`submit`, awaited; a worker that died while rendering is replaced for the next report."""
        fut = self.submit(url, run_id, fmt, rigs)
        try:
            return await asyncio.wrap_future(fut)
        except BrokenProcessPool:
            self._reset()
            raise
        except asyncio.CancelledError:  # the caller left (a client hung up): its file, when done, goes
            fut.add_done_callback(_discard)
            raise

    def warm(self) -> int:
        """Start the worker now and import the renderers there; its pid."""
        return self._executor().submit(_warm).result()

    def pid(self) -> int | None:
        """The worker process's pid (None before the first report)."""
        pool = self._pool
        procs = list(getattr(pool, "_processes", {}) or {}) if pool is not None else []
        return procs[0] if procs else None

    def _reset(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        """End the worker process (it is started again by the next report)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


#: the API's worker (``daq report`` renders in its own process)
WORKER = ReportWorker()
atexit.register(WORKER.shutdown)


__all__ = ["WORKER", "Rendered", "ReportError", "ReportWorker", "render_report"]


def worker_can_open(url: str) -> bool:
    """Whether another process can open the catalogue at ``url`` (not an in-memory SQLite one)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return not (u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:"))
