"""Sparkplug B (Eclipse Sparkplug 3.0) for SCADA/MES hosts: the node as an edge node, its devices as devices.

Topics are ``spBv1.0/<group>/<type>/<edge node>[/<device>]`` with ``group`` from
``[mqtt] sparkplug_group``, the edge node ``[mqtt] node`` and one Sparkplug device per
acquisition device, named ``<rig>:<device>`` (:func:`device_id`). Payloads are the
protobuf ``Payload`` of Eclipse Tahu's ``sparkplug_b.proto``
(:mod:`daq.uns.sparkplug_b_pb2`, generated, checked in).

A session (one MQTT connection, its own: the will differs from the UNS one):

- CONNECT with the will ``NDEATH`` (QoS 1, not retained) carrying ``bdSeq``, which
  starts at 0 and goes up by one (mod 256) with every connection;
- ``NBIRTH`` with ``seq`` 0, the same ``bdSeq`` and ``Node Control/Rebirth``;
- a ``DBIRTH`` per device once its first values are known: every metric with name,
  alias, datatype, value and, as property ``engUnit``, its unit;
- ``DDATA`` with aliases only (no names), at most ``latest_hz`` per rig like the UNS
  ``latest`` topic; a value that is not there (NaN) is sent as ``is_null``;
- ``DDEATH`` on ``device_fault``, ``DBIRTH`` again on ``device_recovered``;
- every message after ``NBIRTH`` carries the next ``seq``: 1, 2, … 255, 0, 1 …;
- an ``NCMD`` with ``Node Control/Rebirth`` = true brings ``NBIRTH`` and all ``DBIRTH``
  again (same ``bdSeq``, ``seq`` from 0);
- a clean stop publishes ``NDEATH`` itself before it disconnects.

Aliases are fixed for the life of the process and unique across the edge node. A
device whose metrics change (a channel appears, or changes type) is born again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import aiomqtt

from daq.live import Reading
from daq.uns import sparkplug_b_pb2 as pb
from daq.uns.link import LinkStatus, connected, keep_connected, make_client, run_session

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
MESSAGE_TYPES = ("NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD")
REBIRTH = "Node Control/Rebirth"
BD_SEQ = "bdSeq"
ENG_UNIT = "engUnit"

DataType = pb.DataType
_INT32 = (DataType.Value("Int8"), DataType.Value("Int16"), DataType.Value("Int32"))
_UINT32 = (DataType.Value("UInt8"), DataType.Value("UInt16"), DataType.Value("UInt32"))
_INT64 = (DataType.Value("Int64"),)
_UINT64 = (DataType.Value("UInt64"), DataType.Value("DateTime"))
DOUBLE, FLOAT = DataType.Value("Double"), DataType.Value("Float")
BOOLEAN, STRING, TEXT = DataType.Value("Boolean"), DataType.Value("String"), DataType.Value("Text")
INT64 = DataType.Value("Int64")


def check_id(value: str, what: str = "Sparkplug id") -> str:
    """``value`` if usable as a group, edge node or device id (not empty, no ``/ + #``)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    bad = sorted({c for c in value if c in "/+#"})
    if bad:
        raise ValueError(f"{what} {value!r} must not contain {' '.join(bad)}")
    return value


def topic(group: str, message_type: str, edge_node: str, device: str | None = None) -> str:
    """``spBv1.0/<group>/<type>/<edge node>[/<device>]``."""
    if message_type not in MESSAGE_TYPES:
        raise ValueError(f"no Sparkplug message type {message_type!r}")
    t = f"{NAMESPACE}/{check_id(group, 'group')}/{message_type}/{check_id(edge_node, 'edge node')}"
    return t if device is None else f"{t}/{check_id(device, 'device')}"


def device_id(rig: str, device: str) -> str:
    """The Sparkplug device of an acquisition device: ``<rig>:<device>`` (``:`` is in no rig name)."""
    return f"{rig}:{device}"


class Seq:
    """A Sparkplug sequence number: 0 … 255, then 0 again."""

    def __init__(self) -> None:
        self._next = 0

    def reset(self) -> int:
        """Start again: returns 0 (an NBIRTH's seq); the next is 1."""
        self._next = 1
        return 0

    def next(self) -> int:
        """The next number, wrapping after 255."""
        v = self._next
        self._next = (v + 1) % 256
        return v


def datatype_of(value) -> int:
    """The Sparkplug datatype of a live value (bool, int, float, str)."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT64
    if isinstance(value, float):
        return DOUBLE
    return STRING


def set_value(m: pb.Payload.Metric, datatype: int, value) -> None:
    """Put ``value`` into the metric's field for ``datatype`` (None and NaN: ``is_null``)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        m.is_null = True
    elif datatype in _INT32:
        m.int_value = int(value) & 0xFFFFFFFF  # two's complement, as the spec says
    elif datatype in _UINT32:
        m.int_value = int(value)
    elif datatype in _INT64:
        m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif datatype in _UINT64:
        m.long_value = int(value)
    elif datatype == DOUBLE:
        m.double_value = float(value)
    elif datatype == FLOAT:
        m.float_value = float(value)
    elif datatype == BOOLEAN:
        m.boolean_value = bool(value)
    elif datatype in (STRING, TEXT):
        m.string_value = str(value)
    else:
        raise ValueError(f"datatype {datatype} is not supported")


def metric_value(m: pb.Payload.Metric, datatype: int | None = None):
    """A metric's value as Python (None when null); ``datatype`` for metrics that carry only an alias."""
    dt = m.datatype if m.HasField("datatype") else datatype
    if m.is_null:
        return None
    if dt in _INT32:
        v = m.int_value
        return v - (1 << 32) if v >= 1 << 31 else v
    if dt in _INT64:
        v = m.long_value
        return v - (1 << 64) if v >= 1 << 63 else v
    field = m.WhichOneof("value")
    return None if field is None else getattr(m, field)


def _ms(t_ns: int) -> int:
    return int(t_ns) // 1_000_000


class EdgeNode:
    """The payloads of one edge node and what its current session has said (no network here)."""

    def __init__(self, group: str, node: str, last_bd_seq: int = -1):
        self.group = check_id(group, "group")
        self.node = check_id(node, "edge node")
        self.seq = Seq()
        self.bd_seq = last_bd_seq  # the last session's (an earlier process's, if kept); -1: none yet
        self.aliases: dict[tuple[str, str], int] = {}  # (device, metric) → alias, for the process's life
        self.born: dict[str, dict[str, int]] = {}  # device → metric → datatype, in this session

    def new_session(self) -> int:
        """The next connection's bdSeq (the last one + 1 mod 256, 0 first); nothing is born in it yet."""
        self.bd_seq = (self.bd_seq + 1) % 256
        self.born.clear()
        return self.bd_seq

    def alias(self, device: str, metric: str) -> int:
        """The metric's alias (made on first use, never reused)."""
        key = (device, metric)
        if key not in self.aliases:
            self.aliases[key] = len(self.aliases) + 1
        return self.aliases[key]

    def _payload(self, t_ms: int, seq: int | None) -> pb.Payload:
        p = pb.Payload(timestamp=t_ms)
        if seq is not None:
            p.seq = seq
        return p

    def ndeath(self, t_ms: int | None = None) -> tuple[str, bytes]:
        """NDEATH (the will): ``bdSeq`` only, no ``seq``."""
        p = self._payload(_ms(time.time_ns()) if t_ms is None else t_ms, None)
        m = p.metrics.add(name=BD_SEQ, datatype=INT64, timestamp=p.timestamp)
        set_value(m, INT64, self.bd_seq)
        return topic(self.group, "NDEATH", self.node), p.SerializeToString()

    def nbirth(self, t_ms: int) -> tuple[str, bytes]:
        """NBIRTH: ``seq`` 0, ``bdSeq`` and ``Node Control/Rebirth``; devices must be born again."""
        self.born.clear()
        p = self._payload(t_ms, self.seq.reset())
        m = p.metrics.add(name=BD_SEQ, datatype=INT64, timestamp=t_ms)
        set_value(m, INT64, self.bd_seq)
        m = p.metrics.add(name=REBIRTH, datatype=BOOLEAN, timestamp=t_ms)
        set_value(m, BOOLEAN, False)
        return topic(self.group, "NBIRTH", self.node), p.SerializeToString()

    def dbirth(self, device: str, readings: dict[str, Reading], t_ms: int) -> tuple[str, bytes]:
        """DBIRTH: every metric with name, alias, datatype, value and unit."""
        p = self._payload(t_ms, self.seq.next())
        types: dict[str, int] = {}
        for name, r in readings.items():
            dt = datatype_of(r.value)
            types[name] = dt
            m = p.metrics.add(name=name, alias=self.alias(device, name), datatype=dt, timestamp=_ms(r.t_ns))
            set_value(m, dt, r.value)
            if r.unit:
                m.properties.keys.append(ENG_UNIT)
                m.properties.values.add(type=STRING, string_value=r.unit)
        self.born[device] = types
        return topic(self.group, "DBIRTH", self.node, device), p.SerializeToString()

    def needs_birth(self, device: str, readings: dict[str, Reading]) -> bool:
        """Whether ``readings`` cannot go as DDATA: the device is not born, or a metric is new or changed type."""
        types = self.born.get(device)
        if types is None:
            return True
        return any(types.get(n) != datatype_of(r.value) for n, r in readings.items())

    def ddata(self, device: str, readings: dict[str, Reading], t_ms: int) -> tuple[str, bytes]:
        """DDATA: aliases and values only (the device must be born with these metrics)."""
        types = self.born[device]
        p = self._payload(t_ms, self.seq.next())
        for name, r in readings.items():
            m = p.metrics.add(alias=self.aliases[(device, name)], timestamp=_ms(r.t_ns))
            set_value(m, types[name], r.value)
        return topic(self.group, "DDATA", self.node, device), p.SerializeToString()

    def ddeath(self, device: str, t_ms: int) -> tuple[str, bytes]:
        """DDEATH: the device is gone until its next DBIRTH."""
        self.born.pop(device, None)
        p = self._payload(t_ms, self.seq.next())
        return topic(self.group, "DDEATH", self.node, device), p.SerializeToString()

    def is_rebirth_request(self, payload: bytes) -> bool:
        """Whether an NCMD payload asks for ``Node Control/Rebirth``."""
        try:
            p = pb.Payload.FromString(payload)
        except Exception:
            return False
        return any(m.name == REBIRTH and m.boolean_value for m in p.metrics)


class SparkplugEdge:
    """The Sparkplug session of a node: fed by :class:`daq.uns.publisher.MqttPublisher`, never blocking it.

    ``offer_data`` keeps the device's latest values (what a birth carries) and queues a
    DDATA; the queue is bounded (``queue_max``): when it is full the oldest is dropped
    and counted in ``dropped["sparkplug"]``.
    """

    def __init__(self, settings, *, dropped: dict[str, int] | None = None, queue_max: int | None = None,
                 clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 bd_seq_file: Path | None = None):
        self.settings = settings
        self.bd_seq_file = bd_seq_file
        self.edge = EdgeNode(settings.sparkplug_group, settings.node, self._last_bd_seq())
        self.client_id = f"{settings.client_id or 'rigdaq-' + settings.node}-spb"
        self.status = LinkStatus("sparkplug")
        self.dropped = dropped if dropped is not None else {}
        self.dropped.setdefault("sparkplug", 0)
        self.published = 0
        self.queue_max = queue_max or settings.queue_max
        self._queue: deque[tuple[str, dict[str, Reading]]] = deque()
        self._snapshot: dict[str, dict[str, Reading]] = {}  # device → metric → latest reading
        self._down: set[str] = set()
        self._changed: dict[str, None] = {}  # devices whose up/down changed (ordered set)
        self._rebirth = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._now_ms = clock_ms

    # -- fed by the publisher (sync, never waits) -------------------------------------------
    def offer_data(self, device: str, readings: dict[str, Reading]) -> None:
        """New values of ``device`` (a DDATA, or its DBIRTH)."""
        if not readings:
            return
        self._snapshot.setdefault(device, {}).update(readings)
        if len(self._queue) >= self.queue_max:
            self._queue.popleft()
            self.dropped["sparkplug"] += 1
        self._queue.append((device, dict(readings)))
        self._wake.set()

    def device_down(self, device: str) -> None:
        """The device faulted: DDEATH (once it was born)."""
        self._down.add(device)
        self._changed[device] = None
        self._wake.set()

    def device_up(self, device: str) -> None:
        """The device recovered: DBIRTH again with what is known."""
        if device in self._down:
            self._down.discard(device)
            self._changed[device] = None
            self._wake.set()

    @property
    def queued(self) -> int:
        """DDATA waiting to go out."""
        return len(self._queue)

    # -- the connection -----------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, be born, publish; reconnect (as a new session, next bdSeq) when the connection breaks."""
        await keep_connected(self.status, self._session, stopping=lambda: self._stopping)
        self._stopped.set()
        await asyncio.Event().wait()  # stopped: idle until cancelled

    async def stop(self, timeout_s: float = 3.0) -> None:
        """Send what is queued, publish NDEATH and disconnect (within ``timeout_s``)."""
        self._stopping = True
        self._wake.set()
        if self.status.connected:
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout_s)
            except TimeoutError:
                log.warning("sparkplug: could not publish NDEATH within %.1f s", timeout_s)

    def _last_bd_seq(self) -> int:
        """The bdSeq of the last session an earlier process of this node began (-1: none kept).

        Kept so that a restarted node's first NBIRTH does not repeat the bdSeq of the session
        whose NDEATH the broker may still deliver (a kill -9): a host application pairs an
        NDEATH with the NBIRTH of the same bdSeq, and would take the old death for the new session.
        """
        if self.bd_seq_file is None:
            return -1
        try:
            value = int(self.bd_seq_file.read_text().strip())
        except FileNotFoundError:
            return -1
        except (OSError, ValueError) as e:
            log.warning("sparkplug: %s is unreadable (%s); bdSeq starts at 0", self.bd_seq_file, e)
            return -1
        return value if 0 <= value < 256 else -1

    def _keep_bd_seq(self, bd_seq: int) -> None:
        """Write the session's bdSeq before its CONNECT carries it (atomically: a kill leaves one or the other)."""
        if self.bd_seq_file is None:
            return
        tmp = self.bd_seq_file.with_suffix(".tmp")
        try:
            tmp.write_text(f"{bd_seq}\n")
            tmp.replace(self.bd_seq_file)
        except OSError as e:
            log.warning("sparkplug: cannot keep bdSeq in %s (%s)", self.bd_seq_file, e)

    async def _session(self) -> None:
        bd_seq = self.edge.new_session()
        await asyncio.to_thread(self._keep_bd_seq, bd_seq)
        will_topic, will_payload = self.edge.ndeath()
        client = make_client(self.settings, identifier=self.client_id,
                             will=aiomqtt.Will(will_topic, will_payload, qos=1, retain=False))
        async with client:
            connected(self.status)
            log.info("sparkplug: session bdSeq %d as %s", bd_seq, self.edge.node)
            await client.subscribe(topic(self.edge.group, "NCMD", self.edge.node), qos=1)
            self._rebirth = True
            await run_session(client, self._send(client), on_message=self._on_message)

    def _on_message(self, message: aiomqtt.Message) -> None:
        if isinstance(message.payload, bytes | bytearray) and self.edge.is_rebirth_request(bytes(message.payload)):
            log.info("sparkplug: rebirth requested")
            self._rebirth = True
            self._wake.set()

    async def _publish(self, client: aiomqtt.Client, msg: tuple[str, bytes], qos: int = 0) -> None:
        await client.publish(msg[0], msg[1], qos=qos)
        self.published += 1

    async def _births(self, client: aiomqtt.Client) -> None:
        self._rebirth = False
        await self._publish(client, self.edge.nbirth(self._now_ms()))
        for device, readings in list(self._snapshot.items()):
            if device not in self._down:
                await self._publish(client, self.edge.dbirth(device, dict(readings), self._now_ms()))
        self._changed.clear()

    async def _send(self, client: aiomqtt.Client) -> None:
        edge = self.edge
        while True:
            if self._rebirth:
                await self._births(client)
            elif self._changed:
                device = next(iter(self._changed))
                del self._changed[device]
                if device in self._down and device in edge.born:
                    await self._publish(client, edge.ddeath(device, self._now_ms()))
                elif device not in self._down and device not in edge.born and device in self._snapshot:
                    await self._publish(client, edge.dbirth(device, dict(self._snapshot[device]), self._now_ms()))
            elif self._queue:
                device, readings = self._queue[0]
                if device in self._down:
                    pass  # kept in the snapshot: its DBIRTH carries it
                elif edge.needs_birth(device, readings):
                    await self._publish(client, edge.dbirth(device, dict(self._snapshot[device]), self._now_ms()))
                else:
                    await self._publish(client, edge.ddata(device, readings, self._now_ms()))
                if self._queue and self._queue[0][1] is readings:
                    self._queue.popleft()
            elif self._stopping:
                await self._publish(client, edge.ndeath(self._now_ms()), qos=1)
                return
            else:
                self._wake.clear()
                await self._wake.wait()

    def health(self) -> dict:
        """For ``/api/health``."""
        return {**self.status.as_dict(), "group": self.edge.group, "edge_node": self.edge.node,
                "bd_seq": self.edge.bd_seq if self.edge.bd_seq >= 0 else None, "queued": len(self._queue),
                "published": self.published, "devices": sorted(self._snapshot)}
