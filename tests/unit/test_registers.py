import itertools
import struct
import tomllib

import numpy as np
import pytest
from pymodbus.client.mixin import ModbusClientMixin

from drivers.registers import (
    BYTE_ORDERS,
    MAX_REGISTERS_PER_READ,
    ReadRequest,
    RegisterCodec,
    RegisterField,
    encode_value,
    plan_reads,
)
from tests.conftest import CASES

GOLDEN = tomllib.loads((CASES / "decode" / "cases.toml").read_text())["case"]


def _field(case, address=0):
    return RegisterField(
        name="x", table="holding", address=address, type=case["type"],
        byte_order=case.get("byte_order", "ABCD"), scale=case.get("scale", 1.0),
        offset=case.get("offset", 0.0), bit=case.get("bit"), length=case.get("length"),
    )


@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: f"{c['type']}-{c.get('byte_order', '')}")
def test_golden_decode(case):
    f = _field(case)
    codec = RegisterCodec([f], plan_reads([f]))
    raw = np.array([case["registers"]], dtype=np.uint16)
    got = codec.decode(raw)["x"][0]
    if isinstance(case["value"], float):
        assert got == pytest.approx(case["value"], rel=1e-12)
    else:
        assert got == case["value"]


@pytest.mark.parametrize("case", [c for c in GOLDEN if c["type"] != "bit"],
                         ids=lambda c: f"{c['type']}-{c.get('byte_order', '')}")
def test_golden_encode_is_inverse(case):
    assert encode_value(_field(case), case["value"]) == case["registers"]


def test_every_type_and_order_is_covered():
    numeric = {"int16", "uint16", "float16", "int32", "uint32", "float32", "int64", "uint64", "float64"}
    have = {(c["type"], c.get("byte_order")) for c in GOLDEN}
    assert set(itertools.product(numeric, BYTE_ORDERS)) <= have


@pytest.mark.parametrize(("typ", "order", "word_order"), [
    (t, o, w) for t in ("INT32", "UINT32", "FLOAT32", "INT64", "UINT64", "FLOAT64")
    for o, w in (("ABCD", "big"), ("CDAB", "little"))
])
def test_agrees_with_pymodbus_converters(typ, order, word_order):
    """pymodbus knows word order (not byte swaps): an independent check of ABCD/CDAB."""
    dt = ModbusClientMixin.DATATYPE[typ]
    value = {"FLOAT32": 3.14159, "FLOAT64": -1.0e-7, "INT32": -7, "UINT32": 4_000_000_001,
             "INT64": -(2**40) - 3, "UINT64": 2**63 + 5}[typ]
    regs = ModbusClientMixin.convert_to_registers(value, dt, word_order=word_order)
    f = RegisterField("x", "holding", 0, typ.lower(), order)
    got = RegisterCodec([f], plan_reads([f])).decode(np.array([regs], dtype=np.uint16))["x"][0]
    expected = ModbusClientMixin.convert_from_registers(regs, dt, word_order=word_order)
    assert got == pytest.approx(expected, rel=1e-7) if "FLOAT" in typ else got == expected


def test_decode_many_rows_and_mixed_fields_at_once():
    fields = [
        RegisterField("f", "holding", 0, "float32", "CDAB"),
        RegisterField("s", "holding", 2, "int16", scale=0.5),
        RegisterField("b0", "holding", 3, "bit", bit=0),
        RegisterField("b15", "holding", 3, "bit", bit=15),
        RegisterField("c", "input", 10, "uint32", "DCBA"),
        RegisterField("coil", "coil", 7, "bit"),
    ]
    codec = RegisterCodec(fields, plan_reads(fields))
    raw = codec.new_buffer(500)
    for i in range(500):
        codec.encode({"f": i * 0.25, "s": -i, "b0": i % 2 == 0, "b15": i % 3 == 0, "c": i * 1000,
                      "coil": i % 5 == 0}, raw[i])
    out = codec.decode(raw)
    i = np.arange(500)
    np.testing.assert_array_equal(out["f"], i * 0.25)
    np.testing.assert_array_equal(out["s"], -i.astype(float))
    np.testing.assert_array_equal(out["b0"], i % 2 == 0)
    np.testing.assert_array_equal(out["b15"], i % 3 == 0)
    np.testing.assert_array_equal(out["c"], i * 1000)
    np.testing.assert_array_equal(out["coil"], i % 5 == 0)
    assert out["c"].dtype == np.int64 and out["f"].dtype == np.float64 and out["s"].dtype == np.float64


def test_float_nan_and_inf_decode_as_such():
    f = RegisterField("x", "holding", 0, "float32")
    regs = [struct.unpack(">HH", struct.pack(">f", v)) for v in (float("nan"), float("inf"))]
    out = RegisterCodec([f], plan_reads([f])).decode(np.array(regs, dtype=np.uint16))["x"]
    assert np.isnan(out[0]) and np.isinf(out[1])


def test_plan_merges_neighbours_and_respects_the_limit():
    fields = [RegisterField(f"r{i}", "holding", 2 * i, "float32") for i in range(100)]  # 200 regs
    plan = plan_reads(fields)
    assert [(r.address, r.count) for r in plan] == [(0, 124), (124, 76)]
    assert all(r.count <= MAX_REGISTERS_PER_READ for r in plan)


def test_plan_keeps_tables_apart_and_honours_max_gap():
    fields = [
        RegisterField("a", "holding", 0, "uint16"),
        RegisterField("b", "holding", 5, "uint16"),
        RegisterField("c", "input", 1, "uint16"),
    ]
    assert plan_reads(fields, max_gap=0) == [
        ReadRequest("holding", 0, 1, 0), ReadRequest("holding", 5, 1, 1), ReadRequest("input", 1, 1, 2)]
    assert plan_reads(fields, max_gap=4) == [ReadRequest("holding", 0, 6, 0), ReadRequest("input", 1, 1, 6)]


def test_bits_of_one_register_share_one_read():
    fields = [RegisterField(f"b{i}", "holding", 8, "bit", bit=i) for i in range(16)]
    assert plan_reads(fields) == [ReadRequest("holding", 8, 1, 0)]


def test_string_round_trip_in_every_order():
    for order in BYTE_ORDERS:
        f = RegisterField("s", "input", 0, "string", order, length=6)
        codec = RegisterCodec([f], plan_reads([f]))
        row = codec.new_buffer(1)
        codec.encode({"s": "PRESS-07"}, row[0])
        assert codec.decode(row)["s"][0] == "PRESS-07"


@pytest.mark.parametrize(("typ", "order"), list(itertools.product(("uint16", "uint32", "uint64"), BYTE_ORDERS)))
def test_uint_reader_is_decode_for_one_row(typ, order):
    """The per-poll scalar read of a scan counter gives what the block decoder gives, exactly."""
    fields = [RegisterField("pad", "holding", 0, "uint16"), RegisterField("tick", "holding", 1, typ, order)]
    codec = RegisterCodec(fields, plan_reads(fields))
    read = codec.uint_reader("tick")
    bits = 16 * (1 if typ == "uint16" else 2 if typ == "uint32" else 4)
    for value in (0, 1, 0x1234, 2**bits - 1, 0x0123456789ABCDEF % 2**bits):
        row = codec.new_buffer(1)
        codec.encode({"pad": 7, "tick": value}, row[0])
        assert read(row[0]) == value == int(codec.decode(row)["tick"][0])
    with pytest.raises(ValueError, match="field 'pad' is int16, not an unsigned integer"):
        RegisterCodec([RegisterField("pad", "holding", 0, "int16")], plan_reads(fields[:1])).uint_reader("pad")
