"""The alarm stage: raises and clears alarms from their sources, files them through the catalogue writer.

Sources (keys and priorities: :mod:`daq.alarms`): cycle verdicts from the bus, and, every
``SCAN_S``, the devices' states, the storage writer and its spool, and the rigs' calibrations.
The stage keeps which keys it holds active; a change is

* queued for the catalogue writer (:class:`AlarmRaised`, :class:`AlarmCleared`), which files it
  on the catalogue's thread in order with cycles, or keeps it in its on-disk outbox while the
  database is away: a catalogue outage never blocks the stage, and the alarm reaches the
  catalogue (and so every API node of the plant) when it is back;
* published on the bus as an ``alarm`` event (InfluxDB ``events``, MQTT, the live feed);
* handed to the webhook (if configured), which sends it from a task of its own.

Acknowledgements are the API's: they change the catalogue row directly (see
:meth:`daq.catalogue.store.Catalogue.ack_alarm`); clearing an acknowledged alarm closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from daq.alarms.model import ACTIVE, PRIORITIES, Alarm, new_alarm
from daq.alarms.webhook import WebhookNotifier
from daq.calibration import status_of, today_utc
from daq.events import Event

log = logging.getLogger(__name__)


@dataclass
class AlarmRaised:
    """A condition to file: a new alarm, or its key's open alarm active again."""

    alarm: Alarm

    def file_into(self, catalogue) -> None:
        """Called by the catalogue writer on its thread."""
        catalogue.raise_alarm(self.alarm)


@dataclass
class AlarmCleared:
    """The condition of ``key`` went at ``t_ns``."""

    key: str
    t_ns: int

    def file_into(self, catalogue) -> None:
        """Called by the catalogue writer on its thread."""
        catalogue.clear_alarm(self.key, self.t_ns)


class AlarmStage:
    """One per acquiring service: its rigs' alarms and its own storage's."""

    #: how often device, storage and calibration states are looked at
    SCAN_S = 0.5
    #: how often the alarm counts (health, metrics) are read from the catalogue
    COUNTS_S = 2.0
    #: on-delay per source (ISA-18.2): a condition raises its alarm once it has held this long, so a
    #: device that misses one poll at start-up, or storage that hiccups once, does not chatter
    ON_DELAY_S: ClassVar[dict[str, float]] = {"device": 2.0, "storage": 2.0}

    def __init__(self, service, sub, file: Callable[[object], bool], node: str,
                 notifier: WebhookNotifier | None = None, today: Callable = today_utc, sources: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        self.service = service
        self.sub = sub  # cycle results from the bus
        self.file = file  # queues a record for the catalogue writer; False if its queue is full
        self.node = node
        self.notifier = notifier
        self.today = today
        self.sources = sources  # False on an API node: counts only
        self.clock = clock
        self._since: dict[str, float] = {}  # key → when its condition was first seen (for the on-delay)
        self.active: dict[str, Alarm] = {}
        self.raised = 0
        self.cleared = 0
        self.lost = 0  # records the catalogue writer's queue had no room for
        self.counts: dict[tuple[str, str], int] = {}

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Restore the open alarms, then follow verdicts and scan the states until cancelled."""
        loop = asyncio.get_running_loop()
        counts_task = asyncio.create_task(self._count_forever(), name="alarm counts")
        try:
            if not self.sources:
                await asyncio.Future()  # only the counts
            await self._restore()
            next_scan = loop.time()
            while True:
                wait = max(0.0, next_scan - loop.time())
                item = None
                if wait > 0 and self.sub is not None:
                    with contextlib.suppress(TimeoutError):
                        item = await asyncio.wait_for(self.sub.get(), wait)
                elif wait > 0:
                    await asyncio.sleep(wait)
                if item is not None:
                    self.on_item(item)
                if loop.time() >= next_scan:
                    self.scan()
                    next_scan = loop.time() + self.SCAN_S
        finally:
            counts_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counts_task

    async def _restore(self) -> None:
        """Alarms a previous run of this service left active: clear them here when their condition went."""
        cat, writer = self.service.catalogue, self.service.catalogue_writer
        if cat is None or writer is None:
            return
        try:
            found = await writer.call(cat.open_alarms)
        except Exception as e:  # the catalogue is away: raising again finds the open alarm anyway
            log.warning("alarms: cannot read the open alarms (%s); conditions are looked at afresh", e)
            return
        for a in found:
            if a.state in ACTIVE and self._mine(a):
                self.active[a.key] = a

    def _mine(self, a: Alarm) -> bool:
        if a.rig:
            return a.rig in self.service.rigs
        return a.key.endswith(f":{self.node}")

    async def _count_forever(self) -> None:
        cat, writer = self.service.catalogue, self.service.catalogue_writer
        while True:
            if cat is not None and writer is not None:
                try:
                    self.counts = await writer.call(cat.alarm_counts)
                except Exception as e:  # shown as they were until the catalogue answers
                    log.debug("alarms: cannot count: %s", e)
            await asyncio.sleep(self.COUNTS_S)

    # -- sources ----------------------------------------------------------------------------
    def on_item(self, item) -> None:
        """A cycle result: a NOK verdict raises ``verdict:<rig>``, the next OK one clears it."""
        verdict = getattr(item, "verdict", None)
        if verdict == "nok":
            reasons = list(getattr(item, "reasons", []) or [])
            why = f": {reasons[0]}" if reasons else ""
            self.raise_(f"verdict:{item.rig}", item.rig, "verdict", "medium",
                        f"{item.rig}: cycle {item.cycle_no} NOK{why}")
        elif verdict == "ok":
            self.clear(f"verdict:{item.rig}")

    def conditions(self) -> dict[str, tuple[str, str, str, str]]:
        """What holds now: key → (rig, source, priority, message), verdicts aside."""
        svc = self.service
        now: dict[str, tuple[str, str, str, str]] = {}
        for a in svc.acquisitions:
            st = a.status
            if st.state == "down":
                now[f"device:{st.rig}/{st.device}"] = (st.rig, "device", "high",
                                                       f"{st.rig}/{st.device} is down: {st.last_error or 'no answer'}")
            elif st.state == "stale":
                now[f"device:{st.rig}/{st.device}"] = (st.rig, "device", "medium",
                                                       f"{st.rig}/{st.device} is stale: its values stopped moving")
        w = svc.writer
        if w is not None:
            if w.state != "ok":
                why = w.spool.disk_error or (w.fault.message if w.fault else w.state)
                now[f"storage:{self.node}"] = ("", "storage", "high", f"storage {w.state}: {why}")
            if w.spool.high:
                now[f"spool:{self.node}"] = ("", "spool", "medium",
                                             f"spool above {w.spool.warn_fraction:.0%} of its bound "
                                             f"({w.spool.lines} lines waiting)")
        today = self.today()
        for rig in svc.rigs.values():
            for i in getattr(rig, "instruments", []):
                status = status_of(i.due_on, today)
                if status != "valid":
                    left = (i.due_on - today).days
                    when = f"{left} days left" if left >= 0 else f"overdue by {-left} days"
                    now[f"calibration:{rig.name}/{i.device}.{i.channel}"] = (
                        rig.name, "calibration", "low" if status == "due_soon" else "medium",
                        f"{rig.name}/{i.channel}: calibration of sensor {i.serial} due on {i.due_on} ({when})")
        return now

    def scan(self) -> None:
        """Raise what holds and is not active yet; clear what is active and went (verdicts aside)."""
        now = self.conditions()
        t = self.clock()
        for key in [k for k in self._since if k not in now]:
            del self._since[key]
        for key, (rig, source, priority, message) in now.items():
            if key in self.active:
                if self.active[key].priority != priority:  # stale → down, due soon → overdue: escalate
                    self.reprioritise(key, priority, message)
                continue
            if t - self._since.setdefault(key, t) >= self.ON_DELAY_S.get(source, 0.0):
                self.raise_(key, rig, source, priority, message)
        for key, a in list(self.active.items()):
            if a.source != "verdict" and key not in now:
                self.clear(key)

    # -- changes ----------------------------------------------------------------------------
    def raise_(self, key: str, rig: str, source: str, priority: str, message: str) -> Alarm | None:
        """The condition of ``key`` holds: a new alarm unless it is active already."""
        if key in self.active:
            return None
        a = new_alarm(rig, source, key, priority, message, time.time_ns())
        self.active[key] = a
        self.raised += 1
        self._file(AlarmRaised(a))
        log.warning("alarm (%s) %s: %s", priority, key, message)
        self.service.bus.publish(Event("alarm", message, rig=rig, level="error" if priority == "high" else "warning",
                                       fields={"key": key, "priority": priority, "source": source,
                                               "state": a.state}))
        if self.notifier is not None:
            self.notifier.notify(a)
        return a

    def reprioritise(self, key: str, priority: str, message: str) -> None:
        """The condition of an active alarm changed priority: its alarm (same one, same state) takes it."""
        old = self.active[key]
        a = new_alarm(old.rig, old.source, key, priority, message, time.time_ns())  # filed onto the open one
        self.active[key] = dataclasses.replace(old, priority=priority, message=message)
        self._file(AlarmRaised(a))
        log.warning("alarm (%s, was %s) %s: %s", priority, old.priority, key, message)
        self.service.bus.publish(Event("alarm", message, rig=old.rig,
                                       level="error" if priority == "high" else "warning",
                                       fields={"key": key, "priority": priority, "source": old.source,
                                               "state": old.state, "was": old.priority}))
        if self.notifier is not None and PRIORITIES.index(priority) < PRIORITIES.index(old.priority):
            self.notifier.notify(self.active[key])  # more urgent now: as a new alarm of that priority

    def clear(self, key: str) -> None:
        """The condition of ``key`` went."""
        a = self.active.pop(key, None)
        if a is None:
            return
        self.cleared += 1
        self._file(AlarmCleared(key, time.time_ns()))
        log.info("alarm cleared: %s", key)
        self.service.bus.publish(Event("alarm_cleared", f"cleared: {a.message}", rig=a.rig,
                                       fields={"key": key, "priority": a.priority, "source": a.source}))

    def _file(self, record) -> None:
        if not self.file(record):
            self.lost += 1
            log.error("alarms: the catalogue writer's queue is full; %s of %s is not filed",
                      type(record).__name__, getattr(record, "key", None) or record.alarm.key)
