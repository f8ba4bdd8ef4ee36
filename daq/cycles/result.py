"""What a live segmenter produces, and the bounded channel history it cuts from."""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CycleResult:
    """One analysed cycle (a blow or a test step), as stored, catalogued and shown.

    ``samples`` — (t_ns, {channel: values}) the analysis used — is archived in the
    catalogue, not written to InfluxDB. ``info`` holds what identifies the cycle
    besides its number (part and blow in part; test step and set-points).
    """

    rig: str
    cycle_no: int
    t_ns: int  # cycle start (contact start; steady window start)
    verdict: str
    metrics: dict[str, float | None]
    reasons: list[str] = field(default_factory=list)
    version: str = ""
    samples_sha256: str = ""
    run: str = ""
    kind: str = ""
    end_ns: int = 0
    info: dict[str, float | int | str] = field(default_factory=dict)
    samples: tuple[np.ndarray, dict[str, np.ndarray]] | None = field(default=None, repr=False)
    id: int | None = None  # catalogue id, once filed
    #: stable identity, made with the result: filing it again (a retry, an outbox replay, the
    #: update once its cycle time is known) updates the one catalogue row with this uid
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))


def device_time(t_ns: np.ndarray, counter: np.ndarray | None, rate_hz: float | None) -> np.ndarray:
    """A window's timestamps on the instrument's own time base.

    Host timestamps of a stream are drift-corrected, but nudged at block edges to stay
    causal; derivatives and integrals (ram speed, ψ = ∫(v − R·i) dt) must not see those
    nudges. Where the window's sample counter has no gaps, the timestamps become
    ``t_ns[0] + (counter − counter[0]) / rate``: uniform, anchored at the first host time.
    These are what the analysis uses, what is hashed and what is archived.
    """
    if rate_hz and counter is not None and len(counter) > 1 and np.all(np.diff(counter) == 1):
        return t_ns[0] + np.rint((counter - counter[0]) * (1e9 / rate_hz)).astype(np.int64)
    return t_ns


class Series:
    """A bounded (time, value) history of one channel."""

    def __init__(self, keep_s: float):
        self.keep_ns = int(keep_s * 1e9)
        self.t: deque[np.ndarray] = deque()
        self.v: deque[np.ndarray] = deque()

    def add(self, t: np.ndarray, v: np.ndarray) -> None:
        """Append a block; forget what is older than ``keep_s``."""
        self.t.append(t)
        self.v.append(np.asarray(v, dtype=np.float64))
        while len(self.t) > 1 and self.t[0][-1] < t[-1] - self.keep_ns:
            self.t.popleft()
            self.v.popleft()

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Everything kept, as (t_ns, values)."""
        if not self.t:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(self.t), np.concatenate(self.v)

    def between(self, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples with start ≤ t < end (only the blocks that overlap are joined)."""
        pick = [k for k, t in enumerate(self.t) if t[-1] >= start_ns and t[0] < end_ns]
        if not pick:
            return np.zeros(0, np.int64), np.zeros(0)
        t = np.concatenate([self.t[k] for k in pick])
        v = np.concatenate([self.v[k] for k in pick])
        sel = (t >= start_ns) & (t < end_ns)
        return t[sel], v[sel]


@dataclass
class RunArtifact:
    """A result that belongs to a run rather than one cycle (e.g. a characterisation)."""

    rig: str
    run: str
    name: str
    t_ns: int
    data: dict
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))  # stable identity: filed once, by uid


class ResultTracker:
    """Base of the live trackers: results gathered while a block is fed are returned by :meth:`feed`.

    A subclass implements ``_feed(rig, block)`` and appends to ``self.results`` what the block
    completed (cycle results, run artifacts, events); the segmentation stage publishes them.
    ``run`` is the active run's id ('' for none), set by the segmentation stage at the run
    events; a different id calls :meth:`_new_run`, where a subclass starts its per-run state.
    """

    results: list
    _run: str = ""

    @property
    def run(self) -> str:
        """The active run's id ('' for none)."""
        return self._run

    @run.setter
    def run(self, value: str) -> None:
        if value != self._run:
            self._new_run()
        self._run = value

    def _new_run(self) -> None:
        """Per-run state starts afresh (a subclass's hook)."""

    def feed(self, rig: str, block) -> list:
        """Take a block of the rig; returns what it completed, oldest first."""
        self._feed(rig, block)
        out, self.results = self.results, []
        return out

    def _feed(self, rig: str, block) -> None:
        raise NotImplementedError
