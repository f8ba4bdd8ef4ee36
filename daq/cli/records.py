"""The commands on a catalogue's records.

``analyse``, ``keys``, ``report``, ``sign``, ``audit``, ``export`` and ``runs``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from daq.cli.common import EXIT_CONFIG, _catalogue, _clean, _cli_actor, _load

log = logging.getLogger(__name__)


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
