"""The transports rigdaq speaks: the one listing of them (see :mod:`.base` for what each declares).

Adding a transport is one module next to this one plus a line in :data:`TRANSPORTS`.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from daq.acquisition.transports.base import (
    Acquisition,
    BuildContext,
    Built,
    ChannelWriter,
    Transport,
    device_path,
)
from daq.acquisition.transports.modbus import MODBUS_RTU, MODBUS_TCP
from daq.acquisition.transports.opcua import OPCUA
from daq.acquisition.transports.serial_stream import SERIAL_STREAM

__all__ = ["TRANSPORTS", "Acquisition", "BuildContext", "Built", "ChannelWriter", "Transport", "device_path",
           "device_schema", "transport_of"]

#: transport name (a rig file's ``transport = "…"``) → its declaration
TRANSPORTS: dict[str, Transport] = {t.name: t for t in (MODBUS_TCP, MODBUS_RTU, SERIAL_STREAM, OPCUA)}


def device_schema():
    """The rig file's device entry: one of the transports' schemas, chosen by ``transport``."""
    return Annotated[Union[tuple(t.schema for t in TRANSPORTS.values())],  # noqa: UP007
                     Field(discriminator="transport")]


def transport_of(dev) -> Transport:
    """The declaration of a configured device's transport."""
    try:
        return TRANSPORTS[dev.transport]
    except KeyError:
        raise ValueError(f"device {dev.name}: no transport {dev.transport!r}; transports are "
                         f"{', '.join(TRANSPORTS)}") from None
