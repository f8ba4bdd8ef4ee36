"""A supervisor for the service's background loops: none of them may die silently.

Every long-running loop (storage commit and send, catalogue filing, segmentation, the
live feed, acquisition) is started through :meth:`Supervisor.spawn`. When one raises,
the supervisor logs the exception with its traceback, reports a ``task_restarted``
event, and starts the loop again after a capped exponential backoff. Restarts are
counted per task for ``/metrics`` and ``/api/health``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from daq.events import Event

log = logging.getLogger(__name__)


@dataclass
class TaskStatus:
    """What ``/api/health`` shows of one supervised loop."""

    name: str
    restarts: int = 0
    last_error: str = ""
    last_restart_ns: int = 0


class Supervisor:
    """Starts loops and restarts them when they fail.

    ``on_event`` receives a ``task_restarted`` :class:`Event` per restart (the service
    publishes it on the bus, so it is stored with the other events).
    """

    def __init__(self, on_event: Callable[[Event], None] | None = None,
                 min_backoff_s: float = 0.2, max_backoff_s: float = 30.0):
        self.on_event = on_event
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.status: dict[str, TaskStatus] = {}

    def spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> asyncio.Task:
        """Run ``loop()`` as a task, forever: restarted whenever it raises or returns."""
        st = self.status.setdefault(name, TaskStatus(name))
        return asyncio.create_task(self._keep(st, loop), name=name)

    @property
    def restarts(self) -> int:
        """Restarts of all tasks together."""
        return sum(s.restarts for s in self.status.values())

    async def _keep(self, st: TaskStatus, loop: Callable[[], Awaitable[None]]) -> None:
        delay = self.min_backoff_s
        while True:
            started = time.monotonic()
            try:
                await loop()
                error = "the loop returned"
                log.error("task %s ended although it should run until stopped; restarting", st.name)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
                log.exception("task %s failed; restarting it in %.1f s", st.name, delay)
            st.restarts += 1
            st.last_error = error
            st.last_restart_ns = time.time_ns()
            if self.on_event is not None:
                try:
                    self.on_event(Event("task_restarted",
                                        f"background task {st.name} failed ({error}); restarted "
                                        f"({st.restarts} restart(s) so far)", level="error",
                                        fields={"task": st.name, "restarts": st.restarts}))
                except Exception:
                    log.exception("supervisor: cannot report the restart of %s", st.name)
            if time.monotonic() - started > 60:
                delay = self.min_backoff_s  # it ran well for a while: a fresh fault
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
