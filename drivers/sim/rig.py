"""Simulated rigs: one physics model behind every face (Modbus TCP, RTU, serial stream, OPC UA).

:class:`RigSimulator` runs any model with ``dt``, ``step_count`` and
``advance(n) -> {channel: array}`` in rig-clock real time and serves it on every face:
a PLC answers Modbus TCP (or OPC UA) from an image updated every scan (5 ms), units on
an RS-485 line answer Modbus RTU, an instrument streams every sample it takes as frames
on a pty. Every face shows the same model, so a press blow seen in the PLC's registers
is the same blow in the amplifier's stream. Rig kinds subclass it
(:mod:`drivers.sim.press_sim`, :mod:`drivers.sim.srm_sim`).

The model runs on the rig's own clock, which can be set off the host clock by
``clock_ppm`` as a real crystal is; the service corrects for it.

Faults can be switched on per device (see :mod:`drivers.sim.faults`).

A real streaming instrument keeps counting samples while nobody listens: the host
service may crash and restart, the instrument does not. Given a ``counter_file``, the
simulator keeps there the wall-clock origin of each stream's sample counter (written
once, at the first start) and every later start begins the counter where the
instrument would be by now, ``round((now − origin) · rate)`` on the rig's clock. Only
the numbering moves; the model itself starts afresh as before. An instrument's output
buffer holds ``stream_buffer_s`` of frames (2 s by default; at least 256 KiB); beyond
that, while nobody reads, the oldest bytes are lost.

For timing benchmarks a simulator can record the true time of every sample it shows
(``truth_sink``, :mod:`drivers.sim.truth`): each streamed frame's counter and the host
time its sample was taken, each register image's ``plc_tick`` and scan time, and which
image every Modbus read served, and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drivers.registers import RegisterField
from drivers.sim.faults import FaultBoard
from drivers.sim.modbus_server import ModbusRtuSimServer, ModbusSimServer, RegisterImage
from drivers.sim.pty_link import PtyLink
from drivers.sim.pty_pair import PtyPair
from drivers.sim.truth import TruthLog, TruthSink
from drivers.stream import FrameCodec, LineCodec, StreamChannel

log = logging.getLogger(__name__)


@dataclass
class PlcFace:
    """A Modbus TCP PLC showing the model through a register map."""

    name: str
    fields: list[RegisterField]
    host: str
    port: int
    unit_id: int = 1


@dataclass
class OpcUaFace:
    """An OPC UA server showing the model: one variable per channel, ``channel → (type, length)``.

    Under ``Objects/<ns>:<name>`` with NodeIds ``ns=<ns>;s=<name>.<channel>`` (the
    simulated server's namespace ``urn:rigdaq:sim``); each scan's values carry the scan's
    true time as their source timestamp.
    """

    name: str
    channels: dict[str, tuple[str, int]]
    host: str
    port: int


@dataclass
class RtuFace:
    """A Modbus RTU unit on a serial line (a pty pair whose host end is at ``link``)."""

    name: str
    fields: list[RegisterField]
    link: Path
    unit_id: int
    baudrate: int = 19200
    parity: str = "N"
    stopbits: int = 1


@dataclass
class StreamFace:
    """A streaming instrument on a pty linked at ``link``."""

    name: str
    link: Path
    channels: list[StreamChannel]
    rate_hz: float
    format: str = "binary"


class _StreamOut:
    def __init__(self, face: StreamFace, steps_per_sample: int, buffer_s: float = 2.0):
        self.face = face
        self.codec = FrameCodec(face.channels) if face.format == "binary" else LineCodec(face.channels)
        # the instrument's output buffer: ≥ buffer_s of frames (≥ 64 bytes a frame assumed), so
        # a host that stalls for a moment (or the catch-up burst after it) does not overflow it
        frame = max(64, getattr(self.codec, "frame_len", 0))
        self.link = PtyLink(face.link, fifo_bytes=max(256 * 1024, int(buffer_s * face.rate_hz * frame)))
        self.every = steps_per_sample
        self.offset = 0  # the instrument's counter at the model's step 0
        self.sent = 0  # samples handed to the pty
        self._frozen: dict | None = None

    def emit(self, first_step: int, sample: dict[str, np.ndarray], faults: FaultBoard,
             rng: np.random.Generator) -> np.ndarray | None:
        """Send the samples due in this chunk; returns the model steps of the frames sent."""
        if not self.link.is_open or faults.active(self.face.name, "timeout"):
            return None
        n = len(next(iter(sample.values())))
        steps = first_step + np.arange(n)
        pick = steps % self.every == 0
        if not pick.any():
            return None
        seq = (steps[pick] // self.every + self.offset) & 0xFFFFFFFF  # a uint32 counter: it wraps
        values = {c.name: sample[c.name][pick] for c in self.face.channels}
        if faults.active(self.face.name, "stuck"):
            if self._frozen is None:
                self._frozen = {k: v[0] for k, v in values.items()}
            values = {k: np.full(len(v), self._frozen[k]) for k, v in values.items()}
        else:
            self._frozen = None
        data = self.codec.encode(seq, values)
        if faults.active(self.face.name, "corrupt"):
            buf = bytearray(data)
            for i in rng.integers(0, len(buf), max(1, len(buf) // 500)).tolist():
                buf[i] ^= 0x5A
            data = bytes(buf)
        if faults.active(self.face.name, "truncated"):
            data = data[: len(data) - len(data) // 3]
        self.link.write(data)
        self.sent += len(seq)
        return steps[pick]


def counter_origins(path: Path, rates_hz: dict[str, float], now_ns: int) -> dict[str, int]:
    """Wall-clock origin (ns since the epoch) of each stream's sample counter, kept in ``path``.

    A stream without an origin yet (or whose rate changed: an instrument reconfigured,
    or whose origin lies in the future: the host clock was set back) gets ``now_ns``;
    the file is then rewritten atomically.
    """
    try:
        kept = json.loads(path.read_text()).get("streams", {})
        if not isinstance(kept, dict):
            raise ValueError("'streams' is not a table")
    except FileNotFoundError:
        kept = {}
    except (OSError, ValueError, AttributeError) as e:
        log.warning("%s unreadable (%s): the simulated instruments' counters start from 0", path, e)
        kept = {}
    origins: dict[str, int] = {}
    changed = False
    for name, rate in rates_hz.items():
        entry = kept.get(name)
        try:
            origin, same_rate = int(entry["origin_ns"]), float(entry["rate_hz"]) == float(rate)
        except (TypeError, KeyError, ValueError):
            origin, same_rate = None, False
        if origin is None or not same_rate or origin > now_ns:
            origin = now_ns
            kept[name] = {"origin_ns": origin, "rate_hz": float(rate)}
            changed = True
        origins[name] = origin
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump({"streams": kept}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    return origins


class RigSimulator:
    """Runs a model in (rig-clock) real time and serves it on every face.

    With ``record=True`` every published register image is kept in ``history``
    (plc_tick → values) so tests can compare what was acquired with what was shown.
    With a ``counter_file`` the stream instruments' sample counters run on across
    restarts of the simulator, as a real instrument's do across restarts of its host
    (see the module docstring); without one every start counts from 0.
    ``stream_buffer_s``: seconds of frames each stream instrument's output buffer holds.
    ``truth_sink`` (a callable or a directory; also :meth:`set_truth_sink`): record the
    true time of every sample shown (:mod:`drivers.sim.truth`).
    """

    task_name = "rig-sim"

    def __init__(self, model, plcs: list[PlcFace] = (), streams: list[StreamFace] = (),
                 rtus: list[RtuFace] = (), seed: int = 1, scan_s: float = 0.005,
                 clock_ppm: float = 0.0, record: bool = False, counter_file: Path | None = None,
                 stream_buffer_s: float = 2.0, truth_sink: TruthSink | None = None, *,
                 opcuas: list[OpcUaFace] = ()):
        self.model = model
        self.counter_file = counter_file
        self._prepared = False
        self.rng = np.random.default_rng(seed + 1000)
        self.faults = FaultBoard()
        self.scan_s = scan_s
        self.clock_ppm = clock_ppm
        self.images: dict[str, RegisterImage] = {}
        self.servers: dict[str, ModbusSimServer] = {}
        for face in plcs:
            image = RegisterImage(face.fields)
            self.images[face.name] = image
            self.servers[face.name] = ModbusSimServer(image, face.host, face.port, face.unit_id,
                                                      faults=self.faults, name=face.name)
        self.opcua: dict[str, tuple[OpcUaFace, object]] = {}
        if opcuas:
            from drivers.sim.opcua_server import OpcUaSimServer  # asyncua only when a face needs it

            for face in opcuas:
                chans = {c: (t if n == 0 else (t, n)) for c, (t, n) in face.channels.items()}
                self.opcua[face.name] = (face, OpcUaSimServer(face.name, chans, face.host, face.port))
        # RTU units grouped by line: one pty pair and one server per line
        self.lines: dict[Path, tuple[PtyPair, ModbusRtuSimServer]] = {}
        by_line: dict[Path, list[RtuFace]] = {}
        for face in rtus:
            by_line.setdefault(face.link, []).append(face)
            self.images[face.name] = RegisterImage(face.fields)
        for link, faces in by_line.items():
            pair = PtyPair(link.with_name(link.name + ".device"), link)
            units = {f.unit_id: (f.name, self.images[f.name]) for f in faces}
            server = ModbusRtuSimServer(units, str(pair.device.link), faces[0].baudrate,
                                        faces[0].parity, faces[0].stopbits, faults=self.faults)
            self.lines[link] = (pair, server)
        rate = 1.0 / self.model.dt
        self.streams: dict[str, _StreamOut] = {}
        for face in streams:
            every = round(rate / face.rate_hz)
            if every < 1 or abs(rate / every - face.rate_hz) > 1e-6 * face.rate_hz:
                raise ValueError(f"{face.name}: the model steps at {rate:g} Hz; a stream "
                                 f"rate must divide it (got {face.rate_hz:g} Hz)")
            self.streams[face.name] = _StreamOut(face, every, stream_buffer_s)
        self.history: dict[int, dict] | None = {} if record else None
        self.last: dict = {}
        self._task: asyncio.Task | None = None
        self._steps_per_ms = round(1e-3 / self.model.dt)
        # host ns per model step, and the wall-clock ns of step 0 since the model clock (re)started
        self._step_ns = self.model.dt * 1e9 / (1.0 + self.clock_ppm * 1e-6)
        self._t0_ns: int | None = None
        self.truth: TruthLog | None = None
        if truth_sink is not None:
            self.set_truth_sink(truth_sink)

    # -- truth (timing benchmarks) ---------------------------------------------------------
    def set_truth_sink(self, sink: TruthSink | None) -> None:
        """Record the true time of every sample shown from now on (``None``: stop recording).

        ``sink``: a callable ``(kind, device, {column: int64 array})`` or a directory
        (see :mod:`drivers.sim.truth`).
        """
        if self.truth is not None:
            self.truth.close()
        self.truth = None if sink is None else TruthLog(sink)
        on_read = None if self.truth is None else self._truth_read
        for server in self.servers.values():
            server.on_read = on_read
        for _, server in self.lines.values():
            server.on_read = on_read
        if self.truth is None:
            return
        common = {"clock_ppm": self.clock_ppm, "model_dt_s": self.model.dt, "host_step_ns": self._step_ns}
        for name, out in self.streams.items():
            self.truth.describe(name, {**common, "face": "stream", "rate_hz": out.face.rate_hz,
                                       "format": out.face.format,
                                       "frame_bytes": getattr(out.codec, "frame_len", None),
                                       "fifo_bytes": out.link.fifo_bytes})
        for name in self.images:
            self.truth.describe(name, {**common, "face": "registers", "scan_s": self.scan_s,
                                       "tick_ms": 1.0})

    def _truth_read(self, name: str, image: RegisterImage) -> None:
        self.truth.record("reads", name, image.tick, time.time_ns())

    def _truth_ns(self, steps: np.ndarray | int) -> np.ndarray:
        """Wall-clock ns at which the model reached ``steps`` (the state after that many steps)."""
        if self._t0_ns is None:
            self._t0_ns = time.time_ns() - round(self.model.step_count * self._step_ns)
        return self._t0_ns + np.rint(np.asarray(steps, dtype=np.float64) * self._step_ns).astype(np.int64)

    def _model_clock_at(self, step: int) -> None:
        """The model clock (re)starts: ``step`` is due now."""
        self._t0_ns = time.time_ns() - round(step * self._step_ns)

    # -- endpoints -----------------------------------------------------------------------
    def endpoints(self) -> dict[str, str]:
        """Device name → where it answers (``host:port`` or the pty link)."""
        out = {name: f"Modbus TCP {s.host}:{s.port} unit {s.unit_id}" for name, s in self.servers.items()}
        out.update({name: f"serial stream {s.link.link} ({s.face.format}, {s.face.rate_hz:g} Hz)"
                    for name, s in self.streams.items()})
        for link, (_, server) in self.lines.items():
            for unit, (name, _) in server.units.items():
                out[name] = f"Modbus RTU {link} unit {unit} ({server.baudrate} baud)"
        return out

    @property
    def endpoint(self) -> str:
        """``host:port`` of the first PLC."""
        s = next(iter(self.servers.values()))
        return f"{s.host}:{s.port}"

    @property
    def server(self) -> ModbusSimServer:
        """The first PLC's server."""
        return next(iter(self.servers.values()))

    @property
    def image(self) -> RegisterImage:
        """The first PLC's register image."""
        return next(iter(self.images.values()))

    # -- model clock -----------------------------------------------------------------------
    def _register_values(self, values: dict) -> dict:
        """Values only the register faces show, besides the model's channels."""
        return {}

    def _publish(self, first_step: int, sample: dict) -> None:
        truth = self.truth
        for name, out in self.streams.items():
            sent = out.emit(first_step, sample, self.faults, self.rng)
            if truth is not None and sent is not None:
                # the frame of step s carries the state after s + 1 steps
                truth.record("frames", name, sent // out.every + out.offset, self._truth_ns(sent + 1))
                truth.record("link", name, time.time_ns(), out.link.queued_bytes, out.link.dropped_bytes)
        values = {name: float(arr[-1]) for name, arr in sample.items()}
        values["plc_tick"] = self.model.step_count // self._steps_per_ms
        values.update(self._register_values(values))
        scan_ns = None if truth is None else int(self._truth_ns(self.model.step_count))
        for name, image in self.images.items():
            if not self.faults.active(name, "stuck"):
                image.set(values)
                image.tick = values["plc_tick"]
                if truth is not None:
                    truth.record("scans", name, image.tick, scan_ns, time.time_ns())
        for name, (face, server) in self.opcua.items():
            if server.running and not self.faults.active(name, "stuck"):
                server.set_nowait(_opcua_values(face, values), source_ns=int(self._truth_ns(self.model.step_count)))
        self.last = values
        if self.history is not None:
            self.history[values["plc_tick"]] = values

    def continue_counters(self, now_ns: int | None = None) -> None:
        """Number the next samples where each instrument's counter is at ``now_ns`` (rig clock).

        Called by :meth:`start`; ``now_ns`` (wall clock, default now) is for tests.
        """
        if self.counter_file is None or not self.streams:
            return
        now = time.time_ns() if now_ns is None else now_ns
        origins = counter_origins(self.counter_file, {n: o.face.rate_hz for n, o in self.streams.items()},
                                  now)
        for name, out in self.streams.items():
            due = round((now - origins[name]) * 1e-9 * out.face.rate_hz * (1.0 + self.clock_ppm * 1e-6))
            next_sample = -(-self.model.step_count // out.every)  # the model's next picked step / every
            out.offset = due - next_sample
            if due:
                log.info("%s: sample counter continues at %d (%.1f s after its origin)", name, due,
                         (now - origins[name]) / 1e9)

    def _advance(self, n: int) -> None:
        first = self.model.step_count
        self._publish(first, self.model.advance(n))

    async def _run(self) -> None:
        # Each chunk is computed one scan ahead and shown when its last sample is due, so
        # what leaves the simulator is late only by the scheduler's wake-up, not by how long
        # the model took (that varies with the rig's state: a motor test sequence that
        # stops computes faster, and its instrument's latency would step).
        rate = (1.0 + self.clock_ppm * 1e-6) / self.model.dt  # rig-clock steps per host second
        start = time.monotonic() - self.model.step_count / rate
        self._model_clock_at(self.model.step_count)
        pending: tuple[int, dict] | None = None
        try:
            while True:
                await self.faults.tick()
                if pending is not None:
                    self._publish(*pending)
                    pending = None
                wake = time.monotonic() + self.scan_s
                due = int((wake - start) * rate)
                # whole PLC milliseconds only, so one plc_tick always shows one image
                n = (due - self.model.step_count) // self._steps_per_ms * self._steps_per_ms
                if n > 0:
                    first = self.model.step_count
                    pending = (first, self.model.advance(min(n, 20_000)))
                    wake = start + self.model.step_count / rate  # its last sample is due then
                await self._apply_connection_faults()
                await asyncio.sleep(max(0.0, wake - time.monotonic()))
        finally:
            if pending is not None:  # paused or stopped: show what was computed, lose nothing
                self._publish(*pending)

    async def _apply_connection_faults(self) -> None:
        for pair, server in self.lines.values():
            # pulling the RS-485 cable silences every unit on it
            pair.connected = not any(self.faults.active(name, "disconnect")
                                     for name, _ in server.units.values())
        for name, (_, server) in self.opcua.items():
            down = self.faults.active(name, "disconnect")
            if down and server.running:
                await server.stop()
            elif not down and not server.running:
                await server.start()
        for name, server in self.servers.items():
            down = self.faults.active(name, "disconnect")
            if down and server.running:
                await server.stop()
            elif not down and not server.running:
                with contextlib.suppress(OSError):
                    await server.start()
        for name, out in self.streams.items():
            down = self.faults.active(name, "disconnect")
            if down and out.link.is_open:
                out.link.close()
            elif not down and not out.link.is_open:
                out.link.open()

    def pause(self) -> None:
        """Freeze the model: every face keeps showing the last values (a stuck rig)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def resume(self) -> None:
        """Let the model run on from where it was paused."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def prepare(self) -> None:
        """Whatever slow work the model needs before it can run in real time."""
        self._prepared = True

    async def start(self) -> None:
        """Publish the first image, open every face, start the model clock."""
        await self.prepare()
        await self.faults.tick()  # faults scheduled at 0 s are on from the first sample
        self.continue_counters()
        self._model_clock_at(self.model.step_count + self._steps_per_ms)  # the first image is "now"
        self._advance(self._steps_per_ms)
        for face, _ in self.opcua.values():
            missing = sorted(set(face.channels) - set(self.last))
            if missing:
                raise ValueError(f"{face.name}: the simulated rig has no channel {', '.join(map(repr, missing))}; "
                                 f"it has {', '.join(sorted(self.last))}")
        started: list = []
        try:
            for server in self.servers.values():
                await server.start()
                started.append(server)
            for _, server in self.opcua.values():
                await server.start()
                started.append(server)
            self._publish_opcua_now()
            for out in self.streams.values():
                out.link.open()
            for pair, server in self.lines.values():
                pair.open()
                await server.start()
                started.append(server)
        except OSError:
            for server in started:
                await server.stop()
            for pair, _ in self.lines.values():
                pair.close()
            raise
        self.resume()

    async def stop(self) -> None:
        """Stop the model and close every face."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for server in self.servers.values():
            await server.stop()
        for _, server in self.opcua.values():
            await server.stop()
        for out in self.streams.values():
            out.link.close()
        for pair, server in self.lines.values():
            await server.stop()
            pair.close()
        if self.truth is not None:
            self.truth.close()

    def _publish_opcua_now(self) -> None:
        """The OPC UA faces show the current image from the moment they start."""
        for face, server in self.opcua.values():
            server.set_nowait(_opcua_values(face, self.last), source_ns=int(self._truth_ns(self.model.step_count)))


def _opcua_values(face: OpcUaFace, values: dict) -> dict:
    """One scan's values as the OPC UA variables' types take them."""
    out = {}
    for ch, (typ, length) in face.channels.items():
        v = values[ch]
        if typ == "Boolean":
            v = bool(v)
        elif typ == "String":
            v = str(v)
        elif typ not in ("Double", "Float"):
            v = round(float(v))
        else:
            v = float(v)
        out[ch] = [v] * length if length else v
    return out
