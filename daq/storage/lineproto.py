"""InfluxDB line protocol from columnar blocks.

Escaping (InfluxDB 1.x/2.x line protocol): measurement names escape commas and spaces;
tag keys, tag values and field keys escape commas, equals signs and spaces; string field
values are quoted and escape double quotes and backslashes. A backslash in a tag is
doubled so that a trailing backslash cannot escape the separator after it. Newlines
cannot be represented in tags and are replaced by spaces (strings keep them).

Floats are written with Python's shortest round-trip repr; NaN and ±inf cannot be
stored and the field is left out of that line (a line with no field left is omitted,
counted by the caller). Integers carry the ``i`` suffix, bools are ``true``/``false``.
"""

from __future__ import annotations

import numpy as np

from daq.events import Event
from drivers.block import Block

_MEAS = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\ ", "\\": "\\\\"})
_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\ ", "\\": "\\\\"})
_STR = str.maketrans({'"': r"\"", "\\": "\\\\"})


def escape_measurement(name: str) -> str:
    """Escape a measurement name."""
    return name.translate(_MEAS)


def escape_tag(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    return text.translate(_TAG)


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


def block_lines(measurement: str, tags: dict[str, str], block: Block) -> tuple[list[str], int]:
    """Lines for every sample of ``block``; returns (lines, samples left out for lack of fields)."""
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


def event_line(e: Event) -> str:
    """One line in measurement ``events``."""
    tags = {"rig": e.rig, "device": e.device, "kind": e.kind, "level": e.level}
    fields = {"message": e.message, **e.fields}
    text = ",".join(
        f"{escape_tag(k)}={val}" for k, v in fields.items() if (val := _field_value(v)) is not None
    )
    return f"{series_key('events', tags)} {text} {e.t_ns}"
