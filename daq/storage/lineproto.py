r"""InfluxDB line protocol from columnar blocks.

Escaping (InfluxDB 1.x/2.x line protocol): measurement names escape commas and spaces;
tag keys, tag values and field keys escape commas, equals signs and spaces; string field
values are quoted and escape double quotes and backslashes. In names and tags a
backslash is literal (InfluxDB keeps ``a\\b`` as written), so a backslash at the end of
a tag or right before a comma, equals sign or space cannot be written at all:
:func:`tag_problem` names such values so the API can refuse them, and should one reach
the serializer anyway that backslash becomes "⧵" (reverse solidus operator) with a
warning. Newlines cannot be represented in tags and become escaped spaces.

Floats are written in their shortest round-trip form; NaN and ±inf cannot be stored
and the field is left out of that line (a line with no field left is omitted, counted
by the caller). Integers carry the ``i`` suffix, bools are ``true``/``false``.

The fast path (numeric blocks, every value present) never makes a Python object per
value: orjson prints each column as one JSON array (shortest round-trip floats), numpy
finds where every number starts and ends and so where each line and each value will
be, and each column is placed into all the lines with one copy of one element per
value. Rows with a missing value and blocks with string channels take the per-line
path.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import orjson

from daq.events import Event
from drivers.block import Block

log = logging.getLogger(__name__)

_MEAS = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\ "})
_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\ "})
_BAD_BACKSLASH = re.compile(r"\\(?=[,= \n]|$)")


def tag_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as an InfluxDB tag value or name, or None."""
    if _BAD_BACKSLASH.search(text):
        return "a backslash at the end or before a comma, '=' or space cannot be stored in InfluxDB"
    return None


def _safe(text: str) -> str:
    if "\\" in text and _BAD_BACKSLASH.search(text):
        log.warning("line protocol: %r has a backslash InfluxDB cannot store; written as ⧵", text)
        return _BAD_BACKSLASH.sub("⧵", text)
    return text
_STR = str.maketrans({'"': r"\"", "\\": "\\\\"})


def escape_measurement(name: str) -> str:
    """Escape a measurement name."""
    return _safe(name).translate(_MEAS)


def escape_tag(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    return _safe(text).translate(_TAG)


def quote_string(text: str) -> str:
    """A string field value, quoted."""
    return '"' + text.translate(_STR) + '"'


def series_key(measurement: str, tags: dict[str, str]) -> str:
    """``measurement,tag=value,…`` with tags sorted and empty values left out."""
    parts = [escape_measurement(measurement)]
    for k in sorted(tags):
        v = tags[k]
        if v is not None and v != "":
            parts.append(f"{escape_tag(k)}={escape_tag(str(v))}")
    return ",".join(parts)


def _column_text(key: str, arr: np.ndarray, valid: np.ndarray | None) -> list[str | None]:
    """``key=value`` per sample, or None where the sample has no value."""
    prefix = escape_tag(key) + "="
    kind = arr.dtype.kind
    if kind == "f":
        ok = np.isfinite(arr)
        if valid is not None:
            ok &= valid
        text = [prefix + repr(v) for v in arr.tolist()]
        if not ok.all():
            for i in np.flatnonzero(~ok).tolist():
                text[i] = None  # type: ignore[call-overload]
        return text  # type: ignore[return-value]
    if kind in "iu":
        text = [f"{prefix}{v}i" for v in arr.tolist()]
    elif kind == "b":
        text = [prefix + ("true" if v else "false") for v in arr.tolist()]
    else:
        text = [prefix + quote_string(str(v)) for v in arr.tolist()]
    if valid is not None and not valid.all():
        for i in np.flatnonzero(~valid).tolist():
            text[i] = None  # type: ignore[call-overload]
    return text  # type: ignore[return-value]


_OPT = orjson.OPT_SERIALIZE_NUMPY
_CHUNK = 8192  # lines per pass: that part of the output stays in cache while each column is placed


def _widest(dtype: np.dtype) -> int:
    """The most characters orjson prints for one value of ``dtype``."""
    if dtype.kind == "f":
        return 24  # -2.2250738585072014e-308
    if dtype.kind == "b":
        return 5  # false
    info = np.iinfo(dtype)
    return max(len(str(info.min)), len(str(info.max)))


def _windows(buf: np.ndarray, width: int) -> np.ndarray:
    """A view of ``buf`` whose element i is the ``width`` bytes from byte i on."""
    return np.ndarray((len(buf) - width + 1,), dtype=f"V{width}", buffer=buf, strides=(1,))


def _tokens(arr: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A column printed once, and where each value starts and how long it is."""
    text = orjson.dumps(np.ascontiguousarray(arr), option=_OPT)
    commas = (np.frombuffer(text, dtype=np.uint8) == 44).nonzero()[0]  # ','
    starts = np.empty(len(commas) + 1, dtype=np.intp)
    starts[0] = 1
    np.add(commas, 1, out=starts[1:])
    lengths = np.empty_like(starts)
    lengths[:-1] = commas
    lengths[-1] = len(text) - 1  # ']'
    lengths -= starts
    return text, starts, lengths


def _fast_lines(key: str, names: list[str], cols: list[np.ndarray], t_ns: np.ndarray) -> bytes:
    """Line protocol for numeric columns with every value present.

    For each pass of ``_CHUNK`` lines, orjson prints every column, the value lengths
    give where each line and each value starts, and each column is then placed in all
    lines at once: the text before its values (series key and first field name, or the
    previous value's suffix and the next field name), then the values, one copy of a
    fixed-width element per value (never per byte). A value is copied at its column's
    widest length; the bytes past its end fall on pieces of the same line that are
    placed after it. Where they could reach into the next line, the column is copied
    one value length at a time instead.
    """
    k, n = len(names), len(t_ns)
    keys = [escape_tag(nm).encode() for nm in names]
    heads = [key.encode() + b" " + keys[0] + b"="]  # the text before each value
    for j, col in enumerate(cols):
        suffix = b"i" if col.dtype.kind in "iu" else b""
        heads.append(suffix + (b"," + keys[j + 1] + b"=" if j + 1 < k else b" "))
    values = [*cols, t_ns]
    fixed = sum(map(len, heads)) + 1  # and "\n"
    out = np.empty(n * (fixed + sum(_widest(v.dtype) for v in values)), dtype=np.uint8)
    scratch = np.empty(min(n, _CHUNK) * 25 + 25, dtype=np.uint8)  # one column's text and room to overrun
    end = 0
    for r in range(0, n, _CHUNK):
        tokens = [_tokens(v[r:r + _CHUNK]) for v in values]
        line_len = np.full(len(tokens[0][1]), fixed, dtype=np.int64)
        for _, _, lengths in tokens:
            line_len += lengths
        lows = [int(lengths.min()) for _, _, lengths in tokens]
        highs = [int(lengths.max()) for _, _, lengths in tokens]
        line_end = np.cumsum(line_len)
        line_end += end
        at = line_end - line_len  # where each line's next piece goes
        rooms, room = [0] * (k + 1), 1  # bytes every line surely has after value j
        for j in range(k, -1, -1):
            rooms[j] = room
            room += len(heads[j]) + lows[j]
        for j, (text, starts, lengths) in enumerate(tokens):
            _windows(out, len(heads[j]))[at] = np.void(heads[j])
            at += len(heads[j])
            scratch[:len(text)] = np.frombuffer(text, dtype=np.uint8)
            lo, hi = lows[j], highs[j]
            if hi - lo <= rooms[j]:
                _windows(out, hi)[at] = _windows(scratch, hi)[starts]
            else:
                for width in range(lo, hi + 1):
                    some = np.flatnonzero(lengths == width)
                    _windows(out, width)[at[some]] = _windows(scratch, width)[starts[some]]
            at += lengths
        out[line_end - 1] = 10  # "\n"
        end = int(line_end[-1])
    return out[:end].tobytes()


def block_bytes(measurement: str, tags: dict[str, str], block: Block) -> tuple[bytes, int, int]:
    """Newline-terminated line protocol for ``block``: (body, lines, samples left out)."""
    n = len(block)
    if n == 0:
        return b"", 0, 0
    names = list(block.channels)
    cols = [block.channels[c] for c in names]
    numeric = all(c.dtype.kind in "fiub" for c in cols)
    if not numeric:
        lines, empty = block_lines(measurement, tags, block)
        return ("\n".join(lines) + "\n").encode() if lines else b"", len(lines), empty
    clean = np.ones(n, dtype=bool)
    for name, col in zip(names, cols, strict=True):
        if col.dtype.kind == "f":
            clean &= np.isfinite(col)
        if block.valid and name in block.valid:
            clean &= block.valid[name]
    key = series_key(measurement, tags)
    if clean.all():
        return _fast_lines(key, names, cols, block.t_ns), n, 0
    fast = b""
    if clean.any():
        fast = _fast_lines(key, names, [c[clean] for c in cols], block.t_ns[clean])
    rest = ~clean
    dirty = Block(block.device, block.t_ns[rest], {nm: c[rest] for nm, c in zip(names, cols, strict=True)},
                  block.quality[rest],
                  {k: v[rest] for k, v in block.valid.items()} if block.valid else None)
    lines, empty = block_lines(measurement, tags, dirty)
    slow = ("\n".join(lines) + "\n").encode() if lines else b""
    return fast + slow, int(clean.sum()) + len(lines), empty


def block_lines(measurement: str, tags: dict[str, str], block: Block) -> tuple[list[str], int]:
    """Lines for every sample of ``block``, one Python string each (the general path).

    Returns (lines, samples left out for lack of any field).
    """
    key = series_key(measurement, tags)
    valid = block.valid or {}
    cols = [_column_text(ch, arr, valid.get(ch)) for ch, arr in block.channels.items()]
    times = block.t_ns.tolist()
    lines: list[str] = []
    empty = 0
    for i, fields in enumerate(zip(*cols, strict=True)):
        present = [f for f in fields if f is not None]
        if not present:
            empty += 1
            continue
        lines.append(f"{key} {','.join(present)} {times[i]}")
    return lines, empty


def _field_value(v: float | int | str | bool) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v) if np.isfinite(v) else None
    return quote_string(str(v))


def event_line(e: Event, run: str = "") -> str:
    """One line in measurement ``events`` (tagged with the rig's active run, if any)."""
    tags = {"rig": e.rig, "device": e.device, "kind": e.kind, "level": e.level, "run": run}
    fields = {"message": e.message, **e.fields}
    text = ",".join(
        f"{escape_tag(k)}={val}" for k, v in fields.items() if (val := _field_value(v)) is not None
    )
    return f"{series_key('events', tags)} {text} {e.t_ns}"


def cycle_line(c) -> str:
    """One point in measurement ``cycles``: tags rig and run; verdict and metrics are fields.

    The verdict is a field, not a tag: a cycle judged again (its cycle time arrives with
    the next blow) has the same series and timestamp, so it overwrites its point instead
    of becoming a second one in another ``verdict=`` series.
    """
    fields: dict[str, float | int | str] = {k: float(v) for k, v in c.metrics.items() if v is not None}
    fields.update(cycle_no=int(c.cycle_no), verdict=c.verdict, version=c.version,
                  samples_sha256=c.samples_sha256, reasons="; ".join(c.reasons))
    for k, v in getattr(c, "info", {}).items():
        fields.setdefault(k, v if isinstance(v, str) else float(v))
    text = ",".join(f"{escape_tag(k)}={val}" for k, v in fields.items()
                    if (val := _field_value(v)) is not None)
    return f"{series_key('cycles', {'rig': c.rig, 'run': c.run})} {text} {c.t_ns}"
