"""OPC UA node addressing and values: built-in types, NodeIds and browse paths, status codes, timestamps.

:class:`NodeSpec` says which variable feeds which channel(s) and how its values are stored;
:func:`status_quality` maps a StatusCode's severity to sample quality; :func:`datetime_ns`
turns asyncua's ``datetime`` (1 µs resolution) plus picoseconds into ns since the epoch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from asyncua import ua
from cryptography import x509

from drivers.block import QUALITY_BAD, QUALITY_GOOD, QUALITY_PARTIAL

#: OPC UA built-in types a NodeSpec may declare, by VariantType name.
INTEGER_TYPES = ("SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64")
FLOAT_TYPES = ("Float", "Double")
NODE_TYPES = (*FLOAT_TYPES, *INTEGER_TYPES, "Boolean", "String")

#: StatusCode InfoType "DataValue" (bits 10–11 = 01) with the Overflow bit (7) set.
OVERFLOW_MASK = 0x0C80
OVERFLOW_BITS = 0x0480

_NODEID_RE = re.compile(r"^(nsu?=[^;]*;)?[isgb]=|^nsu?=")  # what is meant as a NodeId, valid or not
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# how a channel's values are stored
_KIND_FLOAT, _KIND_INT, _KIND_UINT64, _KIND_BOOL, _KIND_STR = range(5)


def status_quality(code: int | ua.StatusCode | None) -> int:
    """Block quality of an OPC UA StatusCode, from its severity (bits 30–31).

    ``00`` Good → ``QUALITY_GOOD``; ``01`` Uncertain → ``QUALITY_PARTIAL``; ``10`` Bad
    and the reserved ``11`` (which the spec says to treat as Bad) → ``QUALITY_BAD``. The
    sub-code and info bits (limits, overflow) do not change the quality. ``None`` (a
    DataValue without a StatusCode) means Good.
    """
    if code is None:
        return QUALITY_GOOD
    value = code.value if isinstance(code, ua.StatusCode) else int(code)
    severity = (value >> 30) & 0x3
    if severity == 0:
        return QUALITY_GOOD
    return QUALITY_PARTIAL if severity == 1 else QUALITY_BAD


def status_overflow(code: int | ua.StatusCode | None) -> bool:
    """True when a data value's StatusCode carries the Overflow info bit (a queue dropped values before it)."""
    if code is None:
        return False
    value = code.value if isinstance(code, ua.StatusCode) else int(code)
    return value & OVERFLOW_MASK == OVERFLOW_BITS


def is_node_id(text: str) -> bool:
    """True if ``text`` is written as a NodeId (``ns=2;s=…``, ``i=85``…) rather than a browse path."""
    return bool(_NODEID_RE.match(text.strip()))


def parse_browse_path(path: str) -> tuple[tuple[int, str], ...]:
    """Split a browse path into ``(namespace index, name)`` steps below the Objects folder.

    Steps are separated by ``/``; each is ``NS:Name`` or ``Name`` (namespace 0). A
    leading ``Objects`` or ``0:Objects`` step (and a leading ``/``) is dropped: paths start
    at the Objects folder either way. Names cannot contain ``/``.
    """
    text = path.strip()
    if text.startswith("/"):
        text = text[1:]
    parts = text.split("/")
    if parts and parts[0] in ("Objects", "0:Objects"):
        parts = parts[1:]
    if not parts or parts == [""]:
        raise ValueError(f"browse path {path!r} names no node below Objects")
    steps: list[tuple[int, str]] = []
    for part in parts:
        ns_text, colon, name = part.partition(":")
        if not colon:
            ns, name = 0, part
        elif ns_text.isdigit():
            ns = int(ns_text)
        else:
            raise ValueError(f"browse path {path!r}: step {part!r} is not NS:Name (NS a namespace index)")
        if not name.strip():
            raise ValueError(f"browse path {path!r}: empty name in step {part!r}")
        steps.append((ns, name))
    return tuple(steps)


def format_browse_path(steps: tuple[tuple[int, str], ...] | list[tuple[int, str]]) -> str:
    """``Objects/2:A/2:B`` for the given steps."""
    return "/".join(["Objects", *(f"{ns}:{name}" for ns, name in steps)])


def datetime_ns(dt: datetime | None, picoseconds: int | None = None) -> int | None:
    """Nanoseconds since the Unix epoch of an OPC UA DateTime as asyncua decodes it; None for "no time".

    OPC UA's null DateTime (1601-01-01) is None as well. ``picoseconds`` (units of
    10 ps) are added, truncated to whole ns.
    """
    if dt is None or dt.year <= 1601:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    d = dt - _EPOCH
    ns = (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1_000
    if picoseconds:
        ns += picoseconds // 100
    return ns


def ns_datetime(t_ns: int) -> datetime:
    """The UTC ``datetime`` for ns since the Unix epoch (truncated to µs, what ``datetime`` holds)."""
    return _EPOCH + timedelta(microseconds=t_ns // 1_000)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One OPC UA variable and the channel(s) it feeds.

    ``node`` is a NodeId string or a browse path (see :func:`parse_browse_path`).
    ``type`` is the variable's built-in DataType by name (one of :data:`NODE_TYPES`); it
    is checked against the server at connect. ``length`` 0 is a scalar; ``N > 0`` an
    array of exactly N elements, exposed as channels ``name_0 … name_{N-1}``. Values are
    multiplied by ``scale``.
    """

    name: str
    node: str
    unit: str = ""
    scale: float = 1.0
    length: int = 0
    type: str = "Double"

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip() or any(c.isspace() for c in self.name):
            raise ValueError(f"name: {self.name!r} is not a channel name (empty or with spaces)")
        if not isinstance(self.node, str) or not self.node.strip():
            raise ValueError(f"node: channel {self.name!r} has no node")
        if is_node_id(self.node):
            try:
                nid = ua.NodeId.from_string(self.node.strip())
            except Exception as e:
                raise ValueError(f"node: channel {self.name!r}: {self.node!r} is not a valid NodeId ({e})") from None
            if nid.Identifier in ("", None):
                raise ValueError(f"node: channel {self.name!r}: {self.node!r} has an empty identifier")
        else:
            try:
                parse_browse_path(self.node)
            except ValueError as e:
                raise ValueError(f"node: channel {self.name!r}: {e}") from None
        if self.type not in NODE_TYPES:
            raise ValueError(f"type: channel {self.name!r} has type {self.type!r}; known: {', '.join(NODE_TYPES)}")
        if not isinstance(self.length, int) or self.length < 0:
            raise ValueError(f"length: channel {self.name!r} has length {self.length!r}; 0 (scalar) or N > 0")
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError(f"scale: channel {self.name!r} has scale {self.scale!r}; a finite, non-zero number")
        if self.type in ("Boolean", "String") and self.scale != 1.0:
            raise ValueError(f"scale: channel {self.name!r} is {self.type}; scale must be 1")

    @property
    def variant_type(self) -> ua.VariantType:
        """The asyncua VariantType of ``type``."""
        return ua.VariantType[self.type]

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of this node's channels.

        float64 for Float/Double and for integers with a scale; int64 for integers
        with scale 1 (uint64 for UInt64, so no value wraps, as the Modbus codec does);
        bool for Boolean; numpy unicode for String.
        """
        return np.dtype(_KIND_DTYPES[self._kind])

    @property
    def _kind(self) -> int:
        if self.type == "Boolean":
            return _KIND_BOOL
        if self.type == "String":
            return _KIND_STR
        if self.type in INTEGER_TYPES and self.scale == 1.0:
            return _KIND_UINT64 if self.type == "UInt64" else _KIND_INT
        return _KIND_FLOAT

    @property
    def channel_names(self) -> list[str]:
        """The channel(s) this node feeds: ``[name]`` or ``[name_0, …]`` for an array."""
        if self.length == 0:
            return [self.name]
        return [f"{self.name}_{i}" for i in range(self.length)]

    def channels(self) -> list[tuple[str, np.dtype]]:
        """``(channel name, numpy dtype)`` for every channel of this node."""
        dt = self.dtype
        return [(c, dt) for c in self.channel_names]


_KIND_DTYPES = {_KIND_FLOAT: np.float64, _KIND_INT: np.int64, _KIND_UINT64: np.uint64,
                _KIND_BOOL: np.bool_, _KIND_STR: np.str_}
#: what a channel holds where its value is missing
_KIND_FILL: dict[int, Any] = {_KIND_FLOAT: math.nan, _KIND_INT: 0, _KIND_UINT64: 0, _KIND_BOOL: False,
                              _KIND_STR: ""}


def certificate_uri(cert: x509.Certificate) -> str | None:
    """The application URI in a certificate's subjectAltName, if any."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
