"""Declarative Modbus register maps: field definitions, read planning and vectorised codecs.

Byte orders follow Telegraf's modbus input. For a value spanning registers
``W0 W1 … Wn`` (in address order), each register holding a high and a low byte:

========  ==========================================  ===========================
order     bytes of the value, most significant first  also called
========  ==========================================  ===========================
ABCD      W0hi W0lo W1hi W1lo …                       big-endian
CDAB      Wnhi Wnlo … W0hi W0lo                       word-swapped
BADC      W0lo W0hi W1lo W1hi …                       byte-swapped
DCBA      Wnlo Wnhi … W0lo W0hi                       little-endian
========  ==========================================  ===========================

Decoding works on a whole block of polls at once: a ``uint16[n, R]`` array of raw
register rows is turned into one array per field with a single gather + view per
value type, never a Python call per value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TABLES = ("holding", "input", "coil", "discrete")
BYTE_ORDERS = ("ABCD", "DCBA", "BADC", "CDAB")

#: type name → (registers occupied, big-endian numpy dtype)
TYPE_WIDTHS: dict[str, tuple[int, str | None]] = {
    "int16": (1, ">i2"),
    "uint16": (1, ">u2"),
    "float16": (1, ">f2"),
    "int32": (2, ">i4"),
    "uint32": (2, ">u4"),
    "float32": (2, ">f4"),
    "int64": (4, ">i8"),
    "uint64": (4, ">u8"),
    "float64": (4, ">f8"),
    "bit": (1, None),
    "string": (0, None),  # width from the field's length
}
TYPES = tuple(TYPE_WIDTHS)

#: Largest number of registers (resp. bits) one Modbus read may return.
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000


@dataclass(frozen=True, slots=True)
class RegisterField:
    """One value in a device's register map.

    ``address`` is the 0-based protocol address (what goes on the wire). For
    ``type = "bit"`` in a holding/input register, ``bit`` selects 0 (LSB)…15. For
    ``type = "string"``, ``length`` is the number of registers (two characters each).
    The decoded value is ``raw * scale + offset`` for numeric types.
    """

    name: str
    table: str
    address: int
    type: str
    byte_order: str = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    bit: int | None = None
    length: int | None = None
    writable: bool = False

    @property
    def width(self) -> int:
        """Registers (or, for coil/discrete tables, bits) this field occupies."""
        if self.table in ("coil", "discrete"):
            return 1
        if self.type == "string":
            return int(self.length or 1)
        return TYPE_WIDTHS[self.type][0]

    @property
    def scaled(self) -> bool:
        """True when scale/offset turn the raw integer into a float."""
        return self.scale != 1.0 or self.offset != 0.0


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read: ``count`` registers/bits from ``address`` in ``table``.

    ``row_offset`` is where its result lands in the raw row (one uint16 slot per
    register, or per bit for coil/discrete tables).
    """

    table: str
    address: int
    count: int
    row_offset: int


def plan_reads(fields: list[RegisterField], max_gap: int = 0) -> list[ReadRequest]:
    """Coalesce fields into as few reads as possible.

    Neighbouring ranges of the same table merge while the merged read stays within the
    protocol limit and the hole between them is at most ``max_gap`` registers (holes
    are read and ignored; keep 0 for devices that reject unmapped addresses).
    """
    requests: list[ReadRequest] = []
    row = 0
    for table in TABLES:
        spans = sorted(
            {(f.address, f.address + f.width) for f in fields if f.table == table}
        )
        if not spans:
            continue
        limit = MAX_BITS_PER_READ if table in ("coil", "discrete") else MAX_REGISTERS_PER_READ
        start, end = spans[0]
        merged: list[tuple[int, int]] = []
        for s, e in spans[1:]:
            if s - end <= max_gap and max(e, end) - start <= limit:
                end = max(end, e)
            else:
                merged.append((start, end))
                start, end = s, e
        merged.append((start, end))
        for s, e in merged:
            requests.append(ReadRequest(table, s, e - s, row))
            row += e - s
    return requests


def _byte_permutation(width: int, order: str) -> list[int]:
    """Indices into the register bytes (hi, lo per register) giving big-endian value bytes."""
    words = list(range(width))
    if order in ("CDAB", "DCBA"):
        words.reverse()
    swap = order in ("BADC", "DCBA")
    out: list[int] = []
    for w in words:
        hi, lo = 2 * w, 2 * w + 1
        out.extend((lo, hi) if swap else (hi, lo))
    return out


class RegisterCodec:
    """Decode raw register rows into channel arrays (and encode, for simulators).

    Built once per device from its fields and read plan; ``decode`` then handles
    any number of rows with one numpy gather per (type, scaling) group.
    """

    def __init__(self, fields: list[RegisterField], requests: list[ReadRequest]):
        self.fields = list(fields)
        self.requests = list(requests)
        self.row_width = sum(r.count for r in requests)
        self._slot: dict[str, int] = {}
        for f in fields:
            self._slot[f.name] = self._row_slot(f)
        # numeric groups: dtype → (names, byte index matrix [k, 2w], scale[k], offset[k], scaled)
        groups: dict[tuple[str, bool], list[RegisterField]] = {}
        self._bits: list[tuple[str, int, int | None]] = []
        self._strings: list[RegisterField] = []
        for f in fields:
            if f.type == "bit" or f.table in ("coil", "discrete"):
                self._bits.append((f.name, self._slot[f.name], f.bit))
            elif f.type == "string":
                self._strings.append(f)
            else:
                as_float = f.type.startswith("float") or f.scaled
                groups.setdefault((f.type, as_float), []).append(f)
        self._groups = []
        for (typ, as_float), members in groups.items():
            width, dtype = TYPE_WIDTHS[typ]
            idx = np.array(
                [
                    [2 * self._slot[f.name] + b for b in _byte_permutation(width, f.byte_order)]
                    for f in members
                ],
                dtype=np.intp,
            )
            scale = np.array([f.scale for f in members])
            offset = np.array([f.offset for f in members])
            self._groups.append(([f.name for f in members], idx, dtype, as_float, scale, offset))

    def _row_slot(self, f: RegisterField) -> int:
        for r in self.requests:
            if r.table == f.table and r.address <= f.address and f.address + f.width <= (
                r.address + r.count
            ):
                return r.row_offset + f.address - r.address
        raise ValueError(f"field {f.name!r} is not covered by the read plan")

    def uint_reader(self, name: str):
        """A function ``row -> int``: unsigned integer field ``name`` of one raw row.

        For per-poll use (a PLC's scan counter): plain Python on a few registers, no numpy
        call; ``decode`` stays the way to turn whole blocks into channels.
        """
        f = next(f for f in self.fields if f.name == name)
        if not f.type.startswith("uint"):
            raise ValueError(f"field {name!r} is {f.type}, not an unsigned integer")
        slot, width = self._slot[name], f.width
        perm = _byte_permutation(width, f.byte_order)

        def read(row: np.ndarray) -> int:
            words = row[slot : slot + width].tolist()
            regs = bytes(b for w in words for b in (w >> 8, w & 0xFF))
            return int.from_bytes(bytes(regs[i] for i in perm), "big")

        return read

    def new_buffer(self, rows: int) -> np.ndarray:
        """A zeroed ``uint16[rows, row_width]`` buffer for raw polls."""
        return np.zeros((rows, self.row_width), dtype=np.uint16)

    def decode(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        """Decode ``uint16[n, row_width]`` raw rows into ``{field name: array[n]}``."""
        raw = np.ascontiguousarray(raw, dtype=np.uint16)
        n = raw.shape[0]
        be = raw.astype(">u2").view(np.uint8).reshape(n, 2 * self.row_width)
        out: dict[str, np.ndarray] = {}
        for names, idx, dtype, as_float, scale, offset in self._groups:
            values = np.ascontiguousarray(be[:, idx]).view(dtype).reshape(n, len(names))
            if as_float:
                values = values.astype(np.float64)
                if np.any(scale != 1.0) or np.any(offset != 0.0):
                    values = values * scale + offset
            else:  # exact integers; uint64 keeps its own dtype so no value wraps
                values = values.astype(np.uint64 if dtype == ">u8" else np.int64)
            for j, name in enumerate(names):
                out[name] = values[:, j]
        for name, slot, bit in self._bits:
            col = raw[:, slot]
            out[name] = ((col >> bit) & 1).astype(bool) if bit is not None else col != 0
        for f in self._strings:
            slot = self._slot[f.name]
            perm = _byte_permutation(1, f.byte_order)
            cols = be[:, 2 * slot : 2 * (slot + f.width)].reshape(n, f.width, 2)[:, :, perm]
            chars = np.ascontiguousarray(cols).reshape(n, 2 * f.width).view(f"S{2 * f.width}")
            out[f.name] = np.char.rstrip(
                np.char.decode(chars[:, 0], "latin-1"), "\x00 "
            )
        return out

    def encode(self, values: dict[str, object], row: np.ndarray) -> None:
        """Write ``values`` (engineering units) into one raw row, the inverse of ``decode``."""
        for f in self.fields:
            if f.name not in values:
                continue
            store_value(row, self._slot[f.name], f, values[f.name])


def store_value(regs: np.ndarray, at: int, f: RegisterField, value: object) -> None:
    """Put ``value`` into ``regs`` starting at ``at``; a bit keeps the register's other bits."""
    if f.bit is not None and f.table in ("holding", "input"):
        mask = 1 << f.bit
        regs[at] = (int(regs[at]) & ~mask) | (mask if value else 0)
        return
    words = encode_value(f, value)
    regs[at : at + len(words)] = words


def encode_value(f: RegisterField, value: object) -> list[int]:
    """Registers (or one 0/1 bit slot) that represent ``value`` for field ``f``.

    For bits inside a register this returns the single register with only that bit
    set; callers that pack several bits into one register OR them together.
    """
    if f.type == "bit" or f.table in ("coil", "discrete"):
        on = 1 if value else 0
        return [on << f.bit] if f.bit is not None else [on]
    if f.type == "string":
        data = str(value).encode("latin-1")[: 2 * f.width].ljust(2 * f.width, b"\x00")
        words = np.frombuffer(data, dtype=">u2").astype(np.uint16)
        if f.byte_order in ("BADC", "DCBA"):
            words = words.byteswap()
        return [int(w) for w in words]
    width, dtype = TYPE_WIDTHS[f.type]
    if f.type.startswith("float"):
        raw: float | int = (float(value) - f.offset) / f.scale  # type: ignore[arg-type]
    else:  # integers stay exact (a float cannot hold every 64-bit value); clip to range
        info = np.iinfo(np.dtype(dtype))
        exact = int(value) if not f.scaled else round((float(value) - f.offset) / f.scale)  # type: ignore[call-overload,arg-type]
        raw = min(max(exact, int(info.min)), int(info.max))
    value_bytes = np.array([raw], dtype=dtype).tobytes()  # big-endian value bytes
    perm = _byte_permutation(width, f.byte_order)
    reg_bytes = bytearray(2 * width)
    for value_pos, reg_pos in enumerate(perm):
        reg_bytes[reg_pos] = value_bytes[value_pos]
    return [int(w) for w in np.frombuffer(bytes(reg_bytes), dtype=">u2")]
