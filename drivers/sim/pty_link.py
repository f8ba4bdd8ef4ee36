"""A simulated serial device end: a pseudo-terminal whose slave is linked at a fixed path.

The simulator writes into the master; whoever opens the link path (the service, or
any serial terminal) reads the device's output. Like a real instrument the output has
a bounded FIFO: when nobody reads, the oldest bytes are lost (the reader then sees a
gap in the sequence counter), and the writer never blocks. Inside an event loop the FIFO
drains whenever the pty takes more (as a UART drains its FIFO continuously), not only
when the simulator next writes, so a reader catching up on a backlog gets it as fast as
it reads (no line-rate limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import tty
from pathlib import Path

log = logging.getLogger(__name__)


class PtyLink:
    """Master side of a pty, the slave symlinked at ``link``."""

    def __init__(self, link: str | Path, fifo_bytes: int = 256 * 1024):
        self.link = Path(link)
        self.fifo_bytes = fifo_bytes
        self.master: int | None = None
        self.slave: int | None = None
        self._pending = bytearray()
        self.dropped_bytes = 0
        self._drain_loop: asyncio.AbstractEventLoop | None = None  # watching the master for room

    def open(self) -> None:
        """Create the pty and the link (replacing a stale link)."""
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # binary-safe: no echo, no CR/LF translation, no signals
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.link)

    @property
    def is_open(self) -> bool:  # noqa: D102
        return self.master is not None

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the FIFO because the pty took no more (nobody reads fast enough)."""
        return len(self._pending)

    def write(self, data: bytes) -> None:
        """Queue ``data`` and push as much as the pty takes; drop the oldest beyond the FIFO."""
        if self.master is None:
            return
        self._pending += data
        self._push()
        excess = len(self._pending) - self.fifo_bytes
        if excess > 0:
            del self._pending[:excess]
            self.dropped_bytes += excess
        if self._pending and self._drain_loop is None:
            with contextlib.suppress(RuntimeError):  # no running loop: the next write pushes on
                loop = asyncio.get_running_loop()
                loop.add_writer(self.master, self._drain)
                self._drain_loop = loop

    def _push(self) -> None:
        while self._pending:
            try:
                n = os.write(self.master, self._pending)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.EIO, errno.EAGAIN):
                    break
                raise
            del self._pending[:n]

    def _drain(self) -> None:
        """The pty has room: push on; stop watching once the FIFO is empty."""
        if self.master is not None:
            self._push()
        if not self._pending or self.master is None:
            self._unwatch()

    def _unwatch(self) -> None:
        if self._drain_loop is not None:
            if self.master is not None:
                with contextlib.suppress(Exception):  # the loop may be closed already
                    self._drain_loop.remove_writer(self.master)
            self._drain_loop = None

    def read(self) -> bytes:
        """Bytes the other side wrote to us (for request/response devices)."""
        if self.master is None:
            return b""
        try:
            return os.read(self.master, 65536)
        except (BlockingIOError, OSError):
            return b""

    def close(self, unlink: bool = True) -> None:
        """Hang up: the reader gets an error, as when a cable is pulled."""
        self._unwatch()
        for fd in (self.master, self.slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.master = self.slave = None
        self._pending.clear()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
