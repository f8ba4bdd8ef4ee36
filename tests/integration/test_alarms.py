"""Alarms and calibration against real servers.

* the catalogue's alarms on SQLite and a real PostgreSQL: one open alarm per key across two
  instances, the lifecycle as stored, filing through the catalogue writer and its outbox;
* a simulated press with an overdue sensor: a run is refused with the exact 409, started with
  ``calibration_policy = "warn"`` (event and metadata), ``/api/health`` lists the due calibrations;
* a real service whose amplifier is disconnected: the alarm appears over HTTP, the webhook (a
  local HTTP server that fails twice) gets it on the third POST, an operator acknowledges it
  (audited), and it clears when the amplifier is back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from daq.alarms.model import AlarmError, new_alarm
from daq.alarms.stage import AlarmCleared, AlarmRaised
from daq.alarms.webhook import WebhookNotifier, payload
from daq.bus import SampleBus
from daq.calibration import today_utc
from daq.catalogue import Catalogue, CatalogueWriter
from daq.catalogue.audit import AuditTrail
from daq.catalogue.outbox import Outbox
from daq.config import load_settings
from daq.storage.influxd import free_port
from tests.integration.helpers import ServiceThread, bearer, keys_for, press_settings

pytestmark = pytest.mark.timeout(120)

T0 = 1_795_000_000_000_000_000


@pytest.fixture
def two(url):
    a, b = Catalogue(url), Catalogue(url)
    yield a, b
    a.close()
    b.close()


# -- the catalogue ------------------------------------------------------------------------------
def test_two_nodes_raising_one_condition_at_once_get_one_alarm(two):
    """Both insert at the same moment (a barrier): the database's one-open-alarm-per-key index refuses
    one insert, and that node files onto the alarm the other opened."""
    import threading

    a, b = two
    for attempt in range(5):
        key = f"device:press-01/amp{attempt}"
        barrier, got = threading.Barrier(2), []

        def raise_(cat, uid, key=key, barrier=barrier, got=got):
            barrier.wait()
            got.append(cat.raise_alarm(new_alarm("press-01", "device", key, "high", f"down ({uid})", T0, uid=uid)))

        threads = [threading.Thread(target=raise_, args=(c, f"{attempt}-{n}")) for n, c in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(activated for _, activated in got) == [False, True], got
        assert len({alarm.id for alarm, _ in got}) == 1
        assert [x.key for x in a.open_alarms() if x.key == key] == [key]
    assert len(a.open_alarms()) == 5


def test_one_open_alarm_per_key_and_its_lifecycle_as_stored(two):
    a, b = two
    first = new_alarm("press-01", "device", "device:press-01/press01_amp", "high", "down", T0, uid="u-1")
    got, activated = a.raise_alarm(first)
    assert (got.id, got.state, activated) == (1, "active_unacked", True)
    assert a.raise_alarm(first) == (got, False)  # a replay of the same record
    # another node (another instance, another uid) raises the same condition: still the one alarm
    same, activated = b.raise_alarm(new_alarm("press-01", "device", "device:press-01/press01_amp", "high",
                                              "down again", T0 + 5, uid="u-2"))
    assert (same.id, same.uid, same.state, same.message, same.raised_ns, activated) == (
        1, "u-1", "active_unacked", "down again", T0, False)
    assert b.clear_alarm("device:press-01/press01_amp", T0 + 10).state == "cleared_unacked"
    assert a.clear_alarm("device:press-01/press01_amp", T0 + 11) is None  # nothing active
    back, activated = a.raise_alarm(new_alarm("press-01", "device", "device:press-01/press01_amp", "high",
                                              "down", T0 + 20, uid="u-3"))
    assert (back.id, back.state, back.cleared_ns, activated) == (1, "active_unacked", None, True)
    before, after = b.ack_alarm(1, "op1", "cable fixed", T0 + 30)
    assert (before.state, after.state, after.acked_ns, after.acked_by, after.ack_comment) == (
        "active_unacked", "active_acked", T0 + 30, "op1", "cable fixed")
    with pytest.raises(AlarmError, match=r"^alarm 1 was already acknowledged by op1$"):
        a.ack_alarm(1, "op2", "again", T0 + 31)
    with pytest.raises(KeyError):
        a.ack_alarm(99, "op2", "x", T0 + 31)
    closed = a.clear_alarm("device:press-01/press01_amp", T0 + 40)
    assert (closed.state, closed.raised_ns, closed.cleared_ns, closed.acked_ns) == ("cleared", T0, T0 + 40, T0 + 30)
    # the condition again: a new alarm
    fresh, activated = b.raise_alarm(new_alarm("press-01", "device", "device:press-01/press01_amp", "high",
                                               "down", T0 + 50, uid="u-4"))
    assert (fresh.id, fresh.state, activated) == (2, "active_unacked", True)
    a.raise_alarm(new_alarm("", "spool", "spool:n1", "medium", "spool high", T0 + 60, uid="u-5"))
    assert [x.id for x in a.list_alarms()[1]] == [3, 2, 1]
    assert a.list_alarms(active=True)[0] == 2
    assert [x.id for x in a.list_alarms(active=False)[1]] == [1]
    assert [x.id for x in a.list_alarms(state="cleared")[1]] == [1]
    assert [x.id for x in a.list_alarms(rig="")[1]] == [3]
    assert [x.id for x in a.list_alarms(rig="press-01", limit=1, offset=1)[1]] == [1]
    assert [x.id for x in b.open_alarms()] == [2, 3]
    assert b.alarm_counts() == {("cleared", "high"): 1, ("active_unacked", "high"): 1,
                                ("active_unacked", "medium"): 1}


class _Flaky:
    """A catalogue whose alarm filing fails with OperationalError ``n`` times (the database away)."""

    def __init__(self, cat: Catalogue, n: int):
        self.cat, self.n = cat, n

    def __getattr__(self, name):
        return getattr(self.cat, name)

    def raise_alarm(self, a):
        if self.n:
            self.n -= 1
            raise OperationalError("INSERT", {}, Exception("database is away"))
        return self.cat.raise_alarm(a)


async def test_alarms_wait_in_the_outbox_while_the_catalogue_is_away(url, tmp_path):
    cat = Catalogue(url)
    bus = SampleBus()
    sub = bus.subscribe("catalogue", accepts=(AlarmRaised, AlarmCleared))
    outbox = Outbox(tmp_path / "outbox")
    writer = CatalogueWriter(_Flaky(cat, 1), sub, outbox=outbox)
    task = asyncio.create_task(writer.run())
    try:
        a = new_alarm("press-01", "verdict", "verdict:press-01", "medium", "cycle 3 NOK", T0, uid="u-9")
        sub.queue.put_nowait(AlarmRaised(a))
        sub.queue.put_nowait(AlarmCleared("verdict:press-01", T0 + 7))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if writer.filed == 2:
                break
        assert (writer.filed, writer.errors, len(outbox)) == (2, 1, 0)
        row = cat.list_alarms()[1]
        assert [(x.uid, x.state, x.raised_ns, x.cleared_ns) for x in row] == [("u-9", "cleared_unacked", T0, T0 + 7)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.close()
        cat.close()


# -- calibration on a running press ---------------------------------------------------------------
def _press_with(tmp_path, influx_url, due: dict[str, dt.date], policy: str = "refuse", extra: str = ""):
    settings = press_settings(tmp_path, influx_url, f"t_{uuid.uuid4().hex[:12]}")
    rig = tmp_path / "rigs" / "screw-press.toml"
    text = rig.read_text()
    for channel, date in due.items():
        head, sep, rest = text.partition(f'[[instruments]]\nchannel = "{channel}"\n')
        assert sep
        text = head + sep + re.sub(r"^due_on = \S+$", f"due_on = {date.isoformat()}", rest, count=1, flags=re.M)
    text = text.replace('calibration_policy = "refuse"', f'calibration_policy = "{policy}"')
    rig.write_text(text)
    if extra:
        with (tmp_path / "demo.toml").open("a") as fh:
            fh.write(extra)
    settings = load_settings(settings.path)
    st = ServiceThread(settings)
    st.keys = keys_for(st.service)
    return st


RUN = {"rig": "press-01", "operator": "J. Müller", "part_number": "CRK-4411-B"}


def test_a_run_is_refused_on_an_overdue_calibration_and_health_warns(tmp_path, influxd):
    today = today_utc()
    soon, late = today + dt.timedelta(days=10), today - dt.timedelta(days=3)
    st = _press_with(tmp_path, influxd.url, {"force_1": soon, "force_2": late})
    try:
        with httpx.Client(base_url=st.base, timeout=30) as http:
            r = http.post("/api/runs", json=RUN, headers=bearer(st.keys["engineer"]))
            assert r.status_code == 409
            assert r.json() == {"detail": (
                f"press-01: calibration overdue: channel force_2 (press01_amp): sensor HBM-C6A-2611044 was due "
                f"for calibration on {late} (3 days ago); the run is refused (calibration_policy = \"refuse\")")}
            assert http.get("/api/runs", headers=bearer(st.keys["operator"])).json()["total"] == 0
            health = http.get("/api/health").json()
            assert health["calibration"] == [
                {"rig": "press-01", "channel": "force_2", "serial": "HBM-C6A-2611044", "due_on": late.isoformat(),
                 "days_left": -3},
                {"rig": "press-01", "channel": "force_1", "serial": "HBM-C6A-2611043", "due_on": soon.isoformat(),
                 "days_left": 10}]
            # the alarm list has the calibrations: overdue medium, due soon low
            for _ in range(50):
                alarms = http.get("/api/alarms", params={"active": "true"},
                                  headers=bearer(st.keys["operator"])).json()["alarms"]
                if len(alarms) == 2:
                    break
                time.sleep(0.1)
            assert sorted((a["key"], a["priority"], a["state"], a["message"]) for a in alarms) == [
                ("calibration:press-01/press01_amp.force_1", "low", "active_unacked",
                 f"press-01/force_1: calibration of sensor HBM-C6A-2611043 due on {soon} (10 days left)"),
                ("calibration:press-01/press01_amp.force_2", "medium", "active_unacked",
                 f"press-01/force_2: calibration of sensor HBM-C6A-2611044 due on {late} (overdue by 3 days)")]
    finally:
        st.stop()


def test_with_policy_warn_the_run_starts_and_the_warning_is_recorded(tmp_path, influxd):
    today = today_utc()
    late = today - dt.timedelta(days=1)
    st = _press_with(tmp_path, influxd.url, {"position": late}, policy="warn")
    try:
        with httpx.Client(base_url=st.base, timeout=30) as http:
            r = http.post("/api/runs", json=RUN, headers=bearer(st.keys["engineer"]))
            assert r.status_code == 201, r.text
            run_id = r.json()["id"]
            warning = (f"press-01: calibration overdue: channel position (press01_amp): sensor HEID-LC415-38812207 "
                       f"was due for calibration on {late} (1 days ago); started anyway (calibration_policy = "
                       "\"warn\")")
            run = st.service.catalogue.run(run_id)
            assert run.extra == {"calibration_warning": warning}
            instruments = run.config["instruments"]
            assert [(i["channel"], i["device"], i["status"]) for i in instruments] == [
                ("force_1", "press01_amp", "valid"), ("force_2", "press01_amp", "valid"),
                ("force_3", "press01_amp", "valid"), ("force_4", "press01_amp", "valid"),
                ("position", "press01_amp", "overdue")]
            assert instruments[0] == {
                "channel": "force_1", "device": "press01_amp", "serial": "HBM-C6A-2611043",
                "model": "HBM C6A/5MN strain-gauge load washer, tie rod 1", "sensitivity": 1.9987, "unit": "mV/V",
                "calibrated_on": "2026-10-12", "due_on": "2029-10-12",
                "certificate": "DAkkS D-K-15183-01-00 / 2026-10-4471", "status": "valid"}
            events = [(e.kind, e.message, e.level) for e in st.service.recent_events if e.kind == "calibration_overdue"]
            assert events == [("calibration_overdue", f"run {run_id}: {warning}", "warning")]
            assert http.post(f"/api/runs/{run_id}/stop", headers=bearer(st.keys["engineer"])).status_code == 200
    finally:
        st.stop()


# -- alarms from a running service, the webhook, acknowledgement -------------------------------------
class Hook:
    """A local HTTP endpoint that answers 500 to the first ``fail`` POSTs and 204 after; keeps every body."""

    def __init__(self, fail: int):
        self.bodies: list[dict] = []
        self.statuses: list[int] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.bodies.append(body)
                status = 500 if len(hook.bodies) <= fail else 204
                hook.statuses.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _wait(fn, timeout_s: float = 20.0, every_s: float = 0.1):
    end = time.monotonic() + timeout_s
    while True:
        got = fn()
        if got or time.monotonic() > end:
            return got
        time.sleep(every_s)


def test_a_device_alarm_is_posted_acknowledged_audited_and_cleared(tmp_path, influxd):
    hook = Hook(fail=2)
    st = _press_with(tmp_path, influxd.url, {}, extra=f'\n[alarms]\nwebhook_url = "{hook.url}"\n')
    op = bearer(st.keys["operator"])
    sim = st.service.simulators["press-01"]

    async def fault(on: bool):
        if on:
            sim.faults.inject("press01_amp", "disconnect")
        else:
            sim.faults.clear("press01_amp")

    try:
        with httpx.Client(base_url=st.base, timeout=30) as http:
            assert _wait(lambda: all(a.status.state == "ok" for a in st.service.acquisitions))
            assert http.get("/api/alarms", headers=op).json() == {"total": 0, "limit": 100, "offset": 0,
                                                                  "alarms": []}
            st.call(fault(True))
            alarms = _wait(lambda: http.get("/api/alarms", headers=op).json()["alarms"])
            assert len(alarms) == 1
            a = alarms[0]
            msg = a["message"]
            assert msg.startswith("press-01/press01_amp is down: ")
            assert {k: v for k, v in a.items() if k not in ("raised_ns", "raised_at", "message")} == {
                "id": 1, "rig": "press-01", "source": "device", "key": "device:press-01/press01_amp",
                "priority": "high", "state": "active_unacked", "active": True, "cleared_ns": None,
                "cleared_at": None, "acked_ns": None, "acked_at": None, "acked_by": "", "ack_comment": ""}
            # the webhook: two 500s, then taken (backoff 0.5 s, 1 s)
            assert _wait(lambda: len(hook.statuses) == 3 and st.service.alarm_webhook.sent == 1)
            filed = st.service.catalogue.alarm(1)
            expected = payload(filed, "rigdaq")
            assert expected["alarm"] == {"uid": filed.uid, "rig": "press-01", "source": "device",
                                         "key": "device:press-01/press01_amp", "priority": "high", "message": msg,
                                         "state": "active_unacked", "raised_ns": a["raised_ns"]}
            assert hook.bodies == [expected] * 3
            assert hook.statuses == [500, 500, 204]
            hw = st.service.alarm_webhook
            assert (hw.sent, hw.attempts, hw.retried, hw.dropped) == (1, 3, 2, {"queue_full": 0, "gave_up": 0})
            # acknowledging: a comment is required; unknown alarm 404
            r = http.post("/api/alarms/1/ack", json={"comment": "  "}, headers=op)
            assert (r.status_code, r.json()["detail"]) == (422, "body.comment: Value error, must not be empty: say "
                                                                "what was seen or done")
            assert http.post("/api/alarms/7/ack", json={"comment": "x"}, headers=op).json() == {"detail": "no alarm 7"}
            assert http.post("/api/alarms/1/ack", json={"comment": "x"}).status_code == 401
            r = http.post("/api/alarms/1/ack", json={"comment": "amplifier cable unplugged, replugging"}, headers=op)
            assert r.status_code == 200, r.text
            acked = r.json()
            assert (acked["state"], acked["acked_by"], acked["ack_comment"], acked["active"]) == (
                "active_acked", "test-operator", "amplifier cable unplugged, replugging", True)
            r = http.post("/api/alarms/1/ack", json={"comment": "again"}, headers=op)
            assert (r.status_code, r.json()) == (409, {"detail": "alarm 1 was already acknowledged by test-operator"})
            total, entries = AuditTrail(st.service.catalogue).entries(action="alarm_ack")
            assert total == 1
            e = entries[0]
            assert (e["actor"], e["target"], e["details"]) == ("test-operator", "alarm 1", {
                "before": {"state": "active_unacked"},
                "after": {"state": "active_acked", "comment": "amplifier cable unplugged, replugging"}})
            # the amplifier is back: the acknowledged alarm closes
            st.call(fault(False))
            closed = _wait(lambda: [x for x in http.get("/api/alarms", params={"state": "cleared"},
                                                        headers=op).json()["alarms"]])
            assert [(x["id"], x["state"], x["active"]) for x in closed] == [(1, "cleared", False)]
            assert closed[0]["cleared_ns"] > closed[0]["acked_ns"] > closed[0]["raised_ns"]
            assert http.get("/api/alarms", params={"active": "true"}, headers=op).json()["total"] == 0
            assert _wait(lambda: http.get("/api/health").json()["alarms"] == {
                "active_unacked": 0, "active_acked": 0, "cleared_unacked": 0, "cleared": 1})
            metrics = http.get("/metrics").text
            assert 'rigdaq_alarms{priority="high",state="cleared"} 1.0' in metrics
            assert 'rigdaq_alarms{priority="high",state="active_unacked"} 0.0' in metrics
            assert "rigdaq_alarm_webhook_sent_total 1.0" in metrics
            assert 'rigdaq_alarm_webhook_dropped_total{reason="gave_up"} 0.0' in metrics
            assert len(hook.bodies) == 3  # clearing is not posted
    finally:
        st.stop()
        hook.close()


# -- the webhook never blocks ------------------------------------------------------------------------
async def test_a_dead_webhook_never_blocks_and_its_losses_are_counted():
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    hook = WebhookNotifier(dead, "rigdaq", "medium", timeout_s=0.5, queue_max=2, retries=2, backoff_s=0.01)
    alarms = [new_alarm("press-01", "device", f"device:press-01/d{i}", "high", "down", T0 + i) for i in range(4)]
    low = new_alarm("press-01", "calibration", "calibration:x", "low", "due", T0)
    results = [hook.notify(a) for a in [*alarms, low]]  # a plain call: queued, never awaited on the network
    assert results == [True, True, False, False, True]  # a queue of 2; low is below medium: not sent
    assert hook.dropped == {"queue_full": 2, "gave_up": 0}
    task = asyncio.create_task(hook.run())
    for _ in range(200):
        await asyncio.sleep(0.02)
        if hook.dropped["gave_up"] == 2:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (hook.sent, hook.attempts, hook.retried, hook.dropped) == (0, 6, 4, {"queue_full": 2, "gave_up": 2})
