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
finds where every number starts and ends, and one gather over the bytes interleaves
the series key, field names, values and timestamps into the final lines. Rows with a
missing value and blocks with string channels take the per-line path.
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
_CHUNK = 2048  # rows per gather: the index stays in cache


def _tokens(arr: np.ndarray) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A column printed once, and where each value starts and how long it is."""
    text = orjson.dumps(np.ascontiguousarray(arr), option=_OPT)
    buf = np.frombuffer(text, dtype=np.uint8)
    commas = np.flatnonzero(buf == 44)  # ','
    starts = np.concatenate(([1], commas + 1))
    ends = np.concatenate((commas, [len(text) - 1]))
    return text, starts, ends - starts


def _fast_lines(key: str, names: list[str], cols: list[np.ndarray], t_ns: np.ndarray) -> bytes:
    """Line protocol for numeric columns with every value present, built by one gather."""
    k, n = len(names), len(t_ns)
    keys = [escape_tag(nm).encode() for nm in names]
    consts = [key.encode() + b" " + keys[0] + b"="]
    for j, col in enumerate(cols):
        suffix = b"i" if col.dtype.kind in "iu" else b""
        consts.append(suffix + (b"," + keys[j + 1] + b"=" if j + 1 < k else b" "))
    consts.append(b"\n")
    parts: list[bytes] = []
    base = 0
    const_at = []
    for c in consts:
        const_at.append(base)
        parts.append(c)
        base += len(c)
    value_at, value_len = [], []
    for col in [*cols, t_ns]:
        text, starts, lengths = _tokens(col)
        value_at.append(starts + base)
        value_len.append(lengths)
        parts.append(text)
        base += len(text)
    src = np.frombuffer(b"".join(parts), dtype=np.uint8)
    pieces = 2 * k + 3  # key+name0, v0, sep1, v1, …, v(k-1), " ", t, "\n"
    start = np.empty((n, pieces), dtype=np.int64)
    length = np.empty((n, pieces), dtype=np.int64)
    start[:, 0], length[:, 0] = const_at[0], len(consts[0])
    for j in range(k):
        start[:, 1 + 2 * j], length[:, 1 + 2 * j] = value_at[j], value_len[j]
        start[:, 2 + 2 * j], length[:, 2 + 2 * j] = const_at[1 + j], len(consts[1 + j])
    start[:, 2 * k + 1], length[:, 2 * k + 1] = value_at[k], value_len[k]
    start[:, 2 * k + 2], length[:, 2 * k + 2] = const_at[k + 1], 1
    start, length = start.ravel(), length.ravel()
    # gather index: consecutive within a piece, jumping to the next piece's start
    idx = np.ones(int(length.sum()), dtype=np.int32 if len(src) < 2**31 else np.int64)
    ends = np.cumsum(length)
    idx[0] = start[0]
    idx[ends[:-1]] = start[1:] - (start[:-1] + length[:-1]) + 1
    np.cumsum(idx, out=idx)
    return src[idx].tobytes()


def _fast_chunks(key: str, names: list[str], cols: list[np.ndarray], t_ns: np.ndarray) -> bytes:
    """The fast path in chunks small enough for the gather index to stay in cache."""
    step = _CHUNK
    return b"".join(_fast_lines(key, names, [c[i:i + step] for c in cols], t_ns[i:i + step])
                    for i in range(0, len(t_ns), step))


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
        return _fast_chunks(key, names, cols, block.t_ns), n, 0
    fast = b""
    if clean.any():
        fast = _fast_chunks(key, names, [c[clean] for c in cols], block.t_ns[clean])
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
