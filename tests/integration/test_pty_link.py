"""A simulated instrument's output FIFO on a real pty: bounded, and drained as the reader reads."""

import asyncio
import os
import tty

from drivers.sim.pty_link import PtyLink


def _reader(link: PtyLink) -> int:
    fd = os.open(link.link, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


async def test_a_backlog_drains_without_further_writes(tmp_path):
    link = PtyLink(tmp_path / "amp", fifo_bytes=4 * 1024 * 1024)
    link.open()
    try:
        fd = _reader(link)
        data = bytes(range(256)) * 4096  # 1 MiB: far more than the pty itself holds
        link.write(data)
        assert link.queued_bytes > 0  # the pty took only part of it
        got = bytearray()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(got) < len(data) and loop.time() < deadline:
            try:
                got += os.read(fd, 65536)
            except BlockingIOError:
                await asyncio.sleep(0.001)  # the event loop lets the link push more meanwhile
        assert bytes(got) == data and link.queued_bytes == 0 and link.dropped_bytes == 0
        os.close(fd)
    finally:
        link.close()


async def test_nobody_reading_keeps_the_newest_fifo_bytes(tmp_path):
    link = PtyLink(tmp_path / "amp", fifo_bytes=256 * 1024)
    link.open()
    try:
        for _ in range(8):
            link.write(b"\x00" * 100_000)
            await asyncio.sleep(0.01)
        assert link.queued_bytes == 256 * 1024
        in_pty = 800_000 - link.queued_bytes - link.dropped_bytes  # what the pty itself holds
        assert 0 < in_pty < 256 * 1024
    finally:
        link.close()
    assert link.queued_bytes == 0 and not link.link.exists()
