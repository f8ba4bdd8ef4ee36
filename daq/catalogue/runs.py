"""Test runs, started and stopped with metadata.

While a run is active, its rig's samples, cycles and events carry its id as the
``run`` tag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy.exc import OperationalError

from daq.bus import SampleBus
from daq.calibration import instruments_of, overdue, overdue_message, today_utc
from daq.catalogue import Catalogue, CatalogueWriter, RunRow
from daq.catalogue.audit import AuditTrail, record_run_start, run_metadata
from daq.catalogue.notify import announce_run_change, is_postgres, listen_run_changes
from daq.catalogue.store import RunError
from daq.cycles import RunArtifact
from daq.cycles.stage import SegmentationStage
from daq.events import Event

log = logging.getLogger(__name__)

__all__ = ["RunError", "RunManager", "run_config"]


def run_config(rig, today=None) -> dict:
    """What a run's results are judged by, kept with the run: limits, envelope, analysis settings.

    Also the instruments of the rig with their calibration status on ``today`` (UTC; default: now),
    and each device's channel units (an export of the run names the units it was recorded in).
    """
    cfg = {"kind": rig.kind, "description": rig.description, "limits": rig.limit_dicts(),
           "instruments": instruments_of(rig, today or today_utc()),
           "units": {d.name: d.channel_units() for d in rig.devices}}
    for part in ("segmentation", "parameters", "envelope"):  # whichever the rig's kind has
        value = getattr(rig, part, None)
        if value is not None:
            cfg[part] = value.model_dump()
    return cfg


class RunManager:
    """One active run per rig at most; the catalogue holds every run.

    The catalogue's database holds the rule (a partial unique index), so managers of several API
    nodes on one catalogue refuse a second run as this one does: of two starts at once, one wins.
    """

    #: how long a stop waits for the segmentation stage to reach the stop event
    CLOSE_TIMEOUT_S = 30.0

    def __init__(self, catalogue: Catalogue, writer: CatalogueWriter, bus: SampleBus,
                 segmentation: SegmentationStage | None, rigs: dict):
        self.catalogue, self.writer, self.bus = catalogue, writer, bus
        self.segmentation = segmentation  # trackers and storage follow the run events on the bus
        self.rigs = rigs
        self.active: dict[str, RunRow] = {}
        self._lock = asyncio.Lock()  # start, stop and follow one at a time: each sees the others' result

    async def restore(self) -> None:
        """Runs still active in the catalogue (service restarted mid-run) go on."""
        for run in await self.writer.call(self.catalogue.active_runs):
            if run.rig not in self.rigs:
                log.warning("run %d is active on rig %r, which this config does not have", run.id, run.rig)
                continue
            self.active[run.rig] = run
            log.info("run %d on %s continues (started before this service start)", run.id, run.rig)
            self.bus.publish(Event("run_resumed", f"run {run.id} continues after a service restart",
                                   rig=run.rig, fields={"run_id": run.id}))

    async def start(self, rig: str, *, operator: str = "", part_number: str = "", lot: str = "",
                    serial: str = "", notes: str = "", extra: dict | None = None,
                    started_by: str = "") -> RunRow:
        """Start a run on ``rig``; refuses if one is active there (here, or on any node: the database)."""
        async with self._lock:
            return await self._start(rig, operator=operator, part_number=part_number, lot=lot, serial=serial,
                                     notes=notes, extra=extra, started_by=started_by)

    async def stop(self, run_id: int, by: str = "") -> RunRow:
        """Stop a run (stopping a stopped run is refused); ``by``: who asked (for the audit trail)."""
        async with self._lock:
            return await self._stop(run_id, by)

    async def follow(self) -> None:
        """Take runs started or stopped elsewhere (see :meth:`_follow`)."""
        async with self._lock:
            await self._follow()

    async def _start(self, rig: str, *, operator: str = "", part_number: str = "", lot: str = "",
                     serial: str = "", notes: str = "", extra: dict | None = None,
                     started_by: str = "") -> RunRow:
        if rig not in self.rigs:
            raise RunError(f"no rig {rig!r}; rigs are: {', '.join(sorted(self.rigs))}", 404)
        if rig in self.active and self.segmentation is not None:  # else the database decides (several nodes)
            raise RunError(f"run {self.active[rig].id} is still active on {rig}; stop it first")
        today = today_utc()
        warning = self._calibration(rig, today)
        if warning:
            extra = {**(extra or {}), "calibration_warning": warning}

        def audit(conn, run: RunRow) -> None:  # in the transaction that creates the run: both or neither
            record_run_start(self.catalogue, run, started_by, conn=conn)

        run = await self.writer.call(self.catalogue.start_run, rig, time.time_ns(), operator=operator,
                                     part_number=part_number, lot=lot, serial=serial, notes=notes,
                                     extra=extra, started_by=started_by, config=run_config(self.rigs[rig], today),
                                     record=audit)
        if warning:
            self.bus.publish(Event("calibration_overdue", f"run {run.id}: {warning}", rig=rig, level="warning",
                                   fields={"run_id": run.id}))
        self.active[rig] = run
        await self._announce(rig)
        self.bus.publish(Event("run_start", f"run {run.id} started on {rig}", rig=rig,
                               fields={"run_id": run.id, "operator": operator, "part_number": part_number,
                                       "lot": lot, "serial": serial}))
        log.info("run %d started on %s (part %r, lot %r, operator %r)", run.id, rig, part_number, lot,
                 operator)
        return run

    async def _announce(self, rig: str) -> None:
        """Tell the other nodes of a PostgreSQL catalogue at once (:mod:`daq.catalogue.notify`); else they poll."""
        try:
            await self.writer.call(announce_run_change, self.catalogue, rig)
        except Exception as e:  # the change is committed: the others find it by polling within a second
            log.warning("runs: could not announce the change on %s (%s); other nodes see it within a second",
                        rig, str(e).splitlines()[0] if str(e) else type(e).__name__)

    def _calibration(self, rig: str, today) -> str:
        """Refuse a run on an overdue calibration (409), or with ``calibration_policy = "warn"`` say why ("")."""
        late = overdue(self.rigs[rig], today)
        if not late:
            return ""
        msg = overdue_message(rig, late, today)
        if getattr(self.rigs[rig], "calibration_policy", "refuse") != "warn":
            raise RunError(f"{msg}; the run is refused (calibration_policy = \"refuse\")", 409)
        log.warning("%s; the run starts anyway (calibration_policy = \"warn\")", msg)
        return f"{msg}; started anyway (calibration_policy = \"warn\")"

    async def _stop(self, run_id: int, by: str = "") -> RunRow:
        run = await self.writer.call(self.catalogue.run, run_id)
        if run is None:
            raise RunError(f"no run {run_id}", 404)
        if not run.active:
            raise RunError(f"run {run_id} was already stopped")
        end_ns = time.time_ns()
        if self.active.get(run.rig) is not None and self.active[run.rig].id == run_id:
            await self._close(run.rig, run_id, end_ns)

        stopped_here: list[bool] = []

        def audit(conn, stopped: RunRow) -> None:  # in the transaction that stops the run: both or neither
            AuditTrail(self.catalogue).append(by or "service", "run_stop", f"run {run_id}", conn=conn,
                                              details={"stopped_ns": stopped.stopped_ns,
                                                       "metadata": run_metadata(stopped)})
            stopped_here.append(True)

        run = await self.writer.call(self.catalogue.stop_run, run_id, end_ns, record=audit)
        if not stopped_here:  # another node stopped it between our look and our stop
            raise RunError(f"run {run_id} was already stopped")
        await self._announce(run.rig)
        log.info("run %d stopped", run_id)
        return run

    async def _close(self, rig: str, run_id: int, end_ns: int) -> None:
        """End the run for storage and the rig's tracker, and file its final result.

        The stop event ends the run for storage and the tracker at the same point of the bus.
        """
        waiter = self.segmentation.closing(rig, str(run_id)) if self.segmentation else None
        self.bus.publish(Event("run_stop", f"run {run_id} stopped on {rig}", rig=rig,
                               fields={"run_id": run_id, "end_ns": end_ns}))
        self.active.pop(rig, None)
        final = None
        if waiter is not None:
            try:
                final = await asyncio.wait_for(waiter, self.CLOSE_TIMEOUT_S)
            except TimeoutError:  # the stage publishes it for the catalogue when it gets there
                log.warning("run %d: segmentation is behind; its final result is filed when it is reached", run_id)
        if isinstance(final, RunArtifact):  # a result of the whole run (a logger's summary)
            await self.writer.call(self.catalogue.file_artifact, final)
        elif final is not None:  # filed now: the run's results are final when stop returns
            final.id = await self.writer.call(self.catalogue.file_cycle, final)

    async def _follow(self) -> None:
        """Take runs started or stopped elsewhere (another node's API) on this node's rigs.

        With one catalogue for several nodes, a run is started and stopped by whichever API node
        took the request; the node acquiring the rig learns it here, from the catalogue, and acts
        as if it had been asked: a run that became active is started on the bus (storage tags
        samples with it, the tracker follows it), one that was stopped is closed and its final
        result filed. Samples between the other node's request and this poll are the run's only
        from here on: the gap is at most the polling interval.
        """
        active = {r.rig: r for r in await self.writer.call(self.catalogue.active_runs) if r.rig in self.rigs}
        for rig, mine in list(self.active.items()):
            theirs = active.get(rig)
            if theirs is None or theirs.id != mine.id:
                stopped = await self.writer.call(self.catalogue.run, mine.id)
                end = stopped.stopped_ns if stopped is not None and stopped.stopped_ns else time.time_ns()
                log.info("run %d on %s was stopped on another node", mine.id, rig)
                await self._close(rig, mine.id, end)
        for rig, run in active.items():
            if rig not in self.active:
                self.active[rig] = run
                log.info("run %d on %s was started on another node", run.id, rig)
                self.bus.publish(Event("run_start", f"run {run.id} started on {rig}", rig=rig,
                                       fields={"run_id": run.id, "operator": run.operator,
                                               "part_number": run.part_number, "lot": run.lot,
                                               "serial": run.serial}))

    async def follow_forever(self, interval_s: float = 1.0) -> None:
        """:meth:`follow` every ``interval_s``, and at once when another node announces a change, until cancelled.

        While the catalogue is unreachable there is nothing to follow: the run state stays as it
        was (the catalogue writer reports the outage) and following resumes when it is back.
        """
        changed = asyncio.Event()
        listener = (asyncio.create_task(listen_run_changes(self.catalogue.url, changed), name="runs-listen")
                    if is_postgres(self.catalogue.url) else None)
        try:
            await self._follow_loop(interval_s, changed)
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _follow_loop(self, interval_s: float, changed: asyncio.Event) -> None:
        away = False
        while True:
            with contextlib.suppress(TimeoutError):  # a change another node announced, or the poll's interval
                await asyncio.wait_for(changed.wait(), interval_s)
            changed.clear()
            try:
                await self.follow()
            except OperationalError as e:
                if not away:
                    log.warning("runs: cannot look at the catalogue (%s); runs stay as they are until it is back",
                                str(e).splitlines()[0])
                away = True
                continue
            if away:
                log.info("runs: the catalogue answers again")
            away = False
