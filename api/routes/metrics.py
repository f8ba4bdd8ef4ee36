"""``GET /metrics``: Prometheus text exposition of acquisition and storage counters."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from daq.service import Service

router = APIRouter(tags=["health"])


class ServiceCollector:
    """Reads the service's counters at scrape time (nothing is kept twice)."""

    def __init__(self, service: Service):
        self.service = service

    def collect(self):  # noqa: D102
        svc = self.service
        acquired = CounterMetricFamily("rigdaq_samples_acquired", "Samples acquired",
                                       labels=["rig", "device"])
        failed = CounterMetricFamily("rigdaq_failed_polls", "Polls or reads that failed",
                                     labels=["rig", "device"])
        missing = CounterMetricFamily("rigdaq_missing_samples", "Gaps in a stream's sample counter",
                                      labels=["rig", "device"])
        up = GaugeMetricFamily("rigdaq_device_up", "1 when the device answers and moves",
                               labels=["rig", "device", "state"])
        for a in svc.acquisitions:
            st = a.status
            acquired.add_metric([st.rig, st.device], st.samples)
            failed.add_metric([st.rig, st.device], st.failed_polls)
            missing.add_metric([st.rig, st.device], st.missing_samples)
            up.add_metric([st.rig, st.device, st.state], 1.0 if st.state == "ok" else 0.0)
        yield from (acquired, failed, missing, up)
        lost = CounterMetricFamily("rigdaq_bus_lost_samples", "Samples a full consumer queue lost",
                                   labels=["consumer"])
        for sub in svc.bus.subscriptions:
            lost.add_metric([sub.name], sub.lost_samples)
        yield lost
        cycles = CounterMetricFamily("rigdaq_cycles_analysed", "Cycles analysed (blows, test steps)",
                                     labels=["rig"])
        for rig, tracker in svc.trackers.items():
            cycles.add_metric([rig], tracker.cycle_no)
        yield cycles
        yield GaugeMetricFamily("rigdaq_live_clients", "WebSocket live-feed clients",
                                value=sum(len(c) for c in svc.feed.clients.values()))
        restarts = CounterMetricFamily("rigdaq_task_restarts", "Background tasks restarted after a failure",
                                       labels=["task"])
        for t in svc.supervisor.status.values():
            restarts.add_metric([t.name], t.restarts)
        yield restarts
        mq = getattr(svc, "mqtt", None)
        if mq is not None:
            dropped = CounterMetricFamily("rigdaq_mqtt_dropped", "MQTT messages dropped: the publish queue "
                                          "was full (oldest first)", labels=["kind"])
            published = CounterMetricFamily("rigdaq_mqtt_published", "MQTT messages the broker took",
                                            labels=["kind"])
            for kind, n in mq.dropped.items():
                dropped.add_metric([kind], n)
            for kind, n in mq.published.items():
                published.add_metric([kind], n)
            yield from (dropped, published)
            yield GaugeMetricFamily("rigdaq_mqtt_queued", "MQTT messages waiting for the broker", value=mq.queued)
            yield GaugeMetricFamily("rigdaq_mqtt_up", "1 while connected to the MQTT broker",
                                    value=1.0 if mq.status.connected else 0.0)
        cw = svc.catalogue_writer
        if cw is not None:
            yield CounterMetricFamily("rigdaq_catalogue_filed", "Cycles and artifacts filed", value=cw.filed)
            yield CounterMetricFamily("rigdaq_catalogue_errors", "Catalogue filing errors", value=cw.errors)
            yield CounterMetricFamily("rigdaq_archive_pruned", "Cycle archives deleted at the bound",
                                      value=cw.pruned)
        w = svc.writer
        if w is None:
            return
        stored = CounterMetricFamily("rigdaq_samples_spooled", "Samples put on the durable spool",
                                     labels=["measurement"])
        for device, n in w.samples_by_device.items():
            stored.add_metric([device], n)
        yield stored
        s, sp = w.stats, w.spool
        counters = [
            ("rigdaq_lines_written", "Lines InfluxDB confirmed", s.lines_written),
            ("rigdaq_batches_written", "Batches InfluxDB confirmed", s.batches_written),
            ("rigdaq_write_retries", "Writes retried after a failure", s.retries),
            ("rigdaq_write_seconds", "Time spent in confirmed writes", s.write_seconds_total),
            ("rigdaq_rejected_lines", "Lines InfluxDB refused (kept aside)", s.rejected_lines),
            ("rigdaq_dropped_lines", "Lines lost: spool or memory bound, full storage queue (should be 0)",
             s.dropped_lines),
            ("rigdaq_split_requests", "Writes split: too large (413) or bisected to isolate refused lines",
             s.split_requests),
        ]
        gauges = [
            ("rigdaq_write_latency_seconds", "Latency of the last write", s.last_latency_s),
            ("rigdaq_spool_bytes", "Bytes waiting in the spool", sp.bytes),
            ("rigdaq_spool_lines", "Lines waiting in the spool", sp.lines),
            ("rigdaq_spool_batches", "Batches waiting in the spool", len(sp.batches)),
            ("rigdaq_spool_memory_bytes", "Bytes held in memory while the spool cannot write to disk",
             sp.memory_bytes),
            ("rigdaq_storage_up", "1 while InfluxDB takes writes", 1.0 if w.fault is None else 0.0),
            ("rigdaq_spool_disk_ok", "1 while the spool writes to disk", 0.0 if sp.disk_error else 1.0),
        ]
        for name, text, value in counters:
            yield CounterMetricFamily(name, text, value=value)
        for name, text, value in gauges:
            yield GaugeMetricFamily(name, text, value=value)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Counters and gauges in the Prometheus text format."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


def registry_for(service: Service) -> CollectorRegistry:
    """A registry of this app's own (no process-wide globals)."""
    registry = CollectorRegistry()
    registry.register(ServiceCollector(service))
    return registry
