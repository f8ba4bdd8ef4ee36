"""What the writer does with each kind of InfluxDB answer, against a scripted 1.x-like server.

The fake behaves as influxd 1.6 does (checked against the real one in the integration
fault matrix): a line with a conflicting field type is dropped and the rest stored
(``400 partial write … dropped=N``); with ``whole_batch`` it refuses the batch and
stores nothing; bodies above ``max_body`` get 413; ``status`` answers every request
with that status while set.
"""

import asyncio
import errno
import re

import numpy as np

from daq.bus import SampleBus, Tagged
from daq.events import Event
from daq.storage.influx_v1 import classify
from daq.storage.lineproto import block_bytes
from daq.storage.spool import Spool
from daq.storage.writer import StorageWriter
from daq.supervisor import Supervisor
from drivers.block import Block


class FakeInflux:
    def __init__(self, max_body=None, whole_batch=False):
        self.stored: list[bytes] = []
        self.max_body = max_body
        self.whole_batch = whole_batch
        self.status = 0
        self.requests = 0
        self.created = 0
        self.database = False

    async def create_database(self, retention=None):
        self.created += 1
        if self.status:
            raise classify(self.status, "{}", "InfluxDB")
        self.database = True

    async def write(self, body: bytes):
        self.requests += 1
        if not self.database:
            raise classify(404, '{"error":"database not found: \"x\""}', "InfluxDB")
        if self.status:
            raise classify(self.status, '{"error":"scripted"}', "InfluxDB")
        if self.max_body is not None and len(body) > self.max_body:
            raise classify(413, '{"error":"Request Entity Too Large"}', "InfluxDB")
        lines = [ln for ln in body.split(b"\n") if ln]
        bad = [ln for ln in lines if b',conflict="' in ln]  # the field itself, not a quote of it
        if bad and self.whole_batch:
            raise classify(400, '{"error":"field type conflict"}', "InfluxDB")
        self.stored += [ln for ln in lines if ln not in bad]
        if bad:
            raise classify(400, '{"error":"partial write: field type conflict: input field \\"conflict\\" '
                                f'on measurement \\"m\\" is type string dropped={len(bad)}"}}', "InfluxDB")


def _block(start, n=100, device="dev"):
    t = np.arange(start, start + n, dtype=np.int64) * 1000
    return Block(device, t, {"x": np.arange(start, start + n, dtype=np.float64)})


async def _settle(w, seconds=5.0):
    for _ in range(int(seconds / 0.02)):
        await asyncio.sleep(0.02)
        if not w.spool.batches and not w._buf and w.sub.queue.empty():
            return


def _samples(stored, device="dev"):
    return [ln for ln in stored if ln.startswith(device.encode() + b",")]


def _events(stored, kind):
    return [ln.decode() for ln in stored if ln.startswith(b"events,") and f"kind={kind}".encode() in ln]


def test_partial_write_bodies_are_classified():
    e = classify(400, '{"error":"partial write: field type conflict: input field \\"v\\" on measurement '
                      '\\"events\\" is type string, already exists as type float dropped=3"}', "InfluxDB")
    assert (e.kind, e.dropped, e.retryable) == ("bad_data", 3, False)
    assert classify(400, '{"error":"field type conflict"}', "x").dropped is None
    assert [classify(s, "", "x").kind for s in (401, 403, 404, 413, 500, 503, 429)] == [
        "credentials", "credentials", "no_database", "too_large", "server", "server", "server"]
    assert [classify(s, "", "x").retryable for s in (401, 404, 413, 400, 500)] == [True, True, False, False, True]


async def _run_with_bad_lines(tmp_path, whole_batch):
    bus = SampleBus()
    client = FakeInflux(whole_batch=whole_batch)
    w = StorageWriter(client, bus.subscribe("storage"), Spool(tmp_path, 10**7), 0.05)
    w.start()
    await asyncio.sleep(0.1)
    for i in range(5):
        bus.publish(Tagged("rig", _block(i * 100)))
        if i in (1, 3):  # two refused lines among 500 samples, in separate batches
            bus.publish(Event("note", "text", fields={"conflict": "text"}))
        await asyncio.sleep(0.07)
    await _settle(w)
    await w.stop()
    return w, client


async def test_a_partial_write_sets_aside_only_the_refused_lines(tmp_path):
    w, client = await _run_with_bad_lines(tmp_path, whole_batch=False)
    assert len(set(_samples(client.stored))) == 500
    rejected = b"".join(p.read_bytes() for p in sorted((tmp_path / "rejected").glob("*.lp")))
    assert rejected.count(b"\n") == 2 and len(re.findall(rb',conflict="', rejected)) == 2
    assert w.stats.rejected_lines == 2 and w.stats.dropped_lines == 0
    assert len(_events(client.stored, "storage_rejected")) == 2
    assert w.spool.batches == []


async def test_a_refused_batch_is_bisected_to_the_bad_line(tmp_path):
    w, client = await _run_with_bad_lines(tmp_path, whole_batch=True)
    # nothing of a refused batch was stored, so every good line must come from the bisection
    assert len(set(_samples(client.stored))) == 500
    rejected = b"".join(p.read_bytes() for p in sorted((tmp_path / "rejected").glob("*.lp")))
    assert rejected.count(b"\n") == 2 and len(re.findall(rb',conflict="', rejected)) == 2
    assert w.stats.rejected_lines == 2 and w.stats.split_requests > 0


async def test_too_large_batches_are_split_and_the_size_remembered(tmp_path):
    # two batches of 16 lines of exactly 100 bytes; the server takes at most 500 bytes
    lines = [b"dev,rig=rig x=%s %d\n" % (b"1" * 80, t) for t in range(1000, 1032)]
    assert {len(ln) for ln in lines} == {100}
    spool = Spool(tmp_path, 10**7)
    spool.append(b"".join(lines[:16]), 16)
    spool.append(b"".join(lines[16:]), 16)
    client = FakeInflux(max_body=500)
    w = StorageWriter(client, SampleBus().subscribe("storage"), spool, 0.05)
    w.send_max_bytes = 1600  # one batch per request, so the first one meets the limit whole
    w.start()
    await _settle(w)
    await w.stop()
    assert sorted(client.stored) == sorted(ln.rstrip(b"\n") for ln in lines)
    # 1600 B refused → halves of 800 refused → quarters of 400 taken: 1 + 2 + 4 requests and
    # 1 + 2 splits; the second batch goes straight in quarters (the size learnt: 400)
    assert (client.requests, w.stats.split_requests, w._max_body) == (7 + 4, 3, 400)
    assert w.stats.rejected_lines == 0 and not (tmp_path / "rejected").exists()
    assert w.fault is None


async def test_refused_credentials_wait_and_are_reported_then_everything_goes(tmp_path):
    bus = SampleBus()
    client = FakeInflux()
    client.status = 401
    w = StorageWriter(client, bus.subscribe("storage"), Spool(tmp_path, 10**7), 0.05)
    client.database = True
    w._need_database = False
    w.start()
    for i in range(5):
        bus.publish(Tagged("rig", _block(i * 100)))
        await asyncio.sleep(0.06)
    await asyncio.sleep(0.5)
    assert w.state == "degraded" and w.fault.kind == "credentials"
    assert "refuses our credentials (401)" in w.fault.message and "lines waiting" in w.fault.message
    assert not (tmp_path / "rejected").exists() and w.spool.lines >= 500
    client.status = 0
    await _settle(w, 15)
    await w.stop()
    assert len(set(_samples(client.stored))) == 500
    [fault] = _events(client.stored, "storage_fault")
    assert "cause=\"credentials\"" in fault and "status=401i" in fault
    assert len(_events(client.stored, "storage_recovered")) == 1
    assert w.stats.rejected_lines == 0 and w.stats.dropped_lines == 0


async def test_a_missing_database_is_created_again(tmp_path):
    bus = SampleBus()
    client = FakeInflux()
    w = StorageWriter(client, bus.subscribe("storage"), Spool(tmp_path, 10**7), 0.05)
    w.start()
    bus.publish(Tagged("rig", _block(0)))
    await _settle(w)
    assert client.created == 1
    client.database = False  # someone dropped the database
    bus.publish(Tagged("rig", _block(100)))
    await _settle(w, 15)
    await w.stop()
    assert client.created == 2 and len(set(_samples(client.stored))) == 200
    [fault] = _events(client.stored, "storage_fault")
    assert 'cause="no_database"' in fault


async def test_a_disk_that_refuses_the_spool_keeps_data_in_memory_and_counts_what_the_bound_drops(tmp_path):
    # a block of 100 lines is 2 900 bytes; a batch is one block plus at most two event lines
    # (< 3 833 bytes): an 11 500-byte memory bound holds exactly the newest three (4 × 2 900 > 11 500)
    assert {len(block_bytes("amp", {"rig": "rig"}, _block(1000 + i * 100, device="amp"))[0])
            for i in range(10)} == {2900}
    spool = Spool(tmp_path, 10**7, memory_max_bytes=11_500)
    real_write = spool._write_file
    disk_full = True

    def write_file(seq, lines, body):
        if disk_full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(seq, lines, body)

    spool._write_file = write_file
    client = FakeInflux()
    client.status = 503  # InfluxDB is away too, so everything piles up in memory
    w = StorageWriter(client, SampleBus().subscribe("storage"), spool, 0.05)
    w.SPOOL_SETTLE_S = 0.0  # report the recovery at the first good write
    for i in range(10):  # ten commits of one block each, driven by hand: no timing involved
        w._take(Tagged("rig", _block(1000 + i * 100, device="amp")))
        await w.commit()
        assert max(b.size for b in spool.batches) < 3833
    assert w.state == "unhealthy" and "No space left" in spool.disk_error
    assert [b.counts.get("amp") for b in spool.batches] == [100, 100, 100]
    assert w.stats.dropped_by_device["amp"] == 700  # the seven oldest blocks
    disk_full = False
    client.status = 0
    w.start()
    await _settle(w, 15)
    await w.stop()
    stored = set(_samples(client.stored, "amp"))

    def lines(events):
        return sum(int(e.split("lines=")[1].split("i")[0]) for e in events)

    lost = _events(client.stored, "data_lost")
    # exact accounting: the newest 300 samples reached InfluxDB, the events say 700 were lost
    assert len(stored) == 300 and lines([e for e in lost if "device=amp" in e]) == 700
    # an event lost with its batch is reported again (repeated=true): every lost line is in
    # exactly one stored event, the events' own lines included
    assert lines(lost) == w.stats.dropped_lines
    # the spool_fault event was itself dropped with its batch (and counted); the recovery,
    # written once the disk works, names the fault
    [recovered] = _events(client.stored, "spool_recovered")
    assert "No space left on device" in recovered
    assert w.state == "ok" and spool.memory_bytes == 0


async def test_a_full_storage_queue_is_counted_as_lost(tmp_path):
    bus = SampleBus()
    client = FakeInflux()
    sub = bus.subscribe("storage", maxsize=3)
    for i in range(5):  # nobody consumes yet: two blocks do not fit
        bus.publish(Tagged("rig", _block(i * 100)))
    w = StorageWriter(client, sub, Spool(tmp_path, 10**7), 0.05)
    w.start()
    await _settle(w)
    await w.stop()
    assert w.stats.dropped_lines == 200
    [lost] = _events(client.stored, "data_lost")
    assert "device=dev" in lost and "lines=200i" in lost
    assert len(set(_samples(client.stored))) == 300


async def test_a_failing_loop_is_restarted_and_counted():
    events = []
    sup = Supervisor(on_event=events.append, min_backoff_s=0.01)
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("boom")
        await asyncio.sleep(3600)

    task = sup.spawn("flaky", flaky)
    await asyncio.sleep(0.2)
    task.cancel()
    assert len(calls) == 3 and sup.status["flaky"].restarts == 2
    assert sup.status["flaky"].last_error == "RuntimeError: boom"
    assert [e.kind for e in events] == ["task_restarted", "task_restarted"]


async def test_a_commit_that_raises_keeps_its_lines_for_the_next(tmp_path):
    bus = SampleBus()
    client = FakeInflux()
    spool = Spool(tmp_path, 10**7)
    real_append = spool.append
    fail = [True]

    def append(body, lines, counts=None, reports=None, counters=None):
        if fail[0]:
            fail[0] = False
            raise RuntimeError("unexpected")
        return real_append(body, lines, counts, reports, counters)

    spool.append = append
    w = StorageWriter(client, bus.subscribe("storage"), spool, 0.05, supervisor=Supervisor(min_backoff_s=0.01))
    w.start()
    bus.publish(Tagged("rig", _block(0)))
    await asyncio.sleep(0.5)
    await _settle(w)
    await w.stop()
    assert len(set(_samples(client.stored))) == 100 and w.supervisor.status["storage-commit"].restarts == 1


async def test_v1_credentials_travel_as_basic_auth_and_urls_are_masked():
    import base64

    import httpx

    from daq.storage.influx_v1 import InfluxV1Client, masked_url

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    client = InfluxV1Client("http://influx.example:8086", "db", "rigdaq", "s3cret")
    client._http._transport = httpx.MockTransport(handler)
    await client.write(b"m x=1 1\n")
    [req] = seen
    assert "s3cret" not in str(req.url) and set(req.url.params.keys()) == {"db", "precision"}
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"rigdaq:s3cret").decode()
    assert masked_url("http://rigdaq:s3cret@influx:8086/x") == "http://***@influx:8086/x"
    assert masked_url("http://influx:8086") == "http://influx:8086"
    down = InfluxV1Client("http://rigdaq:s3cret@127.0.0.1:1", "db")
    try:
        await down.write(b"m x=1 1\n")
    except Exception as e:
        assert "s3cret" not in str(e) and "***@127.0.0.1:1" in str(e)
        assert e.kind == "unreachable"
    else:
        raise AssertionError("port 1 answered")
    await client.aclose()
    await down.aclose()


async def test_health_never_shows_influxdb_credentials(tmp_path):
    from daq.service import Service
    from daq.storage.influxd import free_port
    from tests.integration.helpers import press_settings

    url = f"http://rigdaq:s3cret@127.0.0.1:{free_port()}"  # nobody listens: the error names the URL too
    service = Service(press_settings(tmp_path, url, "db", timeout_s=0.5), simulate=False)
    await service._start_storage()
    await asyncio.sleep(0.5)
    health = service.health()
    await service.writer.stop(drain_timeout_s=0)
    await service.client.aclose()
    text = str(health)
    assert "s3cret" not in text and "rigdaq:" not in text
    assert health["storage"]["note"] == f"InfluxDB at http://***@{url.split('@')[1]}"
    assert health["storage"]["state"] == "degraded" and "***@127.0.0.1" in health["storage"]["fault"]


async def test_counters_safe_from_a_crash_follow_influxdb_while_the_disk_refuses(tmp_path):
    spool = Spool(tmp_path, 10**7)
    real_write = spool._write_file
    spool._write_file = lambda seq, lines, body: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error"))
    client = FakeInflux()
    w = StorageWriter(client, SampleBus().subscribe("storage"), spool, 0.05)
    block = _block(0, device="amp")
    block.channels["sample"] = np.arange(5000, 5100, dtype=np.int64)
    w._take(Tagged("rig", block))
    await w.commit()
    assert spool.batches[0].in_memory and w.committed_counters == {} and w.safe_counters() == {}
    assert await w._send_once()  # InfluxDB confirms the batch held in memory
    assert w.safe_counters() == {"amp": 5099} and w.committed_counters == {}
    spool._write_file = real_write


async def test_a_batch_is_sent_only_after_the_state_file_recorded_its_counters(tmp_path):
    # on_commit (the service's state-file write) is slow here: longer than the sender's 1 s idle
    # wait, so a sender that could see the new batch would send it, and remove its file, first.
    # A kill -9 then would leave neither the file nor the counters: stored samples counted missing.
    client = FakeInflux()
    bus = SampleBus()
    seen: list[tuple[int, list[str]]] = []  # per on_commit: lines stored by then, batch files on disk

    def on_commit():
        import time
        time.sleep(1.3)
        seen.append((len(client.stored), sorted(p.name for p in (tmp_path / "spool").glob("*.lp"))))

    w = StorageWriter(client, bus.subscribe("storage"), Spool(tmp_path / "spool", 10**7), 0.05, on_commit=on_commit)
    w.start()
    bus.publish(Tagged("press-01", _block(0, 10, "amp")))
    for _ in range(400):
        await asyncio.sleep(0.02)
        if _samples(client.stored, "amp"):
            break
    await w.stop()
    assert len(_samples(client.stored, "amp")) == 10
    # nothing sent, and the batch still on disk, while its counters were being recorded
    assert seen[0] == (0, ["000000000000-10.lp"])
