"""The running service: managed InfluxDB, simulators, acquisition, storage and live values."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from daq import __version__
from daq.acquisition.transports import Acquisition, BuildContext, ChannelWriter, transport_of
from daq.alarms.stage import AlarmStage
from daq.alarms.webhook import WebhookNotifier
from daq.bus import SampleBus, Tagged
from daq.catalogue import Catalogue, CatalogueWriter
from daq.catalogue.audit import AuditTrail
from daq.catalogue.keys import KeyStore
from daq.catalogue.outbox import Outbox
from daq.catalogue.runs import RunManager
from daq.config import Settings
from daq.cycles import CycleResult, RunArtifact, tracker_for
from daq.cycles.stage import SegmentationStage
from daq.events import Event
from daq.health import health_view
from daq.live import LatestValues, LiveFeed
from daq.simulators import build_simulator
from daq.state import ClockStore, CrashState
from daq.storage.bootstrap import Storage, influx_client, start_storage
from daq.storage.influx_v1 import InfluxV1Client, masked_url
from daq.storage.influx_v2 import InfluxV2Client
from daq.storage.influxd import ManagedInfluxd
from daq.storage.writer import StorageWriter
from daq.supervisor import Supervisor
from daq.tasks import cancel_and_wait
from daq.uns.publisher import MqttPublisher
from daq.uns.subscriber import MqttLiveSource
from daq.uns.topics import default_node
from drivers.sim.rig import RigSimulator

log = logging.getLogger(__name__)

#: a device state as an acquiring node publishes it (:mod:`daq.uns.topics`) → as the API shows it
_MQTT_STATES = {"ok": "ok", "fault": "down", "stale": "degraded", "unknown": "starting"}


class Service:
    """Everything ``daq run`` runs besides the HTTP server, or one role of it.

    ``role``: ``"all"`` (``daq run``: everything on one box), ``"agent"`` (``daq agent``: the
    same stages; its HTTP server offers only health and metrics) or ``"api"`` (``daq api``:
    no simulators, acquisition, storage writing or segmentation; the catalogue, runs, curve
    queries, and the live feed from MQTT). ``simulate``: start simulators for rigs marked
    ``simulate = true``; ``record_sim``: simulators keep every register image they showed
    (for tests).
    """

    ROLES = ("all", "agent", "api")
    #: how often a node looks in the catalogue for runs another node started or stopped
    FOLLOW_RUNS_S = 1.0

    def __init__(self, settings: Settings, simulate: bool = True, record_sim: bool = False, role: str = "all"):
        if role not in self.ROLES:
            raise ValueError(f"role must be one of {', '.join(self.ROLES)} (got {role!r})")
        self.settings = settings
        self.role = role
        self.simulate = simulate and role != "api"
        self.record_sim = record_sim
        self.bus = SampleBus()
        self.supervisor = Supervisor(on_event=self.bus.publish)
        self.live = LatestValues()
        self.feed = LiveFeed(self.live)
        # acquiring nodes publish live data; an API node takes it from the broker
        self.mqtt = MqttPublisher.for_settings(settings, self.bus) if settings.mqtt and role != "api" else None
        self.mqtt_source = MqttLiveSource(settings.mqtt, self.feed) if settings.mqtt and role == "api" else None
        self.recent_events: deque[Event] = deque(maxlen=500)
        self.influxd: ManagedInfluxd | None = None
        self.client: InfluxV1Client | InfluxV2Client | None = None
        self.writer: StorageWriter | None = None
        self.storage_note = "not configured"
        self.storage: Storage | None = None
        self.simulators: dict[str, RigSimulator] = {}
        self.acquisitions: list[Acquisition] = []
        self.rigs = {r.name: r for r in settings.rigs}
        self._tasks: list[asyncio.Task] = []
        self.started_ns = 0
        self.trackers = {r.name: t for r in settings.rigs if (t := tracker_for(r))} if role != "api" else {}
        self.segmentation = SegmentationStage(self.bus, self.trackers)
        self.last_cycle: dict[str, CycleResult] = {}
        self.catalogue: Catalogue | None = None
        self.catalogue_writer: CatalogueWriter | None = None
        self.runs: RunManager | None = None
        self.keys: KeyStore | None = None
        self.alarms: AlarmStage | None = None
        self.alarm_webhook: WebhookNotifier | None = None
        self._writers: dict[str, ChannelWriter] = {}  # device → how to write its writable channels
        self.crash_state = CrashState(settings.data_dir / "service.state")
        self.clocks = ClockStore(settings.data_dir / "stream_clocks.json")
        for rig in settings.rigs:
            for d in rig.devices:
                self.live.set_units(rig.name, d.channel_units())

    # -- start -------------------------------------------------------------------------
    async def _start_storage(self) -> None:
        self.storage = await start_storage(self.settings, self.bus, self.supervisor, on_commit=self._write_state)
        self.influxd, self.client, self.writer = self.storage.influxd, self.storage.client, self.storage.writer
        self.storage_note = self.storage.note

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
        self.runs = RunManager(self.catalogue, self.catalogue_writer, self.bus,
                               self.segmentation if self.role != "api" else None, self.rigs)
        if self.role != "api":
            await self.runs.restore()
        self._tasks.append(self.supervisor.spawn("runs", lambda: self.runs.follow_forever(self.FOLLOW_RUNS_S)))
        self._tasks.append(self.supervisor.spawn("catalogue", self.catalogue_writer.run))
        await self._audit_service("service_start")
        log.info("catalogue at %s", url)

    async def _audit_service(self, action: str) -> None:
        """Record this service's start or stop in the audit trail (role, node, version)."""
        node = self.settings.mqtt.node if self.settings.mqtt else default_node()
        try:
            await self.catalogue_writer.call(AuditTrail(self.catalogue).append, "service", action, f"node {node}",
                                             details={"role": self.role, "node": node, "version": __version__},
                                             patient=False)
        except Exception as e:  # the service runs on; the trail shows the gap as a missing start/stop
            log.error("audit: cannot record %s: %s: %s", action, type(e).__name__, e)

    def _start_alarms(self) -> None:
        """The alarm stage (:mod:`daq.alarms`), filing through the catalogue writer, and the optional webhook.

        An API node runs it for the alarm counts only (acquiring nodes raise and clear).
        """
        cfg = self.settings.alarms
        acquiring = self.role != "api"
        if cfg.webhook_url and acquiring:
            self.alarm_webhook = WebhookNotifier(cfg.webhook_url, self.settings.service.name, cfg.webhook_min_priority,
                                                 cfg.webhook_timeout_s, cfg.webhook_queue_max, cfg.webhook_retries)
            self._tasks.append(self.supervisor.spawn("alarm webhook", self.alarm_webhook.run))
        sub = self.bus.subscribe("alarms", maxsize=1000, accepts=(CycleResult,)) if acquiring else None
        queue = self.catalogue_writer.sub.queue  # filed in order with cycles; in the outbox while it is away

        def file(record) -> bool:
            try:
                queue.put_nowait(record)
            except asyncio.QueueFull:
                return False
            return True

        node = self.settings.mqtt.node if self.settings.mqtt else default_node()
        self.alarms = AlarmStage(self, sub, file, node, self.alarm_webhook, sources=acquiring)
        self._tasks.append(self.supervisor.spawn("alarms", self.alarms.run))

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

    def _write_state(self) -> None:
        """Heartbeat plus, per stream, the last sample counter that is safely on disk."""
        self.crash_state.write(self.writer.safe_counters if self.writer else dict)

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

    async def _start_api_node(self) -> None:
        """An API node: the catalogue and runs, a storage client for curves, the live feed from MQTT."""
        cfg = self.settings.storage.influxdb
        if cfg is not None:
            self.client = influx_client(cfg)
            self.storage_note = f"reads curves from InfluxDB at {masked_url(cfg.url)}"
        await self._start_catalogue()
        self._start_alarms()
        self._tasks.append(self.supervisor.spawn("live feed", self.feed.run))
        if self.mqtt_source is not None:
            self.last_cycle = self.mqtt_source.last_cycle
            self.recent_events = self.mqtt_source.recent_events
            self._tasks.append(self.supervisor.spawn("mqtt live", self.mqtt_source.run))
        else:
            log.warning("no [mqtt] configured: this API node has no live data")

    async def start(self) -> None:
        """Bring everything up in order: storage, simulators, live view, acquisition."""
        self.started_ns = time.time_ns()
        if self.role == "api":
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            await self._start_api_node()
            return
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._resume_counters: dict[str, int] = {}
        self.clocks.load()
        await self._prepare_simulators()
        await self._start_storage()
        if self.storage.central is not None:
            self._tasks.append(self.supervisor.spawn("rollup", self.storage.central.stage.run))
        await self._start_catalogue()
        self._start_alarms()
        await self._start_simulators()  # a busy port fails here; the caller's stop() ends influxd
        self._live_sub = self.bus.subscribe("live", maxsize=1000)
        self._tasks.append(self.supervisor.spawn("live", self._follow_live))
        self._tasks.append(self.supervisor.spawn("segmentation", self.segmentation.run))
        self._tasks.append(self.supervisor.spawn("live feed", self.feed.run))
        if self.mqtt is not None:
            self._tasks.append(self.supervisor.spawn("mqtt", self.mqtt.run))
        await asyncio.sleep(0)  # let the live view subscribe
        self._read_previous_state()  # after storage subscribed: its event must be stored
        self._start_acquisition()
        self._tasks.append(self.supervisor.spawn("heartbeat", self._heartbeat))
        self.bus.publish(Event("service_start", f"rigdaq {__version__} started"))

    async def stop(self) -> None:
        """Stop acquisition (flushing partial blocks), drain storage, stop the rest."""
        self.bus.publish(Event("service_stop", "rigdaq stopping"))
        if self.mqtt is not None:  # what is queued, then the retained offline state
            await self.mqtt.stop()
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        try:
            self.clocks.save(self.acquisitions)
        except OSError as e:
            log.warning("cannot keep the stream clocks' drift in %s: %s", self.clocks.path, e)
        if self.catalogue_writer is not None:
            await self.catalogue_writer.drain()
            await self._audit_service("service_stop")
            self.catalogue_writer.close()
            self.catalogue.close()
        if self.writer is not None:
            await self.writer.stop()
        if self.client is not None:
            await self.client.aclose()
        if self.storage is not None and self.storage.central is not None:
            await self.storage.central.stop()
        for sim in self.simulators.values():
            await sim.stop()
        if self.influxd is not None:
            self.influxd.stop()
        if self.role != "api":
            self.crash_state.clear()  # a clean stop

    # -- views -------------------------------------------------------------------------
    def device_states(self, rig: str) -> list[tuple[str, str, str | None]]:
        """(device, state, last error) of a rig's devices: acquired here, or as MQTT says (an API node)."""
        if self.role == "api":
            payload = self.mqtt_source.states.get(rig, {}) if self.mqtt_source is not None else {}
            return [(dev, _MQTT_STATES.get(d.get("state"), "starting"), d.get("message") or None)
                    for dev, d in sorted(payload.get("devices", {}).items())]
        return [(a.status.device, a.status.state, a.status.last_error or None)
                for a in self.acquisitions if a.status.rig == rig]

    def health(self) -> dict:
        """Devices, storage, spool depth, version (:func:`daq.health.health_view`)."""
        return health_view(self)
