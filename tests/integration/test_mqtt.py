"""Live data over MQTT against a real mosquitto: UNS topics and payloads, the bounded queue,
a broker restart, and Sparkplug B (decoded with the protobuf schema)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import aiomqtt
import numpy as np
import orjson
import pytest

from daq.bus import SampleBus, Tagged
from daq.config import MqttSettings
from daq.cycles.result import CycleResult
from daq.events import Event
from daq.live import LatestValues, LiveFeed
from daq.storage.influxd import free_port
from daq.uns import sparkplug_b_pb2 as pb
from daq.uns.publisher import MqttPublisher
from daq.uns.sparkplug import metric_value
from daq.uns.subscriber import MqttLiveSource
from drivers.block import Block
from tests.conftest import ROOT

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
UNITS = {("press", "force"): "kN", ("press", "stroke"): "mm"}


@dataclass
class Msg:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    @property
    def json(self) -> dict:
        return orjson.loads(self.payload)


class Collector:
    """A plain aiomqtt subscriber that keeps everything it receives, in order."""

    def __init__(self, port: int, *filters: str):
        self.port, self.filters = port, filters or ("#",)
        self.messages: list[Msg] = []
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    async def _run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            for f in self.filters:
                await client.subscribe(f, qos=1)
            self._ready.set()
            async for m in client.messages:
                self.messages.append(Msg(str(m.topic), bytes(m.payload), bool(m.retain), m.qos))

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({ready, self._task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()
        assert self._ready.is_set(), "the test subscriber did not subscribe"
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self._task

    def on(self, topic: str) -> list[Msg]:
        return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> dict | None:
        """The last payload on ``topic``, or None."""
        msgs = self.on(topic)
        return msgs[-1].json if msgs else None


async def until(cond, timeout: float = 15.0, what: str = "condition") -> None:
    """Wait until ``cond()`` holds (polling); fail with ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(*coros):
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def settings(port: int, **kw) -> MqttSettings:
    return MqttSettings(port=port, site="plant1", node="edge1", **kw)


def press_block(k: int, n: int = 10) -> Block:
    """Block ``k`` of a 1 kHz scripted feed: samples k*n … k*n+n-1, one per millisecond from T0."""
    i = np.arange(k * n, k * n + n, dtype=np.int64)
    return Block("plc", T0 + i * MS, {"force": i + 0.5, "stroke": i * 2})


def readings_msg(k: int, n: int = 10) -> dict:
    last = k * n + n - 1
    t = T0 + last * MS
    return {"type": "readings", "rig": "press", "t_ns": t, "channels": {
        "force": {"value": last + 0.5, "unit": "kN", "t_ns": t, "quality": 0, "device": "plc"},
        "stroke": {"value": last * 2, "unit": "mm", "t_ns": t, "quality": 0, "device": "plc"}}}


def a_cycle() -> CycleResult:
    return CycleResult(rig="press", cycle_no=41, t_ns=T0 + 100 * MS, verdict="fail",
                       metrics={"energy_kj": 512.0, "peak_force_kn": float("nan")}, reasons=["energy low"],
                       version="press-1.4", run="7", kind="screw_press", end_ns=T0 + 900 * MS,
                       info={"part": 3, "blow_in_part": 1})


def cycle_msg(c: CycleResult) -> dict:
    return {"type": "cycle", "rig": "press", "id": None, "uid": getattr(c, "uid", None), "cycle_no": 41,
            "kind": "screw_press", "noun": "blow", "t_ns": T0 + 100 * MS, "end_ns": T0 + 900 * MS,
            "verdict": "fail", "reasons": ["energy low"], "run": "7",
            "metrics": {"energy_kj": 512.0, "peak_force_kn": None}, "info": {"part": 3, "blow_in_part": 1},
            "version": "press-1.4"}


def event_msg(e: Event) -> dict:
    return {"type": "event", "rig": e.rig, "kind": e.kind, "level": e.level, "device": e.device,
            "message": e.message, "t_ns": e.t_ns, "fields": e.fields}


# -- (a) topics, payloads, retained state, decimation ------------------------------------------
async def test_topics_payloads_retained_and_decimation(mosquitto):
    bus = SampleBus()
    pub = MqttPublisher(settings(mosquitto.port), bus, units=UNITS)
    base = "rigdaq/plant1/edge1"
    events = [
        Event("run_start", "run 7 started on press", rig="press", t_ns=T0 - MS, fields={"run_id": 7}),
        Event("device_fault", "device down: timeout", rig="press", device="plc", level="warning",
              t_ns=T0 + 2000 * MS, fields={"reason": "timeout"}),
        Event("device_recovered", "device answering again after 0.10 s", rig="press", device="plc",
              t_ns=T0 + 2100 * MS),
        Event("device_stale", "force is not moving", rig="press", device="plc", level="warning",
              t_ns=T0 + 2200 * MS, fields={"reason": "stale"}),
        Event("run_stop", "run 7 stopped on press", rig="press", t_ns=T0 + 2300 * MS,
              fields={"run_id": 7, "end_ns": T0 + 2300 * MS}),
        Event("run_start", "run 8 started on press", rig="press", t_ns=T0 + 2400 * MS, fields={"run_id": 8}),
        Event("storage_fault", "InfluxDB does not answer", level="warning", t_ns=T0 + 2500 * MS),
    ]
    cycle = a_cycle()
    async with Collector(mosquitto.port, "rigdaq/#") as live, running(pub.run()):
        await until(lambda: live.on(f"{base}/$node/state"), what="the node's online state")
        online = live.on(f"{base}/$node/state")[-1].json
        assert {k: v for k, v in online.items() if k != "t_ns"} == {
            "type": "node", "site": "plant1", "node": "edge1", "online": True, "reason": "connected",
            "version": pub.version, "rigs": []}

        bus.publish(events[0])
        for k in range(100):  # 1 s of samples at 1 kHz in blocks of 10 ms
            bus.publish(Tagged("press", press_block(k)))
        bus.publish(cycle)
        for e in events[1:]:
            bus.publish(e)

        # 20 Hz of sample time: blocks 0, 5, … 95, and block 99 once the feed pauses
        expected_latest = [readings_msg(k) for k in [*range(0, 100, 5), 99]]
        await until(lambda: len(live.on(f"{base}/press/latest")) >= len(expected_latest), what="readings")
        sentinel = Event("sentinel", "end of the script", rig="press", t_ns=T0 + 9000 * MS)
        bus.publish(sentinel)
        await until(lambda: any(m.json.get("kind") == "sentinel" for m in live.on(f"{base}/press/event")),
                    what="the sentinel event")

        assert [m.json for m in live.on(f"{base}/press/latest")] == expected_latest
        assert {m.qos for m in live.on(f"{base}/press/latest")} == {0}
        assert [m.json for m in live.on(f"{base}/press/cycle")] == [cycle_msg(cycle)]
        assert live.on(f"{base}/press/cycle")[0].qos == 1
        assert live.on(f"{base}/press/verdict")[-1].json == cycle_msg(cycle)
        assert [m.json for m in live.on(f"{base}/press/event")] == [event_msg(e) for e in
                                                                   [*events[:-1], sentinel]]
        assert [m.json for m in live.on(f"{base}/$node/event")] == [event_msg(events[-1])]
        final_state = {"type": "state", "rig": "press", "node": "edge1", "t_ns": T0 + 2400 * MS, "run": 8,
                       "devices": {"plc": {"state": "stale", "t_ns": T0 + 2200 * MS,
                                           "message": "force is not moving", "reason": "stale"}}}
        await until(lambda: live.last(f"{base}/press/state") == final_state, what="the final state")
        assert {m.topic.rsplit("/", 1)[1] for m in live.messages} == {"state", "latest", "cycle", "verdict",
                                                                      "event"}
        assert pub.dropped == {"latest": 0, "cycle": 0, "event": 0, "sparkplug": 0}
        assert pub.published["latest"] == len(expected_latest)

        # a late subscriber gets exactly the retained topics, with their last values
        async with Collector(mosquitto.port, "rigdaq/#") as late:
            await until(lambda: len(late.messages) >= 3, what="the retained messages")
            await asyncio.sleep(0.2)
            retained = {m.topic: m for m in late.messages}
            assert len(late.messages) == 3 and all(m.retain for m in late.messages)
            assert set(retained) == {f"{base}/$node/state", f"{base}/press/state", f"{base}/press/verdict"}
            assert retained[f"{base}/press/state"].json == final_state
            assert retained[f"{base}/press/verdict"].json == cycle_msg(cycle)
            assert retained[f"{base}/$node/state"].json["online"] is True
            assert retained[f"{base}/$node/state"].json["rigs"] == ["press"]

        await pub.stop()
        await until(lambda: not live.last(f"{base}/$node/state")["online"], what="the offline state")
        assert live.last(f"{base}/$node/state")["reason"] == "stopped"


# -- (b) a full queue: drops counted exactly, the bus never waits ------------------------------
class Forwarder:
    """A TCP forwarder to the broker that the test opens when it wants the publisher to get through."""

    def __init__(self, target_port: int):
        self.port, self.target_port = free_port(), target_port
        self.server: asyncio.Server | None = None

    async def _pipe(self, reader, writer) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _client(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_full_queue_drops_oldest_counted_and_never_blocks(mosquitto):
    assert not inspect.iscoroutinefunction(SampleBus.publish)
    assert not inspect.iscoroutinefunction(MqttPublisher.handle)
    fwd = Forwarder(mosquitto.port)  # not listening yet: the publisher cannot connect
    bus = SampleBus()
    pub = MqttPublisher(settings(fwd.port, queue_max=5), bus, units=UNITS)
    items = [Tagged("press", press_block(k * 5)) for k in range(3)]  # 50 ms apart: 3 readings messages
    items += [a_cycle(), a_cycle()]
    events = [Event("alarm", f"alarm {i}", rig="press", t_ns=T0 + i) for i in range(12)]
    items += events
    base = "rigdaq/plant1/edge1"
    async with running(pub.run()):
        for item in items:
            assert bus.publish(item) is None  # synchronous: returns at once, whatever MQTT does
        await until(lambda: pub.processed == len(items), what="the publisher to take everything off the bus")
        assert pub.sub.lost_blocks == 0
        await until(lambda: pub.status.failures >= 1, what="a refused connection attempt")
        assert not pub.status.connected
        # 17 messages into a queue of 5: the 12 oldest went, counted by kind
        assert pub.dropped == {"latest": 3, "cycle": 2, "event": 7, "sparkplug": 0}
        assert pub.queued == 5 and pub.published["event"] == 0

        async with Collector(mosquitto.port, "rigdaq/#") as sub:
            await fwd.open()
            await until(lambda: len(sub.on(f"{base}/press/event")) == 5, what="the queued events")
            assert [m.json for m in sub.on(f"{base}/press/event")] == [event_msg(e) for e in events[-5:]]
            assert pub.published["event"] == 5 and pub.queued == 0
            assert sub.on(f"{base}/press/latest") == [] and sub.on(f"{base}/press/cycle") == []
            # the verdict is retained, not queued: never dropped
            assert sub.on(f"{base}/press/verdict")[-1].json == cycle_msg(items[4])
        await fwd.close()


# -- (c) the broker restarts mid-run ------------------------------------------------------------
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
async def test_broker_restart_publisher_and_live_source_resume(mosquitto, how):
    bus = SampleBus()
    cfg = settings(mosquitto.port)
    pub = MqttPublisher(cfg, bus, rigs={"press": ["plc"]}, units=UNITS)
    feed = LiveFeed(LatestValues())
    client = feed.subscribe("press")  # what a WebSocket client of this API node gets
    source = MqttLiveSource(cfg, feed)
    seen: list[dict] = []

    def feed_msgs(kind: str) -> list[dict]:
        while not client.queue.empty():
            seen.append(orjson.loads(client.queue.get_nowait()))
        return [m for m in seen if m["type"] == kind]

    async with running(pub.run(), source.run()):
        await until(lambda: pub.status.connected and source.status.connected, what="both connections")
        await until(lambda: "edge1" in source.nodes, what="the node's state at the source")
        bus.publish(Tagged("press", press_block(0)))
        bus.publish(a_cycle())
        await until(lambda: source.live.latest("press").get("force") is not None, what="readings at the source")
        assert source.live.latest("press")["force"].value == 9.5
        await until(lambda: feed_msgs("cycle"), what="the cycle at the feed's client")
        assert feed_msgs("cycle")[0]["verdict"] == "fail" and feed_msgs("cycle")[0]["noun"] == "blow"

        mosquitto.stop(how)
        bus.publish(Event("alarm", "while the broker is away", rig="press", t_ns=T0 + 5))  # queued meanwhile
        await until(lambda: not pub.status.connected and not source.status.connected, what="the outage to show")
        mosquitto.start()  # same port, no retained messages left
        await until(lambda: pub.status.connects >= 2 and source.status.connects >= 2, what="both to reconnect")
        await until(lambda: pub.published["event"] == 1 and pub.queued == 0, what="the queued event")

        # acquisition goes on, and so does the view fed from MQTT
        bus.publish(Tagged("press", press_block(20)))
        bus.publish(Event("device_fault", "device down: timeout", rig="press", device="plc", level="warning",
                          t_ns=T0 + 6, fields={"reason": "timeout"}))
        await until(lambda: source.live.latest("press")["force"].value == 209.5, what="new readings at the source")
        await until(lambda: any(m["kind"] == "device_fault" for m in feed_msgs("event")),
                    what="the fault at the feed's client")
        await until(lambda: source.states.get("press", {}).get("devices", {}).get("plc", {}).get("state") == "fault",
                    what="the retained state at the source")
        # the restarted broker has the retained topics again: the publisher sent them on reconnecting
        async with Collector(mosquitto.port, "rigdaq/#") as late:
            await until(lambda: {m.topic.rsplit("/", 1)[1] for m in late.messages} >= {"state", "verdict"},
                        what="the retained topics after the restart")
            assert late.on("rigdaq/plant1/edge1/press/verdict")[0].json == cycle_msg(a_cycle()) | {
                "uid": late.on("rigdaq/plant1/edge1/press/verdict")[0].json["uid"]}
        assert pub.dropped == {"latest": 0, "cycle": 0, "event": 0, "sparkplug": 0}


# -- (d) Sparkplug B, decoded; NDEATH as the will of a killed node ---------------------------------
NODE_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import numpy as np
    from daq.bus import SampleBus, Tagged
    from daq.config import MqttSettings
    from daq.uns.publisher import MqttPublisher
    from drivers.block import Block

    T0, MS = 1_700_000_000_000_000_000, 1_000_000

    async def main():
        bus = SampleBus()
        cfg = MqttSettings(port=int(sys.argv[1]), site="plant1", node="edge1", sparkplug=True,
                           sparkplug_group="g1")
        pub = MqttPublisher(cfg, bus, rigs={"press": ["plc", "drive"]}, units={("press", "force"): "kN"})
        task = asyncio.create_task(pub.run())
        while not (pub.status.connected and pub.sparkplug.published >= 1):   # after NBIRTH
            await asyncio.sleep(0.01)
        for k in range(int(sys.argv[2])):
            t = T0 + k * 50 * MS
            bus.publish(Tagged("press", Block("plc", np.array([t]), {
                "force": np.array([k + 0.25]), "stroke": np.array([-k], dtype=np.int64),
                "clamped": np.array([k % 2 == 0]), "mode": np.array([f"m{k % 3}"])})))
            if k % 10 == 0:
                bus.publish(Tagged("press", Block("drive", np.array([t + 25 * MS]),
                                                  {"speed": np.array([k * 1.5])})))
        print("fed", flush=True)
        await task

    asyncio.run(main())
""")


def decode_spb(m: Msg) -> pb.Payload:
    return pb.Payload.FromString(m.payload)


async def test_sparkplug_births_data_seq_and_ndeath_when_killed(mosquitto, tmp_path):
    blocks = 300
    log = tmp_path / "node.log"
    async with Collector(mosquitto.port, "spBv1.0/#", "rigdaq/#") as sub:
        with log.open("w") as out:
            node = subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, str(mosquitto.port), str(blocks)],
                                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            ddata = lambda: [m for m in sub.messages if "/DDATA/" in m.topic]  # noqa: E731
            # plc: block 0 is its birth, 1 … 299 DDATA; drive: blocks 0, 10 … 290, published with
            # the plc block after them; the first is its birth
            await until(lambda: len(ddata()) >= (blocks - 1) + (blocks // 10 - 1) or node.poll() is not None,
                        timeout=30, what="the DDATA messages")
            assert node.poll() is None, log.read_text()
        finally:
            node.send_signal(signal.SIGKILL)  # kill -9: no DISCONNECT, the broker publishes the will
            node.wait(10)
        await until(lambda: any("/NDEATH/" in m.topic for m in sub.messages), what="NDEATH")
        await until(lambda: any(m.topic.endswith("$node/state") and not m.json["online"] for m in sub.messages),
                    what="the UNS will")

    spb = [m for m in sub.messages if m.topic.startswith("spBv1.0/")]
    kinds = [m.topic.split("/")[2] for m in spb]
    assert kinds[0] == "NBIRTH" and kinds[-1] == "NDEATH"
    assert kinds.count("NBIRTH") == 1 and kinds.count("DBIRTH") == 2 and kinds.count("NDEATH") == 1
    assert kinds.count("DDATA") == (blocks - 1) + (blocks // 10 - 1)
    assert {m.topic for m in spb} == {"spBv1.0/g1/NBIRTH/edge1", "spBv1.0/g1/NDEATH/edge1",
                                     "spBv1.0/g1/DBIRTH/edge1/press:plc", "spBv1.0/g1/DDATA/edge1/press:plc",
                                     "spBv1.0/g1/DBIRTH/edge1/press:drive", "spBv1.0/g1/DDATA/edge1/press:drive"}

    nbirth = decode_spb(spb[0])
    assert nbirth.seq == 0
    node_metrics = {m.name: m for m in nbirth.metrics}
    assert set(node_metrics) == {"bdSeq", "Node Control/Rebirth"}
    assert node_metrics["bdSeq"].datatype == pb.Int64 and metric_value(node_metrics["bdSeq"]) == 0
    assert node_metrics["Node Control/Rebirth"].datatype == pb.Boolean
    assert metric_value(node_metrics["Node Control/Rebirth"]) is False

    # every message after NBIRTH (NDEATH aside) carries the next seq, wrapping after 255
    seqs = [decode_spb(m).seq for m in spb[:-1]]
    assert seqs == [i % 256 for i in range(len(seqs))]
    assert len(seqs) > 256

    births = {m.topic.rsplit("/", 1)[1]: decode_spb(m) for m in spb if "/DBIRTH/" in m.topic}
    plc = {m.name: m for m in births["press:plc"].metrics}
    assert {n: m.datatype for n, m in plc.items()} == {"force": pb.Double, "stroke": pb.Int64,
                                                       "clamped": pb.Boolean, "mode": pb.String}
    assert list(plc["force"].properties.keys) == ["engUnit"]
    assert plc["force"].properties.values[0].string_value == "kN"
    drive = {m.name: m for m in births["press:drive"].metrics}
    assert {n: m.datatype for n, m in drive.items()} == {"speed": pb.Double}
    aliases = {m.alias: (dev, m.name, m.datatype) for dev, b in births.items() for m in b.metrics}
    assert len(aliases) == 5 and 0 not in aliases  # unique across the edge node

    # DDATA: aliases only, values as fed (plc's block k goes out as its k-th message)
    plc_data = [decode_spb(m) for m in spb if m.topic.endswith("DDATA/edge1/press:plc")]
    assert len(plc_data) == blocks - 1
    for k, p in enumerate(plc_data, start=1):
        assert all(not m.HasField("name") and m.HasField("alias") for m in p.metrics)
        values = {aliases[m.alias][1]: metric_value(m, aliases[m.alias][2]) for m in p.metrics}
        assert values == {"force": k + 0.25, "stroke": -k, "clamped": k % 2 == 0, "mode": f"m{k % 3}"}
        assert {m.timestamp for m in p.metrics} == {(T0 + k * 50 * MS) // MS}
    drive_data = [decode_spb(m) for m in spb if m.topic.endswith("DDATA/edge1/press:drive")]
    assert [metric_value(p.metrics[0], pb.Double) for p in drive_data] == [k * 1.5 for k in range(10, blocks, 10)]

    ndeath = decode_spb(spb[-1])
    assert not ndeath.HasField("seq")
    assert [(m.name, metric_value(m)) for m in ndeath.metrics] == [("bdSeq", 0)]  # the NBIRTH's bdSeq
    will = [m.json for m in sub.messages if m.topic == "rigdaq/plant1/edge1/$node/state"][-1]
    assert will["online"] is False and will["reason"] == "connection lost"


async def test_sparkplug_rebirth_on_request_and_ndeath_on_clean_stop(mosquitto):
    bus = SampleBus()
    pub = MqttPublisher(settings(mosquitto.port, sparkplug=True, sparkplug_group="g1"), bus, units=UNITS)
    async with Collector(mosquitto.port, "spBv1.0/#") as sub, running(pub.run()):
        await until(lambda: any("/NBIRTH/" in m.topic for m in sub.messages), what="NBIRTH")
        bus.publish(Tagged("press", press_block(0)))
        await until(lambda: any("/DBIRTH/" in m.topic for m in sub.messages), what="DBIRTH")
        bus.publish(Event("device_fault", "down", rig="press", device="plc", t_ns=T0 + 1))
        await until(lambda: any("/DDEATH/" in m.topic for m in sub.messages), what="DDEATH")
        bus.publish(Event("device_recovered", "up", rig="press", device="plc", t_ns=T0 + 2))
        await until(lambda: sum("/DBIRTH/" in m.topic for m in sub.messages) == 2, what="DBIRTH again")

        cmd = pb.Payload(timestamp=1)
        cmd.metrics.add(name="Node Control/Rebirth", datatype=pb.Boolean, boolean_value=True)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as host:
            await host.publish("spBv1.0/g1/NCMD/edge1", cmd.SerializeToString(), qos=1)
        await until(lambda: sum("/NBIRTH/" in m.topic for m in sub.messages) == 2
                    and sum("/DBIRTH/" in m.topic for m in sub.messages) == 3, what="the rebirth")
        await pub.stop()
        await until(lambda: any("/NDEATH/" in m.topic for m in sub.messages), what="NDEATH on stop")

    node_msgs = [m for m in sub.messages if "/NCMD/" not in m.topic]  # the host's command aside
    kinds = [m.topic.split("/")[2] for m in node_msgs]
    assert kinds == ["NBIRTH", "DBIRTH", "DDEATH", "DBIRTH", "NBIRTH", "DBIRTH", "NDEATH"]
    payloads = [decode_spb(m) for m in node_msgs]
    assert [p.seq for p in payloads[:4]] == [0, 1, 2, 3]
    assert [p.seq for p in payloads[4:6]] == [0, 1]  # a rebirth starts again at 0 …
    bd = [metric_value(m) for p in (payloads[0], payloads[4], payloads[6]) for m in p.metrics if m.name == "bdSeq"]
    assert bd == [0, 0, 0]  # … in the same session (same bdSeq), which the NDEATH closes


async def test_sparkplug_bdseq_is_kept_across_restarts(mosquitto, tmp_path):
    """A restarted node begins at the next bdSeq (its file), so the broker's late NDEATH of the
    previous process (bdSeq k) never pairs with the new NBIRTH; after 255 comes 0 again."""
    kept = tmp_path / "sparkplug_bdseq"
    cfg = settings(mosquitto.port, sparkplug=True, sparkplug_group="g1")
    async with Collector(mosquitto.port, "spBv1.0/#") as sub:
        for start in range(3):
            if start == 2:
                kept.write_text("255\n")  # as a node that has restarted 255 times left it
            pub = MqttPublisher(cfg, SampleBus(), units=UNITS, bd_seq_file=kept)
            async with running(pub.run()):
                await until(lambda n=start: sum("/NBIRTH/" in m.topic for m in sub.messages) == n + 1,
                            what="NBIRTH")
                await pub.stop()
                await until(lambda n=start: sum("/NDEATH/" in m.topic for m in sub.messages) == n + 1,
                            what="NDEATH on stop")
    births = [decode_spb(m) for m in sub.messages if "/NBIRTH/" in m.topic]
    deaths = [decode_spb(m) for m in sub.messages if "/NDEATH/" in m.topic]
    bd = [[metric_value(m) for m in p.metrics if m.name == "bdSeq"] for p in births + deaths]
    assert bd == [[0], [1], [0], [0], [1], [0]]
    assert kept.read_text() == "0\n"


# -- the service: [mqtt] wiring, health and /metrics -------------------------------------------------
async def test_service_publishes_the_simulated_press(tmp_path, influxd, database, mosquitto):
    from prometheus_client import generate_latest

    from api.routes.metrics import registry_for
    from daq.service import Service
    from tests.integration.helpers import press_settings

    cfg = press_settings(tmp_path, influxd.url, database, poll_hz=50)
    cfg.mqtt = settings(mosquitto.port, sparkplug=True)
    base = "rigdaq/plant1/edge1"
    service = Service(cfg)
    async with Collector(mosquitto.port, "rigdaq/#", "spBv1.0/#") as sub:
        await service.start()
        try:
            await until(lambda: len(sub.on(f"{base}/press-01/latest")) >= 5, what="the press's readings")
            await until(lambda: any("/DDATA/" in m.topic for m in sub.messages), what="Sparkplug DDATA")
            latest = sub.last(f"{base}/press-01/latest")
            assert latest["channels"]["force"]["unit"] == "kN" and latest["channels"]["force"]["device"]
            node = sub.last(f"{base}/$node/state")
            assert node["online"] is True and node["rigs"] == ["press-01"]
            await until(lambda: (sub.last(f"{base}/press-01/state") or {}).get("devices", {})
                        .get("press01_plc", {}).get("state") == "ok", what="the plc's state")
            health = service.health()["mqtt"]
            assert health["connected"] is True and health["dropped"]["latest"] == 0
            assert health["sparkplug"]["connected"] is True and health["sparkplug"]["bd_seq"] == 0
            text = generate_latest(registry_for(service)).decode()
            assert 'rigdaq_mqtt_dropped_total{kind="latest"} 0.0' in text and "rigdaq_mqtt_up 1.0" in text
        finally:
            await service.stop()
        await until(lambda: sub.last(f"{base}/$node/state")["online"] is False, what="the offline state")
        assert sub.last(f"{base}/$node/state")["reason"] == "stopped"
        assert any("/NDEATH/" in m.topic for m in sub.messages)
        assert any(m.json["kind"] == "service_stop" for m in sub.on(f"{base}/$node/event"))
