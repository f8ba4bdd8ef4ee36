"""Bringing storage up from the service file: managed influxd, the client, the spool, the writer.

With ``[storage.central]`` also the plant's central path: a rollup stage on the service's
bus (:mod:`daq.storage.rollup`) feeding a second writer with its own spool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from daq.bus import SampleBus
from daq.storage.influx_v1 import InfluxV1Client, masked_url
from daq.storage.influx_v2 import InfluxV2Client
from daq.storage.influxd import InfluxdMissingError, ManagedInfluxd
from daq.storage.rollup import Rollup, RollupStage
from daq.storage.spool import Spool
from daq.storage.writer import StorageWriter
from daq.supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass
class Central:
    """The central InfluxDB's path: rollups and forwarded results on their own bus, spool and writer."""

    client: InfluxV1Client | InfluxV2Client
    bus: SampleBus
    stage: RollupStage
    writer: StorageWriter
    note: str

    async def stop(self) -> None:
        """After the acquisitions stopped: the last rollups, then drain the central writer."""
        self.stage.flush()
        await self.writer.stop()
        await self.client.aclose()


@dataclass
class Storage:
    """What :func:`start_storage` brought up (each None when not configured or not startable)."""

    influxd: ManagedInfluxd | None = None
    client: InfluxV1Client | InfluxV2Client | None = None
    writer: StorageWriter | None = None
    note: str = "not configured"
    central: Central | None = None

    async def stop(self) -> None:
        """Drain the writer, close the client, stop a managed influxd."""
        if self.writer is not None:
            await self.writer.stop()
        if self.client is not None:
            await self.client.aclose()
        if self.central is not None:
            await self.central.stop()
        if self.influxd is not None:
            self.influxd.stop()


def influx_client(cfg) -> InfluxV1Client | InfluxV2Client:
    """The client for ``[storage.influxdb]`` or ``[storage.central]`` (v1 or v2 API)."""
    if cfg.api == "v2":
        return InfluxV2Client(cfg.url, cfg.token, cfg.org, cfg.bucket, cfg.timeout_s)
    return InfluxV1Client(cfg.url, cfg.database, cfg.username, cfg.password, cfg.timeout_s)


def start_central(settings, bus: SampleBus, supervisor: Supervisor) -> Central | None:
    """The central path if ``[storage.central]`` is set: its rollup stage subscribes to ``bus`` now.

    The caller spawns ``central.stage.run``; the writer is started here.
    """
    cfg = settings.storage.central
    if cfg is None:
        return None
    client = influx_client(cfg)
    central_bus = SampleBus()
    stage = RollupStage(bus, central_bus, Rollup(cfg.rollup_s, cfg.decimate_hz))
    spool = Spool(settings.data_dir / "spool-central", int(cfg.spool_max_mb * 1e6), cfg.spool_policy,
                  memory_max_bytes=int(cfg.memory_max_mb * 1e6))
    writer = StorageWriter(client, central_bus.subscribe("central", maxsize=100_000), spool, cfg.commit_interval_s,
                           retention=cfg.retention if cfg.api == "v1" else None, supervisor=supervisor)
    writer.start()
    where = f"bucket {cfg.bucket}" if cfg.api == "v2" else f"database {cfg.database}"
    return Central(client, central_bus, stage, writer, f"central InfluxDB at {masked_url(cfg.url)}, {where}")


async def start_storage(settings, bus: SampleBus, supervisor: Supervisor, on_commit=None) -> Storage:
    """Start what ``[storage.influxdb]`` asks for; the writer subscribes to ``bus`` and runs.

    A managed influxd that cannot start (not installed, busy port) is logged and noted, and
    the writer spools until an InfluxDB answers: acquisition never waits for storage.
    """
    out = Storage()
    cfg = settings.storage.influxdb
    if cfg is None:
        log.warning("no [storage.influxdb] configured: samples are shown live but not stored")
        out.central = start_central(settings, bus, supervisor)
        return out
    if cfg.managed:
        u = urlparse(cfg.url)
        data = Path(cfg.data_dir)
        if not data.is_absolute():
            data = settings.data_dir / data
        out.influxd = ManagedInfluxd(data, host=u.hostname or "127.0.0.1", port=u.port or 8086)
        try:
            await out.influxd.start()
            out.note = f"managed influxd at {masked_url(cfg.url)}"
        except InfluxdMissingError as e:
            log.error("%s", e)
            out.note = str(e)
            out.influxd = None
        except RuntimeError as e:
            log.error("managed influxd: %s", e)
            out.note = f"managed influxd failed: {e}"
            out.influxd = None
    else:
        out.note = f"InfluxDB at {masked_url(cfg.url)}"
    out.client = influx_client(cfg)
    if cfg.api == "v2":
        out.note = f"InfluxDB v2 API at {masked_url(cfg.url)}, bucket {cfg.bucket}"
    sub = bus.subscribe("storage", maxsize=100_000)
    spool = Spool(settings.data_dir / "spool", int(cfg.spool_max_mb * 1e6), cfg.spool_policy,
                  memory_max_bytes=int(cfg.memory_max_mb * 1e6))
    # the writer creates the database (and its retention policy), retrying until it can
    out.writer = StorageWriter(out.client, sub, spool, cfg.commit_interval_s, on_commit=on_commit,
                               retention=cfg.retention if cfg.api == "v1" else None, supervisor=supervisor)
    out.writer.start()
    out.central = start_central(settings, bus, supervisor)
    return out
