"""daq.storage.influx_v1.curve_of: an InfluxQL answer (transcript) → a curve, column by column."""

import numpy as np
import orjson
import pytest

from daq.storage.influx_v1 import InfluxError, curve_of


def _answer(*series: dict) -> bytes:
    return orjson.dumps({"results": [{"statement_id": 0, "series": list(series)}]})


def test_two_series_with_different_fields_line_up_with_nan_where_one_has_none():
    a = {"name": "amp", "columns": ["time", "force", "rig", "sample", "ok"],
         "values": [[10, 1.5, "p1", 7, True], [20, None, "p1", 8, False]]}
    b = {"name": "amp", "columns": ["time", "position", "note"], "values": [[30, -2, "x"]]}
    t, chans = curve_of(_answer(a, b))
    assert t.dtype == np.int64 and t.tolist() == [10, 20, 30]
    assert sorted(chans) == ["force", "ok", "position"]  # no tag, no counter, no string field
    assert np.array_equal(chans["force"], [1.5, np.nan, np.nan], equal_nan=True)
    assert np.array_equal(chans["ok"], [1.0, 0.0, np.nan], equal_nan=True)
    assert np.array_equal(chans["position"], [np.nan, np.nan, -2.0], equal_nan=True)


def test_no_rows_is_none_and_a_statement_error_is_an_influx_error():
    assert curve_of(orjson.dumps({"results": [{"statement_id": 0}]})) is None
    with pytest.raises(InfluxError) as e:
        curve_of(orjson.dumps({"results": [{"statement_id": 0, "error": "database not found: x"}]}))
    assert str(e.value) == "query error: database not found: x" and e.value.kind == "bad_data"
