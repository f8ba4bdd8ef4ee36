"""OPC UA servers: their rig-file schema and their acquisition (:mod:`drivers.opcua` underneath).

A device with ``transport = "opcua"`` names the server's ``endpoint``, its security
(``security_mode`` None/Sign/SignAndEncrypt, ``security_policy`` None/Basic256Sha256
with ``certificate``/``private_key`` files), optional ``username``/``password``, and its
``nodes`` (NodeId or browse path, with channel name, unit, scale, type and array length).

Two ways to acquire:

* **polling** (``poll_hz``): one Read of every node per poll; a sample's timestamp is
  the newest source timestamp of the read (the server's, when it gives one), else the
  midpoint of request and reply; its quality the worst node's status;
* **subscription** (``sampling_interval_ms``): data-change notifications, each with its
  own source timestamp and status, drained every ``block_s`` into one block per node.
  The server queues up to ``queue_size`` values per node between publishes; a value it
  had to drop is flagged (Overflow) and recorded as a ``data_lost`` event, as are
  notification messages missing from the sequence and notifications the client buffer
  could not hold.

OPC UA status codes become sample quality (Good 0, Uncertain 1, Bad 2). A lost
connection is a ``device_fault`` event; the session (and subscription) is re-created
with backoff and ``device_recovered`` says after how long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import numpy as np
from pydantic import Field, model_validator

from daq.acquisition.polling import DeviceStatus
from daq.acquisition.transports.base import BuildContext, Built, Transport
from daq.bus import SampleBus, Tagged
from daq.events import Event
from daq.schema import Name, Strict, check_rate
from drivers.block import Block
from drivers.opcua import NODE_TYPES, NodeSpec, OpcUaClient, OpcUaError, OpcUaSettings
from drivers.sim.rig import OpcUaFace

log = logging.getLogger(__name__)


class OpcUaNodeConfig(Strict):
    """One variable of the server and the channel it feeds."""

    name: Name
    node: str = Field(min_length=1, description="NodeId (ns=2;s=Press.Force) or browse path (2:Press/2:Force)")
    type: str = Field(default="Double", description="the variable's OPC UA built-in type")
    unit: str = ""
    scale: float = 1.0
    length: int = Field(default=0, ge=0, le=4096, description="array of this many elements (0: a scalar)")

    @model_validator(mode="after")
    def _known_type(self) -> OpcUaNodeConfig:
        if self.type not in NODE_TYPES:
            raise ValueError(f"type {self.type!r} is not one of {', '.join(NODE_TYPES)}")
        return self

    def spec(self) -> NodeSpec:
        """The driver's node description."""
        return NodeSpec(self.name, self.node, self.unit, self.scale, self.length, self.type)


class OpcUaDevice(Strict):
    """An OPC UA server read by polling or by a subscription."""

    name: Name
    transport: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="opc.tcp://host:port/path")
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    certificate: str | None = None
    private_key: str | None = None
    server_certificate: str | None = None
    username: str | None = None
    password: str | None = None
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    poll_hz: float | None = Field(default=None, description="poll every node this often")
    sampling_interval_ms: float | None = Field(default=None, gt=0, le=3_600_000,
                                               description="subscribe instead, sampling this often")
    publishing_interval_ms: float | None = Field(default=None, gt=0, le=3_600_000)
    queue_size: int = Field(default=100, ge=1, le=100_000, description="values the server queues per node")
    block_s: float = Field(default=0.1, gt=0, le=10)
    reconnect_max_s: float = Field(default=10.0, gt=0, le=3600)
    nodes: list[OpcUaNodeConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_mode(self) -> OpcUaDevice:
        if (self.poll_hz is None) == (self.sampling_interval_ms is None):
            raise ValueError("give poll_hz (polling) or sampling_interval_ms (a subscription), not both")
        if self.poll_hz is not None:
            check_rate(self.poll_hz)
        names = [c for n in self.nodes for c in n.spec().channel_names]
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise ValueError(f"channel names must be unique; repeated: {', '.join(dup)}")
        try:
            self.settings()
        except ValueError as e:
            raise ValueError(str(e)) from None
        return self

    def settings(self) -> OpcUaSettings:
        """The driver's connection settings."""
        return OpcUaSettings(self.endpoint, self.security_mode, self.security_policy, self.certificate,
                             self.private_key, self.server_certificate, self.username, self.password,
                             self.timeout_s, reconnect_max_s=self.reconnect_max_s)

    def channel_units(self) -> dict[str, str]:
        """Channel name → unit."""
        return {c: n.unit for n in self.nodes for c in n.spec().channel_names}


def _column(v: np.ndarray) -> np.ndarray:
    return v.astype(str) if v.dtype == object else v


class OpcUaAcquisition:
    """Reads one OPC UA server (polling or subscription) and publishes blocks."""

    def __init__(self, rig: str, dev: OpcUaDevice, bus: SampleBus, client: OpcUaClient | None = None):
        self.rig, self.dev, self.bus = rig, dev, bus
        self.client = client or OpcUaClient(dev.settings(), [n.spec() for n in dev.nodes])
        self.status = DeviceStatus(rig, dev.name)
        self._down_since_ns = 0

    def clock_state(self) -> dict | None:
        """Nothing kept across restarts: the server stamps its own values."""
        return None

    def _event(self, kind: str, message: str, level: str = "info", **fields) -> None:
        self.bus.publish(Event(kind, message, rig=self.rig, device=self.dev.name, level=level, fields=fields))

    def _fault(self, e: OpcUaError) -> None:
        st = self.status
        st.failed_polls += 1
        st.last_error = str(e)
        if st.state != "down":
            st.state = "down"
            self._down_since_ns = time.time_ns()
            log.warning("%s/%s: %s", self.rig, self.dev.name, e)
            self._event("device_fault", f"device down: {e}", "warning", reason=e.kind)

    def _up(self) -> None:
        st = self.status
        if st.state == "down":
            gap_s = (time.time_ns() - self._down_since_ns) / 1e9
            self._event("device_recovered", f"answering again after {gap_s:.2f} s", gap_s=gap_s)
        st.state = "ok"

    async def _connect(self) -> bool:
        try:
            await self.client.connect()
        except OpcUaError as e:
            self._fault(e)
            await asyncio.sleep(min(0.5, self.dev.reconnect_max_s))
            return False
        self.status.connects = self.client.connects
        if self.dev.sampling_interval_ms is not None and self.client.subscription is None:
            try:
                await self.client.subscribe(self.dev.sampling_interval_ms, self.dev.queue_size,
                                            self.dev.publishing_interval_ms)
            except OpcUaError as e:
                self._fault(e)
                return False
        return True

    async def run(self) -> None:
        """Acquire until cancelled."""
        try:
            if self.dev.poll_hz is not None:
                await self._poll_loop()
            else:
                await self._subscription_loop()
        finally:
            await self.client.close()

    # -- polling ---------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        period = 1.0 / self.dev.poll_hz
        rows = max(1, round(self.dev.block_s * self.dev.poll_hz))
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            buf = self.client.new_buffers(rows)
            valid = {c: np.zeros(rows, dtype=bool) for c in buf}
            t = np.zeros(rows, dtype=np.int64)
            q = np.zeros(rows, dtype=np.uint8)
            n = 0
            while n < rows:
                next_t += period
                if not self.client.connected and not await self._connect():
                    next_t = loop.time()
                    continue
                sent = time.time_ns()
                try:
                    res = await self.client.read(buf, n, valid)
                except OpcUaError as e:
                    self._fault(e)
                    continue
                got = time.time_ns()
                self.status.polls += 1
                t[n] = res.t_ns if res.t_ns is not None else (sent + got) // 2
                q[n] = res.quality
                n += 1
                self._up()
                delay = next_t - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    self.status.overruns += 1
                    next_t = loop.time()
            self._publish(Block(self.dev.name, t, {c: _column(v) for c, v in buf.items()}, q, valid))

    # -- subscription ------------------------------------------------------------------------
    async def _subscription_loop(self) -> None:
        while True:
            if not self.client.connected and not await self._connect():
                continue
            await asyncio.sleep(self.dev.block_s)
            try:
                drained = self.client.drain()
            except OpcUaError as e:
                self._fault(e)
                continue
            self._up()
            self.status.polls += 1
            lost = drained.overflows + drained.dropped
            if lost or drained.gaps:
                self.status.missing_samples += lost
                self._event("data_lost", f"{drained.overflows} value(s) the server dropped from full queues "
                            f"(queue_size {self.dev.queue_size}), {drained.dropped} the client buffer could not "
                            f"hold, {drained.gaps} notification message(s) missing", "warning",
                            overflows=drained.overflows, dropped=drained.dropped, gaps=drained.gaps)
            for s in drained.series.values():
                if len(s):
                    valid = {c: s.valid.copy() for c in s.values}
                    self._publish(Block(self.dev.name, s.t_ns, {c: _column(v) for c, v in s.values.items()},
                                        s.quality.astype(np.uint8), valid))

    def _publish(self, block: Block) -> None:
        if len(block) == 0:
            return
        self.status.samples += len(block)
        self.status.last_sample_ns = int(block.t_ns[-1])
        self.bus.publish(Tagged(self.rig, block))


class OpcUa(Transport):
    """An OPC UA server (asyncua client underneath)."""

    name = "opcua"
    schema = OpcUaDevice

    def build(self, dev: OpcUaDevice, ctx: BuildContext) -> Built:  # noqa: D102
        return Built([OpcUaAcquisition(ctx.rig, dev, ctx.bus)])

    def sim_face(self, dev: OpcUaDevice, data_dir: Path):
        """An OPC UA server at the endpoint's host and port showing each node's channel.

        The simulated server names its variables ``ns=2;s=<device>.<channel>`` (browse
        path ``2:<device>/2:<channel>``): a rig file's nodes must use those to be simulated.
        """
        url = urlparse(dev.endpoint)
        return "opcuas", OpcUaFace(dev.name, {n.name: (n.type, n.length) for n in dev.nodes},
                                   url.hostname or "127.0.0.1", url.port or 4840)

    def endpoint(self, dev: OpcUaDevice) -> str | None:
        """Several devices may read one server (different nodes, rates): no exclusivity."""
        return None


OPCUA = OpcUa()
