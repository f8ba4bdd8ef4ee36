"""OPC UA driver pieces that need no server: quality mapping, configuration checks, browse paths."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from asyncua import ua

from drivers.block import QUALITY_BAD, QUALITY_GOOD, QUALITY_PARTIAL
from drivers.opcua import (
    NodeSpec,
    OpcUaClient,
    OpcUaError,
    OpcUaSettings,
    datetime_ns,
    is_node_id,
    ns_datetime,
    parse_browse_path,
    status_overflow,
    status_quality,
)


@pytest.mark.parametrize(("code", "quality"), [
    (0x00000000, QUALITY_GOOD),
    (0x00000480, QUALITY_GOOD),  # Good with the Overflow info bit: still a good value
    (0x002D0000, QUALITY_GOOD),  # GoodSubscriptionTransferred
    (0x40920000, QUALITY_PARTIAL),  # UncertainInitialValue
    (0x40900000, QUALITY_PARTIAL),  # UncertainLastUsableValue
    (0x808C0000, QUALITY_BAD),  # BadSensorFailure
    (0x808B0000, QUALITY_BAD),  # BadDeviceFailure
    (0x80000000, QUALITY_BAD),
    (0xC0000000, QUALITY_BAD),  # reserved severity 11: treated as Bad
    (None, QUALITY_GOOD),
])
def test_status_quality(code, quality):
    assert status_quality(code) == quality
    if code is not None:
        assert status_quality(ua.StatusCode(code)) == quality
        assert status_quality(np.uint32(code)) == quality


def test_status_overflow():
    assert status_overflow(0x00000480) and status_overflow(0x40920480)
    assert not status_overflow(0x00000080)  # bit 7 without InfoType DataValue
    assert not status_overflow(0x00000400) and not status_overflow(None) and not status_overflow(0)
    assert status_overflow(ua.StatusCode(0x00000480))


@pytest.mark.parametrize(("path", "steps"), [
    ("Objects/2:PressPLC/2:force_kN", ((2, "PressPLC"), (2, "force_kN"))),
    ("0:Objects/2:PressPLC/2:force_kN", ((2, "PressPLC"), (2, "force_kN"))),
    ("/Objects/3:A", ((3, "A"),)),
    ("2:PressPLC/2:force_kN", ((2, "PressPLC"), (2, "force_kN"))),
    ("Server/ServerStatus", ((0, "Server"), (0, "ServerStatus"))),
    ("2:Drive 1/2:Speed.Actual", ((2, "Drive 1"), (2, "Speed.Actual"))),
    ("12:a:b", ((12, "a:b"),)),
])
def test_parse_browse_path(path, steps):
    assert parse_browse_path(path) == steps
    assert not is_node_id(path)


@pytest.mark.parametrize("path", ["", "Objects", "Objects/", "2:A//2:B", "x:A", "2:", "2: "])
def test_bad_browse_paths(path):
    with pytest.raises(ValueError, match="browse path"):
        parse_browse_path(path)


@pytest.mark.parametrize("text", ["ns=2;s=Press.Force", "ns=2;i=1234", "i=85", "nsu=urn:x;s=A",
                                  "ns=3;g=09087e75-8e5e-499b-954f-f2a9603db28a", "ns=1;b=M/RbKBsRVkePCePcx24oRA=="])
def test_node_ids(text):
    assert is_node_id(text)


def test_node_spec_channels_and_dtypes():
    assert NodeSpec("f", "ns=2;s=F").channels() == [("f", np.dtype(np.float64))]
    assert NodeSpec("n", "ns=2;s=N", type="Int32").dtype == np.int64
    assert NodeSpec("n", "ns=2;s=N", type="Int16", scale=0.1).dtype == np.float64
    assert NodeSpec("n", "ns=2;s=N", type="UInt64").dtype == np.uint64
    assert NodeSpec("b", "ns=2;s=B", type="Boolean").dtype == np.bool_
    assert NodeSpec("s", "ns=2;s=S", type="String").dtype.kind == "U"
    arr = NodeSpec("p", "Objects/2:Plc/2:Profile", length=3, type="Float")
    assert arr.channels() == [("p_0", np.float64), ("p_1", np.float64), ("p_2", np.float64)]
    assert arr.variant_type is ua.VariantType.Float


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"name": ""}, "name"),
    ({"name": "a b"}, "name"),
    ({"node": ""}, "node"),
    ({"node": "ns=x;s=A"}, "node"),
    ({"node": "Objects/x:A"}, "node"),
    ({"type": "Real"}, "type"),
    ({"length": -1}, "length"),
    ({"scale": 0.0}, "scale"),
    ({"scale": float("nan")}, "scale"),
    ({"type": "Boolean", "scale": 2.0}, "scale"),
    ({"type": "String", "scale": 0.5}, "scale"),
])
def test_node_spec_validation(kwargs, field):
    args = {"name": "force", "node": "ns=2;s=F", **kwargs}
    with pytest.raises(ValueError, match=f"^{field}:"):
        NodeSpec(**args)


def test_settings_validation(tmp_path):
    cert, key = tmp_path / "c.der", tmp_path / "k.pem"
    cert.write_bytes(b"x")
    key.write_bytes(b"x")
    ok = OpcUaSettings("opc.tcp://plc:4840", security_mode="Sign", security_policy="Basic256Sha256",
                       certificate=str(cert), private_key=str(key))
    assert ok.timeout_s == 2.0
    bad = [
        ({"endpoint": "http://plc:4840"}, "endpoint"),
        ({"endpoint": "opc.tcp://"}, "endpoint"),
        ({"endpoint": "opc.tcp://plc:99999"}, "endpoint"),
        ({"security_mode": "Encrypt"}, "security_mode"),
        ({"security_policy": "Basic128Rsa15"}, "security_policy"),
        ({"security_mode": "Sign"}, "security_policy"),
        ({"security_policy": "Basic256Sha256"}, "security_policy"),
        ({"security_mode": "SignAndEncrypt", "security_policy": "Basic256Sha256"}, "certificate"),
        ({"security_mode": "Sign", "security_policy": "Basic256Sha256", "certificate": str(cert)}, "private_key"),
        ({"security_mode": "Sign", "security_policy": "Basic256Sha256", "certificate": str(tmp_path / "no.der"),
          "private_key": str(key)}, "certificate"),
        ({"server_certificate": str(tmp_path / "no.der")}, "server_certificate"),
        ({"password": "x"}, "password"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"reconnect_min_s": 2.0, "reconnect_max_s": 1.0}, "reconnect_min_s"),
    ]
    for kwargs, field in bad:
        args = {"endpoint": "opc.tcp://plc:4840", **kwargs}
        with pytest.raises(ValueError, match=f"^{field}") as err:
            OpcUaSettings(**args)
        assert str(err.value), kwargs


def test_missing_certificate_message_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"certificate: file not found: .*missing\.der"):
        OpcUaSettings("opc.tcp://plc:4840", security_mode="SignAndEncrypt", security_policy="Basic256Sha256",
                      certificate=str(tmp_path / "missing.der"), private_key=str(tmp_path / "k.pem"))


def test_client_rejects_duplicate_channels():
    settings = OpcUaSettings("opc.tcp://plc:4840")
    with pytest.raises(ValueError, match="p_1"):
        OpcUaClient(settings, [NodeSpec("p", "ns=2;s=P", length=2), NodeSpec("p_1", "ns=2;s=Q")])
    c = OpcUaClient(settings, [NodeSpec("p", "ns=2;s=P", length=2), NodeSpec("s", "ns=2;s=S", type="String")])
    bufs = c.new_buffers(4)
    assert set(bufs) == {"p_0", "p_1", "s"} and np.isnan(bufs["p_0"]).all() and bufs["s"].tolist() == [""] * 4
    assert not c.connected


async def test_not_connected_is_an_error_not_a_hang():
    c = OpcUaClient(OpcUaSettings("opc.tcp://127.0.0.1:1"), [NodeSpec("f", "ns=2;s=F")])
    with pytest.raises(OpcUaError) as err:
        await c.read(c.new_buffers(1), 0)
    assert err.value.kind == "disconnected"
    assert c.drain().count == 0  # nothing buffered, nothing lost


def test_timestamps():
    t = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert datetime_ns(t) == 1_767_225_600_123_456_000
    assert datetime_ns(t, 12_345) == 1_767_225_600_123_456_123  # picoseconds in 10 ps units
    assert datetime_ns(t.replace(tzinfo=None)) == 1_767_225_600_123_456_000
    assert datetime_ns(None) is None and datetime_ns(datetime(1601, 1, 1, tzinfo=UTC)) is None
    assert ns_datetime(1_767_225_600_123_456_789) == t
    assert datetime_ns(ns_datetime(-1_000)) == -1_000
