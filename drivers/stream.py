r"""Streaming instrument protocols: a binary frame format and an ASCII line format.

Binary frames (one sample per frame, all integers little-endian)::

    offset  size  field
    0       2     sync word A5 5A
    2       4     sequence counter, uint32 (the sample counter; wraps at 2**32)
    6       Σ     channel values in declared order; each int16/uint16/int32/uint32/
                  float32/float64, little-endian
    6+Σ     2     CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF) of bytes 2..6+Σ-1,
                  low byte first

Decoding works on whole chunks of bytes: every sync-word position is a candidate
frame, all candidates are CRC-checked at once (numpy, one table lookup per byte
column across all frames), valid frames are cut out with one gather and viewed as
a structured array. Bytes outside valid frames are garbage (line noise, a partial
frame after a reconnect) and are skipped; that is how the decoder resyncs.

ASCII lines, for simpler instruments::

    seq=1234;force_1=12.5;force_2=-3.0\r\n

``seq`` is optional (without it the decoder counts lines). Lines that do not parse
are counted and skipped. This path parses line by line and is meant for rates of
up to a few hundred lines per second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SYNC = b"\xa5\x5a"
HEADER = 6  # sync + sequence
TRAILER = 2  # CRC
STREAM_TYPES = {
    "int16": "<i2", "uint16": "<u2", "int32": "<i4", "uint32": "<u4",
    "float32": "<f4", "float64": "<f8",
}


def _crc_tables() -> tuple[np.ndarray, np.ndarray]:
    """Byte-wise and 16-bit-word-wise lookup tables of the reflected polynomial 0xA001."""
    v = np.arange(65536, dtype=np.uint32)
    for _ in range(16):  # 16 shifts of a 16-bit register fed 16 data bits: T16[crc ^ word]
        v = np.where(v & 1, (v >> 1) ^ 0xA001, v >> 1)
    t16 = v.astype(np.uint16)
    b = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        b = np.where(b & 1, (b >> 1) ^ 0xA001, b >> 1)
    return b.astype(np.uint16), t16


CRC_TABLE, CRC_TABLE16 = _crc_tables()


def crc16_modbus_rows(rows: np.ndarray) -> np.ndarray:
    """CRC-16/MODBUS of every row of a ``uint8[n, m]`` array (vectorised over rows).

    Two bytes per step through a 65 536-entry table, so an m-byte row costs m/2
    gathers across all rows at once.
    """
    n, m = rows.shape
    crc = np.full(n, 0xFFFF, dtype=np.uint16)
    words = rows[:, : m - m % 2].astype(np.uint16)
    words = words[:, 0::2] | (words[:, 1::2] << 8)
    for j in range(words.shape[1]):
        crc = CRC_TABLE16[crc ^ words[:, j]]
    if m % 2:
        crc = (crc >> 8) ^ CRC_TABLE[(crc ^ rows[:, m - 1]) & 0xFF]
    return crc


@dataclass(frozen=True, slots=True)
class StreamChannel:
    """One channel of a stream: value = raw * scale + offset."""

    name: str
    type: str = "float32"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""


@dataclass
class Decoded:
    """What one chunk of bytes yielded."""

    seq: np.ndarray  # uint32 sequence counters as sent
    channels: dict[str, np.ndarray]
    skipped_bytes: int = 0
    resyncs: int = 0
    bad_lines: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seq)


class FrameCodec:
    """Encode and decode the binary frame format for a list of channels."""

    def __init__(self, channels: list[StreamChannel]):
        self.channels = list(channels)
        payload = [(c.name, STREAM_TYPES[c.type]) for c in channels]
        self.dtype = np.dtype([("sync", "S2"), ("seq", "<u4"), *payload, ("crc", "<u2")])
        self.frame_len = self.dtype.itemsize
        self._buf = bytearray()
        self._offsets = np.arange(self.frame_len, dtype=np.intp)

    # -- encoding (simulators, tests, benchmarks) ----------------------------------------
    def encode(self, seq: np.ndarray, values: dict[str, np.ndarray]) -> bytes:
        """Frames for ``len(seq)`` samples; ``values`` in engineering units."""
        n = len(seq)
        frames = np.zeros(n, dtype=self.dtype)
        frames["sync"] = SYNC
        frames["seq"] = np.asarray(seq, dtype=np.int64) & 0xFFFFFFFF
        for c in self.channels:
            raw = (np.asarray(values[c.name], dtype=np.float64) - c.offset) / c.scale
            kind = np.dtype(STREAM_TYPES[c.type])
            if kind.kind in "iu":
                info = np.iinfo(kind)
                raw = np.clip(np.rint(raw), info.min, info.max)
            frames[c.name] = raw
        rows = frames.view(np.uint8).reshape(n, self.frame_len)
        frames["crc"] = crc16_modbus_rows(rows[:, 2 : self.frame_len - TRAILER])
        return frames.tobytes()

    # -- decoding ------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget buffered bytes (after a reconnect)."""
        self._buf.clear()

    def feed(self, data: bytes) -> Decoded:
        """Decode every complete frame in the buffered bytes plus ``data``."""
        self._buf += data
        buf = np.frombuffer(self._buf, dtype=np.uint8)
        L = self.frame_len
        n_bytes = len(buf)
        # a frame could still start at any position >= limit: keep those bytes for later
        limit = n_bytes - L + 1
        if limit <= 0:
            return Decoded(np.zeros(0, np.uint32), self._empty())
        cand = np.flatnonzero((buf[: limit] == 0xA5) & (buf[1 : limit + 1] == 0x5A))
        if len(cand):
            rows = buf[cand[:, None] + self._offsets]
            ok = crc16_modbus_rows(rows[:, 2 : L - TRAILER]) == (
                rows[:, L - 2].astype(np.uint16) | (rows[:, L - 1].astype(np.uint16) << 8))
            starts = cand[ok]
            rows = rows[ok]
            if len(starts) > 1 and np.any(np.diff(starts) < L):
                keep = self._non_overlapping(starts, L)
                starts, rows = starts[keep], rows[keep]
        else:
            starts = cand
            rows = np.zeros((0, L), dtype=np.uint8)
        # bytes not inside a valid frame, up to where we stop looking, are garbage
        consumed_to = int(starts[-1]) + L if len(starts) else 0
        keep_from = max(consumed_to, limit)
        covered = len(starts) * L
        skipped = keep_from - covered
        # a resync is each stretch of skipped bytes (before, between or after frames)
        prev_end = np.concatenate(([0], starts + L))
        next_start = np.concatenate((starts, [keep_from]))
        resyncs = int(np.count_nonzero(next_start - prev_end > 0))
        frames = np.ascontiguousarray(rows).view(self.dtype).reshape(-1)
        out = {}
        for c in self.channels:
            v = frames[c.name].astype(np.float64)
            if c.scale != 1.0 or c.offset != 0.0:
                v = v * c.scale + c.offset
            out[c.name] = v
        del buf  # release the view before resizing the bytearray
        del self._buf[:keep_from]
        return Decoded(frames["seq"].copy(), out, skipped_bytes=int(skipped), resyncs=resyncs)

    @staticmethod
    def _non_overlapping(starts: np.ndarray, L: int) -> np.ndarray:
        keep = np.zeros(len(starts), dtype=bool)
        end = -1
        for i, s in enumerate(starts.tolist()):
            if s >= end:
                keep[i] = True
                end = s + L
        return keep

    def _empty(self) -> dict[str, np.ndarray]:
        return {c.name: np.zeros(0) for c in self.channels}


class LineCodec:
    """The ASCII ``key=value;…<CR><LF>`` format."""

    def __init__(self, channels: list[StreamChannel], max_line: int = 4096):
        self.channels = list(channels)
        self.names = {c.name: c for c in channels}
        self.max_line = max_line
        self._buf = bytearray()
        self._count = 0

    def reset(self) -> None:
        """Forget buffered bytes."""
        self._buf.clear()

    def encode(self, seq: np.ndarray, values: dict[str, np.ndarray]) -> bytes:
        """Lines for ``len(seq)`` samples."""
        cols = [values[c.name] for c in self.channels]
        lines = []
        for i, s in enumerate(np.asarray(seq).tolist()):
            parts = [f"seq={s}"] + [f"{c.name}={cols[j][i]:.6g}" for j, c in enumerate(self.channels)]
            lines.append(";".join(parts) + "\r\n")
        return "".join(lines).encode()

    def feed(self, data: bytes) -> Decoded:
        """Parse every complete line."""
        self._buf += data
        *lines, rest = self._buf.split(b"\n")
        skipped = 0
        if len(rest) > self.max_line:
            skipped += len(rest)
            rest = b""
        self._buf = bytearray(rest)
        seqs: list[int] = []
        cols: dict[str, list[float]] = {c.name: [] for c in self.channels}
        bad = 0
        notes: list[str] = []
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            try:
                pairs = dict(p.split("=", 1) for p in line.decode("ascii").split(";") if p)
                seq = int(pairs.pop("seq")) if "seq" in pairs else self._count
                row = {c.name: float(pairs[c.name]) * c.scale + c.offset for c in self.channels}
            except (ValueError, KeyError, UnicodeDecodeError) as e:
                bad += 1
                skipped += len(raw) + 1
                if len(notes) < 3:
                    notes.append(f"unparseable line {bytes(line[:60])!r}: {type(e).__name__} {e}")
                continue
            self._count = seq + 1
            seqs.append(seq & 0xFFFFFFFF)
            for k, v in row.items():
                cols[k].append(v)
        return Decoded(np.array(seqs, dtype=np.uint32), {k: np.array(v) for k, v in cols.items()},
                       skipped_bytes=skipped, bad_lines=bad, resyncs=bad, notes=notes)
