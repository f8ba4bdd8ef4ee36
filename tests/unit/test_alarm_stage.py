"""The alarm stage's sources (daq.alarms.stage) against a fake service: which alarm, which priority, when it clears."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from daq.alarms.stage import AlarmCleared, AlarmRaised, AlarmStage
from daq.calibration import Instrument

TODAY = dt.date(2026, 11, 28)


class FakeBus:
    def __init__(self):
        self.events = []

    def publish(self, item):
        self.events.append(item)


def _service(**kw):
    inst = Instrument(channel="force_1", device="press01_amp", serial="SN1", sensitivity=2.0, unit="mV/V",
                      calibrated_on="2025-12-01", due_on=kw.pop("due_on", "2029-01-01"), certificate="C1")
    rig = SimpleNamespace(name="press-01", instruments=[inst])
    spool = SimpleNamespace(high=False, warn_fraction=0.8, lines=0, disk_error="")
    writer = SimpleNamespace(state="ok", fault=None, spool=spool)
    acq = SimpleNamespace(status=SimpleNamespace(rig="press-01", device="press01_amp", state="ok", last_error=""))
    return SimpleNamespace(acquisitions=[acq], writer=writer, rigs={"press-01": rig}, bus=FakeBus(),
                           catalogue=None, catalogue_writer=None)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _stage(svc, sent=None, clock=None):
    filed = []
    notifier = SimpleNamespace(notify=lambda a: sent.append(a)) if sent is not None else None
    stage = AlarmStage(svc, None, lambda r: filed.append(r) or True, "node-a", notifier, today=lambda: TODAY,
                       clock=clock or Clock())
    return stage, filed


def _summary(filed):
    return [(type(r).__name__, r.alarm.key, r.alarm.priority, r.alarm.message) if isinstance(r, AlarmRaised)
            else (type(r).__name__, r.key) for r in filed]


def test_a_device_down_raises_one_high_alarm_until_it_answers_again():
    svc = _service()
    sent = []
    clock = Clock()
    stage, filed = _stage(svc, sent, clock)
    stage.scan()
    assert filed == []
    svc.acquisitions[0].status.state, svc.acquisitions[0].status.last_error = "down", "connection refused"
    stage.scan()
    clock.t += 1.0
    svc.acquisitions[0].status.state = "ok"  # a blip shorter than the on-delay (2 s): no alarm
    stage.scan()
    svc.acquisitions[0].status.state = "down"
    clock.t += 1.0
    stage.scan()
    clock.t += 1.99
    stage.scan()
    assert filed == []
    clock.t += 0.01  # down for 2 s
    stage.scan()
    clock.t += 1.0
    stage.scan()  # the same condition: one alarm
    assert _summary(filed) == [("AlarmRaised", "device:press-01/press01_amp", "high",
                                "press-01/press01_amp is down: connection refused")]
    assert [a.key for a in sent] == ["device:press-01/press01_amp"]
    assert [(e.kind, e.fields) for e in svc.bus.events] == [
        ("alarm", {"key": "device:press-01/press01_amp", "priority": "high", "source": "device",
                   "state": "active_unacked"})]
    svc.acquisitions[0].status.state = "ok"
    stage.scan()
    assert _summary(filed)[1:] == [("AlarmCleared", "device:press-01/press01_amp")]
    assert filed[1].t_ns >= filed[0].alarm.raised_ns
    assert stage.active == {}


def test_stale_storage_spool_and_calibration_sources():
    svc = _service(due_on="2026-12-05")
    clock = Clock()
    stage, filed = _stage(svc, clock=clock)
    svc.acquisitions[0].status.state = "stale"
    svc.writer.state, svc.writer.fault = "degraded", SimpleNamespace(message="InfluxDB unreachable")
    svc.writer.spool.high, svc.writer.spool.lines = True, 1234
    stage.scan()
    assert sorted(r.alarm.key for r in filed) == ["calibration:press-01/press01_amp.force_1", "spool:node-a"]
    clock.t += 2.0  # device and storage alarms wait for their on-delay
    stage.scan()
    assert sorted(_summary(filed)) == [
        ("AlarmRaised", "calibration:press-01/press01_amp.force_1", "low",
         "press-01/force_1: calibration of sensor SN1 due on 2026-12-05 (7 days left)"),
        ("AlarmRaised", "device:press-01/press01_amp", "medium",
         "press-01/press01_amp is stale: its values stopped moving"),
        ("AlarmRaised", "spool:node-a", "medium", "spool above 80% of its bound (1234 lines waiting)"),
        ("AlarmRaised", "storage:node-a", "high", "storage degraded: InfluxDB unreachable"),
    ]
    assert {r.alarm.key: r.alarm.rig for r in filed} == {
        "calibration:press-01/press01_amp.force_1": "press-01", "device:press-01/press01_amp": "press-01",
        "spool:node-a": "", "storage:node-a": ""}


def test_a_stale_device_that_goes_down_escalates_its_one_alarm_to_high():
    svc = _service()
    sent, clock = [], Clock()
    stage, filed = _stage(svc, sent, clock)
    svc.acquisitions[0].status.state = "stale"
    stage.scan()
    clock.t += 2.0
    stage.scan()
    svc.acquisitions[0].status.state, svc.acquisitions[0].status.last_error = "down", "connection refused"
    stage.scan()  # the same condition, worse: the one alarm takes the new priority, no on-delay again
    stage.scan()
    assert _summary(filed) == [
        ("AlarmRaised", "device:press-01/press01_amp", "medium", "press-01/press01_amp is stale: its values stopped "
                                                                 "moving"),
        ("AlarmRaised", "device:press-01/press01_amp", "high", "press-01/press01_amp is down: connection refused")]
    assert filed[0].alarm.uid != filed[1].alarm.uid  # filed onto the open alarm of the key (the catalogue's rule)
    assert [(e.kind, e.fields.get("priority"), e.fields.get("was")) for e in svc.bus.events] == [
        ("alarm", "medium", None), ("alarm", "high", "medium")]
    assert [(a.key, a.priority) for a in sent] == [("device:press-01/press01_amp", "medium"),
                                                   ("device:press-01/press01_amp", "high")]
    assert stage.active["device:press-01/press01_amp"].priority == "high"
    assert stage.active["device:press-01/press01_amp"].uid == filed[0].alarm.uid


def test_an_overdue_calibration_is_a_medium_alarm():
    stage, filed = _stage(_service(due_on="2026-11-20"))
    stage.scan()
    assert _summary(filed) == [("AlarmRaised", "calibration:press-01/press01_amp.force_1", "medium",
                                "press-01/force_1: calibration of sensor SN1 due on 2026-11-20 (overdue by 8 days)")]


def test_a_nok_verdict_raises_an_event_alarm_that_the_next_ok_verdict_clears():
    svc = _service()
    stage, filed = _stage(svc)
    nok = SimpleNamespace(rig="press-01", cycle_no=7, verdict="nok",
                          reasons=["peak_force_kN = 101234 above max 100000"])
    stage.on_item(nok)
    stage.on_item(SimpleNamespace(rig="press-01", cycle_no=8, verdict="nok", reasons=[]))
    stage.scan()  # a scan never clears a verdict alarm
    assert _summary(filed) == [("AlarmRaised", "verdict:press-01", "medium",
                                "press-01: cycle 7 NOK: peak_force_kN = 101234 above max 100000")]
    stage.on_item(SimpleNamespace(rig="press-01", cycle_no=9, verdict="ok", reasons=[]))
    assert _summary(filed)[1:] == [("AlarmCleared", "verdict:press-01")]


def test_a_full_catalogue_queue_is_counted():
    svc = _service()
    stage = AlarmStage(svc, None, lambda r: False, "node-a", today=lambda: TODAY)
    stage.ON_DELAY_S = {}
    svc.acquisitions[0].status.state = "down"
    stage.scan()
    assert (stage.raised, stage.lost) == (1, 1)


def test_records_file_themselves_into_the_catalogue():
    calls = []
    cat = SimpleNamespace(raise_alarm=lambda a: calls.append(("raise", a.key)),
                          clear_alarm=lambda k, t: calls.append(("clear", k, t)))
    svc = _service()
    clock = Clock()
    stage, filed = _stage(svc, clock=clock)
    svc.acquisitions[0].status.state = "down"
    stage.scan()
    clock.t += 2.0
    stage.scan()
    svc.acquisitions[0].status.state = "ok"
    stage.scan()
    for r in filed:
        r.file_into(cat)
    assert calls == [("raise", "device:press-01/press01_amp"), ("clear", "device:press-01/press01_amp", filed[1].t_ns)]
    assert isinstance(filed[1], AlarmCleared)
