"""Recorded cycles as CSV: ``time`` in seconds plus canonical channel columns."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np


class RecordingError(Exception):
    """What is wrong with a recording, and where (file, line, column)."""


def read_csv(path: str | Path, required: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(time, {column: values}) with every number checked; raises :class:`RecordingError`."""
    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as e:
        raise RecordingError(f"{path}: cannot read: {e.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise RecordingError(f"{path}: the file is empty (expected a header line)") from None
        except csv.Error as e:
            raise RecordingError(f"{path}: line 1: not CSV: {e}") from None
        need = ("time", *required)
        missing = [c for c in need if c not in header]
        if missing:
            raise RecordingError(f"{path}: line 1: missing column(s) {', '.join(missing)}; "
                                 f"the header has {', '.join(header) or 'nothing'}")
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:
            raise RecordingError(f"{path}: line 1: column(s) named twice: {', '.join(dup)}")
        cols: list[list[float]] = [[] for _ in header]
        try:
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise RecordingError(f"{path}: line {line}: {len(row)} values for "
                                         f"{len(header)} columns")
                for j, cell in enumerate(row):
                    try:
                        v = float(cell)
                    except ValueError:
                        raise RecordingError(f"{path}: line {line}, column {header[j]!r}: "
                                             f"{cell.strip()!r} is not a number") from None
                    if not math.isfinite(v) and header[j] == "time":
                        raise RecordingError(f"{path}: line {line}: time {cell.strip()!r} is not finite")
                    cols[j].append(v)
        except csv.Error as e:
            raise RecordingError(f"{path}: line {reader.line_num}: not CSV: {e}") from None
    data = {h: np.array(c) for h, c in zip(header, cols, strict=True)}
    t = data.pop("time")
    if len(t) < 3:
        raise RecordingError(f"{path}: {len(t)} data line(s); a cycle needs more")
    steps = np.diff(t)
    bad = np.flatnonzero(steps <= 0)
    if len(bad):
        i = int(bad[0]) + 1
        raise RecordingError(f"{path}: line {i + 2}: time {t[i]:g} s does not come after "
                             f"{t[i - 1]:g} s (time must increase)")
    return t, data
