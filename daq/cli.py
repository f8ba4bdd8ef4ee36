"""The ``daq`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import io
import json
import logging
import math
import os
import re
import signal
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "configs/demo.toml"
EXIT_CONFIG = 2


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("pymodbus", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL if noisy == "pymodbus" else logging.WARNING)


def _load(path: str):
    from daq.config import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as e:
        print(f"rigdaq: configuration is invalid ({len(e.problems)} problem"
              f"{'s' if len(e.problems) != 1 else ''}):", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return None


def cmd_check(args) -> int:
    """Validate a service file (and its rigs) or a single rig file."""
    from daq.config import ConfigError, load_rig

    path = Path(args.config)
    try:
        is_rig = path.exists() and b"[service]" not in path.read_bytes()
    except OSError:
        is_rig = False
    if is_rig:
        try:
            rig = load_rig(path)
        except ConfigError as e:
            for p in e.problems:
                print(p, file=sys.stderr)
            return EXIT_CONFIG
        print(f"{path}: ok (rig {rig.name}, {len(rig.devices)} device(s))")
        return 0
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    n_ch = sum(len(d.channel_units()) for r in settings.rigs for d in r.devices)
    print(f"{path}: ok ({len(settings.rigs)} rig(s), {n_ch} channel(s))")
    return 0


def masked_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (catalogue and InfluxDB URLs), for printing."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except (ArgumentError, ValueError):  # not a database URL: mask the userinfo by hand
        return re.sub(r"(//[^/@:]*):[^/]*@", r"\1:***@", url)
    if u.password is None:
        return url  # as written: rendering would re-quote a path's characters
    if u.host and "@" in u.host:  # an unencoded @ in the password
        u = u.set(host=u.host.rpartition("@")[2])
    return u.render_as_string(hide_password=True)


def _startup_lines(settings, role: str = "all") -> list[str]:
    """What ``daq run`` (``agent``, ``api``) prints once its HTTP server is up (no secrets)."""
    base = f"http://{settings.api.host}:{settings.api.port}"
    if role == "agent":
        return [f"rigdaq agent running: health {base}/api/health , metrics {base}/metrics. Ctrl-C stops."]
    lines = [f"rigdaq {'API node ' if role == 'api' else ''}running: operator page {base}/ , "
             "API docs /docs. Ctrl-C stops."]
    if settings.auth.enabled:
        lines.append(f"  API keys: `daq keys create --role operator|engineer|qa|admin --name NAME --config "
                     f"{settings.path}` (catalogue {masked_url(settings.catalogue_url)})")
    return lines


def _dump_tasks() -> None:
    """`kill -USR2 PID`: log what every asyncio task is waiting on."""
    for task in asyncio.all_tasks():
        frames = task.get_stack()
        where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in frames[::-1]) or "-"
        log.warning("task %s: %s", task.get_name(), where)


async def _run(settings, simulate: bool, role: str = "all") -> int:
    from api.app import create_app
    from api.server import ApiServer
    from daq.service import Service

    service = Service(settings, simulate=simulate, role=role)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR2, _dump_tasks)
    server = ApiServer(create_app(settings, service), settings.api.host, settings.api.port)
    try:
        server.bind()  # fail fast, before anything is started
    except OSError as e:
        log.error("%s", e)
        return 1
    try:
        await service.start()
        await server.start()
    except OSError as e:
        log.error("cannot start: %s", e)
        await service.stop()
        return 1
    for line in _startup_lines(settings, role):
        print(line, flush=True)
    for rig, sim in service.simulators.items():
        for device, where in sim.endpoints().items():
            print(f"  simulated {rig}/{device}: {where}", flush=True)
    await stop.wait()
    log.info("stopping: flushing acquisition and storage")
    await server.stop()
    await service.stop()
    log.info("stopped")
    return 0


def cmd_run(args) -> int:
    """Run everything the config describes."""
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    return asyncio.run(_run(settings, simulate=not args.no_sim))


def cmd_agent(args) -> int:
    """Acquire, segment, analyse and file for the config's rigs; serve only health and metrics."""
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    return asyncio.run(_run(settings, simulate=not args.no_sim, role="agent"))


def cmd_api(args) -> int:
    """Serve the API, reports and operator page from the shared catalogue and the MQTT live data."""
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    return asyncio.run(_run(settings, simulate=False, role="api"))


async def _sim(settings) -> int:
    from daq.simulators import build_simulator

    sims = []
    for rig in settings.rigs:
        if not rig.simulate:
            continue
        sim = build_simulator(rig, settings.data_dir)
        try:
            await sim.start()
        except OSError as e:
            log.error("simulator for %s cannot start: %s", rig.name, e)
            for s in sims:
                await s.stop()
            return 1
        sims.append(sim)
        for device, where in sim.endpoints().items():
            print(f"{rig.name}/{device}: {where}", flush=True)
    if not sims:
        print("no rig has simulate = true", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if sys.stdin is not None and not sys.stdin.closed:
        with contextlib.suppress(OSError, ValueError):  # no stdin, or a file epoll refuses
            loop.add_reader(sys.stdin.fileno(), _sim_command, sims, stop)
            print("commands: fault DEVICE KIND [SECONDS] | clear [DEVICE] | status | quit", flush=True)
    await stop.wait()
    for s in sims:
        await s.stop()
    return 0


_stdin_buffer = bytearray()


def _sim_command(sims, stop: asyncio.Event) -> None:
    """Control lines from stdin: inject or clear faults on the running simulators."""
    fd = sys.stdin.fileno()
    chunk = os.read(fd, 4096)  # all that is there: buffered readline would strand lines
    if not chunk:  # stdin closed: keep running, stop listening
        asyncio.get_running_loop().remove_reader(fd)
        return
    _stdin_buffer.extend(chunk)
    *lines, rest = _stdin_buffer.split(b"\n")
    _stdin_buffer[:] = rest
    for line in lines:
        _sim_line(sims, stop, line.decode(errors="replace"))


def _sim_line(sims, stop: asyncio.Event, line: str) -> None:
    words = line.split()
    if not words:
        return
    devices = {name: sim for sim in sims for name in sim.endpoints()}
    cmd = words[0]
    try:
        if cmd == "fault" and len(words) in (3, 4):
            sim = devices[words[1]]
            sim.faults.inject(words[1], words[2], float(words[3]) if len(words) == 4 else None)
            print(f"ok: {words[2]} on {words[1]}", flush=True)
        elif cmd == "clear":
            for sim in sims:
                sim.faults.clear(words[1] if len(words) > 1 else None)
            print("ok: cleared", flush=True)
        elif cmd == "status":
            for name, sim in devices.items():
                print(f"{name}: {sim.endpoints()[name]}", flush=True)
        elif cmd == "quit":
            stop.set()
        else:
            print("usage: fault DEVICE KIND [SECONDS] | clear [DEVICE] | status | quit", flush=True)
    except KeyError:
        print(f"error: no simulated device {words[1]!r}; devices: {', '.join(devices)}", flush=True)
    except ValueError as e:
        print(f"error: {e}", flush=True)


def cmd_sim(args) -> int:
    """Run only the simulated equipment."""
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    return asyncio.run(_sim(settings))


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def cmd_analyse(args) -> int:
    """Offline analysis of a recorded CSV with a rig's parameters and limits."""
    from daq.config import ConfigError, load_rig
    from daq.recording import RecordingError, read_csv

    try:
        rig = load_rig(args.rig)
    except ConfigError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        return EXIT_CONFIG
    from daq.rigs import kind_of

    kind = kind_of(rig)
    if kind.cycle_noun is None:
        print(f"rigdaq: rig kind {rig.kind} has no test cycles to analyse", file=sys.stderr)
        return EXIT_CONFIG
    try:
        t, channels = read_csv(args.csv, required=kind.csv_columns)
    except RecordingError as e:
        print(f"rigdaq: {e}", file=sys.stderr)
        return EXIT_CONFIG
    results = kind.analyse(rig, t, channels)
    if args.json:
        out = []
        for r in results:
            item = {"cycle": r.index + 1, "start_s": r.start_s, "end_s": r.end_s,
                    "metrics": {k: _clean(v) for k, v in r.metrics.items()}, "verdict": r.verdict,
                    "reasons": r.reasons, "version": r.version, "samples_sha256": r.samples_sha256}
            item.update(kind.describe(r)[1])
            out.append(item)
        print(json.dumps({"rig": rig.name, "kind": rig.kind, "cycles": out}, indent=2))
        return 0
    if not results:
        print(kind.no_cycles(rig, args.csv))
        return 0
    for r in results:
        label = kind.describe(r)[0]
        print(f"{label}: {r.start_s:.4f}–{r.end_s:.4f} s  verdict {r.verdict.upper()}")
        for k, v in r.metrics.items():
            print(f"  {k:28s} {'—' if v is None else f'{v:.6g}'}")
        for reason in r.reasons:
            print(f"  ! {reason}")
        print(f"  analysis {r.version}, samples sha256 {r.samples_sha256}")
    return 0


def _catalogue(args):
    from daq.catalogue import Catalogue

    settings = _load(args.config)
    if settings is None:
        return None, None
    try:
        return settings, Catalogue(settings.catalogue_url)
    except Exception as e:  # a bad URL or an unreachable database: say which
        print(f"rigdaq: cannot open the catalogue at {masked_url(settings.catalogue_url)}: {e}",
              file=sys.stderr)
        return None, None


def _cli_actor() -> str:
    """Who runs this command, for the audit trail: ``cli:<user>``."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def cmd_keys(args) -> int:
    """Create, list and revoke API keys (stored hashed in the catalogue)."""
    from daq.catalogue.keys import KeyStore
    from daq.reports.records import iso

    _, cat = _catalogue(args)
    if cat is None:
        return EXIT_CONFIG
    store = KeyStore(cat)
    try:
        if args.action == "create":
            try:
                key, info = store.create(args.name, args.role, _cli_actor())
            except ValueError as e:
                print(f"rigdaq: {e}", file=sys.stderr)
                return EXIT_CONFIG
            print(key)
            print(f"key {info.id} ({info.name}, role {info.role}) created; it is shown only this once",
                  file=sys.stderr)
        elif args.action == "list":
            for k in store.list():
                state = f"revoked {iso(k['revoked_ns'])}" if k["revoked_ns"] else "active"
                print(f"{k['id']:4d}  {k['role']:9s} rdq_{k['prefix']}_…  {k['name']}  "
                      f"created {iso(k['created_ns'])}  {state}")
        else:
            if not store.revoke(args.id, _cli_actor()):
                print(f"rigdaq: no active key {args.id}", file=sys.stderr)
                return 1
            print(f"key {args.id} revoked")
    finally:
        cat.close()
    return 0


def cmd_report(args) -> int:
    """Write a run's certification report from the catalogue (rendered here, as the API's worker renders it)."""
    import os
    import shutil

    from daq.reports.certificate import ReportError
    from daq.reports.worker import render_report

    settings, cat = _catalogue(args)
    if cat is None:
        return EXIT_CONFIG
    to_stdout = args.output == "-"
    where = None if to_stdout else str(Path(args.output).resolve().parent)
    try:
        done = render_report(cat, args.run_id, args.format, {r.name: r for r in settings.rigs}, where)
    except ReportError as e:
        print(f"rigdaq: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the output's directory is missing or not writable
        print(f"rigdaq: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        return 1
    finally:
        cat.close()
    try:
        if to_stdout:
            with open(done.path, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(done.path, 0o666 & ~umask)  # as any file written here (the temporary one is 0600)
            os.replace(done.path, args.output)
    except OSError as e:
        print(f"rigdaq: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        return 1
    finally:
        if os.path.exists(done.path):
            os.unlink(done.path)
    if not to_stdout:
        print(f"{done.certificate_number}: {args.format} written to {args.output} "
              f"(content sha256 {done.content_sha256})", file=sys.stderr)
    return 0


def cmd_sign(args) -> int:
    """Approve or reject a stopped run's certificate (an electronic signature; the key is the credential)."""
    from daq.catalogue.keys import KeyStore
    from daq.catalogue.signatures import SigningError, sign_run

    key = args.key or os.environ.get("RIGDAQ_KEY") or os.environ.get("RIGDAQ_API_KEY", "")
    if not key:
        print("rigdaq: signing needs your API key (qa or admin): --key KEY or RIGDAQ_KEY", file=sys.stderr)
        return EXIT_CONFIG
    args.config = args.config_file or args.config
    settings, cat = _catalogue(args)
    if cat is None:
        return EXIT_CONFIG
    try:
        sig = sign_run(cat, KeyStore(cat), args.run_id, key=key, meaning=args.meaning, reason=args.reason,
                       reviewed_sha256=args.reviewed, rigs={r.name: r for r in settings.rigs}, actor=_cli_actor())
    except SigningError as e:
        print(f"rigdaq: run {args.run_id} not signed: {e}", file=sys.stderr)
        return 1
    finally:
        cat.close()
    print(f"run {sig['run_id']} revision {sig['revision']}: {sig['meaning']} by {sig['signer']} ({sig['role']}) "
          f"at {sig['signed_at']}, certificate content sha256 {sig['content_sha256']}")
    return 0


def cmd_audit(args) -> int:
    """Check the audit trail's hash chain: exit 0 intact, 1 naming the first broken entry."""
    from daq.catalogue.audit import AuditTrail

    args.config = args.config_file or args.config
    _, cat = _catalogue(args)
    if cat is None:
        return EXIT_CONFIG
    try:
        res = AuditTrail(cat).verify()
    finally:
        cat.close()
    if res.ok:
        print(f"audit trail intact: {res.entries} entries, head sha256 {res.head_sha256}")
        return 0
    print(f"rigdaq: audit trail BROKEN at entry {res.first_broken} ({res.kind}): {res.reason}", file=sys.stderr)
    return 1


def cmd_export(args) -> int:
    """Write every channel of a run, with units, metadata and cycles, as HDF5, TDMS, MDF4, Parquet or CSV."""
    from daq.export import ExportError, export_run, plan_for

    args.config = args.config_file or args.config
    settings, cat = _catalogue(args)
    if cat is None:
        return EXIT_CONFIG
    try:
        plan = plan_for(settings, args.run_id, args.format, args.output)
        summary = export_run(plan, cat)
    except ExportError as e:
        print(f"rigdaq: {e}", file=sys.stderr)
        return EXIT_CONFIG if e.status in (409, 422) else 1
    except OSError as e:
        print(f"rigdaq: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        cat.close()
    samples = ", ".join(f"{d} {n}" for d, n in summary["samples"].items()) or "no samples"
    print(f"run {args.run_id}: {args.format} written to {args.output} ({summary['bytes']} bytes; {samples}; "
          f"{summary['cycles']} cycles)", file=sys.stderr)
    return 0


def cmd_runs(args) -> int:
    """Start, stop and list runs on the running service (through its API)."""
    import httpx

    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    key = args.key or os.environ.get("RIGDAQ_API_KEY", "")
    if not key and settings.auth.enabled:
        print("rigdaq: an API key is needed: --key KEY or RIGDAQ_API_KEY (an engineer key to start/stop)",
              file=sys.stderr)
        return EXIT_CONFIG
    host = "127.0.0.1" if settings.api.host in ("0.0.0.0", "::") else settings.api.host
    base = f"http://{host}:{settings.api.port}"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
            if args.action == "start":
                body = {"rig": args.rig, "operator": args.operator, "part_number": args.part, "lot": args.lot,
                        "serial": args.serial, "notes": args.notes, "start_sequence": args.sequence}
                r = http.post("/api/runs", json=body)
            elif args.action == "stop":
                r = http.post(f"/api/runs/{args.run_id}/stop")
            else:
                r = http.get("/api/runs", params={"rig": args.rig} if args.rig else {})
    except httpx.HTTPError as e:
        print(f"rigdaq: cannot reach the service at {base}: {e}", file=sys.stderr)
        return 1
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        print(f"rigdaq: {r.status_code}: {detail}", file=sys.stderr)
        return 1
    data = r.json()
    if args.action == "list":
        for run in data["runs"]:
            print(f"{run['id']:5d}  {run['rig']:12s} {'ACTIVE ' if run['active'] else 'stopped'}  "
                  f"{run['started']}  part {run['part_number'] or '—'}  lot {run['lot'] or '—'}  "
                  f"operator {run['operator'] or '—'}")
    else:
        print(f"run {data['id']} on {data['rig']}: {'active' if data['active'] else 'stopped'}")
    return 0


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
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("config_file", nargs="?", metavar="CONFIG", help="service file (instead of --config)")
    p.set_defaults(func=cmd_sign)
    p = sub.add_parser("audit", help="the audit trail: verify its hash chain")
    aus = p.add_subparsers(dest="action", required=True)
    a = aus.add_parser("verify", help="exit 0 if intact, 1 naming the first altered, deleted or inserted entry")
    a.add_argument("--config", default=DEFAULT_CONFIG)
    a.add_argument("config_file", nargs="?", metavar="CONFIG", help="service file (instead of --config)")
    p.set_defaults(func=cmd_audit)
    p = sub.add_parser("export", help="write a run's samples, units, metadata and cycles for engineers' tools")
    p.add_argument("run_id", type=int)
    p.add_argument("--format", required=True, choices=["hdf5", "tdms", "mdf4", "parquet", "csv"],
                   help="hdf5 (h5py, MATLAB), tdms (DIAdem, LabVIEW), mdf4 (asammdf, CANape), parquet (pandas), csv")
    p.add_argument("-o", "--output", required=True, help="file to write")
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("config_file", nargs="?", metavar="CONFIG", help="service file (instead of --config)")
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


if __name__ == "__main__":
    sys.exit(main())
