"""Catalogue archive codec, runs and cycles on SQLite; API keys; report content hash; live feed."""

import asyncio

import numpy as np
import pytest

from daq.catalogue.keys import KeyStore, check_key, hash_key, role_at_least
from daq.catalogue.store import Catalogue, pack_samples, unpack_samples
from daq.cycles import CycleResult
from daq.live import LatestValues, LiveFeed
from daq.reports.certificate import build_report, render_csv, verify_content_hash


def test_archive_roundtrip_is_bit_identical_and_compresses():
    rng = np.random.default_rng(1)
    t = 1_795_000_000_000_000_000 + np.arange(20_000, dtype=np.int64) * 50_000
    chans = {"torque": 40 + rng.normal(0, 0.03, len(t)), "phase_a_current": np.round(rng.uniform(0, 25, len(t)), 2),
             "nan": np.r_[np.nan, np.inf, -0.0, np.zeros(len(t) - 3)]}
    names, data = pack_samples(t, chans)
    t2, c2 = unpack_samples(len(t), names, data)
    assert np.array_equal(t2, t)
    for k, v in chans.items():
        assert c2[k].tobytes() == v.tobytes()  # bit for bit, NaN and −0 included
    assert len(data) < 0.75 * (len(t) * 8 * 4)


def _cycle(rig, no, t_ns, run="", verdict="ok", samples=None):
    return CycleResult(rig, no, t_ns, verdict, {"peak_force_kN": 90_000.0 + no, "efficiency": 0.9},
                       [] if verdict == "ok" else ["efficiency = 0.5 below min 0.6"], "press-1.0",
                       f"{no:064x}", run, kind="screw_press", end_ns=t_ns + 10**8, info={"part": no},
                       samples=samples)


def test_runs_cycles_and_updates(tmp_path):
    cat = Catalogue(f"sqlite:///{tmp_path}/sub/cat.sqlite")
    run = cat.start_run("press-01", 1_000, operator="A", part_number="P-1", lot="L1",
                        config={"kind": "screw_press", "limits": {"efficiency": {"min": 0.6}}})
    assert run.active and cat.active_runs()[0].id == run.id
    samples = (np.arange(100, dtype=np.int64), {"force": np.arange(100.0)})
    cid = cat.file_cycle(_cycle("press-01", 1, 5_000, str(run.id), samples=samples))
    again = _cycle("press-01", 1, 5_000, str(run.id))
    again.metrics["cycle_time_s"] = 4.5  # the same cycle, updated when the next one starts
    assert cat.file_cycle(again) == cid
    cat.file_cycle(_cycle("press-01", 2, 9_000, str(run.id), verdict="nok"))
    total, rows = cat.cycles_of_run(run.id)
    assert total == 2 and rows[0]["metrics"]["cycle_time_s"] == 4.5
    assert cat.cycles_of_run(run.id, verdict="nok")[0] == 1
    t, c = cat.cycle_samples(cid)
    assert np.array_equal(c["force"], np.arange(100.0)) and np.array_equal(t, np.arange(100))
    assert cat.max_cycle_no("press-01") == 2 and cat.max_cycle_no("other") == 0
    cat.stop_run(run.id, 20_000)
    assert not cat.run(run.id).active and cat.active_runs() == []
    n, page = cat.list_runs(part_number="P-1")
    assert n == 1 and page[0].lot == "L1"

    report = build_report(cat, run.id)
    assert verify_content_hash(report) and report["overall_verdict"] == "nok"
    assert report["summary"] == {"cycles": 2, "ok": 1, "nok": 1}
    assert report["statistics"]["efficiency"]["lsl"] == 0.6
    tampered = dict(report, overall_verdict="ok")
    assert not verify_content_hash(tampered)
    assert f"{2:064x}" in render_csv(report).decode()


def test_keys_are_hashed_roled_and_revocable(tmp_path):
    stored = hash_key("rdq_abc_secret")
    assert "secret" not in stored and check_key("rdq_abc_secret", stored) and not check_key("rdq_abc_other", stored)
    assert role_at_least("qa", "engineer") and not role_at_least("engineer", "qa")
    store = KeyStore(Catalogue(f"sqlite:///{tmp_path}/k.sqlite"))
    key, info = store.create("desk", "qa")
    assert store.verify(key) == info and store.verify(key + "x") is None and store.verify("nonsense") is None
    assert all(key not in str(v) for row in store.list() for v in row.values())
    assert store.revoke(info.id) and store.verify(key) is None and not store.revoke(info.id)
    with pytest.raises(ValueError, match="role must be one of"):
        store.create("x", "root")


async def test_a_slow_live_client_loses_only_its_own_oldest_messages():
    feed = LiveFeed(LatestValues(), rate_hz=200)
    slow, fast = feed.subscribe("r"), feed.subscribe("r")
    task = asyncio.create_task(feed.run())
    got = []
    for _ in range(100):  # the fast client reads everything; the slow one never reads
        got.append(await asyncio.wait_for(fast.queue.get(), 1))
    task.cancel()
    assert slow.queue.qsize() == slow.queue.maxsize and slow.dropped > 0
    assert fast.dropped == 0 and len(got) == 100


def test_archive_bound_deletes_oldest_samples_but_keeps_results(tmp_path):
    cat = Catalogue(f"sqlite:///{tmp_path}/a.sqlite")
    rng = np.random.default_rng(0)
    ids = [cat.file_cycle(_cycle("r", k, 1000 * k, samples=(np.arange(2000, dtype=np.int64),
                                                                {"x": rng.normal(size=2000)})))
           for k in range(1, 6)]
    each = cat.archive_bytes() / 5
    assert cat.prune_archive(int(10 * each)) == 0
    assert cat.prune_archive(int(3.5 * each)) == 2  # the two oldest go
    assert cat.cycle_samples(ids[0]) is None and cat.cycle_samples(ids[2]) is not None
    assert cat.cycle(ids[0])["samples_sha256"] == f"{1:064x}"  # the result stays


async def test_writer_retries_while_the_database_is_unavailable_and_keeps_order():
    from sqlalchemy.exc import OperationalError

    from daq.bus import SampleBus
    from daq.catalogue import CatalogueWriter

    class Flaky:
        def __init__(self):
            self.fails, self.filed = 2, []

        def file_cycle(self, c):
            if self.fails:
                self.fails -= 1
                raise OperationalError("INSERT", {}, Exception("database is locked"))
            self.filed.append(c.cycle_no)
            return c.cycle_no

    bus, events = SampleBus(), []
    sub = bus.subscribe("catalogue", accepts=(CycleResult,))
    w = CatalogueWriter(Flaky(), sub, on_event=lambda *e: events.append(e))
    task = asyncio.create_task(w.run())
    for k in (1, 2, 3):
        bus.publish(_cycle("r", k, k))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if len(w.catalogue.filed) == 3:
            break
    task.cancel()
    w.close()
    assert w.catalogue.filed == [1, 2, 3] and w.errors == 2
    assert [e[0] for e in events] == ["catalogue_fault", "catalogue_recovered"]
