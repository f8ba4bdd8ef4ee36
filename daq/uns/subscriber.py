"""An API node's live view from MQTT: ``rigdaq/<site>/+/+/#`` → :class:`daq.live.LiveFeed`.

A node that acquires nothing can serve the live WebSocket feed and the latest values
from what acquisition nodes publish (:mod:`daq.uns.topics`)::

    feed = LiveFeed(LatestValues())
    source = MqttLiveSource(settings.mqtt, feed)
    supervisor.spawn("mqtt live", source.run)       # and feed.run as usual

``latest`` messages update the feed's :class:`~daq.live.LatestValues` (the feed's own
ticker sends them on at its rate); ``cycle`` and ``event`` messages go to the feed's
clients at once. The retained ``verdict``, ``state`` and ``$node/state`` messages are
kept (:attr:`MqttLiveSource.last_cycle`, :attr:`~MqttLiveSource.states`,
:attr:`~MqttLiveSource.nodes`); a node that goes offline (its will) or comes back is
told to its rigs' clients as a ``node_offline`` / ``node_online`` event.

The connection comes back by itself after a broker restart (subscribing again, which
delivers the retained topics again).
"""

from __future__ import annotations

import logging
import time
from collections import deque

import aiomqtt

from daq.cycles.result import CycleResult
from daq.events import Event
from daq.live import LatestValues, LiveFeed
from daq.uns import topics as uns
from daq.uns.link import LinkStatus, connected, keep_connected, make_client, run_session

log = logging.getLogger(__name__)


class MqttLiveSource:
    """Feeds a :class:`~daq.live.LiveFeed` (and its :class:`~daq.live.LatestValues`) from the broker.

    ``settings`` is :class:`daq.config.MqttSettings` (its ``site`` says what to
    subscribe to). Without ``feed`` the readings go to a :class:`LatestValues` of its
    own (:attr:`live`) and cycles and events are only kept; :meth:`attach` gives it a
    feed later.
    """

    def __init__(self, settings, feed: LiveFeed | None = None, *, client_id: str | None = None,
                 recent_max: int = 500):
        self.settings = settings
        self.topic_filter = uns.subscription(settings.site)
        self.client_id = client_id or f"{settings.client_id or 'rigdaq-' + settings.node}-live"
        self.status = LinkStatus("live source")
        self.feed: LiveFeed | None = None
        self.live = LatestValues()
        self.received = 0
        self.rejected = 0  # messages that were not a valid UNS payload
        self.last_cycle: dict[str, CycleResult] = {}
        self.states: dict[str, dict] = {}  # rig → its state payload
        self.nodes: dict[str, dict] = {}  # node → its $node/state payload
        self.recent_events: deque[Event] = deque(maxlen=recent_max)
        if feed is not None:
            self.attach(feed)

    def attach(self, feed: LiveFeed) -> None:
        """Push into ``feed`` from now on (readings into ``feed.live``)."""
        self.feed = feed
        self.live = feed.live

    def rigs(self) -> list[str]:
        """The rigs heard of so far."""
        return sorted(set(self.live.rigs) | set(self.states) | set(self.last_cycle))

    # -- messages -----------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes | bytearray | str) -> bool:
        """Apply one message; False when it is not a (valid) UNS message of this site."""
        t = uns.parse_topic(topic)
        if t is None or t.site != self.settings.site:
            return False
        try:
            p = uns.decode(payload)
            if t.rig is None:
                self._node(t.node, t.leaf, p)
            else:
                self._rig(t.node, t.rig, t.leaf, p)
        except (ValueError, KeyError, TypeError) as e:
            self.rejected += 1
            log.debug("mqtt live: cannot use %s: %s", topic, e)
            return False
        self.received += 1
        return True

    def _rig(self, node: str, rig: str, leaf: str, p: dict) -> None:
        if leaf == "latest":
            readings = uns.readings_from_payload(p)
            for ch, r in readings.items():
                self.live.units[(rig, ch)] = r.unit
            self.live.rigs.setdefault(rig, {}).update(readings)
        elif leaf in ("cycle", "verdict"):
            c = uns.cycle_from_payload(p)
            self.last_cycle[rig] = c
            if leaf == "cycle" and self.feed is not None:
                self.feed.cycle(c)
        elif leaf == "event":
            self._event(uns.event_from_payload(p))
        elif leaf == "state":
            self.states[rig] = {**p, "node": node}

    def _node(self, node: str, leaf: str, p: dict) -> None:
        if leaf == "event":
            self._event(uns.event_from_payload(p))
            return
        before = self.nodes.get(node)
        self.nodes[node] = p
        if before is not None and bool(before.get("online")) != bool(p.get("online")):
            online = bool(p.get("online"))
            for rig in p.get("rigs") or before.get("rigs") or []:
                self._event(Event("node_online" if online else "node_offline",
                                  f"acquisition node {node} is {'online' if online else 'offline'} "
                                  f"({p.get('reason', '')})", rig=rig, level="info" if online else "warning",
                                  t_ns=int(p.get("t_ns") or time.time_ns()),
                                  fields={"node": node}))

    def _event(self, e: Event) -> None:
        self.recent_events.append(e)
        if self.feed is not None:
            self.feed.event(e)

    # -- the connection -----------------------------------------------------------------------
    async def run(self) -> None:
        """Subscribe and follow; reconnect and subscribe again whenever the connection breaks."""
        await keep_connected(self.status, self._session)

    async def _session(self) -> None:
        async with make_client(self.settings, identifier=self.client_id) as client:
            connected(self.status)
            await client.subscribe(self.topic_filter, qos=1)
            await run_session(client, on_message=self._on_message)

    def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if isinstance(payload, bytes | bytearray | str):
            self.handle(str(message.topic), payload)
        else:
            self.rejected += 1

    def health(self) -> dict:
        """For ``/api/health``."""
        return {**self.status.as_dict(), "subscription": self.topic_filter, "received": self.received,
                "rejected": self.rejected, "rigs": self.rigs(),
                "nodes": {n: bool(p.get("online")) for n, p in self.nodes.items()}}
