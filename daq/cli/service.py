"""The commands that run stages: ``daq run``, ``daq agent``, ``daq api``, ``daq sim``, and ``daq check``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from daq.cli.common import EXIT_CONFIG, _load, masked_url

log = logging.getLogger(__name__)


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
