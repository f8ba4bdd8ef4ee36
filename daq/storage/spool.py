"""A crash-safe spool: every batch of line protocol is on disk before it is sent.

Each batch is one file ``<sequence>-<lines>.lp``, written to a ``.tmp`` name, fsync'd,
renamed and the directory fsync'd, so after a crash a file either holds a whole batch
or does not exist. Batches are sent oldest first and deleted only once InfluxDB has
confirmed them; after a restart whatever is left is sent first, in order. Sending a
batch twice is harmless: the same series and timestamps overwrite themselves.

The spool is bounded. Above ``warn_fraction`` of the bound the caller is told once
(an alarm event); at the bound the policy applies — ``drop_oldest`` deletes the oldest
batches, ``drop_newest`` refuses the new one — and the caller is told exactly how many
lines went, so no loss is ever silent.

When the disk refuses a batch (full, I/O error, read-only) the batch is held in memory
instead, in its place in the sequence, and sent from there; the spool reports itself
unhealthy until a write succeeds again, which also moves the held batches onto disk.
Memory is bounded too (``memory_max_bytes``): past it the oldest held batches are
dropped and counted, like the disk bound.

Lines InfluxDB will never accept are appended to ``rejected/<sequence>.lp`` for
inspection rather than deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# a sample line's measurement (unescaped names only: device names are identifiers) and counter
_SAMPLE = re.compile(rb"^([A-Za-z0-9_.-]+),[^\n]*?[ ,]sample=(\d+)i[ \n]", re.M)


@dataclass
class SpoolLoss:
    """Lines a bound forced out, and why; ``by_device`` attributes sample lines where known."""

    lines: int
    files: int
    reason: str
    by_device: dict[str, int] = field(default_factory=dict)
    # losses the dropped batches were reporting (their data_lost events went with them)
    reported: dict[str, int] = field(default_factory=dict)


@dataclass
class Batch:
    """One batch of line protocol: on disk (``path``) or, while the disk refuses it, in memory."""

    seq: int
    lines: int
    size: int
    path: Path | None = None
    body: bytes | None = None
    counts: dict[str, int] = field(default_factory=dict)  # sample lines per device, when known
    reports: dict[str, int] = field(default_factory=dict)  # lines its data_lost events report, per device
    counters: dict[str, int] = field(default_factory=dict)  # last sample counter per stream, up to this batch

    @property
    def in_memory(self) -> bool:
        """True while the batch exists only in memory."""
        return self.path is None


class Spool:
    """A directory of line-protocol batch files, with an in-memory fallback."""

    def __init__(self, directory: str | Path, max_bytes: int, policy: str = "drop_oldest",
                 warn_fraction: float = 0.8, memory_max_bytes: int = 256 * 1024 * 1024):
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.memory_max_bytes = memory_max_bytes
        self.policy = policy
        self.warn_fraction = warn_fraction
        self.batches: list[Batch] = []
        self.bytes = 0          # on disk
        self.memory_bytes = 0   # held in memory
        self.lines = 0          # waiting, wherever they are
        self.high = False
        self.disk_error = ""    # why the last disk write failed; "" while the disk works
        self._seq = 0
        self._lock = threading.Lock()  # append runs in a worker thread, sending on the event loop
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._recover()
        except OSError as e:
            self.disk_error = f"{type(e).__name__}: {e}"
            log.error("spool: cannot use %s (%s); batches are held in memory until it works", self.dir, e)

    @property
    def files(self) -> list[Batch]:
        """Batches waiting (on disk or in memory), oldest first."""
        return self.batches

    @staticmethod
    def _parse_name(path: Path) -> tuple[int, int]:
        try:
            seq, lines = path.stem.split("-")
            return int(seq), int(lines)
        except ValueError:
            return -1, 0

    def _recover(self) -> None:
        for tmp in self.dir.glob("*.tmp"):  # never acknowledged: a crash mid-write
            tmp.unlink(missing_ok=True)
        for p in sorted(self.dir.glob("*.lp")):
            seq, lines = self._parse_name(p)
            if seq < 0:
                log.warning("spool: ignoring %s (not a batch name)", p)
                continue
            size = p.stat().st_size
            self.batches.append(Batch(seq, lines, size, path=p))
            self.bytes += size
            self.lines += lines
        if self.batches:
            self._seq = self.batches[-1].seq + 1
            log.info("spool: %d unsent batches (%d lines) from an earlier run will be sent first",
                     len(self.batches), self.lines)

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_file(self, seq: int, lines: int, body: bytes) -> Path:
        final = self.dir / f"{seq:012d}-{lines}.lp"
        tmp = final.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.rename(final)
            self._fsync_dir()
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        return final

    def _forget(self, batch: Batch) -> None:
        """Bookkeeping only (under the lock); the caller deletes the file."""
        self.batches.remove(batch)
        self.lines -= batch.lines
        if batch.in_memory:
            self.memory_bytes -= batch.size
        else:
            self.bytes -= batch.size

    @staticmethod
    def _unlink(victims: list[Batch]) -> None:
        for b in victims:
            if b.path is not None:
                with contextlib.suppress(OSError):
                    b.path.unlink()

    def _dropped(self, victims: list[Batch], reason: str) -> SpoolLoss:
        by_device: dict[str, int] = {}
        reported: dict[str, int] = {}
        for b in victims:
            for dev, n in b.counts.items():
                by_device[dev] = by_device.get(dev, 0) + n
            for dev, n in b.reports.items():
                reported[dev] = reported.get(dev, 0) + n
            self._forget(b)
        return SpoolLoss(sum(b.lines for b in victims), len(victims), reason, by_device, reported)

    def _oldest_while(self, over, on_disk: bool) -> list[Batch]:
        victims, freed = [], 0
        for b in self.batches:
            if not over(freed):
                break
            if b.in_memory != on_disk:
                victims.append(b)
                freed += b.size
        return victims

    def append(self, body: bytes, lines: int, counts: dict[str, int] | None = None,
               reports: dict[str, int] | None = None, counters: dict[str, int] | None = None) -> list[SpoolLoss]:
        """Put a batch on disk (durably), or in memory while the disk refuses it.

        Returns what the bounds forced out (empty when nothing was lost). Never raises
        for a disk fault: ``disk_error`` says what went wrong.
        """
        losses: list[SpoolLoss] = []
        victims: list[Batch] = []
        batch = Batch(0, lines, len(body), counts=dict(counts or {}), reports=dict(reports or {}),
                      counters=dict(counters or {}))
        with self._lock:
            if self.bytes + len(body) > self.max_bytes:
                reason = f"spool full ({self.max_bytes / 1e6:.0f} MB)"
                if self.policy == "drop_newest":
                    return [SpoolLoss(lines, 1, f"{reason}: new batch refused", dict(batch.counts),
                                      dict(batch.reports))]
                victims = self._oldest_while(lambda freed: self.bytes - freed + len(body) > self.max_bytes, True)
                if victims:
                    losses.append(self._dropped(victims, f"{reason}: oldest batches deleted"))
            batch.seq = self._seq
            self._seq += 1
        self._unlink(victims)
        try:
            path = self._write_file(batch.seq, lines, body)
        except OSError as e:
            first = not self.disk_error
            self.disk_error = f"{type(e).__name__}: {e}"
            if first:
                log.error("spool: cannot write to %s (%s): holding batches in memory", self.dir, self.disk_error)
            batch.body = body
            with self._lock:
                self.batches.append(batch)
                self.memory_bytes += batch.size
                self.lines += lines
                if self.memory_bytes > self.memory_max_bytes:
                    victims = self._oldest_while(lambda freed: self.memory_bytes - freed > self.memory_max_bytes,
                                                 False)
                    losses.append(self._dropped(
                        victims, f"spool cannot write to disk ({self.disk_error}) and its memory buffer "
                                 f"({self.memory_max_bytes / 1e6:.0f} MB) is full: oldest held batches dropped"))
            return losses
        with self._lock:
            batch.path = path
            self.batches.append(batch)
            self.bytes += batch.size
            self.lines += lines
        if self.disk_error:
            self._persist_held()
        return losses

    def _persist_held(self) -> None:
        """The disk works again: move batches held in memory onto it, oldest first."""
        with self._lock:
            held = [b for b in self.batches if b.in_memory]
        for b in held:
            try:
                path = self._write_file(b.seq, b.lines, b.body)
            except OSError as e:
                self.disk_error = f"{type(e).__name__}: {e}"
                return
            with self._lock:
                if b in self.batches:  # not sent meanwhile
                    b.path = path
                    self.memory_bytes -= b.size
                    self.bytes += b.size
                    b.body = None
                else:
                    self._unlink([Batch(b.seq, 0, 0, path=path)])
        log.info("spool: the disk takes batches again; nothing held in memory")
        self.disk_error = ""

    def last_counters(self) -> dict[str, int]:
        """Per measurement, the highest ``sample`` counter in the newest batch on disk.

        The service state records the counters of each durable commit just after the
        batch is on disk; a crash in between leaves the newest batch ahead of it.
        """
        with self._lock:
            last = next((b for b in reversed(self.batches) if not b.in_memory), None)
        if last is None:
            return {}
        try:
            body = last.path.read_bytes()
        except OSError:
            return {}
        out: dict[str, int] = {}
        for m in _SAMPLE.finditer(body):
            name, value = m.group(1).decode(errors="replace"), int(m.group(2))
            if value > out.get(name, -1):
                out[name] = value
        return out

    @property
    def last_seq(self) -> int:
        """The number of the newest batch appended (or recovered); -1 before any."""
        return self._seq - 1

    def head(self, max_bytes: int, up_to: int | None = None) -> list[Batch]:
        """The oldest batches whose sizes add up to at most ``max_bytes`` (at least one).

        None numbered above ``up_to``: the writer holds a batch back until its counters are recorded.
        """
        out, total = [], 0
        with self._lock:
            for b in self.batches:
                if (out and total + b.size > max_bytes) or (up_to is not None and b.seq > up_to):
                    break
                out.append(b)
                total += b.size
        return out

    def oldest(self) -> Batch | None:
        """The next batch to send."""
        return self.batches[0] if self.batches else None

    def read(self, batch: Batch) -> bytes:
        """The batch's line protocol (raises OSError if its file cannot be read)."""
        body = batch.body
        return body if body is not None else batch.path.read_bytes()

    def remove(self, batch: Batch) -> None:
        """Forget a batch (sent, or set aside)."""
        with self._lock:
            if batch not in self.batches:
                return
            self._forget(batch)
            path = batch.path
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()

    def reject(self, batch: Batch, bad: bytes) -> Path:
        """Keep lines InfluxDB will never accept in ``rejected/``; returns the file."""
        target = self.dir / "rejected" / f"{batch.seq:012d}.lp"
        target.parent.mkdir(exist_ok=True)
        with open(target, "ab") as fh:
            fh.write(bad if bad.endswith(b"\n") else bad + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return target

    def level_change(self) -> bool | None:
        """Alarm transitions of the fill level.

        True on crossing ``warn_fraction`` of the bound, False on falling back below ¾
        of that level, else None.
        """
        fill = self.bytes / self.max_bytes
        if not self.high and fill >= self.warn_fraction:
            self.high = True
            return True
        if self.high and fill < 0.75 * self.warn_fraction:
            self.high = False
            return False
        return None
