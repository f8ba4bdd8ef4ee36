"""The 2-minute soak of issue 11: both rigs under ``daq run``, a fault every 20 s, nothing lost.

``bench/soak.py`` does the work (its docstring says what it checks); this test runs it as
CI would and holds it to its own report: exit status 0, its last line
``soak: 5 faults, lost 0, duplicated 0, dead tasks 0``, and a fault table whose rows
are the faults it claims to have injected.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from bench.soak import KINDS, fault_times
from tests.conftest import ROOT

LAST = re.compile(r"^soak: (\d+) faults, lost (\d+), duplicated (\d+), dead tasks (\d+)$")
# a row of the per-fault table: "   3    60.0  catalogue_locked       8.0 ..."
ROW = re.compile(r"^\s+(\d+)\s+(\d+\.\d)\s+(" + "|".join(KINDS) + r")\s")


def _table(lines: list[str], title: str) -> list[str]:
    """The lines of the table after the line starting with ``title`` and its header, up to a blank line."""
    start = next(i for i, ln in enumerate(lines) if ln.startswith(title))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.strip():
            break
        rows.append(ln)
    return rows


@pytest.mark.timeout(400)
def test_two_minute_soak_loses_nothing():
    if shutil.which("influxd") is None:
        pytest.fail("influxd is not installed: apt-get install influxdb (scripts/setup does it)")
    # 2 minutes, one fault every 20 s after a 20 s warm-up, none at the very end:
    # faults at 20, 40, 60, 80 and 100 s, so 5.
    expected = len(fault_times(2))
    assert expected == 5
    proc = subprocess.run([sys.executable, "-m", "bench.soak", "--minutes", "2", "--seed", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=390, check=False)
    out = proc.stdout
    lines = out.splitlines()
    report = f"stdout:\n{out}\nstderr (end):\n{proc.stderr[-3000:]}"
    assert lines, report
    m = LAST.match(lines[-1])
    assert m, f"last line is not the soak summary: {lines[-1]!r}\n{report}"
    faults, lost, duplicated, dead = (int(g) for g in m.groups())
    assert (lost, duplicated, dead) == (0, 0, 0), report
    assert proc.returncode == 0, report
    assert not [ln for ln in lines if ln.startswith("FAIL:")], report

    rows = _table(lines, "faults injected")
    assert all(ROW.match(r) for r in rows), rows
    assert [int(ROW.match(r).group(1)) for r in rows] == list(range(1, len(rows) + 1)), rows
    assert faults == len(rows) == expected, report
    # the per-kind summary counts the same faults, and the run covers different kinds
    kinds = {ROW.match(r).group(3) for r in rows}
    assert len(kinds) >= 4, rows
    per_kind = {ln.split()[0]: ln.split()[1] for ln in _table(lines, "per fault kind") if ln.split()[0] in KINDS}
    assert sum(int(n) for n in per_kind.values() if n.isdigit()) == faults, per_kind
