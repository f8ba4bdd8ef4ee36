"""Tag values with every special character round-trip through a real influxd."""

from __future__ import annotations

import numpy as np

from daq.storage.influx_v1 import series_rows
from daq.storage.lineproto import block_bytes
from drivers.block import Block

NASTY = [
    "plain", "with space", "comma,here", "equals=sign", 'double"quote', "single'quote",
    "back\\slash", "Müller-Lüdenscheidt ß", "lot #42/7 (A)", "tab\there", "new\nline",
    "部品番号-17", "=", ",", " lead", "trail ", "🔩 bolt", "a\\\\b",
]


async def test_tag_values_and_names_round_trip(influx):
    n = len(NASTY)
    for i, value in enumerate(NASTY):
        block = Block("m e,as=x", np.array([1_000_000_000 + i]),
                      {"f i,e=ld": np.array([float(i)]), "s": np.array([f'str "{value}"'])})
        body, lines, _ = block_bytes("m e,as=x", {"rig": "press-01", "part": value}, block)
        assert lines == 1
        await influx.write(body)
    rows = series_rows(await influx.query('SELECT "f i,e=ld", s, part FROM "m e,as=x"'))
    assert len(rows) == n
    by_field = {int(r["f i,e=ld"]): r for r in rows}
    for i, value in enumerate(NASTY):
        assert by_field[i]["part"] == value.replace("\n", " ")  # no newline in a tag
        assert by_field[i]["s"] == f'str "{value}"'


async def test_retention_is_set_on_the_database(influxd, database):
    from daq.storage.influx_v1 import InfluxV1Client, series_rows

    client = InfluxV1Client(influxd.url, database)
    try:
        await client.create_database("48h")
        await client.create_database("48h")  # idempotent
        [rp] = series_rows(await client.query(f'SHOW RETENTION POLICIES ON "{database}"'))
        assert rp["name"] == "autogen" and rp["duration"] == "48h0m0s" and rp["default"] is True
    finally:
        await client.aclose()
