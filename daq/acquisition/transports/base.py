"""What a transport declares, and the one protocol every device acquisition implements.

A transport (Modbus TCP, Modbus RTU, a serial stream, OPC UA, …) is one module under
:mod:`daq.acquisition.transports` holding an instance of a :class:`Transport` subclass:

* ``name``: the rig file's ``transport = "…"``;
* ``schema``: the pydantic model of such a device in a rig file (its ``transport`` field a
  ``Literal`` of ``name``, so the rig file's device list is a discriminated union);
* :meth:`Transport.build`: the running acquisitions for one configured device, all
  implementing :class:`Acquisition`, plus a channel writer if the device can be written;
* :meth:`Transport.sim_face`: how the rig's simulator shows that device;
* :meth:`Transport.endpoint` and :meth:`Transport.check_rig`: the configuration checks
  that need more than one device (two devices on one endpoint; units sharing a line).

The rest of the service asks :mod:`daq.acquisition.transports` (the listing) and never
dispatches on device types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from daq.acquisition.polling import DeviceStatus
from daq.bus import SampleBus


def device_path(port: str, data_dir: Path) -> Path:
    """A serial port path from a rig file: relative paths live under the data dir."""
    p = Path(port)
    return p if p.is_absolute() else data_dir / p


class Acquisition(Protocol):
    """One running acquisition: reads a device (or one poll group of it) and publishes blocks."""

    status: DeviceStatus

    async def run(self) -> None:
        """Acquire until cancelled; faults become events and ``status``, never exceptions."""

    def clock_state(self) -> dict | None:
        """The device clock's drift estimate to keep across restarts (None: nothing to keep)."""


#: writes one declared-writable channel: (field, value) → awaits the device's acknowledgement
ChannelWriter = Callable[[Any, float], Awaitable[None]]


@dataclass
class BuildContext:
    """What a transport may use to build acquisitions: shared by every device of the service."""

    rig: str
    bus: SampleBus
    data_dir: Path
    #: per-transport shared state across devices (e.g. one RS-485 line for all its units)
    shared: dict[str, Any] = field(default_factory=dict)
    #: last sample counter safely stored per device, from a run that did not stop cleanly
    resume_counters: dict[str, int] = field(default_factory=dict)
    #: clock drift estimates kept from earlier runs, per device
    saved_clocks: dict[str, dict] = field(default_factory=dict)


@dataclass
class Built:
    """A device's running parts: its acquisitions, and a writer if it can be written."""

    acquisitions: list[Acquisition]
    writer: ChannelWriter | None = None


class Transport:
    """Base of every transport's declaration (see the module docstring)."""

    name: ClassVar[str]
    schema: ClassVar[type]

    def build(self, dev, ctx: BuildContext) -> Built:
        """The acquisitions of configured device ``dev`` (not yet running)."""
        raise NotImplementedError

    def sim_face(self, dev, data_dir: Path) -> tuple[str, Any] | None:
        """(face kind, face) the rig simulator shows ``dev`` through; None: not simulated."""
        return None

    def endpoint(self, dev) -> str | None:
        """Where ``dev`` is reached, if no other device of the service may use it too."""
        return None

    def check_rig(self, devices: Sequence) -> list[str]:
        """Problems among one rig's devices of this transport (empty: none)."""
        return []
