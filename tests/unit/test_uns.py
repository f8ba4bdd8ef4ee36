"""The UNS topic tree, payloads and settings; Sparkplug B payloads and sequence numbers (no broker)."""

from __future__ import annotations

import math
import socket

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from daq.bus import SampleBus, Tagged
from daq.config import MqttSettings, ServiceFile
from daq.cycles.result import CycleResult
from daq.events import Event
from daq.live import LatestValues, LiveFeed, Reading
from daq.uns import sparkplug as spb
from daq.uns import sparkplug_b_pb2 as pb
from daq.uns import topics as uns
from daq.uns.publisher import MqttPublisher
from daq.uns.subscriber import MqttLiveSource
from drivers.block import Block

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


# -- topics -------------------------------------------------------------------------------------
def test_topic_tree():
    t = uns.Topics("plant1", "press-pc")
    assert t.rig("press1", "latest") == "rigdaq/plant1/press-pc/press1/latest"
    assert [t.rig("r", leaf) for leaf in uns.RIG_LEAVES] == [
        "rigdaq/plant1/press-pc/r/state", "rigdaq/plant1/press-pc/r/latest", "rigdaq/plant1/press-pc/r/cycle",
        "rigdaq/plant1/press-pc/r/verdict", "rigdaq/plant1/press-pc/r/event"]
    assert t.node_state == "rigdaq/plant1/press-pc/$node/state"
    assert t.node_event == "rigdaq/plant1/press-pc/$node/event"
    assert uns.subscription("plant1") == "rigdaq/plant1/+/+/#"
    assert {"state", "verdict"} == uns.RETAINED


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "a#", "$SYS", "tab\there", "nul\0", "x" * 257])
def test_topic_levels_are_validated(bad):
    with pytest.raises(ValueError):
        uns.check_level(bad, "rig")
    with pytest.raises(ValueError):
        uns.Topics("plant1", "node").rig(bad, "latest")
    with pytest.raises(ValueError):
        uns.Topics(bad, "node")
    with pytest.raises(ValueError):
        uns.Topics("site", bad)


def test_unknown_leaf_is_refused():
    with pytest.raises(ValueError, match="no leaf"):
        uns.Topics("s", "n").rig("r", "readings")


def test_parse_topic():
    t = uns.Topics("plant1", "edge1")
    for leaf in uns.RIG_LEAVES:
        assert uns.parse_topic(t.rig("press", leaf)) == uns.UnsTopic("plant1", "edge1", "press", leaf)
    assert uns.parse_topic(t.node_state) == uns.UnsTopic("plant1", "edge1", None, "state")
    assert uns.parse_topic(t.node_event) == uns.UnsTopic("plant1", "edge1", None, "event")
    for other in ["rigdaq/plant1/edge1/press", "rigdaq/plant1/edge1/press/latest/x", "other/p/e/r/latest",
                  "rigdaq/plant1/edge1/press/readings", "rigdaq/plant1/edge1/$node/latest",
                  "rigdaq/plant1/edge1/$other/state", "rigdaq//edge1/press/latest"]:
        assert uns.parse_topic(other) is None, other


def test_payloads_round_trip():
    c = CycleResult(rig="press", cycle_no=3, t_ns=T0, verdict="pass", metrics={"e": 1.5, "f": math.nan},
                    reasons=[], version="v1", run="7", kind="screw_press", end_ns=T0 + 5, info={"part": 2})
    p = orjson.loads(uns.encode(uns.cycle_payload(c)))
    assert p["metrics"] == {"e": 1.5, "f": None} and p["noun"] == "blow" and p["type"] == "cycle"
    back = uns.cycle_from_payload(p)
    assert (back.rig, back.cycle_no, back.t_ns, back.verdict, back.run, back.kind, back.end_ns, back.info) == (
        "press", 3, T0, "pass", "7", "screw_press", T0 + 5, {"part": 2})
    assert getattr(back, "uid", None) == getattr(c, "uid", None)

    e = Event("device_fault", "down", rig="press", device="plc", level="warning", t_ns=T0, fields={"reason": "x"})
    assert uns.event_from_payload(orjson.loads(uns.encode(uns.event_payload(e)))) == e

    readings = {"force": Reading(np.float64(1.25), "kN", T0, 0, "plc"), "n": Reading(np.int64(4), "", T0 + 1, 1, "plc")}
    p = orjson.loads(uns.encode(uns.readings_payload("press", readings)))
    assert p == {"type": "readings", "rig": "press", "t_ns": T0 + 1, "channels": {
        "force": {"value": 1.25, "unit": "kN", "t_ns": T0, "quality": 0, "device": "plc"},
        "n": {"value": 4, "unit": "", "t_ns": T0 + 1, "quality": 1, "device": "plc"}}}
    assert uns.readings_from_payload(p) == {"force": Reading(1.25, "kN", T0, 0, "plc"),
                                            "n": Reading(4, "", T0 + 1, 1, "plc")}
    with pytest.raises(ValueError):
        uns.decode(b"[1, 2]")


# -- settings -----------------------------------------------------------------------------------
def test_mqtt_settings():
    top = ServiceFile.model_validate({"service": {"rigs": ["r.toml"]}})
    assert top.mqtt is None
    top = ServiceFile.model_validate({"service": {"rigs": ["r.toml"]},
                                      "mqtt": {"host": "broker", "site": "plant1", "sparkplug": True}})
    m = top.mqtt
    assert (m.host, m.port, m.site, m.qos, m.latest_hz, m.sparkplug, m.sparkplug_group) == (
        "broker", 1883, "plant1", 1, 20.0, True, "rigdaq")
    assert m.node == socket.gethostname().split(".")[0]
    for bad in [{"site": "a/b"}, {"node": "+"}, {"sparkplug_group": "g#"}, {"qos": 3}, {"latest_hz": 0},
                {"queue_max": 0}, {"client_id": ""}, {"colour": "red"}]:
        with pytest.raises(ValidationError):
            MqttSettings(**bad)


# -- publisher logic (no broker: nothing is sent, the queue is looked at) ---------------------------
class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def block(t_ms: list[int], device: str = "plc") -> Block:
    t = T0 + np.array(t_ms, dtype=np.int64) * MS
    return Block(device, t, {"force": np.array(t_ms, dtype=np.float64)})


def test_decimation_per_rig_in_sample_time_and_flush_of_what_was_held():
    clock = FakeClock()
    bus = SampleBus()
    pub = MqttPublisher(MqttSettings(site="s", node="n", latest_hz=20), bus, clock=clock)
    for k in range(10):  # 10 ms blocks: 100 Hz
        pub.handle(Tagged("press", block([10 * k])))
        pub.handle(Tagged("srm", block([10 * k + 5])))
    latest = [orjson.loads(m.payload) for m in pub._queue if m.kind == "latest"]
    assert [(p["rig"], p["t_ns"]) for p in latest] == [
        ("press", T0), ("srm", T0 + 5 * MS), ("press", T0 + 50 * MS), ("srm", T0 + 55 * MS)]
    pub.flush_held()  # held back less than a period ago: still held
    clock.t += 0.04
    pub.flush_held()
    assert sum(m.kind == "latest" for m in pub._queue) == 4
    clock.t += 0.02  # the rigs' blocks paused for a period: what was held goes out
    pub.flush_held()
    latest = [orjson.loads(m.payload) for m in pub._queue if m.kind == "latest"][4:]
    assert [(p["rig"], p["t_ns"]) for p in latest] == [("press", T0 + 90 * MS), ("srm", T0 + 95 * MS)]
    pub.flush_held()
    assert sum(m.kind == "latest" for m in pub._queue) == 6


def test_queue_drops_oldest_counted_by_kind():
    pub = MqttPublisher(MqttSettings(site="s", node="n", queue_max=3), SampleBus())
    pub.handle(Tagged("press", block([0])))  # latest
    pub.handle(CycleResult(rig="press", cycle_no=1, t_ns=T0, verdict="pass", metrics={}))
    for i in range(4):
        pub.handle(Event("alarm", f"a{i}", rig="press", t_ns=T0 + i))
    assert pub.dropped == {"latest": 1, "cycle": 1, "event": 1, "sparkplug": 0}
    assert [orjson.loads(m.payload)["message"] for m in pub._queue] == ["a1", "a2", "a3"]
    # retained topics are kept, not queued: the device state and the verdict survive
    assert set(pub._retained) == {"rigdaq/s/n/press/state", "rigdaq/s/n/press/verdict"}


def test_state_follows_faults_and_runs():
    pub = MqttPublisher(MqttSettings(site="s", node="n"), SampleBus(), rigs={"press": ["plc", "drive"]})
    state = lambda: orjson.loads(pub._retained["rigdaq/s/n/press/state"].payload)  # noqa: E731
    assert state()["devices"]["plc"]["state"] == "unknown" and state()["run"] is None
    pub.handle(Event("run_start", "", rig="press", t_ns=T0, fields={"run_id": 5}))
    pub.handle(Event("device_fault", "down: timeout", rig="press", device="plc", t_ns=T0 + 1,
                     fields={"reason": "timeout"}))
    assert state() == {"type": "state", "rig": "press", "node": "n", "t_ns": T0 + 1, "run": 5, "devices": {
        "plc": {"state": "fault", "t_ns": T0 + 1, "message": "down: timeout", "reason": "timeout"},
        "drive": {"state": "unknown", "t_ns": None, "message": "", "reason": ""}}}
    pub.handle(Event("device_recovered", "up", rig="press", device="plc", t_ns=T0 + 2))
    pub.handle(Tagged("press", block([3], device="drive")))
    pub.handle(Event("run_stop", "", rig="press", t_ns=T0 + 4, fields={"run_id": 5}))
    s = state()
    assert s["run"] is None and s["devices"]["plc"]["state"] == "ok" and s["devices"]["drive"]["state"] == "ok"


# -- subscriber logic ----------------------------------------------------------------------------
def test_live_source_feeds_a_live_feed():
    feed = LiveFeed(LatestValues())
    client = feed.subscribe("press")
    src = MqttLiveSource(MqttSettings(site="plant1", node="api1"), feed)
    t = uns.Topics("plant1", "edge1")
    readings = {"force": Reading(2.5, "kN", T0, 0, "plc")}
    assert src.handle(t.rig("press", "latest"), uns.encode(uns.readings_payload("press", readings)))
    assert feed.live.latest("press") == readings and feed.live.units[("press", "force")] == "kN"
    c = CycleResult(rig="press", cycle_no=9, t_ns=T0, verdict="fail", metrics={"e": 1.0}, kind="screw_press")
    src.handle(t.rig("press", "cycle"), uns.encode(uns.cycle_payload(c)))
    src.handle(t.rig("press", "event"), uns.encode(uns.event_payload(Event("alarm", "hot", rig="press", t_ns=T0))))
    msgs = [orjson.loads(client.queue.get_nowait()) for _ in range(client.queue.qsize())]
    assert [(m["type"], m.get("cycle_no"), m.get("kind")) for m in msgs] == [("cycle", 9, "screw_press"),
                                                                           ("event", None, "alarm")]
    assert src.last_cycle["press"].verdict == "fail"
    # the node's will reaches its rigs' clients as an event
    node = dict(type="node", site="plant1", node="edge1", version="x", rigs=["press"])
    src.handle(t.node_state, orjson.dumps({**node, "online": True, "reason": "connected", "t_ns": T0}))
    src.handle(t.node_state, orjson.dumps({**node, "online": False, "reason": "connection lost", "t_ns": T0 + 1}))
    m = orjson.loads(client.queue.get_nowait())
    assert (m["type"], m["kind"], m["level"]) == ("event", "node_offline", "warning")
    assert src.nodes["edge1"]["online"] is False
    # not ours, or not valid
    assert not src.handle("rigdaq/plant2/edge1/press/latest", uns.encode(uns.readings_payload("press", readings)))
    assert not src.handle(t.rig("press", "latest"), b"not json")
    assert not src.handle(t.rig("press", "cycle"), b"{}")
    assert src.rejected == 2 and src.rigs() == ["press"]


# -- Sparkplug ------------------------------------------------------------------------------------
def test_seq_wraps_after_255():
    s = spb.Seq()
    assert s.reset() == 0
    assert [s.next() for _ in range(300)] == [i % 256 for i in range(1, 301)]
    assert s.reset() == 0 and s.next() == 1


def test_bdseq_goes_up_per_session_and_wraps():
    e = spb.EdgeNode("g", "n")
    assert [e.new_session() for _ in range(258)] == [i % 256 for i in range(258)]


def test_sparkplug_topics():
    assert spb.topic("g1", "NBIRTH", "edge1") == "spBv1.0/g1/NBIRTH/edge1"
    assert spb.topic("g1", "DDATA", "edge1", spb.device_id("press", "plc")) == "spBv1.0/g1/DDATA/edge1/press:plc"
    for args in [("g/1", "NBIRTH", "e"), ("g", "NBIRTH", "e+"), ("g", "DDATA", "e", "d#"), ("g", "NOPE", "e"),
                 ("", "NBIRTH", "e")]:
        with pytest.raises(ValueError):
            spb.topic(*args)


@pytest.mark.parametrize(("datatype", "value"), [
    (pb.Int8, -5), (pb.Int16, -300), (pb.Int32, -(2**31)), (pb.Int64, -(2**63)), (pb.Int64, 2**63 - 1),
    (pb.UInt32, 2**32 - 1), (pb.UInt64, 2**64 - 1), (pb.Double, 1.5), (pb.Float, 0.25), (pb.Boolean, True),
    (pb.String, "m2"), (pb.Double, None)])
def test_metric_values_round_trip(datatype, value):
    m = pb.Payload.Metric(datatype=datatype)
    spb.set_value(m, datatype, value)
    m2 = pb.Payload.Metric.FromString(m.SerializeToString())
    assert spb.metric_value(m2) == value
    alias_only = pb.Payload.Metric(alias=1)
    spb.set_value(alias_only, datatype, value)
    assert spb.metric_value(pb.Payload.Metric.FromString(alias_only.SerializeToString()), datatype) == value


def test_nan_is_null():
    m = pb.Payload.Metric()
    spb.set_value(m, pb.Double, math.nan)
    assert m.is_null and spb.metric_value(m) is None


def test_edge_node_payloads():
    e = spb.EdgeNode("g", "edge1")
    assert e.new_session() == 0
    topic, data = e.ndeath(t_ms=5)
    death = pb.Payload.FromString(data)
    assert topic == "spBv1.0/g/NDEATH/edge1" and not death.HasField("seq")
    assert [(m.name, m.datatype, spb.metric_value(m)) for m in death.metrics] == [("bdSeq", pb.Int64, 0)]

    topic, data = e.nbirth(10)
    birth = pb.Payload.FromString(data)
    assert topic == "spBv1.0/g/NBIRTH/edge1" and birth.seq == 0 and birth.timestamp == 10
    assert {m.name: spb.metric_value(m) for m in birth.metrics} == {"bdSeq": 0, "Node Control/Rebirth": False}

    readings = {"force": Reading(1.5, "kN", T0, 0, "plc"), "n": Reading(-3, "", T0, 0, "plc"),
                "on": Reading(True, "", T0, 0, "plc"), "mode": Reading("auto", "", T0, 0, "plc")}
    assert e.needs_birth("press:plc", readings)
    topic, data = e.dbirth("press:plc", readings, 11)
    d = pb.Payload.FromString(data)
    assert topic == "spBv1.0/g/DBIRTH/edge1/press:plc" and d.seq == 1
    assert [(m.name, m.alias, m.datatype, spb.metric_value(m)) for m in d.metrics] == [
        ("force", 1, pb.Double, 1.5), ("n", 2, pb.Int64, -3), ("on", 3, pb.Boolean, True),
        ("mode", 4, pb.String, "auto")]
    assert d.metrics[0].properties.keys == ["engUnit"] and d.metrics[0].properties.values[0].string_value == "kN"
    assert all(m.timestamp == T0 // MS for m in d.metrics)

    update = {"n": Reading(7, "", T0 + MS, 0, "plc")}
    assert not e.needs_birth("press:plc", update)
    topic, data = e.ddata("press:plc", update, 12)
    d = pb.Payload.FromString(data)
    assert topic == "spBv1.0/g/DDATA/edge1/press:plc" and d.seq == 2
    assert [(m.HasField("name"), m.alias, spb.metric_value(m, pb.Int64)) for m in d.metrics] == [(False, 2, 7)]
    # a channel that changes type (or a new one) needs a new birth; aliases stay
    assert e.needs_birth("press:plc", {"n": Reading(7.5, "", T0, 0, "plc")})
    assert e.needs_birth("press:plc", {"new": Reading(1.0, "", T0, 0, "plc")})
    assert e.alias("press:plc", "n") == 2 and e.alias("press:drive", "n") == 5

    topic, data = e.ddeath("press:plc", 13)
    assert topic == "spBv1.0/g/DDEATH/edge1/press:plc" and pb.Payload.FromString(data).seq == 3
    assert e.needs_birth("press:plc", update)

    cmd = pb.Payload()
    cmd.metrics.add(name="Node Control/Rebirth", datatype=pb.Boolean, boolean_value=True)
    assert e.is_rebirth_request(cmd.SerializeToString())
    assert not e.is_rebirth_request(pb.Payload().SerializeToString())
    assert not e.is_rebirth_request(b"\xff\xff garbage")
