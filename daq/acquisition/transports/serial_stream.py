"""Serial streaming instruments: their rig-file schema, their acquisition and their simulator face."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, field_validator, model_validator

from daq.acquisition.stream import StreamAcquisition
from daq.acquisition.transports.base import BuildContext, Built, Transport, device_path
from daq.schema import Name, Strict
from drivers.serial_port import SerialPort
from drivers.sim.rig import StreamFace
from drivers.stream import FrameCodec, LineCodec, StreamChannel

log = logging.getLogger(__name__)

class StreamChannelConfig(Strict):
    """One channel of a streaming instrument, in frame order."""

    name: Name
    type: Literal["int16", "uint16", "int32", "uint32", "float32", "float64"] = "float32"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""

    def to_channel(self) -> StreamChannel:
        """The driver-side channel definition."""
        return StreamChannel(self.name, self.type, self.scale, self.offset, self.unit)


class SerialStreamDevice(Strict):
    """An instrument streaming frames or lines over a serial port.

    ``port`` is a device path; a relative path is taken under the service's data_dir
    (that is where simulators put their pseudo-terminals).
    """

    name: Name
    transport: Literal["serial_stream"]
    port: str
    baudrate: int = Field(default=921600, ge=300, le=20_000_000)
    format: Literal["binary", "ascii"] = "binary"
    sample_rate_hz: float = Field(gt=0, le=200_000, description="samples per second the device sends")
    block_s: float = Field(default=0.05, gt=0, le=10)
    silence_timeout_s: float = Field(default=1.0, gt=0, le=60, description="no bytes for this long: fault")
    stuck_after_s: float = Field(default=1.0, gt=0, le=3600,
                                 description="every channel frozen this long: values_stuck")
    reconnect_max_s: float = Field(default=10.0, gt=0, le=600)
    latency_ms: float = Field(default=0.0, ge=0, le=1000,
                              description="calibrated constant delay from sampling to arrival, "
                                          "subtracted from timestamps")
    channels: list[StreamChannelConfig] = Field(min_length=1, max_length=256)

    @field_validator("channels")
    @classmethod
    def _unique(cls, channels: list[StreamChannelConfig]) -> list[StreamChannelConfig]:
        names = [c.name for c in channels]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"channel names must be unique; repeated: {', '.join(dup)}")
        if "sample" in names:
            raise ValueError("'sample' is reserved: it carries the device's sample counter")
        return channels

    @model_validator(mode="after")
    def _bandwidth(self) -> SerialStreamDevice:
        if self.format == "binary":
            frame = 8 + sum({"int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "float32": 4,
                             "float64": 8}[c.type] for c in self.channels)
            need = frame * 10 * self.sample_rate_hz  # 10 bits per byte on the wire
            if need > self.baudrate:
                raise ValueError(
                    f"{self.sample_rate_hz:g} frames/s of {frame} bytes need {need:,.0f} baud; "
                    f"baudrate is {self.baudrate:,}")
        return self

    def stream_channels(self) -> list[StreamChannel]:
        """Driver-side channel definitions, in frame order."""
        return [c.to_channel() for c in self.channels]

    def channel_units(self) -> dict[str, str]:
        """Channel name → unit (``sample`` is the device's sample counter)."""
        return {"sample": "", **{c.name: c.unit for c in self.channels}}


class SerialStream(Transport):
    """An instrument streaming numbered frames (binary or text lines) over a serial port."""

    name = "serial_stream"
    schema = SerialStreamDevice

    def build(self, dev: SerialStreamDevice, ctx: BuildContext) -> Built:  # noqa: D102
        port = SerialPort.at(str(device_path(dev.port, ctx.data_dir)), dev.baudrate)
        codec = (FrameCodec if dev.format == "binary" else LineCodec)(dev.stream_channels())
        acq = StreamAcquisition(ctx.rig, dev.name, port, codec, dev.sample_rate_hz, ctx.bus, dev.block_s,
                                dev.silence_timeout_s, dev.reconnect_max_s, dev.stuck_after_s,
                                latency_ms=dev.latency_ms)
        if dev.name in ctx.resume_counters:  # gaps across a crash get counted too
            acq.resume_after(ctx.resume_counters[dev.name])
        if acq.restore_clock(ctx.saved_clocks.get(dev.name)):
            log.info("%s/%s: clock drift %.1f ppm from the previous run", ctx.rig, dev.name, acq.clock.drift_ppm)
        return Built([acq])

    def sim_face(self, dev: SerialStreamDevice, data_dir):  # noqa: D102
        return "streams", StreamFace(dev.name, device_path(dev.port, data_dir), dev.stream_channels(),
                                     dev.sample_rate_hz, dev.format)

    def endpoint(self, dev: SerialStreamDevice) -> str:  # noqa: D102
        return f"serial:{dev.port}"


SERIAL_STREAM = SerialStream()
