"""The ``daq`` command.

One parser (here); the commands in :mod:`daq.cli.service` (running stages) and
:mod:`daq.cli.records` (a catalogue's records); what they share in :mod:`daq.cli.common`.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import logging
import signal

from daq.cli.common import DEFAULT_CONFIG, EXIT_CONFIG, _setup_logging, masked_url  # noqa: F401 (masked_url: interface)
from daq.cli.records import cmd_analyse, cmd_audit, cmd_export, cmd_keys, cmd_report, cmd_runs, cmd_sign
from daq.cli.service import _startup_lines, cmd_agent, cmd_api, cmd_check, cmd_run, cmd_sim  # noqa: F401

log = logging.getLogger(__name__)

__all__ = ["main"]


def _config_option(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` or the file as the last argument (:func:`daq.cli.common._catalogue` takes either)."""
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("config_file", nargs="?", metavar="CONFIG", help="service file (instead of --config)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``daq`` console script."""
    parser = argparse.ArgumentParser(prog="daq", description="rigdaq test-data acquisition")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run simulators, acquisition, storage and the API")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    p.add_argument("--no-sim", action="store_true", help="do not start simulators")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("agent", help="plant: acquire and file for this config's rigs (health and metrics only)")
    p.add_argument("config", nargs="?", default="configs/demo.toml")
    p.add_argument("--no-sim", action="store_true", help="do not start simulators")
    p.set_defaults(func=cmd_agent)
    p = sub.add_parser("api", help="plant: serve the API and operator page from the shared catalogue and MQTT")
    p.add_argument("config", nargs="?", default="configs/demo.toml")
    p.set_defaults(func=cmd_api)
    p = sub.add_parser("sim", help="run only the simulated equipment")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_sim)
    p = sub.add_parser("analyse", help="analyse a recorded cycle CSV with a rig's parameters")
    p.add_argument("rig", help="rig file, e.g. configs/rigs/screw-press.toml")
    p.add_argument("csv", help="CSV with a time column (s) and canonical channel columns")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_analyse)
    p = sub.add_parser("keys", help="API keys: create, list, revoke")
    ks = p.add_subparsers(dest="action", required=True)
    k = ks.add_parser("create", help="create a key and print it (once)")
    k.add_argument("--role", required=True, choices=["operator", "engineer", "qa", "admin"])
    k.add_argument("--name", required=True, help="who or what uses the key")
    ks.add_parser("list", help="list keys (never the keys themselves)")
    k = ks.add_parser("revoke", help="revoke a key by id")
    k.add_argument("id", type=int)
    for k in ks.choices.values():
        k.add_argument("--config", default=DEFAULT_CONFIG, help="service file (where the catalogue is)")
    p.set_defaults(func=cmd_keys)
    p = sub.add_parser("report", help="write a run's certification report")
    p.add_argument("run_id", type=int)
    p.add_argument("--format", choices=["pdf", "json", "csv"], default="pdf")
    p.add_argument("-o", "--output", required=True, help="file to write ('-' for stdout)")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("sign", help="approve or reject a stopped run's certificate (electronic signature)")
    p.add_argument("run_id", type=int)
    p.add_argument("--meaning", required=True, choices=["approved", "rejected"])
    p.add_argument("--reason", required=True, help="why (required, shown with the signature)")
    p.add_argument("--reviewed", default=None, metavar="SHA256",
                   help="the certificate content sha256 you reviewed: refused if it changed since")
    p.add_argument("--key", default=None, help="your API key, qa or admin (default: $RIGDAQ_KEY)")
    _config_option(p)
    p.set_defaults(func=cmd_sign)
    p = sub.add_parser("audit", help="the audit trail: verify its hash chain")
    aus = p.add_subparsers(dest="action", required=True)
    a = aus.add_parser("verify", help="exit 0 if intact, 1 naming the first altered, deleted or inserted entry")
    _config_option(a)
    p.set_defaults(func=cmd_audit)
    p = sub.add_parser("export", help="write a run's samples, units, metadata and cycles for engineers' tools")
    p.add_argument("run_id", type=int)
    p.add_argument("--format", required=True, choices=["hdf5", "tdms", "mdf4", "parquet", "csv"],
                   help="hdf5 (h5py, MATLAB), tdms (DIAdem, LabVIEW), mdf4 (asammdf, CANape), parquet (pandas), csv")
    p.add_argument("-o", "--output", required=True, help="file to write")
    _config_option(p)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("runs", help="start, stop or list runs on the running service")
    rs = p.add_subparsers(dest="action", required=True)
    r = rs.add_parser("start", help="start a run with its metadata")
    r.add_argument("--rig", required=True)
    r.add_argument("--operator", default="")
    r.add_argument("--part", default="", help="part number")
    r.add_argument("--lot", default="", help="lot or heat number")
    r.add_argument("--serial", default="", help="die or motor serial")
    r.add_argument("--notes", default="")
    r.add_argument("--sequence", action="store_true", help="rigs with a test sequence: also start it")
    r = rs.add_parser("stop", help="stop a run")
    r.add_argument("run_id", type=int)
    r = rs.add_parser("list", help="list runs")
    r.add_argument("--rig", default=None)
    for r in rs.choices.values():
        r.add_argument("--config", default=DEFAULT_CONFIG)
        r.add_argument("--key", default=None, help="API key (default: $RIGDAQ_API_KEY)")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("check", help="validate a service or rig file; exit 2 if invalid")
    p.add_argument("config")
    p.set_defaults(func=cmd_check)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    with contextlib.suppress(io.UnsupportedOperation, ValueError, AttributeError):
        faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130

