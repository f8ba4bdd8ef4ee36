"""A run's certification report: one content model, rendered as JSON, CSV and PDF.

In the spirit of an EN 10204 3.1 inspection certificate: who and what was tested
(traceability), with which instruments and their calibration, how (method, analysis
version, limits), the per-cycle results with the SHA-256 of every cycle's samples, process
capability and a control chart of the key metric with Nelson-rule flags and the rules'
expected false-alarm rate, the overall verdict, the SHA-256 of the report's own content and
the QA signatures.

``content_sha256`` is the SHA-256 of the report's JSON content (sorted keys, no whitespace)
without that field, without ``signatures`` and without the software's own wording (``issuer``,
``method.description``, ``spc.method``, ``spc.false_alarm_basis``: an upgrade that rewords them
keeps a signed certificate's hash), so anyone can check it from the JSON. The
signatures sit outside the hashed content because they sign that hash: each names the hash
it signed, and the certificate says whether that is this content (a signature of an older
revision is shown as such).

The content is built from plain dicts (:mod:`daq.reports.records`); what differs between
rig kinds (the key metric, the method text, a sweep table) is asked of the run's kind. A
run whose kind this build does not know (a foreign or old catalogue) still gets its
certificate: no key metric (no control chart), an empty method text, no sweep table.

Production-length runs: the cycles are read in pages, and every rendering is linear in the
number of cycles (the PDF's cycle table is many page-sized tables, the JSON one line per
cycle), written to a file object; :mod:`daq.reports.worker` renders in a process of its own.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from dataclasses import asdict
from datetime import UTC, date, datetime

import numpy as np

from analysis.spc import RULE_TEXT, capability, control_chart, rule_false_alarm_rate
from daq import __version__
from daq.calibration import status_of
from daq.catalogue import Catalogue
from daq.reports.records import artifact_dict, cycle_dict, iso, known_kind, run_dict, sweep

#: rows of the PDF's per-cycle table per reportlab Table (about a page): each is laid out once
ROWS_PER_TABLE = 30
#: outside the hashed content: the hash itself and the signatures of it
UNHASHED = ("content_sha256", "signatures")
#: the software's own words, also outside the hash (paths into the content): an upgrade that only
#: rewords them (or changes the issuing version) leaves a signed certificate's hash as it was
WORDING = (("issuer",), ("method", "description"), ("spc", "method"), ("spc", "false_alarm_basis"))
INSTRUMENT_FIELDS = ("channel", "device", "serial", "model", "sensitivity", "unit", "calibrated_on", "due_on",
                     "certificate", "status")
SPREAD_NAME = {"I-MR": "moving range", "Xbar-R": "range", "Xbar-S": "standard deviation"}
CHART_NAME = {"I-MR": "I-MR (individuals and moving range)", "Xbar-R": "X-bar–R (subgroup means and ranges)",
              "Xbar-S": "X-bar–S (subgroup means and standard deviations)"}


class ReportError(Exception):
    """No such run, or nothing to report."""


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=float).encode()


def _finite(v):
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v


def rig_fallbacks(rigs) -> dict[str, dict]:
    """What a certificate takes from the rig files for runs filed before runs kept their config.

    Plain dicts (kind, description, limits) by rig name: picklable, for the render worker.
    """
    out = {}
    for name, rig in (rigs or {}).items():
        out[name] = rig if isinstance(rig, dict) else {"kind": rig.kind, "description": rig.description,
                                                        "limits": rig.limit_dicts()}
    return out


def _status_at(inst: dict, started: date) -> str:
    """An instrument's calibration status on the run's start date, when the run did not record it."""
    try:
        return status_of(date.fromisoformat(str(inst.get("due_on"))), started)
    except ValueError:
        return "unknown"


def _instruments(cfg: dict, started_ns: int) -> list[dict]:
    started = datetime.fromtimestamp(started_ns / 1e9, UTC).date()
    out = []
    for inst in cfg.get("instruments") or []:
        row = {k: inst.get(k) for k in INSTRUMENT_FIELDS}
        row["status"] = row["status"] or _status_at(inst, started)
        out.append(row)
    return out


def _spc(key: str, cycles: list[dict]) -> dict | None:
    """The key metric's control chart, with the rules applied and their expected false alarms."""
    series = [(c["cycle_no"], c["metrics"].get(key)) for c in cycles if c["metrics"].get(key) is not None]
    if len(series) < 2:
        return None
    nos = [n for n, _ in series]
    ch = control_chart(np.array([v for _, v in series], dtype=float))
    first = [nos[i] for i in ch.first.tolist()]
    last = [nos[i + ch.n - 1] for i in ch.first.tolist()]
    if ch.n == 1:
        method = (f"I-MR chart of every value ({len(series)}); sigma = MR-bar/d2 (d2 = 1.128); "
                  "limits centre ± 3 sigma.")
    else:
        consts = "A2, D3, D4; sigma = R-bar/d2" if ch.kind == "Xbar-R" else "A3, B3, B4; sigma = S-bar/c4"
        method = (f"{len(series)} values in run order cut into {len(ch.points)} consecutive subgroups of {ch.n} "
                  f"(at most 100 points charted); {ch.kind} chart with the standard constants ({consts}); "
                  f"{ch.left_out} value(s) after the last full subgroup not charted.")
    return {
        "metric": key, "chart": ch.kind, "subgroup_size": ch.n, "cycles": len(series), "points": len(ch.points),
        "left_out": ch.left_out, "center": ch.center, "ucl": ch.ucl, "lcl": ch.lcl, "sigma_within": ch.sigma,
        "spread": {"name": SPREAD_NAME[ch.kind], "center": ch.spread_center, "ucl": ch.spread_ucl,
                   "lcl": ch.spread_lcl, "values": ch.spread.tolist()},
        "means" if ch.n > 1 else "individuals": ch.points.tolist(),
        "first_cycle_no": first, "last_cycle_no": last,
        "rules": [{"rule": r, "pattern": RULE_TEXT[r], "false_alarm_rate": rule_false_alarm_rate(r)}
                  for r in ch.rules],
        "false_alarm_rate_per_point": ch.false_alarm_per_point,
        "expected_false_alarms": ch.expected_false_alarms,
        "false_alarm_basis": ("expected rule signals for an in-control process (independent normal values at "
                              "the centre with the estimated sigma): per point the sum of the rules' rates, over "
                              "the chart the sum of rate × (points − pattern span + 1)"),
        "method": method,
        "flags": [{"rule": rule, "point": i, "first_cycle_no": first[i], "last_cycle_no": last[i]}
                  for rule, i in ch.flags],
    }


def build_report(catalogue: Catalogue, run_id: int, rigs: dict | None = None) -> dict:
    """The report's content for a run (raises :class:`ReportError` if there is no such run).

    ``rigs``: the rig files by name (rig objects or :func:`rig_fallbacks`), for a run filed
    before runs kept their config.
    """
    run = catalogue.run(run_id)
    if run is None:
        raise ReportError(f"no run {run_id}")
    cycles = [cycle_dict(r) for r in catalogue.iter_cycles_of_run(run_id)]
    arts = catalogue.artifacts_of_run(run_id)
    cfg = dict(run.config or {})
    rig = rig_fallbacks({run.rig: rigs[run.rig]} if rigs and run.rig in rigs else {}).get(run.rig)
    if not cfg and rig is not None:  # a run from before limits were kept with runs
        cfg = dict(rig)
    kind = cfg.get("kind") or (cycles[0]["kind"] if cycles else "")
    limits: dict = cfg.get("limits", {})
    started = time.strftime("%Y%m%d", time.gmtime(run.started_ns / 1e9))
    rig_kind = known_kind(kind)
    key = rig_kind.key_metric if rig_kind is not None else ""
    stats = {}
    for metric in sorted(set(limits) | ({key} if key else set())):
        vals = np.array([c["metrics"].get(metric) for c in cycles if c["metrics"].get(metric) is not None],
                        dtype=float)
        if len(vals) == 0:
            continue
        lim = limits.get(metric, {})
        cap = capability(vals, lim.get("min"), lim.get("max"))
        stats[metric] = {"lsl": lim.get("min"), "usl": lim.get("max"),
                         **{k: _finite(v) for k, v in asdict(cap).items()}}
    nok = sum(1 for c in cycles if c["verdict"] != "ok")
    overall = "no cycles" if not cycles else ("nok" if nok else "ok")
    content = {
        "document": "Inspection certificate (in the spirit of EN 10204 type 3.1)",
        "certificate_number": f"RDQ-{run.rig}-{started}-{run.id:06d}",
        # a stopped run's certificate is the same whenever it is rendered (same content hash)
        "issued": iso(run.stopped_ns) if run.stopped_ns else iso(time.time_ns()),
        "status": "final" if run.stopped_ns else "interim: the run is still active",
        "issuer": f"rigdaq {__version__}",
        "rig": {"name": run.rig, "kind": kind, "description": cfg.get("description", "")},
        "run": run_dict(run),
        "instruments": _instruments(cfg, run.started_ns),
        "method": {"description": rig_kind.method if rig_kind is not None else "",
                   "analysis_versions": sorted({c["version"] for c in cycles}),
                   "segmentation": cfg.get("segmentation", {})},
        "limits": limits,
        "envelope": cfg.get("envelope"),
        "cycles": cycles,
        "summary": {"cycles": len(cycles), "ok": len(cycles) - nok, "nok": nok},
        "statistics": stats,
        "spc": _spc(key, cycles) if key else None,
        "sweep": sweep(cycles),  # from the served cycles: metrics already floats, as the API has them
        "artifacts": [artifact_dict(a) for a in arts],
        "overall_verdict": overall,
    }
    content = json.loads(_canonical(content))  # plain JSON types, exactly what the hash covers
    # (dumping the loaded content again gives the same bytes: JSON floats round-trip exactly)
    content["content_sha256"] = content_hash(content)
    sigs = json.loads(json.dumps(catalogue.signatures_of_run(run_id), default=str))
    content["signatures"] = [dict(s, signs_this_content=s.get("content_sha256") == content["content_sha256"])
                             for s in sigs]
    return content


def content_hash(report: dict) -> str:
    """SHA-256 of a report's content: all of it but :data:`UNHASHED` and the software's :data:`WORDING`."""
    body = {k: v for k, v in report.items() if k not in UNHASHED}
    for path in WORDING:
        *parents, leaf = path
        node = body
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            if parents:  # copy the branch, never change the report
                body[parents[0]] = node = {k: v for k, v in node.items() if k != leaf}
            else:
                body.pop(leaf)
    return hashlib.sha256(_canonical(body)).hexdigest()


def verify_content_hash(report: dict) -> bool:
    """Whether a report's ``content_sha256`` matches its content (see :func:`content_hash`)."""
    return content_hash(report) == report.get("content_sha256")


# -- JSON ----------------------------------------------------------------------------------------------
def write_json(report: dict, f) -> None:
    """The report as JSON into the binary file ``f``: indented, each cycle on one line (linear, streamed)."""
    items = list(report.items())
    f.write(b"{\n")
    for i, (k, v) in enumerate(items):
        head = f"  {json.dumps(k, ensure_ascii=False)}: "
        if k == "cycles" and v:
            f.write(f"{head}[\n".encode())
            for j in range(0, len(v), 500):
                chunk = ",\n".join("    " + json.dumps(c, ensure_ascii=False) for c in v[j:j + 500])
                f.write((chunk + (",\n" if j + 500 < len(v) else "\n")).encode())
            f.write(b"  ]")
        else:
            f.write((head + json.dumps(v, indent=2, ensure_ascii=False).replace("\n", "\n  ")).encode())
        f.write(b",\n" if i < len(items) - 1 else b"\n")
    f.write(b"}\n")


def render_json(report: dict) -> bytes:
    """The report as JSON (see :func:`write_json`)."""
    buf = io.BytesIO()
    write_json(report, buf)
    return buf.getvalue()


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _signature_text(s: dict) -> str:
    return "this certificate's content" if s["signs_this_content"] else "an earlier content (not this certificate's)"


def _spc_summary(spc: dict) -> str:
    rules = ", ".join(str(r["rule"]) for r in spc["rules"])
    return (f"Nelson rules {rules} applied to the {spc['points']} charted points: expected false alarms of an "
            f"in-control process {spc['false_alarm_rate_per_point']:.4f} per point, "
            f"{spc['expected_false_alarms']:.2f} over the chart.")


def _flag_text(spc: dict) -> str:
    def where(f):
        if spc["subgroup_size"] == 1:
            return f"cycle {f['first_cycle_no']}"
        return f"subgroup {f['point'] + 1} (cycles {f['first_cycle_no']}–{f['last_cycle_no']})"

    return "; ".join(f"rule {f['rule']} at {where(f)}" for f in spc["flags"]) or "none"


# -- CSV -----------------------------------------------------------------------------------------------
def write_csv(report: dict, f) -> None:
    """The report as CSV into the binary file ``f``.

    Traceability, instruments, limits, statistics, the control chart and the signatures as
    (section, field, value) rows, then one row per cycle.
    """
    text = io.TextIOWrapper(f, encoding="utf-8", newline="", write_through=False)
    w = csv.writer(text)
    run = report["run"]
    w.writerow(["section", "field", "value"])
    for k in ("document", "certificate_number", "issued", "issuer", "overall_verdict", "content_sha256"):
        w.writerow(["certificate", k, report[k]])
    for k in ("id", "rig", "part_number", "lot", "serial", "operator", "started", "stopped", "notes",
              "revision", "supersedes"):
        if k in run:
            w.writerow(["run", k, _fmt(run[k])])
    for inst in report["instruments"]:
        w.writerow(["instrument", inst["channel"], " ".join(f"{k}={_fmt(inst[k])}" for k in INSTRUMENT_FIELDS[1:])])
    w.writerow(["method", "analysis_versions", " ".join(report["method"]["analysis_versions"])])
    for m, lim in report["limits"].items():
        w.writerow(["limits", m, f"min={_fmt(lim.get('min'))} max={_fmt(lim.get('max'))}"])
    for m, st in report["statistics"].items():
        for k in ("n", "mean", "cp", "cpk", "pp", "ppk"):
            w.writerow(["statistics", f"{m}.{k}", _fmt(st[k])])
    spc = report["spc"]
    if spc:
        for k in ("metric", "chart", "subgroup_size", "points", "left_out", "center", "ucl", "lcl", "sigma_within",
                  "false_alarm_rate_per_point", "expected_false_alarms", "method"):
            w.writerow(["spc", k, _fmt(spc[k])])
        for r in spc["rules"]:
            w.writerow(["spc", f"rule {r['rule']}", f"{r['pattern']}; false-alarm rate {r['false_alarm_rate']:.6g}"])
        w.writerow(["spc", "flags", _flag_text(spc)])
    for i, s in enumerate(report["signatures"], 1):
        for k in ("signer", "role", "meaning", "reason", "signed_at", "revision", "content_sha256"):
            w.writerow([f"signature {i}", k, _fmt(s.get(k))])
        w.writerow([f"signature {i}", "signs", _signature_text(s)])
    w.writerow([])
    metrics = sorted({k for c in report["cycles"] for k in c["metrics"]})
    w.writerow(["cycle_no", "cycle_id", "start", "verdict", "reasons", *metrics, "samples_sha256"])
    for c in report["cycles"]:
        w.writerow([c["cycle_no"], c["id"], c["start"], c["verdict"], "; ".join(c["reasons"]),
                    *(_fmt(c["metrics"].get(m)) for m in metrics), c["samples_sha256"]])
    text.flush()
    text.detach()


def render_csv(report: dict) -> bytes:
    """The report as CSV (see :func:`write_csv`)."""
    buf = io.BytesIO()
    write_csv(report, buf)
    return buf.getvalue()


# -- PDF -----------------------------------------------------------------------------------------------
def _cell(x, style):
    """A table cell: numbers formatted, long text wrapped."""
    from reportlab.platypus import Paragraph

    if isinstance(x, float) or x is None:
        return _fmt(x)
    if isinstance(x, str) and len(x) > 40:
        return Paragraph(_esc(x), style)
    return x


def _esc(s: str) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_pdf(report: dict, f) -> None:
    """The report as a PDF certificate (reportlab) into the binary file ``f``, with the control chart.

    Linear in the number of cycles: the per-cycle table is one small table per
    :data:`ROWS_PER_TABLE` cycles (about a page), so no table is re-measured and split at
    every page break.
    """
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Image, PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    from daq.reports.plots import control_chart_png

    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=7, leading=8.5)
    body: list = []
    doc = SimpleDocTemplate(f, pagesize=landscape(A4), leftMargin=12 * mm, rightMargin=12 * mm,
                            topMargin=12 * mm, bottomMargin=12 * mm, title=report["certificate_number"],
                            author=report["issuer"])
    grid = TableStyle([("GRID", (0, 0), (-1, -1), 0.3, colors.grey), ("FONTSIZE", (0, 0), (-1, -1), 7.5),
                       ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke), ("VALIGN", (0, 0), (-1, -1), "TOP")])

    def table(rows, widths=None, header=True):
        t = Table(rows, colWidths=widths, repeatRows=1 if header else 0)
        t.setStyle(grid)
        return t

    run = report["run"]
    body.append(Paragraph(f"{report['document']}", styles["Title"]))
    body.append(Paragraph(f"Certificate number: <b>{report['certificate_number']}</b> — issued "
                          f"{report['issued']} by {report['issuer']} ({report['status']})", styles["BodyText"]))
    body.append(Spacer(1, 4 * mm))
    trace = [["Traceability", ""], ["Rig", f"{report['rig']['name']} ({report['rig']['kind']}) "
                                           f"{report['rig']['description']}"],
             ["Run", str(run["id"])]]
    if "revision" in run:
        trace.append(["Revision", f"{run['revision']}" + (f" (supersedes {run['supersedes']})"
                                                          if run.get("supersedes") is not None else "")])
    trace += [["Part number", run["part_number"]], ["Lot / heat", run["lot"]],
              ["Die or motor serial", run["serial"]], ["Operator", run["operator"]],
              ["Started", run["started"]], ["Stopped", run["stopped"] or "(still running)"],
              ["Notes", run["notes"]]]
    trace += [[f"Extra: {k}", v] for k, v in run["extra"].items()]
    body.append(table([[_cell(x, small) for x in row] for row in trace], [45 * mm, 200 * mm]))
    body.append(Spacer(1, 3 * mm))
    body.append(Paragraph("<b>Instruments and calibration</b> (status at the run's start)", styles["BodyText"]))
    if report["instruments"]:
        rows = [["Channel", "Device", "Sensor serial", "Model", "Sensitivity", "Calibrated", "Due", "Certificate",
                 "Status"]]
        rows += [[i["channel"], i["device"], i["serial"], i["model"],
                  f"{_fmt(i['sensitivity'])} {i['unit'] or ''}".strip(), i["calibrated_on"], i["due_on"],
                  i["certificate"], (i["status"] or "").upper()] for i in report["instruments"]]
        body.append(table([[_cell(x, small) for x in row] for row in rows]))
    else:
        body.append(Paragraph("No instruments were recorded for this run.", small))
    body.append(Spacer(1, 3 * mm))
    body.append(Paragraph(f"<b>Method.</b> {report['method']['description']} Analysis version(s): "
                          f"{', '.join(report['method']['analysis_versions']) or '—'}.", styles["BodyText"]))
    lim_rows = [["Metric", "min", "max"]] + [[m, _fmt(v.get("min")), _fmt(v.get("max"))]
                                            for m, v in report["limits"].items()]
    if report.get("envelope"):
        lim_rows.append(["force–position envelope", "see rig file", f"{len(report['envelope']['position_mm'])} points"])
    body.append(Paragraph("<b>Limits</b>", styles["BodyText"]))
    body.append(table(lim_rows, [70 * mm, 40 * mm, 40 * mm]))
    s = report["summary"]
    verdict = report["overall_verdict"].upper()
    body.append(Spacer(1, 3 * mm))
    body.append(Paragraph(f"<b>Overall verdict: {verdict}</b> — {s['cycles']} cycles, {s['ok']} ok, "
                          f"{s['nok']} nok.", styles["Heading2"]))
    if report["statistics"]:
        st_rows = [["Metric", "n", "mean", "σ within", "σ overall", "Cp", "Cpk", "Pp", "Ppk"]]
        st_rows += [[m, _fmt(v["n"]), _fmt(v["mean"]), _fmt(v["sigma_within"]), _fmt(v["sigma_overall"]),
                     _fmt(v["cp"]), _fmt(v["cpk"]), _fmt(v["pp"]), _fmt(v["ppk"])]
                    for m, v in report["statistics"].items()]
        body.append(Paragraph("<b>Process capability</b>", styles["BodyText"]))
        body.append(table(st_rows))
    spc = report["spc"]
    if spc:
        body.append(Paragraph(f"<b>Control chart: {CHART_NAME[spc['chart']]} of {spc['metric']}</b>",
                              styles["BodyText"]))
        body.append(Image(io.BytesIO(control_chart_png(spc)), width=190 * mm, height=118 * mm))
        body.append(Paragraph(_esc(spc["method"]), small))
        body.append(Paragraph(_esc(_spc_summary(spc)) + " Basis: " + _esc(spc["false_alarm_basis"]) + ".", small))
        body.append(Paragraph("Rules: " + "; ".join(f"{r['rule']}: {r['pattern']} ({r['false_alarm_rate']:.4g})"
                                                    for r in spc["rules"]), small))
        body.append(Paragraph(f"Nelson-rule flags: {_esc(_flag_text(spc))}", small))
    kind = known_kind(report["rig"]["kind"])
    for what, title, content in kind.report_sections(report) if kind is not None else ():
        if what == "table":
            body.append(Paragraph(f"<b>{title}</b>", styles["BodyText"]))
            body.append(table([[_cell(x, small) for x in row] for row in content]))
        else:
            body.append(Paragraph(str(content), small))
    body.append(PageBreak())
    key = spc["metric"] if spc else None
    shown = [m for m in (key, *report["limits"]) if m]
    shown = list(dict.fromkeys(shown))[:4]
    header = ["#", "id", "start (UTC)", "verdict", *(Paragraph(m, small) for m in shown), "reasons",
              "samples SHA-256"]
    widths = [10 * mm, 12 * mm, 22 * mm, 13 * mm, *([22 * mm] * len(shown)), 40 * mm, 88 * mm]
    # each hash on one line, in a monospace face: QA searches the PDF for it
    cycle_style = TableStyle([*grid.getCommands(), ("FONTNAME", (-1, 1), (-1, -1), "Courier"),
                              ("FONTSIZE", (-1, 1), (-1, -1), 5.8)])
    body.append(Paragraph("<b>Per-cycle results</b>", styles["BodyText"]))
    cycles = report["cycles"]
    for j in range(0, len(cycles), ROWS_PER_TABLE):
        rows = [header]
        for c in cycles[j:j + ROWS_PER_TABLE]:
            reasons = "; ".join(c["reasons"])
            rows.append([c["cycle_no"], c["id"], c["start"][11:23], c["verdict"],
                         *(_fmt(c["metrics"].get(m)) for m in shown),
                         Paragraph(_esc(reasons), small) if len(reasons) > 24 else reasons, c["samples_sha256"]])
        t = Table(rows, colWidths=widths, repeatRows=1)
        t.setStyle(cycle_style)
        body.append(t)
    body.append(Spacer(1, 5 * mm))
    body.append(Paragraph(f"Report content SHA-256: <b>{report['content_sha256']}</b> (SHA-256 of the JSON "
                          "report's content without this field and without the signatures, keys sorted, "
                          "no whitespace).", small))
    body.append(Spacer(1, 8 * mm))
    body.append(Paragraph("<b>Signatures</b>", styles["BodyText"]))
    if report["signatures"]:
        sig = [["Signer", "Role", "Meaning", "Reason", "Signed (UTC)", "Rev.", "Content SHA-256 signed"]]
        sig += [[x.get("signer"), x.get("role"), (x.get("meaning") or "").upper(), _cell(x.get("reason"), small),
                 x.get("signed_at"), _fmt(x.get("revision")),
                 Paragraph(f"<font face='Courier' size='5.8'>{x.get('content_sha256')}</font><br/>"
                           f"{_signature_text(x)}", small)] for x in report["signatures"]]
        body.append(table(sig, [35 * mm, 20 * mm, 20 * mm, 55 * mm, 35 * mm, 10 * mm, 98 * mm]))
    else:  # unsigned: lines to sign on paper
        sig = [["Role", "Name", "Date", "Signature"], ["Inspector (test performed by)", run["operator"], "", ""],
               ["Quality assurance (released by)", "", "", ""]]
        t = Table(sig, colWidths=[70 * mm, 60 * mm, 40 * mm, 80 * mm], rowHeights=[7 * mm, 16 * mm, 16 * mm])
        t.setStyle(grid)
        body.append(t)
    doc.build(body)


def render_pdf(report: dict) -> bytes:
    """The report as a PDF certificate (see :func:`write_pdf`)."""
    buf = io.BytesIO()
    write_pdf(report, buf)
    return buf.getvalue()


RENDER = {"json": (render_json, "application/json"), "csv": (render_csv, "text/csv"),
          "pdf": (render_pdf, "application/pdf")}
#: format → (writer into a binary file, media type)
WRITE = {"json": (write_json, "application/json"), "csv": (write_csv, "text/csv"),
         "pdf": (write_pdf, "application/pdf")}
