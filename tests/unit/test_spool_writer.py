"""The spool and the writer against a scripted InfluxDB client (files on a tmp dir, no network)."""

import asyncio

import numpy as np

from daq.bus import SampleBus, Tagged
from daq.storage.influx_v1 import InfluxError
from daq.storage.spool import Spool
from daq.storage.writer import StorageWriter
from drivers.block import Block


class FlakyInflux:
    """Refuses the first ``down`` writes as unreachable; rejects bodies containing BAD."""

    def __init__(self, down=0):
        self.down = down
        self.bodies = []
        self.created = 0

    async def write(self, body):
        if self.down > 0:
            self.down -= 1
            raise InfluxError("cannot reach InfluxDB", "unreachable")
        if any(ln.startswith(b"BAD") for ln in body.split(b"\n")):
            raise InfluxError("InfluxDB answered 400: unable to parse", "bad_data", 400)
        self.bodies.append(body)

    async def create_database(self, retention=None):
        self.created += 1
        if self.down > 0:
            self.down -= 1
            raise InfluxError("cannot reach InfluxDB", "unreachable")


def _lines(client):
    return [ln for b in client.bodies for ln in b.decode().splitlines()]


def test_spool_survives_a_restart_and_drops_torn_writes(tmp_path):
    s = Spool(tmp_path, max_bytes=10_000)
    s.append(b"m x=1 1\n", 1)
    s.append(b"m x=2 2\nm x=3 3\n", 2)
    (tmp_path / "000000000002-5.tmp").write_bytes(b"m x=4 4\nm x=")  # crash mid-write
    again = Spool(tmp_path, max_bytes=10_000)
    assert [b.path.name for b in again.batches] == ["000000000000-1.lp", "000000000001-2.lp"]
    assert again.lines == 3 and not list(tmp_path.glob("*.tmp"))
    again.append(b"m x=5 5\n", 1)
    assert again.batches[-1].path.name.startswith("000000000002-")


def test_bound_drops_oldest_and_says_how_much(tmp_path):
    s = Spool(tmp_path, max_bytes=100)
    for i in range(3):
        assert s.append(b"m x=%d 1\n" % i * 3, 3) == []  # 24 bytes each
    # 72 + 60 > 100: the two oldest batches (6 lines) must go to make room, not one, not three
    [loss] = s.append(b"y" * 60, 7)
    assert (loss.lines, loss.files) == (6, 2) and "oldest" in loss.reason
    assert s.bytes == 24 + 60 and s.lines == 3 + 7
    refusing = Spool(tmp_path / "n", max_bytes=10, policy="drop_newest")
    [loss] = refusing.append(b"z" * 20, 2)
    assert loss.lines == 2 and not refusing.batches


def _block(start, n=100):
    t = np.arange(start, start + n, dtype=np.int64) * 1000
    return Block("dev", t, {"x": np.arange(start, start + n, dtype=np.float64)})


async def test_outage_costs_nothing_and_order_is_kept(tmp_path):
    bus = SampleBus()
    client = FlakyInflux(down=5)
    w = StorageWriter(client, bus.subscribe("storage"), Spool(tmp_path, 10**7), commit_interval_s=0.02)
    w.start()
    for i in range(10):
        bus.publish(Tagged("rig", _block(i * 100)))
        await asyncio.sleep(0.03)
    for _ in range(200):
        await asyncio.sleep(0.05)
        if not w.spool.files and w.healthy:
            break
    await w.stop()
    samples = [ln for ln in _lines(client) if ln.startswith("dev,")]
    assert len(samples) == 1000 and len(set(samples)) == 1000
    stamps = [int(ln.rsplit(" ", 1)[1]) for ln in samples]
    assert stamps == sorted(stamps)
    kinds = [ln.split("kind=")[1].split(",")[0] for ln in _lines(client) if ln.startswith("events,")]
    assert "storage_fault" in kinds and "storage_recovered" in kinds
    assert w.stats.retries == 5 and w.stats.dropped_lines == 0


async def test_what_could_not_be_sent_waits_on_disk_for_the_next_start(tmp_path):
    bus = SampleBus()
    w = StorageWriter(FlakyInflux(down=10**6), bus.subscribe("storage"), Spool(tmp_path, 10**7), 0.02)
    w.start()
    bus.publish(Tagged("rig", _block(0)))
    await asyncio.sleep(0.1)
    await w.stop(drain_timeout_s=0.2)
    assert Spool(tmp_path, 10**7).lines == 100 + 1  # the samples and the storage_fault event
    client = FlakyInflux()
    w2 = StorageWriter(client, SampleBus().subscribe("s"), Spool(tmp_path, 10**7), 0.02)
    w2.start()
    await asyncio.sleep(0.3)
    await w2.stop()
    assert len([ln for ln in _lines(client) if ln.startswith("dev,")]) == 100


async def test_rejected_batch_is_kept_aside_and_reported(tmp_path):
    bus = SampleBus()
    client = FlakyInflux()
    spool = Spool(tmp_path, 10**7)
    spool.append(b"BAD line\n", 1)
    w = StorageWriter(client, bus.subscribe("storage"), spool, 0.02)
    w.start()
    bus.publish(Tagged("rig", _block(0, 5)))
    await asyncio.sleep(0.3)
    await w.stop()
    assert (tmp_path / "rejected" / "000000000000.lp").read_bytes() == b"BAD line\n"
    assert w.stats.rejected_lines == 1
    assert any("storage_rejected" in ln for ln in _lines(client))
    assert len([ln for ln in _lines(client) if ln.startswith("dev,")]) == 5


def test_the_newest_batch_tells_the_last_counter_a_crash_left_unrecorded(tmp_path):
    s = Spool(tmp_path, max_bytes=10_000)
    s.append(b"amp,rig=p f=1.5,sample=10i 1000\n", 1)
    s.append(b"amp,rig=p f=1.5,sample=11i 1001\namp,rig=p f=1.5,sample=12i 1002\n"
             b'events,kind=x message="amp,rig=p sample=99i " 5\nplc,rig=p x=1i 7\n', 4)
    # only the newest batch counts (sample=10 is older); "events" may show up (a quoted line),
    # the service looks up stream devices only
    assert Spool(tmp_path, max_bytes=10_000).last_counters()["amp"] == 12


async def test_run_ids_travel_with_the_run_events_on_the_bus(tmp_path):
    """A block is tagged with the run whose start event came before it on the bus, up to its stop event.

    Nothing is shared with the run manager: the order on the bus decides, so a block queued before
    the start event is not the run's, and the stop event itself is.
    """
    from daq.events import Event

    bus = SampleBus()
    client = FlakyInflux()
    w = StorageWriter(client, bus.subscribe("storage"), Spool(tmp_path, 10**7), commit_interval_s=0.02)
    bus.publish(Tagged("rig", _block(0, 1)))
    bus.publish(Event("run_start", "run 7 started on rig", rig="rig", fields={"run_id": 7}))
    bus.publish(Tagged("rig", _block(1, 1)))
    bus.publish(Tagged("other", _block(2, 1)))
    bus.publish(Event("run_stop", "run 7 stopped on rig", rig="rig", fields={"run_id": 7}))
    bus.publish(Tagged("rig", _block(3, 1)))
    bus.publish(Event("run_resumed", "run 8 continues", rig="rig", fields={"run_id": 8}))
    bus.publish(Tagged("rig", _block(4, 1)))
    w.start()
    for _ in range(100):
        await asyncio.sleep(0.02)
        if w.stats.samples_in == 5 and not w.spool.files:
            break
    await w.stop()
    tags = [ln.split(" ", 1)[0] for ln in _lines(client) if not ln.startswith("events,") or "kind=run" in ln]
    assert tags == ["dev,rig=rig", "events,kind=run_start,level=info,rig=rig,run=7", "dev,rig=rig,run=7",
                    "dev,rig=other", "events,kind=run_stop,level=info,rig=rig,run=7", "dev,rig=rig",
                    "events,kind=run_resumed,level=info,rig=rig,run=8", "dev,rig=rig,run=8"]
    assert w.active_runs == {"rig": "8"}
