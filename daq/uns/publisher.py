"""An acquisition node's live data on MQTT: bus → bounded queue → broker (topics: :mod:`daq.uns.topics`).

:class:`MqttPublisher` has its own bus subscription. What it takes from the bus is
turned into messages at once (synchronously; nothing here waits for the network) and
put on a bounded queue; a separate task sends that queue over a connection that comes
back by itself. Acquisition never waits for MQTT:

- ``latest`` readings are decimated to at most ``latest_hz`` per rig (sample time);
- ``latest``, ``cycle`` and ``event`` messages wait in one queue of ``queue_max``
  messages; when it is full the *oldest* is dropped and counted per kind in
  :attr:`MqttPublisher.dropped` (``/metrics``: ``rigdaq_mqtt_dropped``);
- retained topics (``$node/state``, ``<rig>/state``, ``<rig>/verdict``) are not queued
  but kept, last value per topic: they cannot be lost, only superseded, and all of them
  are published again on every (re)connection;
- the will is ``$node/state`` with ``online: false`` (retained), so subscribers learn
  when the node vanishes; a clean :meth:`MqttPublisher.stop` publishes it itself.

With ``[mqtt] sparkplug = true`` a :class:`daq.uns.sparkplug.SparkplugEdge` publishes
the same readings as Sparkplug B on a connection of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from daq import __version__
from daq.bus import SampleBus, Tagged
from daq.cycles.result import CycleResult
from daq.events import Event
from daq.live import LatestValues
from daq.uns import topics as uns
from daq.uns.link import LinkStatus, connected, keep_connected, make_client, run_session
from daq.uns.sparkplug import SparkplugEdge, device_id

log = logging.getLogger(__name__)

#: the kinds of queued message (and of drop counters)
KINDS = ("latest", "cycle", "event")


@dataclass(slots=True)
class Outgoing:
    """One message for the broker."""

    kind: str
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


class MqttPublisher:
    """Publishes a node's live data to the Unified Namespace; ``run()`` is its supervised loop.

    ``settings`` is :class:`daq.config.MqttSettings`; ``rigs`` maps each rig to its
    device names (their state is ``unknown`` until something is seen) and ``units``
    ``(rig, channel)`` to the channel's unit. ``clock`` gives the wall time for the
    flush of held-back readings (monotonic seconds).

    Counters (``/api/health``, ``/metrics``): :attr:`published` and :attr:`dropped` per
    kind, :attr:`status` (connection), :attr:`queued`.
    """

    def __init__(self, settings, bus: SampleBus, *, rigs: Mapping[str, Iterable[str]] | None = None,
                 units: Mapping[tuple[str, str], str] | None = None, version: str = __version__,
                 subscription_max: int = 10_000, clock: Callable[[], float] = time.monotonic,
                 bd_seq_file: Path | None = None):
        self.settings = settings
        self.topics = uns.Topics(settings.site, settings.node)
        self.client_id = settings.client_id or f"rigdaq-{settings.node}"
        self.version = version
        self.qos = settings.qos
        self.period_ns = int(1e9 / settings.latest_hz)
        self.queue_max = settings.queue_max
        self.sub = bus.subscribe("mqtt", maxsize=subscription_max)
        self.bus = bus
        self.status = LinkStatus("uns")
        self.published: dict[str, int] = dict.fromkeys((*KINDS, "state"), 0)
        self.dropped: dict[str, int] = dict.fromkeys((*KINDS, "sparkplug"), 0)
        self.processed = 0  # bus items handled
        self.live = LatestValues()
        if units:
            for (rig, ch), unit in units.items():
                self.live.units[(rig, ch)] = unit
        self._clock = clock
        self._queue: deque[Outgoing] = deque()
        self._retained: dict[str, Outgoing] = {}
        self._dirty: dict[str, None] = {}  # retained topics not yet sent (ordered set)
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._devices: dict[str, dict[str, dict]] = {}  # rig → device → state
        self._runs: dict[str, int | str | None] = {}
        self._last_pub_ns: dict[str, int] = {}  # rig → sample time of its last latest
        self._held: dict[str, float] = {}  # rig → wall time of its newest block not yet published
        self._fresh: dict[str, set[str]] = {}  # rig → devices with values since its last latest
        self.sparkplug = (SparkplugEdge(settings, dropped=self.dropped, bd_seq_file=bd_seq_file)
                          if settings.sparkplug else None)
        for rig, devices in (rigs or {}).items():
            self._devices[rig] = {d: {"state": "unknown", "t_ns": None, "message": "", "reason": ""} for d in devices}
            self._rig_state(rig, time.time_ns())
        self._node_state(online=False, reason="starting", send=False)

    @classmethod
    def for_settings(cls, settings, bus: SampleBus, **kw) -> MqttPublisher:
        """The publisher of a service's :class:`daq.config.Settings` (its ``mqtt`` and rigs)."""
        rigs = {r.name: [d.name for d in r.devices] for r in settings.rigs}
        units = {(r.name, ch): u for r in settings.rigs for d in r.devices for ch, u in d.channel_units().items()}
        kw.setdefault("bd_seq_file", settings.data_dir / "sparkplug_bdseq")  # kept across restarts
        return cls(settings.mqtt, bus, rigs=rigs, units=units, **kw)

    # -- bus side: synchronous, never waits ---------------------------------------------------
    def handle(self, item) -> None:
        """Turn one bus item into messages (queued or kept as retained)."""
        self.processed += 1
        if isinstance(item, Tagged):
            self._block(item)
        elif isinstance(item, CycleResult):
            payload = uns.encode(uns.cycle_payload(item))
            self._offer(Outgoing("cycle", self.topics.rig(item.rig, "cycle"), payload, self.qos))
            self._retain(self.topics.rig(item.rig, "verdict"), payload)
        elif isinstance(item, Event):
            self._event(item)

    def _offer(self, msg: Outgoing) -> None:
        """Queue ``msg``; when the queue is full the oldest message goes (counted by its kind)."""
        if len(self._queue) >= self.queue_max:
            old = self._queue.popleft()
            self.dropped[old.kind] += 1
        self._queue.append(msg)
        self._wake.set()

    def _retain(self, topic: str, payload: bytes) -> None:
        self._retained[topic] = Outgoing("state", topic, payload, self.qos, retain=True)
        self._dirty[topic] = None
        self._wake.set()

    def _node_state(self, *, online: bool, reason: str, send: bool = True) -> bytes:
        payload = uns.encode(uns.node_payload(self.topics, online=online, reason=reason, t_ns=time.time_ns(),
                                          version=self.version, rigs=sorted(self._devices)))
        if send:
            self._retain(self.topics.node_state, payload)
        return payload

    def _rig_devices(self, rig: str) -> dict[str, dict]:
        """The device states of ``rig``; a rig first heard of now is announced in ``$node/state``."""
        devices = self._devices.get(rig)
        if devices is None:
            devices = self._devices[rig] = {}
            if self.status.connected and not self._stopping:
                self._node_state(online=True, reason="connected")
        return devices

    def _rig_state(self, rig: str, t_ns: int) -> None:
        devices = self._rig_devices(rig)
        self._retain(self.topics.rig(rig, "state"),
                     uns.encode(uns.state_payload(rig, self.topics.node, t_ns=t_ns, run=self._runs.get(rig),
                                              devices=devices)))

    def _set_device(self, rig: str, device: str, state: str, t_ns: int, message: str = "", reason: str = "") -> None:
        devices = self._rig_devices(rig)
        devices[device] = {"state": state, "t_ns": t_ns, "message": message, "reason": reason}
        self._rig_state(rig, t_ns)
        if self.sparkplug is not None:
            (self.sparkplug.device_down if state == "fault" else self.sparkplug.device_up)(device_id(rig, device))

    def _event(self, e: Event) -> None:
        if e.rig:
            if e.device and e.kind in ("device_fault", "device_stale", "device_recovered"):
                state = {"device_fault": "fault", "device_stale": "stale", "device_recovered": "ok"}[e.kind]
                self._set_device(e.rig, e.device, state, e.t_ns, e.message if state != "ok" else "",
                                 str(e.fields.get("reason", "")) if state != "ok" else "")
            elif e.kind in ("run_start", "run_resumed", "run_stop"):
                self._runs[e.rig] = e.fields.get("run_id") if e.kind != "run_stop" else None
                self._rig_state(e.rig, e.t_ns)
            topic = self.topics.rig(e.rig, "event")
        else:
            topic = self.topics.node_event
        self._offer(Outgoing("event", topic, uns.encode(uns.event_payload(e)), self.qos))

    def _block(self, item: Tagged) -> None:
        rig, block = item.rig, item.block
        if len(block) == 0:
            return
        dev = self._rig_devices(rig).get(block.device)
        if dev is None or dev["state"] == "unknown":
            self._set_device(rig, block.device, "ok", int(block.t_ns[-1]))
        self.live.update(rig, block)
        self._fresh.setdefault(rig, set()).add(block.device)
        last = self._last_pub_ns.get(rig)
        if last is None or int(block.t_ns[-1]) - last >= self.period_ns:
            self._publish_latest(rig)
        else:
            self._held[rig] = self._clock()

    def _publish_latest(self, rig: str) -> None:
        readings = self.live.latest(rig)
        self._held.pop(rig, None)
        if not readings:
            return
        payload = uns.readings_payload(rig, readings)
        self._last_pub_ns[rig] = payload["t_ns"]
        self._offer(Outgoing("latest", self.topics.rig(rig, "latest"), uns.encode(payload), 0))
        fresh = self._fresh.pop(rig, set())
        if self.sparkplug is not None:
            for device in sorted(fresh):
                values = {ch: r for ch, r in readings.items() if r.device == device}
                self.sparkplug.offer_data(device_id(rig, device), values)

    def flush_held(self) -> None:
        """Publish the readings of rigs whose blocks paused for a period since they were held back."""
        now = self._clock()
        period_s = self.period_ns / 1e9
        for rig, since in list(self._held.items()):
            if now - since >= period_s:
                self._publish_latest(rig)

    def _held_timeout(self) -> float | None:
        if not self._held:
            return None
        return max(0.0, min(self._held.values()) + self.period_ns / 1e9 - self._clock())

    async def _follow_bus(self) -> None:
        run = 0
        while True:
            item = self.sub.get_nowait()
            run += 1
            if item is not None and run % 256 == 0:
                await asyncio.sleep(0)  # a long backlog: let the senders (and acquisition) run meanwhile
            if item is None:
                timeout = self._held_timeout()
                try:
                    item = await asyncio.wait_for(self.sub.get(), timeout) if timeout != 0 else None
                except TimeoutError:
                    item = None
            if item is not None:
                try:
                    self.handle(item)
                except Exception:  # a view: a bad item is logged, never stops the stage
                    log.exception("mqtt: cannot publish %s", type(item).__name__)
            self.flush_held()

    # -- network side -------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Messages waiting for the broker."""
        return len(self._queue)

    async def run(self) -> None:
        """Follow the bus and keep the broker connection(s) up; runs until cancelled."""
        tasks = [asyncio.create_task(self._follow_bus(), name="mqtt bus"),
                 asyncio.create_task(self._connection(), name="mqtt uns")]
        if self.sparkplug is not None:
            tasks.append(asyncio.create_task(self.sparkplug.run(), name="mqtt sparkplug"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # re-raise for the supervisor
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _connection(self) -> None:
        await keep_connected(self.status, self._session, stopping=lambda: self._stopping)
        self._stopped.set()
        await asyncio.Event().wait()  # stopped: idle until cancelled

    async def stop(self, timeout_s: float = 3.0) -> None:
        """Send what is queued and the retained ``offline`` state, then disconnect (within ``timeout_s``)."""
        while (item := self.sub.get_nowait()) is not None:  # what reached the bus before the stop
            try:
                self.handle(item)
            except Exception:
                log.exception("mqtt: cannot publish %s", type(item).__name__)
        for rig in list(self._held):
            self._publish_latest(rig)
        self._node_state(online=False, reason="stopped")
        self._stopping = True
        self._wake.set()
        waits = [self._stopped.wait()] if self.status.connected else []
        if self.sparkplug is not None:
            waits.append(self.sparkplug.stop(timeout_s))
        if waits:
            try:
                await asyncio.wait_for(asyncio.gather(*waits), timeout_s)
            except TimeoutError:
                log.warning("mqtt: could not send everything within %.1f s of the stop (%d queued)",
                            timeout_s, len(self._queue))
        self.bus.unsubscribe(self.sub)

    async def _session(self) -> None:
        will = aiomqtt.Will(self.topics.node_state,
                            self._node_state(online=False, reason="connection lost", send=False),
                            qos=1, retain=True)
        async with make_client(self.settings, identifier=self.client_id, will=will) as client:
            connected(self.status)
            if not self._stopping:
                self._node_state(online=True, reason="connected")
            # all retained topics again, the node's first: the broker may have lost them (restarted
            # without persistence)
            first = self.topics.node_state
            self._dirty = dict.fromkeys(sorted(self._retained, key=lambda t: t != first))
            await run_session(client, self._send(client))

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            if self._dirty:
                topic = next(iter(self._dirty))
                msg = self._retained[topic]
                await client.publish(topic, msg.payload, qos=msg.qos, retain=True)
                if self._retained.get(topic) is msg:
                    self._dirty.pop(topic, None)
                self.published["state"] += 1
            elif self._queue:
                msg = self._queue[0]
                await client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
                if self._queue and self._queue[0] is msg:  # not dropped meanwhile
                    self._queue.popleft()
                self.published[msg.kind] += 1
            elif self._stopping:
                return
            else:
                self._wake.clear()
                await self._wake.wait()

    def health(self) -> dict:
        """For ``/api/health`` (``"mqtt"``)."""
        return {**self.status.as_dict(), "broker": f"{self.settings.host}:{self.settings.port}",
                "client_id": self.client_id, "site": self.topics.site, "node": self.topics.node,
                "queued": len(self._queue), "queue_max": self.queue_max, "published": dict(self.published),
                "dropped": dict(self.dropped), "lost_on_bus": self.sub.lost_blocks,
                "sparkplug": self.sparkplug.health() if self.sparkplug is not None else None}

