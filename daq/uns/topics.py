"""The rigdaq Unified Namespace: topic tree and JSON payloads (the contract with consumers).

Topic tree
==========

Every acquisition node publishes under ``rigdaq/<site>/<node>/``::

    rigdaq/<site>/<node>/$node/state    retained  QoS [mqtt] qos   the node: online or not (also the MQTT will)
    rigdaq/<site>/<node>/$node/event              QoS [mqtt] qos   events of no rig (service start/stop, storage)
    rigdaq/<site>/<node>/<rig>/state    retained  QoS [mqtt] qos   per-device state and the rig's active run
    rigdaq/<site>/<node>/<rig>/latest             QoS 0            latest readings, at most latest_hz per rig
    rigdaq/<site>/<node>/<rig>/cycle              QoS [mqtt] qos   each analysed cycle (blow, test step)
    rigdaq/<site>/<node>/<rig>/verdict  retained  QoS [mqtt] qos   the last cycle again (same payload)
    rigdaq/<site>/<node>/<rig>/event              QoS [mqtt] qos   device faults, run start/stop, alarms …

An API node subscribes to ``rigdaq/<site>/+/+/#`` (:func:`subscription`). ``site``,
``node`` and rig names are single topic levels: not empty, without ``/``, ``+``, ``#``,
control characters or a leading ``$`` (:func:`check_level`); ``$node`` is therefore
never a rig. Retained topics are published again whenever the node (re)connects, so a
broker that lost them (restarted without persistence) has them back at once.

Payloads
========

JSON (orjson) objects; times are int nanoseconds since the Unix epoch; a non-finite
number is ``null``. ``latest``, ``cycle`` and ``event`` are the messages of the live
WebSocket feed (:class:`daq.live.LiveFeed`) with a few more keys, so an API node can
pass them on as they are.

``$node/state``::

    {"type": "node", "site": "plant1", "node": "press-pc", "online": true,
     "reason": "connected", "t_ns": 1700000000000000000, "version": "0.1.0",
     "rigs": ["press1", "srm1"]}

  ``online`` is false with ``reason`` ``"stopped"`` after a clean stop, and
  ``"connection lost"`` when the broker publishes it as the node's will (its ``t_ns``
  is then the time the node connected). ``rigs`` lists the rigs it publishes (those of
  its configuration, and any other it has heard of).

``<rig>/state``::

    {"type": "state", "rig": "press1", "node": "press-pc", "t_ns": …, "run": 12,
     "devices": {"plc": {"state": "ok", "t_ns": …, "message": "", "reason": ""}}}

  ``run`` is the active run's id or null. A device's ``state`` is ``unknown`` (nothing
  seen yet), ``ok`` (data flows, or ``device_recovered``), ``fault``
  (``device_fault``: ``message`` and ``reason`` say why) or ``stale``
  (``device_stale``: it answers, its values stopped moving). Whether the node itself
  is up is ``$node/state``.

``<rig>/latest``::

    {"type": "readings", "rig": "press1", "t_ns": …,
     "channels": {"force": {"value": 812.5, "unit": "kN", "t_ns": …, "quality": 0, "device": "plc"}}}

  The latest valid value of every channel seen so far (like the live feed's readings);
  ``t_ns`` is the newest reading's time. Published at most once per ``1/latest_hz`` of
  sample time per rig; what that holds back goes out once the rig's blocks pause for
  that long, so the last values are never withheld.

``<rig>/cycle`` and ``<rig>/verdict``::

    {"type": "cycle", "rig": "press1", "id": null, "uid": "…", "cycle_no": 41,
     "kind": "screw_press", "noun": "blow", "t_ns": …, "end_ns": …, "verdict": "pass",
     "reasons": [], "run": "12", "metrics": {"energy_kj": 512.0}, "info": {"part": 3},
     "version": "press-1.4"}

  A cycle can come twice (its update once its end is known): ``uid`` identifies it.

``<rig>/event`` and ``$node/event``::

    {"type": "event", "rig": "press1", "kind": "device_fault", "level": "warning",
     "device": "plc", "message": "device down: timeout", "t_ns": …, "fields": {"reason": "timeout"}}
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass

import orjson

from daq.cycles.result import CycleResult
from daq.events import Event
from daq.live import Reading

ROOT = "rigdaq"
#: the reserved "rig" level of what belongs to the node itself
NODE_LEVEL = "$node"
#: leaves under a rig
RIG_LEAVES = ("state", "latest", "cycle", "verdict", "event")
#: leaves under ``$node``
NODE_LEAVES = ("state", "event")
#: topics the broker keeps for late subscribers
RETAINED = frozenset({"state", "verdict"})
#: device states in ``<rig>/state``
DEVICE_STATES = ("unknown", "ok", "fault", "stale")


def check_level(value: str, what: str = "topic level") -> str:
    """``value`` if it is usable as one MQTT topic level, else ValueError saying why."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    bad = sorted({c for c in value if c in "/+#" or ord(c) < 0x20 or ord(c) == 0x7F})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ValueError(f"{what} {value!r} must be one MQTT topic level: no {shown}")
    if value.startswith("$"):
        raise ValueError(f"{what} {value!r} must not start with '$' (reserved)")
    if len(value.encode()) > 256:
        raise ValueError(f"{what} is longer than 256 bytes")
    return value


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one node: ``rigdaq/<site>/<node>/…``."""

    site: str
    node: str

    def __post_init__(self) -> None:
        check_level(self.site, "site")
        check_level(self.node, "node")

    @property
    def base(self) -> str:
        """``rigdaq/<site>/<node>``."""
        return f"{ROOT}/{self.site}/{self.node}"

    def rig(self, rig: str, leaf: str) -> str:
        """``rigdaq/<site>/<node>/<rig>/<leaf>``."""
        if leaf not in RIG_LEAVES:
            raise ValueError(f"no leaf {leaf!r} under a rig; leaves are {', '.join(RIG_LEAVES)}")
        return f"{self.base}/{check_level(rig, 'rig')}/{leaf}"

    @property
    def node_state(self) -> str:
        """``rigdaq/<site>/<node>/$node/state`` (retained; the will)."""
        return f"{self.base}/{NODE_LEVEL}/state"

    @property
    def node_event(self) -> str:
        """``rigdaq/<site>/<node>/$node/event``: events of no rig."""
        return f"{self.base}/{NODE_LEVEL}/event"


def default_node() -> str:
    """The node name when ``[mqtt] node`` is not set: this host's name up to its first dot."""
    return socket.gethostname().split(".")[0] or "rigdaq"


def subscription(site: str) -> str:
    """What an API node subscribes to: every node and rig of ``site``."""
    return f"{ROOT}/{check_level(site, 'site')}/+/+/#"


@dataclass(frozen=True, slots=True)
class UnsTopic:
    """A parsed UNS topic; ``rig`` is None for the node's own topics (``$node``)."""

    site: str
    node: str
    rig: str | None
    leaf: str


def parse_topic(topic: str) -> UnsTopic | None:
    """The parts of a UNS topic, or None when ``topic`` is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != ROOT:
        return None
    _, site, node, rig, leaf = parts
    if not site or not node or not rig:
        return None
    if rig == NODE_LEVEL:
        return UnsTopic(site, node, None, leaf) if leaf in NODE_LEAVES else None
    if rig.startswith("$") or leaf not in RIG_LEAVES:
        return None
    return UnsTopic(site, node, rig, leaf)


# -- payloads ------------------------------------------------------------------------------
def _jsonable(v):
    """Numpy scalars (anything with ``item()``) as plain Python values."""
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(f"cannot publish {type(v).__name__}")


def encode(payload: dict) -> bytes:
    """A payload as JSON bytes (numpy values allowed; NaN and ±inf become null)."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY, default=_jsonable)


def decode(data: bytes | bytearray | str) -> dict:
    """A payload from JSON; ValueError when it is not a JSON object."""
    obj = orjson.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("a UNS payload is a JSON object")
    return obj


def _finite(v) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def cycle_noun(kind: str) -> str:
    """What the rig's kind calls one cycle ("blow", "step"), as the operator page says it."""
    from daq.rigs import KINDS

    spec = KINDS.get(kind)
    return (spec.cycle_noun if spec is not None else None) or "cycle"


def node_payload(topics: Topics, *, online: bool, reason: str, t_ns: int, version: str,
                 rigs: list[str]) -> dict:
    """``$node/state``."""
    return {"type": "node", "site": topics.site, "node": topics.node, "online": online, "reason": reason,
            "t_ns": t_ns, "version": version, "rigs": list(rigs)}


def state_payload(rig: str, node: str, *, t_ns: int, run: int | str | None, devices: dict[str, dict]) -> dict:
    """``<rig>/state``."""
    return {"type": "state", "rig": rig, "node": node, "t_ns": t_ns, "run": run,
            "devices": {d: dict(s) for d, s in devices.items()}}


def readings_payload(rig: str, readings: dict[str, Reading]) -> dict:
    """``<rig>/latest`` from :meth:`daq.live.LatestValues.latest`."""
    return {"type": "readings", "rig": rig, "t_ns": max((r.t_ns for r in readings.values()), default=0),
            "channels": {ch: {"value": r.value, "unit": r.unit, "t_ns": r.t_ns, "quality": r.quality,
                              "device": r.device}
                         for ch, r in readings.items()}}


def readings_from_payload(p: dict) -> dict[str, Reading]:
    """Channel → :class:`daq.live.Reading` of a ``latest`` payload."""
    return {ch: Reading(c.get("value"), c.get("unit", ""), int(c["t_ns"]), int(c.get("quality", 0)),
                        c.get("device", ""))
            for ch, c in p["channels"].items()}


def cycle_payload(c: CycleResult) -> dict:
    """``<rig>/cycle`` and ``<rig>/verdict``: the live feed's cycle message and a few more keys."""
    return {"type": "cycle", "rig": c.rig, "id": c.id, "uid": getattr(c, "uid", None), "cycle_no": c.cycle_no,
            "kind": c.kind, "noun": cycle_noun(c.kind), "t_ns": c.t_ns, "end_ns": c.end_ns or None,
            "verdict": c.verdict, "reasons": list(c.reasons), "run": c.run,
            "metrics": {k: _finite(v) for k, v in c.metrics.items()}, "info": dict(c.info),
            "version": c.version}


def cycle_from_payload(p: dict) -> CycleResult:
    """The :class:`~daq.cycles.result.CycleResult` of a ``cycle`` payload (without samples)."""
    c = CycleResult(rig=p["rig"], cycle_no=int(p["cycle_no"]), t_ns=int(p["t_ns"]), verdict=p["verdict"],
                    metrics=dict(p.get("metrics") or {}), reasons=list(p.get("reasons") or []),
                    version=p.get("version") or "", run=p.get("run") or "", kind=p.get("kind") or "",
                    end_ns=int(p.get("end_ns") or 0), info=dict(p.get("info") or {}), id=p.get("id"))
    if p.get("uid") and hasattr(c, "uid"):
        c.uid = p["uid"]
    return c


def event_payload(e: Event) -> dict:
    """``<rig>/event`` and ``$node/event``: the live feed's event message and its fields."""
    return {"type": "event", "rig": e.rig, "kind": e.kind, "level": e.level, "device": e.device,
            "message": e.message, "t_ns": e.t_ns, "fields": dict(e.fields)}


def event_from_payload(p: dict) -> Event:
    """The :class:`~daq.events.Event` of an ``event`` payload."""
    return Event(p["kind"], p.get("message", ""), rig=p.get("rig", ""), device=p.get("device", ""),
                 level=p.get("level", "info"), t_ns=int(p["t_ns"]), fields=dict(p.get("fields") or {}))
