"""A null-modem cable between two pseudo-terminals, relayed in the event loop.

The simulated device opens one end (``device_end``), the service the other
(``host_end``), exactly as with two serial ports and a cable. Relaying in-process
(rather than with ``socat``) lets the simulator pull the cable (``disconnect``: bytes
stop flowing both ways) without the device's own port going away.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from drivers.sim.pty_link import PtyLink

log = logging.getLogger(__name__)


class PtyPair:
    """Two linked pty ends; bytes written on one arrive on the other."""

    def __init__(self, device_end: str | Path, host_end: str | Path):
        self.device = PtyLink(device_end)
        self.host = PtyLink(host_end)
        self.connected = True
        self.relayed = 0

    def _pump(self, src: PtyLink, dst: PtyLink) -> None:
        data = src.read()
        if data and self.connected:
            dst.write(data)
            self.relayed += len(data)

    def open(self) -> None:
        """Create both ends and start relaying."""
        self.device.open()
        self.host.open()
        loop = asyncio.get_running_loop()
        loop.add_reader(self.device.master, self._pump, self.device, self.host)
        loop.add_reader(self.host.master, self._pump, self.host, self.device)

    def close(self) -> None:
        """Stop relaying and remove both ends."""
        loop = asyncio.get_running_loop()
        for end in (self.device, self.host):
            if end.master is not None:
                loop.remove_reader(end.master)
            end.close()
