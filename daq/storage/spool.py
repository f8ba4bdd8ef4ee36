"""A crash-safe spool: every batch of line protocol is on disk before it is sent.

Each batch is one file ``<sequence>-<lines>.lp``, written to a ``.tmp`` name, fsync'd,
renamed and the directory fsync'd, so after a crash a file either holds a whole batch
or does not exist. Files are sent oldest first and deleted only once InfluxDB has
confirmed them; after a restart whatever is left is sent first, in order. Sending a
file twice is harmless: the same series and timestamps overwrite themselves.

The spool is bounded. Above ``warn_fraction`` of the bound the caller is told once
(an alarm event); at the bound the policy applies — ``drop_oldest`` deletes the oldest
files, ``drop_newest`` refuses the new batch — and the caller is told exactly how many
lines went, so no loss is ever silent. Batches InfluxDB rejects as malformed are moved
to ``rejected/`` for inspection rather than deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class SpoolLoss:
    """Lines the bound forced out, and why."""

    lines: int
    files: int
    reason: str


class Spool:
    """A directory of line-protocol batch files."""

    def __init__(self, directory: str | Path, max_bytes: int, policy: str = "drop_oldest",
                 warn_fraction: float = 0.8):
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.policy = policy
        self.warn_fraction = warn_fraction
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self.bytes = 0
        self.lines = 0
        self.high = False
        self._seq = 0
        self._recover()

    @staticmethod
    def _lines_of(path: Path) -> int:
        try:
            return int(path.stem.split("-")[1])
        except (IndexError, ValueError):
            return 0

    def _recover(self) -> None:
        for tmp in self.dir.glob("*.tmp"):  # never acknowledged: a crash mid-write
            tmp.unlink(missing_ok=True)
        self.files = sorted(self.dir.glob("*.lp"))
        self.bytes = sum(p.stat().st_size for p in self.files)
        self.lines = sum(self._lines_of(p) for p in self.files)
        if self.files:
            self._seq = int(self.files[-1].stem.split("-")[0]) + 1
            log.info("spool: %d unsent batches (%d lines) from an earlier run will be sent first",
                     len(self.files), self.lines)

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, body: bytes, lines: int) -> SpoolLoss | None:
        """Put a batch on disk (durably). Returns what the bound forced out, if anything."""
        loss = None
        if self.bytes + len(body) > self.max_bytes:
            if self.policy == "drop_newest":
                return SpoolLoss(lines, 1, f"spool full ({self.max_bytes / 1e6:.0f} MB): new batch refused")
            dropped_lines = dropped_files = 0
            while self.files and self.bytes + len(body) > self.max_bytes:
                dropped_lines += self._lines_of(self.files[0])
                dropped_files += 1
                self.remove(self.files[0])
            loss = SpoolLoss(dropped_lines, dropped_files,
                             f"spool full ({self.max_bytes / 1e6:.0f} MB): oldest batches deleted")
        final = self.dir / f"{self._seq:012d}-{lines}.lp"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(final)
        self._fsync_dir()
        self._seq += 1
        self.files.append(final)
        self.bytes += len(body)
        self.lines += lines
        return loss

    def oldest(self) -> Path | None:
        """The next batch to send."""
        return self.files[0] if self.files else None

    def remove(self, path: Path) -> None:
        """Forget a batch (sent, or given up)."""
        with contextlib.suppress(ValueError):
            self.files.remove(path)
            self.lines -= self._lines_of(path)
        with contextlib.suppress(FileNotFoundError):
            self.bytes -= path.stat().st_size
            path.unlink()

    def reject(self, path: Path) -> Path:
        """Move a batch InfluxDB refused to ``rejected/``; returns where it went."""
        target = self.dir / "rejected" / path.name
        target.parent.mkdir(exist_ok=True)
        with contextlib.suppress(ValueError):
            self.files.remove(path)
            self.lines -= self._lines_of(path)
        with contextlib.suppress(FileNotFoundError):
            self.bytes -= path.stat().st_size
            path.rename(target)
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
