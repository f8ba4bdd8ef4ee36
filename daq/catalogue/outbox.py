"""A durable first-in-first-out queue on disk, for items that must outlast an outage.

The catalogue writer keeps cycles and artifacts here while its database is locked, full
or away.

Each item is one file ``<sequence>.pkl`` (pickled; these are the service's own result
objects, written and read by this service only), written to a ``.tmp`` name, fsync'd and
renamed, so after a crash a file holds a whole item or does not exist. Items are handed
out oldest first and deleted once their destination confirmed them. An item is kept whole,
its ``uid`` included, so filing it again after a crash between "filed" and "deleted" updates
the row it made (an item pickled before items had a uid is filed under its legacy uid).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from pathlib import Path

log = logging.getLogger(__name__)


class Outbox:
    """Items waiting on disk, oldest first."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.dir.glob("*.tmp"):  # a crash mid-write: never acknowledged
            tmp.unlink(missing_ok=True)
        self.paths = sorted(self.dir.glob("*.pkl"))
        self._seq = int(self.paths[-1].stem) + 1 if self.paths else 0
        if self.paths:
            log.info("outbox %s: %d items from an earlier run wait to be filed", self.dir, len(self.paths))

    def __len__(self) -> int:
        return len(self.paths)

    def put(self, item) -> Path:
        """Keep ``item`` durably (raises OSError if the disk refuses it)."""
        path = self.dir / f"{self._seq:012d}.pkl"
        self._seq += 1
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(item, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.paths.append(path)
        return path

    def peek(self):
        """(path, item) of the oldest item, or None when empty."""
        while self.paths:
            path = self.paths[0]
            try:
                with open(path, "rb") as fh:
                    return path, pickle.load(fh)
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
                # unreadable (a foreign or damaged file): keep it aside, never silently
                aside = path.with_suffix(".unreadable")
                log.error("outbox: cannot read %s (%s); moved to %s", path, e, aside)
                with contextlib.suppress(OSError):
                    path.rename(aside)
                self.paths.pop(0)
        return None

    def items(self):
        """Every waiting item, oldest first (for a look, e.g. cycle numbers)."""
        for path in list(self.paths):
            try:
                with open(path, "rb") as fh:
                    yield pickle.load(fh)
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
                continue

    def remove(self, path: Path) -> None:
        """The oldest item reached its destination: forget it."""
        with contextlib.suppress(ValueError):
            self.paths.remove(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
