"""The service's health view: what ``/api/health`` shows and ``/metrics`` counts from.

Devices (state, polls, samples, faults, gaps), storage (writer state, fault, spool, what
was written, rejected or dropped), the catalogue, active runs, the bus's queues and the
supervisor's tasks. ``status`` is ``unhealthy`` while samples live only in memory (the
spool's disk refuses them), ``degraded`` while any device, storage or the catalogue is
not well, else ``ok``.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url

from daq import __version__
from daq.calibration import today_utc
from daq.calibration import warnings as calibration_warnings


def health_view(service) -> dict:
    """The health of a running :class:`daq.service.Service`, as JSON-able data."""
    devices = []
    for a in service.acquisitions:
        st = a.status
        devices.append({
            "rig": st.rig, "device": st.device, "state": st.state, "polls": st.polls,
            "samples": st.samples, "failed_polls": st.failed_polls, "overruns": st.overruns,
            "connects": st.connects, "last_error": st.last_error or None,
            "skipped_bytes": st.skipped_bytes, "missing_samples": st.missing_samples,
            "repeated_scans": st.repeated_scans,
            "last_sample_ns": st.last_sample_ns or None,
        })
    storage: dict = {"backend": None, "note": service.storage_note}
    if service.writer is not None:
        s = service.writer.stats
        sp = service.writer.spool
        storage = {
            "backend": f"influxdb-{service.settings.storage.influxdb.api}",
            "note": service.storage_note, "healthy": service.writer.healthy, "state": service.writer.state,
            "fault": service.writer.fault.message if service.writer.fault else None,
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
    central = service.storage.central if service.storage is not None else None
    if central is not None:
        cs = central.writer.stats
        storage["central"] = {"note": central.note, "state": central.writer.state,
                              "fault": central.writer.fault.message if central.writer.fault else None,
                              "spool_lines": central.writer.spool.lines, "lines_written": cs.lines_written,
                              "dropped_lines": cs.dropped_lines, "rejected_lines": cs.rejected_lines}
    tasks = {t.name: {"restarts": t.restarts, "last_error": t.last_error or None}
             for t in service.supervisor.status.values()}
    ok = all(d["state"] == "ok" for d in devices) and (
        service.writer is None or service.writer.healthy) and (
        service.catalogue_writer is None or not service.catalogue_writer.last_error)
    return {
        # unhealthy: samples are only in memory (the spool's disk refuses them)
        "status": "unhealthy" if service.writer is not None and service.writer.state == "unhealthy"
        else "ok" if ok else "degraded",
        "version": __version__,
        "devices": devices,
        "storage": storage,
        "spool_depth": service.writer.spool.lines if service.writer else 0,
        "catalogue": None if service.catalogue_writer is None else {
            "url": make_url(service.catalogue.url).render_as_string(hide_password=True),
            "filed": service.catalogue_writer.filed, "errors": service.catalogue_writer.errors,
            "archive_pruned": service.catalogue_writer.pruned,
            "last_error": service.catalogue_writer.last_error or None},
        "active_runs": {rig: run.id for rig, run in (service.runs.active.items() if service.runs else [])},
        "bus": {s.name: {"queued": s.queue.qsize(), "lost_samples": s.lost_samples}
                for s in service.bus.subscriptions},
        "tasks": tasks,
        "task_restarts": service.supervisor.restarts,
        "mqtt": service.mqtt.health() if getattr(service, "mqtt", None) is not None else None,
        "role": getattr(service, "role", "all"),
        "mqtt_live": (service.mqtt_source.health() if getattr(service, "mqtt_source", None) is not None
                      else None),
        # calibrations due within 14 days or overdue (daq.calibration), and the alarms per state (daq.alarms)
        "calibration": calibration_warnings(service.rigs.values(), today_utc()),
        "alarms": alarm_counts(service),
    }


def alarm_counts(service) -> dict:
    """Alarms per state (all priorities), as the alarm stage last read them from the catalogue."""
    from daq.alarms.model import STATES

    stage = getattr(service, "alarms", None)
    counts = stage.counts if stage is not None else {}
    return {state: sum(n for (s, _), n in counts.items() if s == state) for state in STATES}
