"""A run's certification report: one content model, rendered as JSON, CSV and PDF.

In the spirit of an EN 10204 3.1 inspection certificate: who and what was tested
(traceability), how (method, analysis version, limits), the per-cycle results with the
SHA-256 of every cycle's samples, process capability and an I-MR chart of the key metric
with Nelson-rule flags, the overall verdict, the SHA-256 of the report's own content and
a signature block. ``content_sha256`` is the SHA-256 of the report's JSON content
(sorted keys, no whitespace) without that field, so anyone can check it from the JSON.

The content is built from plain dicts (:mod:`daq.reports.records`); what differs between
rig kinds (the key metric, the method text, a sweep table) is asked of the run's kind. A
run whose kind this build does not know (a foreign or old catalogue) still gets its
certificate: no key metric (no I-MR chart), an empty method text, no sweep table.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from dataclasses import asdict

import numpy as np

from analysis.spc import capability, imr
from daq import __version__
from daq.catalogue import Catalogue
from daq.reports.records import artifact_dict, cycle_dict, iso, known_kind, run_dict, sweep


class ReportError(Exception):
    """No such run, or nothing to report."""


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=float).encode()


def _finite(v):
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v


def build_report(catalogue: Catalogue, run_id: int, rigs: dict | None = None) -> dict:
    """The report's content for a run (raises :class:`ReportError` if there is no such run)."""
    run = catalogue.run(run_id)
    if run is None:
        raise ReportError(f"no run {run_id}")
    _, rows = catalogue.cycles_of_run(run_id, 1_000_000, 0)
    arts = catalogue.artifacts_of_run(run_id)
    cfg = dict(run.config or {})
    rig = (rigs or {}).get(run.rig)
    if not cfg and rig is not None:  # a run from before limits were kept with runs
        cfg = {"kind": rig.kind, "description": rig.description, "limits": rig.limit_dicts()}
    kind = cfg.get("kind") or (rows[0]["kind"] if rows else "")
    limits: dict = cfg.get("limits", {})
    started = time.strftime("%Y%m%d", time.gmtime(run.started_ns / 1e9))
    cycles = [cycle_dict(r) for r in rows]
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
    chart = None
    if key:
        series = [(c["cycle_no"], c["metrics"].get(key)) for c in cycles if c["metrics"].get(key) is not None]
        if len(series) >= 2:
            ch = imr(np.array([v for _, v in series]))
            chart = {"metric": key, "center": ch.center, "ucl": ch.ucl, "lcl": ch.lcl,
                     "mr_center": ch.mr_center, "mr_ucl": ch.mr_ucl,
                     "values": [v for _, v in series], "cycle_no": [n for n, _ in series],
                     "flags": [{"rule": rule, "cycle_no": series[i][0]} for rule, i in ch.flags]}
    nok = [c for c in cycles if c["verdict"] != "ok"]
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
        "method": {"description": rig_kind.method if rig_kind is not None else "",
                   "analysis_versions": sorted({c["version"] for c in cycles}),
                   "segmentation": cfg.get("segmentation", {})},
        "limits": limits,
        "envelope": cfg.get("envelope"),
        "cycles": cycles,
        "summary": {"cycles": len(cycles), "ok": len(cycles) - len(nok), "nok": len(nok)},
        "statistics": stats,
        "imr": chart,
        "sweep": sweep(cycles),  # from the served cycles: metrics already floats, as the API has them
        "artifacts": [artifact_dict(a) for a in arts],
        "overall_verdict": overall,
        "signatures": [{"role": "Inspector (test performed by)", "name": run.operator},
                       {"role": "Quality assurance (released by)", "name": ""}],
    }
    content = json.loads(_canonical(content))  # plain JSON types, exactly what the hash covers
    content["content_sha256"] = hashlib.sha256(_canonical(content)).hexdigest()
    return content


def verify_content_hash(report: dict) -> bool:
    """Whether a report's ``content_sha256`` matches its content."""
    body = {k: v for k, v in report.items() if k != "content_sha256"}
    return hashlib.sha256(_canonical(body)).hexdigest() == report.get("content_sha256")


def render_json(report: dict) -> bytes:
    """The report as indented JSON."""
    return json.dumps(report, indent=2, ensure_ascii=False).encode()


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def render_csv(report: dict) -> bytes:
    """The report as CSV: traceability, limits, statistics, then one row per cycle."""
    buf = io.StringIO()
    w = csv.writer(buf)
    run = report["run"]
    w.writerow(["section", "field", "value"])
    for k in ("document", "certificate_number", "issued", "issuer", "overall_verdict", "content_sha256"):
        w.writerow(["certificate", k, report[k]])
    for k in ("id", "rig", "part_number", "lot", "serial", "operator", "started", "stopped", "notes"):
        w.writerow(["run", k, run[k]])
    w.writerow(["method", "analysis_versions", " ".join(report["method"]["analysis_versions"])])
    for m, lim in report["limits"].items():
        w.writerow(["limits", m, f"min={_fmt(lim.get('min'))} max={_fmt(lim.get('max'))}"])
    for m, st in report["statistics"].items():
        for k in ("n", "mean", "cp", "cpk", "pp", "ppk"):
            w.writerow(["statistics", f"{m}.{k}", _fmt(st[k])])
    w.writerow([])
    metrics = sorted({k for c in report["cycles"] for k in c["metrics"]})
    w.writerow(["cycle_no", "cycle_id", "start", "verdict", "reasons", *metrics, "samples_sha256"])
    for c in report["cycles"]:
        w.writerow([c["cycle_no"], c["id"], c["start"], c["verdict"], "; ".join(c["reasons"]),
                    *(_fmt(c["metrics"].get(m)) for m in metrics), c["samples_sha256"]])
    return buf.getvalue().encode()


def _cell(x, style):
    """A table cell: numbers formatted, long text wrapped."""
    from reportlab.platypus import Paragraph

    if isinstance(x, float) or x is None:
        return _fmt(x)
    if isinstance(x, str) and len(x) > 40:
        return Paragraph(x, style)
    return x


def render_pdf(report: dict) -> bytes:
    """The report as a PDF certificate (reportlab), with the I-MR chart."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Image, PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    from daq.reports.plots import imr_chart

    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=7, leading=8.5)
    body: list = []
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=landscape(A4), leftMargin=12 * mm, rightMargin=12 * mm,
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
             ["Run", str(run["id"])], ["Part number", run["part_number"]], ["Lot / heat", run["lot"]],
             ["Die or motor serial", run["serial"]], ["Operator", run["operator"]],
             ["Started", run["started"]], ["Stopped", run["stopped"] or "(still running)"],
             ["Notes", run["notes"]]]
    trace += [[f"Extra: {k}", v] for k, v in run["extra"].items()]
    body.append(table(trace, [45 * mm, 200 * mm]))
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
    if report["imr"]:
        ch = report["imr"]
        idx = {n: i for i, n in enumerate(ch["cycle_no"])}
        flagged = {idx[f["cycle_no"]] for f in ch["flags"] if f["cycle_no"] in idx}
        png = imr_chart(ch["values"], ch, flagged, ch["metric"])
        body.append(Image(io.BytesIO(png), width=190 * mm, height=118 * mm))
        flags = ", ".join(f"rule {f['rule']} at cycle {f['cycle_no']}" for f in ch["flags"]) or "none"
        body.append(Paragraph(f"Nelson-rule flags: {flags}", small))
    kind = known_kind(report["rig"]["kind"])
    for what, title, content in kind.report_sections(report) if kind is not None else ():
        if what == "table":
            body.append(Paragraph(f"<b>{title}</b>", styles["BodyText"]))
            body.append(table([[_cell(x, small) for x in row] for row in content]))
        else:
            body.append(Paragraph(str(content), small))
    body.append(PageBreak())
    key = report["imr"]["metric"] if report["imr"] else None
    shown = [m for m in (key, *report["limits"]) if m]
    shown = list(dict.fromkeys(shown))[:4]
    rows = [["#", "id", "start (UTC)", "verdict", *(Paragraph(m, small) for m in shown), "reasons",
             "samples SHA-256"]]
    for c in report["cycles"]:
        rows.append([c["cycle_no"], c["id"], c["start"][11:23], c["verdict"],
                     *(_fmt(c["metrics"].get(m)) for m in shown),
                     Paragraph("; ".join(c["reasons"]) or "", small), c["samples_sha256"]])
    widths = [10 * mm, 12 * mm, 22 * mm, 13 * mm, *([22 * mm] * len(shown)), 40 * mm, 88 * mm]
    t = Table(rows, colWidths=widths, repeatRows=1)
    t.setStyle(grid)
    # each hash on one line, in a monospace face: QA searches the PDF for it
    t.setStyle(TableStyle([("FONTNAME", (-1, 1), (-1, -1), "Courier"), ("FONTSIZE", (-1, 1), (-1, -1), 5.8)]))
    body.append(Paragraph("<b>Per-cycle results</b>", styles["BodyText"]))
    body.append(t)
    body.append(Spacer(1, 5 * mm))
    body.append(Paragraph(f"Report content SHA-256: <b>{report['content_sha256']}</b> (SHA-256 of the JSON "
                          "report's content without this field, keys sorted, no whitespace).", small))
    body.append(Spacer(1, 8 * mm))
    sig = [["Role", "Name", "Date", "Signature"]]
    sig += [[x["role"], x["name"], "", ""] for x in report["signatures"]]
    t = Table(sig, colWidths=[70 * mm, 60 * mm, 40 * mm, 80 * mm], rowHeights=[7 * mm] + [16 * mm] * len(
        report["signatures"]))
    t.setStyle(grid)
    body.append(t)
    doc.build(body)
    return buf.getvalue()


RENDER = {"json": (render_json, "application/json"), "csv": (render_csv, "text/csv"),
          "pdf": (render_pdf, "application/pdf")}
