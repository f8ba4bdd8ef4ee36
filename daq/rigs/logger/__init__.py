"""The logger: instruments logged continuously (thermocouple scanners, power meters, chambers), no cycles.

A logger rig has devices and runs but no test cycles: its tracker summarises each run per
device and channel (count, min, max, mean, standard deviation, time span, a SHA-256 of the
samples; :mod:`.summary`) and files that as the run's ``channel_summary`` artifact when
the run stops. Its simulator (:mod:`.sim`) shows a climate chamber's thermocouples and a
power meter through whichever transports the rig file gives its devices.
"""

from __future__ import annotations

from daq.rigs.kind import RigKind
from daq.rigs.logger.schema import LoggerParameters, LoggerRig, SimulatedChannel
from daq.rigs.logger.summary import ARTIFACT, LAYOUT, RunSummaryTracker

__all__ = ["ARTIFACT", "KIND", "LAYOUT", "LoggerParameters", "LoggerRig", "RunSummaryTracker",
           "SimulatedChannel"]


class Logger(RigKind):
    """Continuous logging without cycles (``kind = "logger"``)."""

    name = "logger"
    schema = LoggerRig
    cycle_noun = None
    master_channel = None
    csv_columns = ()
    key_metric = ""
    method = ("Continuous logging; per run, device and channel: count, min, max, mean, population standard "
              "deviation and time span of the valid samples (quality good, finite), with a SHA-256 of the "
              "run's stored samples per channel and device.")
    trend_span_s = 120.0  # chambers and power meters change over minutes

    def tracker_for(self, rig):
        """Every logger rig gets a run summary, whatever its devices carry."""
        return RunSummaryTracker(rig.name, {d.name: d.channel_units() for d in rig.devices})

    def no_cycles(self, rig, source):
        return f"rig kind {self.name} logs without test cycles: nothing to analyse in {source}"

    def report_sections(self, report):
        """Per device, the run summary's figures per channel, and the device's samples hash."""
        out = []
        for a in report["artifacts"]:
            if a["name"] != ARTIFACT:
                continue
            for dev, summary in sorted(a["data"].get("devices", {}).items()):
                rows = [["channel", "unit", "n", "min", "max", "mean", "std", "span s", "missing", "SHA-256"]]
                rows += [[name, c.get("unit", ""), c["count"], c["min"], c["max"], c["mean"], c["std"],
                          c["span_s"], c["missing"], c["sha256"]]
                         for name, c in sorted(summary.get("channels", {}).items())]
                out.append(("table", f"{dev}: channel summary", rows))
                out.append(("note", "", f"{dev}: samples SHA-256 {summary.get('sha256', '')} "
                                        f"(layout {a['data'].get('hash_layout', LAYOUT)})"))
        return out

    def simulator(self, rig, faces, data_dir, record, counter_file):
        from daq.rigs.logger.sim import build_logger_simulator

        return build_logger_simulator(rig, faces, record, counter_file)


KIND = Logger()
