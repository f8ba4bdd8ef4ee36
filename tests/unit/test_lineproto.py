import numpy as np

from daq.events import Event
from daq.storage.lineproto import block_lines, escape_tag, event_line, quote_string, series_key, tag_problem
from drivers.block import Block


def test_escaping_rules_written_out():
    assert series_key("my meas,x", {"rig": "a b", "run": "k=v,w", "empty": ""}) == (
        r"my\ meas\,x,rig=a\ b,run=k\=v\,w")
    assert escape_tag("back\\slash") == "back\\slash"  # literal in InfluxDB
    assert escape_tag("end\\") == "end⧵" and tag_problem("end\\") and tag_problem("a\\,b")
    assert tag_problem("a\\b") is None
    assert escape_tag("line\nbreak") == r"line\ break"
    assert quote_string('say "hi" \\o/') == r'"say \"hi\" \\o/"'
    assert series_key("m", {"op": "Müller ø"}) == r"m,op=Müller\ ø"


def test_block_lines_types_nan_and_masks():
    b = Block(
        "plc",
        np.array([1_000_000_000_000_000_001, 1_000_000_000_000_000_002, 1_000_000_000_000_000_003]),
        {
            "force": np.array([1.5, np.nan, -2.0e-5]),
            "count": np.array([7, 8, 9], dtype=np.int64),
            "on": np.array([True, False, True]),
            "recipe": np.array(['a"b', "c", "d"]),
        },
        valid={"count": np.array([True, True, False])},
    )
    lines, empty = block_lines("plc", {"rig": "press-01"}, b)
    assert empty == 0
    assert lines == [
        'plc,rig=press-01 force=1.5,count=7i,on=true,recipe="a\\"b" 1000000000000000001',
        'plc,rig=press-01 count=8i,on=false,recipe="c" 1000000000000000002',
        'plc,rig=press-01 force=-2e-05,on=true,recipe="d" 1000000000000000003',
    ]


def test_sample_without_any_value_is_counted_not_written():
    b = Block("d", np.array([1, 2]), {"x": np.array([np.inf, 1.0])})
    lines, empty = block_lines("d", {}, b)
    assert lines == ["d x=1.0 2"] and empty == 1


def test_event_line():
    e = Event("device_fault", 'down: "timeout"', rig="press-01", device="plc", level="warning",
              t_ns=5, fields={"gap_s": 1.5, "reason": "timeout", "n": 3})
    assert event_line(e) == (
        'events,device=plc,kind=device_fault,level=warning,rig=press-01 '
        'message="down: \\"timeout\\"",gap_s=1.5,reason="timeout",n=3i 5')


def _parsed(lines):
    out = []
    for line in lines:
        key, fields, t = line.rsplit(" ", 2)
        vals = {}
        for kv in fields.split(","):
            k, v = kv.split("=")
            vals[k] = int(v[:-1]) if v.endswith("i") else v if v in ("true", "false") else float(v)
        out.append((key, vals, int(t)))
    return sorted(out, key=lambda x: x[2])


def test_fast_path_writes_what_the_line_by_line_path_writes():
    from daq.storage.lineproto import block_bytes

    rng = np.random.default_rng(7)
    n = 5000  # several gather chunks
    b = Block("amp 1", 10**18 + np.arange(n, dtype=np.int64) * 100_000, {
        "force": rng.normal(0, 1e5, n) * 10.0 ** rng.integers(-12, 12, n),
        "tiny": rng.normal(0, 1e-300, n),
        "count": rng.integers(-(2**62), 2**62, n),
        "flag": rng.integers(0, 2, n).astype(bool),
    }, valid={"count": rng.random(n) > 0.01})
    b.channels["force"][[3, 4000]] = [np.nan, -np.inf]
    body, lines, empty = block_bytes("amp 1", {"rig": "press 01", "run": "R=1"}, b)
    reference, ref_empty = block_lines("amp 1", {"rig": "press 01", "run": "R=1"}, b)
    assert _parsed(body.decode().splitlines()) == _parsed(reference)  # same values, maybe other digits
    assert lines == len(reference) == n and empty == ref_empty == 0
    assert body.endswith(b"\n")
