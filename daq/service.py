"""The running service: managed InfluxDB, simulators, acquisition, storage and live values."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlparse

from sqlalchemy.engine import make_url

from daq import __version__
from daq.acquisition.transports import Acquisition, BuildContext, ChannelWriter, transport_of
from daq.bus import SampleBus, Tagged
from daq.catalogue import Catalogue, CatalogueWriter
from daq.config import Settings
from daq.cycles import CycleResult, RunArtifact, tracker_for
from daq.cycles.stage import SegmentationStage
from daq.events import Event
from daq.influxd import InfluxdMissingError, ManagedInfluxd
from daq.keys import KeyStore
from daq.live import LatestValues, LiveFeed
from daq.outbox import Outbox
from daq.runs import RunManager
from daq.simulators import build_simulator
from daq.state import ClockStore, CrashState
from daq.storage.influx_v1 import InfluxV1Client, masked_url
from daq.storage.influx_v2 import InfluxV2Client
from daq.storage.spool import Spool
from daq.storage.writer import StorageWriter
from daq.supervisor import Supervisor
from daq.tasks import cancel_and_wait
from drivers.sim.press_sim import RigSimulator

log = logging.getLogger(__name__)


class Service:
    """Everything ``daq run`` runs besides the HTTP server.

    ``simulate``: start simulators for rigs marked ``simulate = true``;
    ``record_sim``: simulators keep every register image they showed (for tests).
    """

    def __init__(self, settings: Settings, simulate: bool = True, record_sim: bool = False):
        self.settings = settings
        self.simulate = simulate
        self.record_sim = record_sim
        self.bus = SampleBus()
        self.supervisor = Supervisor(on_event=self.bus.publish)
        self.live = LatestValues()
        self.feed = LiveFeed(self.live)
        self.recent_events: deque[Event] = deque(maxlen=500)
        self.influxd: ManagedInfluxd | None = None
        self.client: InfluxV1Client | InfluxV2Client | None = None
        self.writer: StorageWriter | None = None
        self.storage_note = "not configured"
        self.simulators: dict[str, RigSimulator] = {}
        self.acquisitions: list[Acquisition] = []
        self.rigs = {r.name: r for r in settings.rigs}
        self._tasks: list[asyncio.Task] = []
        self.started_ns = 0
        self.trackers = {r.name: t for r in settings.rigs if (t := tracker_for(r))}
        self.segmentation = SegmentationStage(self.bus, self.trackers)
        self.last_cycle: dict[str, CycleResult] = {}
        self.catalogue: Catalogue | None = None
        self.catalogue_writer: CatalogueWriter | None = None
        self.runs: RunManager | None = None
        self.keys: KeyStore | None = None
        self._writers: dict[str, ChannelWriter] = {}  # device → how to write its writable channels
        self.crash_state = CrashState(settings.data_dir / "service.state")
        self.clocks = ClockStore(settings.data_dir / "stream_clocks.json")
        for rig in settings.rigs:
            for d in rig.devices:
                self.live.set_units(rig.name, d.channel_units())

    # -- start -------------------------------------------------------------------------
    async def _start_storage(self) -> None:
        cfg = self.settings.storage.influxdb
        if cfg is None:
            log.warning("no [storage.influxdb] configured: samples are shown live but not stored")
            return
        if cfg.managed:
            u = urlparse(cfg.url)
            data = Path(cfg.data_dir)
            if not data.is_absolute():
                data = self.settings.data_dir / data
            self.influxd = ManagedInfluxd(data, host=u.hostname or "127.0.0.1", port=u.port or 8086)
            try:
                await self.influxd.start()
                self.storage_note = f"managed influxd at {masked_url(cfg.url)}"
            except InfluxdMissingError as e:
                log.error("%s", e)
                self.storage_note = str(e)
                self.influxd = None
            except RuntimeError as e:
                log.error("managed influxd: %s", e)
                self.storage_note = f"managed influxd failed: {e}"
                self.influxd = None
        else:
            self.storage_note = f"InfluxDB at {masked_url(cfg.url)}"
        if cfg.api == "v2":
            self.client = InfluxV2Client(cfg.url, cfg.token, cfg.org, cfg.bucket, cfg.timeout_s)
            self.storage_note = f"InfluxDB v2 API at {masked_url(cfg.url)}, bucket {cfg.bucket}"
        else:
            self.client = InfluxV1Client(cfg.url, cfg.database, cfg.username, cfg.password,
                                         cfg.timeout_s)
        sub = self.bus.subscribe("storage", maxsize=100_000)
        spool = Spool(self.settings.data_dir / "spool", int(cfg.spool_max_mb * 1e6), cfg.spool_policy,
                      memory_max_bytes=int(cfg.memory_max_mb * 1e6))
        # the writer creates the database (and its retention policy), retrying until it can
        self.writer = StorageWriter(self.client, sub, spool, cfg.commit_interval_s,
                                    on_commit=self._write_state,
                                    retention=cfg.retention if cfg.api == "v1" else None,
                                    supervisor=self.supervisor)
        self.writer.start()

    async def _start_catalogue(self) -> None:
        """Open the catalogue, continue cycle numbers, file from the bus, restore active runs."""
        url = self.settings.catalogue_url
        self.catalogue = await asyncio.to_thread(Catalogue, url)
        sub = self.bus.subscribe("catalogue", maxsize=10_000, accepts=(CycleResult, RunArtifact))
        cat_cfg = self.settings.catalogue
        self.catalogue_writer = CatalogueWriter(
            self.catalogue, sub, int(cat_cfg.archive_max_mb * 1e6) if cat_cfg.archive_max_mb else None,
            on_event=lambda kind, msg, level: self.bus.publish(Event(kind, msg, level=level)),
            outbox=Outbox(self.settings.data_dir / "catalogue-outbox"))
        self.keys = KeyStore(self.catalogue)
        if not self.settings.catalogue.archive_samples:
            self.catalogue.archive = False
        for rig, tracker in self.trackers.items():
            tracker.cycle_no = await self.catalogue_writer.call(self.catalogue_writer.max_cycle_no, rig)
        self.runs = RunManager(self.catalogue, self.catalogue_writer, self.bus, self.trackers, self.rigs)
        await self.runs.restore()
        self._tasks.append(self.supervisor.spawn("catalogue", self.catalogue_writer.run))
        log.info("catalogue at %s", url)

    async def _prepare_simulators(self) -> None:
        for rig in self.settings.rigs:
            if self.simulate and rig.simulate:
                sim = build_simulator(rig, self.settings.data_dir, record=self.record_sim)
                await sim.prepare()
                self.simulators[rig.name] = sim

    async def _start_simulators(self) -> None:
        """Open the simulators' faces just before acquisition: they stream from then on."""
        for rig_name, sim in self.simulators.items():
            await sim.start()
            for device, where in sim.endpoints().items():
                log.info("simulated %s/%s: %s", rig_name, device, where)

    def writable_channel(self, rig: str, channel: str):
        """(device, field) of a channel the rig file declares ``writable``; raises if it is not."""
        for dev in self.rigs[rig].devices:
            for f in getattr(dev, "fields", lambda: [])():
                if f.name == channel:
                    if not f.writable:
                        raise PermissionError(f"{rig}/{dev.name}.{channel} is not declared writable")
                    return dev, f
        raise KeyError(f"rig {rig} has no channel {channel!r} to write")

    async def write_channel(self, rig: str, channel: str, value: float) -> str:
        """Write a channel that a rig file declares ``writable``; returns the device written."""
        dev, f = self.writable_channel(rig, channel)
        write = self._writers.get(dev.name)
        if write is None:
            raise ConnectionError(f"{rig}/{dev.name} is not being acquired")
        await write(f, value)
        self.bus.publish(Event("channel_written", f"{channel} = {value:g} written to {dev.name}",
                               rig=rig, device=dev.name, fields={"value": float(value)}))
        return dev.name

    def _start_acquisition(self) -> None:
        shared: dict = {}  # what a transport shares across devices (one RS-485 line for its units)
        for rig in self.settings.rigs:
            ctx = BuildContext(rig.name, self.bus, self.settings.data_dir, shared, self._resume_counters,
                               self.clocks.saved)
            for dev in rig.devices:
                built = transport_of(dev).build(dev, ctx)
                if built.writer is not None:
                    self._writers[dev.name] = built.writer
                for acq in built.acquisitions:
                    self.acquisitions.append(acq)
                    self._tasks.append(self.supervisor.spawn(f"acq {rig.name}/{acq.status.device}", acq.run))

    async def _follow_live(self) -> None:
        """The live view: latest values, the last cycle per rig, recent events, the live feed."""
        sub = self._live_sub
        while True:
            item = await sub.get()
            if isinstance(item, Tagged):
                self.live.update(item.rig, item.block)
            elif isinstance(item, CycleResult):
                self.last_cycle[item.rig] = item
                self._to_feed(self.feed.cycle, item)
            elif isinstance(item, RunArtifact):
                pass  # filed by the catalogue
            else:
                self.recent_events.append(item)
                self._to_feed(self.feed.event, item)

    def _to_feed(self, send, item) -> None:
        """The live feed is a view: its failure is logged, never stops segmentation."""
        try:
            send(item)
        except Exception:
            log.exception("live feed: cannot send %s", type(item).__name__)

    # -- run state: how an earlier run ended ---------------------------------------------
    def _read_previous_state(self) -> None:
        state = self.crash_state.previous()
        if state is None:
            return
        gap_s = (time.time_ns() - int(state.get("heartbeat_ns", 0))) / 1e9
        msg = (f"the previous run (pid {state.get('pid')}) ended without shutting down (crash or "
               f"kill -9) about {gap_s:.1f} s ago: nothing was acquired meanwhile, and up to "
               f"one spool commit interval before it was still in memory")
        log.warning(msg)
        self.bus.publish(Event("unclean_shutdown", msg, level="warning",
                               fields={"gap_s": gap_s,
                                       "last_heartbeat_ns": int(state.get("heartbeat_ns", 0))}))
        self._resume_counters = {k: int(v) for k, v in state.get("counters", {}).items()}
        if self.writer is not None:  # a kill between a spool write and the state write
            for dev, counter in self.writer.spool.last_counters().items():
                if dev in self._resume_counters and counter > self._resume_counters[dev]:
                    self._resume_counters[dev] = counter

    def _write_state(self, counters: dict[str, int] | None = None) -> None:
        """Heartbeat plus, per stream, the last sample counter that is safely on disk."""
        if counters is None:
            counters = self.writer.safe_counters() if self.writer else {}
        self.crash_state.write(counters)

    async def _heartbeat(self) -> None:
        failing = False
        beats = 0
        while True:
            beats += 1
            if beats % 20 == 0:  # every 10 s: the drift changes slowly
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(self.clocks.save, self.acquisitions)
            try:
                await asyncio.to_thread(self._write_state)
                failing = False
            except OSError as e:  # a full disk: the spool reports it; say it once here
                if not failing:
                    log.error("cannot write %s: %s", self.crash_state.path, e)
                failing = True
            await asyncio.sleep(0.5)

    async def start(self) -> None:
        """Bring everything up in order: storage, simulators, live view, acquisition."""
        self.started_ns = time.time_ns()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._resume_counters: dict[str, int] = {}
        self.clocks.load()
        await self._prepare_simulators()
        await self._start_storage()
        await self._start_catalogue()
        await self._start_simulators()  # a busy port fails here; the caller's stop() ends influxd
        self._live_sub = self.bus.subscribe("live", maxsize=1000)
        self._tasks.append(self.supervisor.spawn("live", self._follow_live))
        self._tasks.append(self.supervisor.spawn("segmentation", self.segmentation.run))
        self._tasks.append(self.supervisor.spawn("live feed", self.feed.run))
        await asyncio.sleep(0)  # let the live view subscribe
        self._read_previous_state()  # after storage subscribed: its event must be stored
        self._start_acquisition()
        self._tasks.append(self.supervisor.spawn("heartbeat", self._heartbeat))
        self.bus.publish(Event("service_start", f"rigdaq {__version__} started"))

    async def stop(self) -> None:
        """Stop acquisition (flushing partial blocks), drain storage, stop the rest."""
        self.bus.publish(Event("service_stop", "rigdaq stopping"))
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        try:
            self.clocks.save(self.acquisitions)
        except OSError as e:
            log.warning("cannot keep the stream clocks' drift in %s: %s", self.clocks.path, e)
        if self.catalogue_writer is not None:
            await self.catalogue_writer.drain()
            self.catalogue_writer.close()
            self.catalogue.close()
        if self.writer is not None:
            await self.writer.stop()
        if self.client is not None:
            await self.client.aclose()
        for sim in self.simulators.values():
            await sim.stop()
        if self.influxd is not None:
            self.influxd.stop()
        self.crash_state.clear()  # a clean stop

    # -- views -------------------------------------------------------------------------
    def health(self) -> dict:
        """Devices, storage, spool depth, version."""
        devices = []
        for a in self.acquisitions:
            st = a.status
            devices.append({
                "rig": st.rig, "device": st.device, "state": st.state, "polls": st.polls,
                "samples": st.samples, "failed_polls": st.failed_polls, "overruns": st.overruns,
                "connects": st.connects, "last_error": st.last_error or None,
                "skipped_bytes": st.skipped_bytes, "missing_samples": st.missing_samples,
                "repeated_scans": st.repeated_scans,
                "last_sample_ns": st.last_sample_ns or None,
            })
        storage: dict = {"backend": None, "note": self.storage_note}
        if self.writer is not None:
            s = self.writer.stats
            sp = self.writer.spool
            storage = {
                "backend": f"influxdb-{self.settings.storage.influxdb.api}",
                "note": self.storage_note, "healthy": self.writer.healthy, "state": self.writer.state,
                "fault": self.writer.fault.message if self.writer.fault else None,
                "spool": {"dir": str(sp.dir), "batches": len(sp.batches), "lines": sp.lines,
                          "bytes": sp.bytes, "max_bytes": sp.max_bytes, "policy": sp.policy,
                          "memory_bytes": sp.memory_bytes, "memory_max_bytes": sp.memory_max_bytes,
                          "disk_error": sp.disk_error or None},
                "lines_written": s.lines_written, "split_requests": s.split_requests,
                "batches_written": s.batches_written, "retries": s.retries,
                "rejected_lines": s.rejected_lines, "dropped_lines": s.dropped_lines,
                "dropped_by_device": dict(s.dropped_by_device),
                "last_error": s.last_error or None, "last_write_ns": s.last_write_ns or None,
            }
        tasks = {t.name: {"restarts": t.restarts, "last_error": t.last_error or None}
                 for t in self.supervisor.status.values()}
        ok = all(d["state"] == "ok" for d in devices) and (
            self.writer is None or self.writer.healthy) and (
            self.catalogue_writer is None or not self.catalogue_writer.last_error)
        return {
            # unhealthy: samples are only in memory (the spool's disk refuses them)
            "status": "unhealthy" if self.writer is not None and self.writer.state == "unhealthy"
            else "ok" if ok else "degraded",
            "version": __version__,
            "devices": devices,
            "storage": storage,
            "spool_depth": self.writer.spool.lines if self.writer else 0,
            "catalogue": None if self.catalogue_writer is None else {
                "url": make_url(self.catalogue.url).render_as_string(hide_password=True),
                "filed": self.catalogue_writer.filed, "errors": self.catalogue_writer.errors,
                "archive_pruned": self.catalogue_writer.pruned,
                "last_error": self.catalogue_writer.last_error or None},
            "active_runs": {rig: run.id for rig, run in (self.runs.active.items() if self.runs else [])},
            "bus": {s.name: {"queued": s.queue.qsize(), "lost_samples": s.lost_samples}
                    for s in self.bus.subscriptions},
            "tasks": tasks,
            "task_restarts": self.supervisor.restarts,
        }
