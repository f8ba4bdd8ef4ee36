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
