"""What the service keeps on disk between runs: its crash state and its stream clocks.

* :class:`CrashState` (``DATA_DIR/service.state``): a heartbeat every 0.5 s with, per
  stream, the last sample counter safely on disk. A clean stop removes it, so finding it
  at start means the previous run crashed or was killed: how long ago, and where each
  stream's count stood (gaps across the crash are counted from there).
* :class:`ClockStore` (``DATA_DIR/stream_clocks.json``): each stream clock's drift
  estimate, kept across restarts clean or not once it was fitted over ``baseline_s``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path


class CrashState:
    """The heartbeat file: present while the service runs, removed by a clean stop."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()  # heartbeat and commit thread both write it

    def previous(self) -> dict | None:
        """The state a previous run left behind (it did not stop cleanly), or None."""
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def write(self, counters: Callable[[], dict[str, int]]) -> None:
        """Heartbeat plus, per stream, the last sample counter that is safely on disk.

        ``counters`` is asked under the lock: the heartbeat and the commit thread both write,
        and a copy taken before the other's write could replace its newer counters. That
        leaves the file behind what InfluxDB holds, and a kill -9 just then makes the restart
        count stored samples as missing.
        """
        with self._lock:
            tmp = self.path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_text(json.dumps({"pid": os.getpid(), "heartbeat_ns": time.time_ns(), "counters": counters()}))
            tmp.replace(self.path)

    def clear(self) -> None:
        """A clean stop."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class ClockStore:
    """Each stream clock's drift estimate, by device, kept across restarts."""

    def __init__(self, path: Path, baseline_s: float = 20.0):
        self.path = path
        self.baseline_s = baseline_s  # an estimate is kept once fitted over at least this long
        self.saved: dict[str, dict] = {}

    def load(self) -> dict[str, dict]:
        """What was kept (empty if nothing, or unreadable)."""
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            saved = {}
        self.saved = saved if isinstance(saved, dict) else {}
        return self.saved

    def save(self, acquisitions: Iterable) -> None:
        """Keep every acquisition's estimate fitted over ``baseline_s`` (``clock_state()``)."""
        states = dict(self.saved)  # a short run's rough estimate does not replace a good one
        for a in acquisitions:
            if (st := a.clock_state()) is not None and st.get("baseline_s", 0.0) >= self.baseline_s:
                states[a.status.device] = st
        if not states:
            return
        self.saved = states
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(states))
        tmp.replace(self.path)
