"""The OPC UA driver against a real asyncua server (the simulator's OPC UA face)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from daq.storage.influxd import free_port
from drivers.block import QUALITY_BAD, QUALITY_GOOD, QUALITY_PARTIAL
from drivers.opcua import Drained, NodeSpec, OpcUaClient, OpcUaError, OpcUaSettings
from drivers.sim.opcua_server import OpcUaSimServer, run_now

# one event loop for the module, so the tests that only read and subscribe can share one server
# (an asyncua server takes over a second to build its standard address space)
pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio(loop_scope="module")]

CHANNELS = {"force": "Double", "count": "Int32", "serial": "UInt32", "ready": "Boolean", "recipe": "String",
            "profile": ("Double", 4)}
UNCERTAIN = ua.StatusCodes.UncertainInitialValue  # 0x40920000
BAD = ua.StatusCodes.BadSensorFailure  # 0x808C0000


def _specs(sim: OpcUaSimServer, scale: float = 1.0) -> list[NodeSpec]:
    return [
        NodeSpec("force", sim.browse_path("force"), unit="kN", scale=scale),
        NodeSpec("count", sim.node_id("count"), type="Int32"),
        NodeSpec("serial", sim.node_id("serial"), type="UInt32"),
        NodeSpec("ready", sim.node_id("ready"), type="Boolean"),
        NodeSpec("recipe", sim.browse_path("recipe"), type="String"),
        NodeSpec("profile", sim.node_id("profile"), length=4, scale=scale),
    ]


def _settings(sim: OpcUaSimServer, **kw) -> OpcUaSettings:
    kw.setdefault("reconnect_min_s", 0.05)
    kw.setdefault("reconnect_max_s", 0.2)
    return OpcUaSettings(sim.endpoint, **kw)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared():
    server = OpcUaSimServer("PressPLC", CHANNELS, port=free_port())
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def sim(shared):
    if not shared.running:  # a failed restart test must not take the others down with it
        await shared.start()
    yield shared


@pytest_asyncio.fixture(loop_scope="module")
async def own_sim():
    """A server of the test's own, for tests that stop it."""
    server = OpcUaSimServer("PressPLC", CHANNELS, port=free_port())
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def client(sim):
    c = OpcUaClient(_settings(sim), _specs(sim))
    await c.connect()
    yield c
    await c.close()


async def _drain_until(c: OpcUaClient, node: str, n: int, timeout_s: float = 10.0) -> Drained:
    """Drain until ``node`` has ``n`` notifications in all; the drains are merged."""
    parts: list[Drained] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while sum(len(p.series[node]) for p in parts) < n:
        assert asyncio.get_running_loop().time() < deadline, f"only {sum(len(p.series[node]) for p in parts)} of {n}"
        await asyncio.sleep(0.02)
        parts.append(c.drain())
    first = parts[0]
    for p in parts[1:]:
        for name, s in p.series.items():
            m = first.series[name]
            m.t_ns = np.concatenate([m.t_ns, s.t_ns])
            m.status = np.concatenate([m.status, s.status])
            m.quality = np.concatenate([m.quality, s.quality])
            m.valid = np.concatenate([m.valid, s.valid])
            m.values = {k: np.concatenate([v, s.values[k]]) for k, v in m.values.items()}
        first.overflows += p.overflows
        first.dropped += p.dropped
        first.gaps += p.gaps
    return first


async def _reconnect(c: OpcUaClient, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await c.connect()
            return
        except OpcUaError as e:
            assert e.kind == "disconnected", e
            assert asyncio.get_running_loop().time() < deadline, e
            await asyncio.sleep(0.02)


# ---------------------------------------------------------------------- polling


@pytest.mark.parametrize("scale", [1.0, 0.5])
async def test_poll_reads_every_type_exactly(sim, scale):
    values = {"force": 1234.5678901234567, "count": -2_000_000_001, "serial": 4_000_000_007, "ready": True,
              "recipe": "Flansch-Ø80 «B»", "profile": [0.1, -2.5, 1e300, 7.0]}
    await sim.set(values)
    c = OpcUaClient(_settings(sim), _specs(sim, scale))
    await c.connect()
    try:
        assert dict(c.channels()) == {
            "force": np.float64, "count": np.int64, "serial": np.int64, "ready": np.bool_, "recipe": np.str_,
            "profile_0": np.float64, "profile_1": np.float64, "profile_2": np.float64, "profile_3": np.float64}
        out = c.new_buffers(3)
        valid = {k: np.zeros(3, dtype=bool) for k in out}
        r = await c.read(out, 1, valid)
        assert r.quality == QUALITY_GOOD and r.status == [0] * 6
        assert out["force"].dtype == np.float64 and out["force"][1] == values["force"] * scale
        assert out["count"].dtype == np.int64 and out["count"][1] == -2_000_000_001
        assert out["serial"].dtype == np.int64 and out["serial"][1] == 4_000_000_007
        assert out["ready"].dtype == np.bool_ and out["ready"][1]
        assert out["recipe"].astype(str)[1] == "Flansch-Ø80 «B»"
        assert [out[f"profile_{j}"][1] for j in range(4)] == [v * scale for v in values["profile"]]
        if scale == 0.5:  # exact halves, no rounding
            assert out["force"][1] * 2 == values["force"] and out["profile_1"][1] == -1.25
        assert all(v[1] for v in valid.values()) and not any(v[0] or v[2] for v in valid.values())
        assert np.isnan(out["force"][0]) and out["count"][0] == 0  # untouched rows
    finally:
        await c.close()


async def test_status_codes_map_to_quality(sim, client):
    out = client.new_buffers(3)
    valid = {k: np.ones(3, dtype=bool) for k in out}
    await sim.set({"force": 1.0, "count": 1})
    r = await client.read(out, 0, valid)
    assert r.quality == QUALITY_GOOD
    await sim.set({"force": 2.0, "count": 2}, status={"force": UNCERTAIN})
    r = await client.read(out, 1, valid)
    assert r.status[0] == UNCERTAIN and r.status[1] == 0
    assert r.quality == QUALITY_PARTIAL
    assert out["force"][1] == 2.0 and valid["force"][1]  # uncertain still carries the value
    await sim.set({"count": 3}, status={"force": BAD})
    r = await client.read(out, 2, valid)
    assert r.status[0] == BAD and r.quality == QUALITY_BAD
    assert np.isnan(out["force"][2]) and not valid["force"][2]  # a Bad value is null (spec Part 4 7.7.1)
    assert out["count"][2] == 3 and valid["count"][2]


async def test_source_timestamp_comes_back_exactly(sim, client):
    out = client.new_buffers(1)
    source_ns = 1_767_225_600_123_456_789  # 2026-01-01 00:00:00.123456789 UTC
    await sim.set({"force": 5.0, "count": 7}, source_ns=source_ns)
    r = await client.read(out, 0)
    # asyncua carries DateTime as a Python datetime on both ends: µs, not the wire's 100 ns ticks
    assert r.source_ns[0] == r.source_ns[1] == source_ns // 1000 * 1000
    assert r.t_ns == max(r.source_ns)  # the newest node's; the other nodes keep their older stamps
    assert r.server_ns[0] is not None
    await sim.set({"force": 6.0}, source_ns=1_767_225_600_000_001_000)
    r = await client.read(out, 0)
    assert r.source_ns[0] == 1_767_225_600_000_001_000  # a whole µs: exact


# ---------------------------------------------------------------------- subscription


async def test_subscription_delivers_every_change_in_order(sim, client):
    await sim.set({"force": -1.0})
    # 4 × (publishing / sampling): every value written between two publishes fits the queue
    await client.subscribe(sampling_interval_ms=10, queue_size=20, publishing_interval_ms=50)
    initial = await _drain_until(client, "force", 1)
    assert initial.series["force"].values["force"].tolist() == [-1.0]
    n = 200
    t0 = 1_767_225_600_000_000_000
    expected = [float(i) * 0.25 for i in range(n)]
    for i, v in enumerate(expected):
        await sim.set({"force": v}, source_ns=t0 + i * 10_000_000)
        await asyncio.sleep(0.01)  # one value per sampling interval
    d = await _drain_until(client, "force", n)
    s = d.series["force"]
    assert s.values["force"].tolist() == expected
    assert s.t_ns.tolist() == [t0 + i * 10_000_000 for i in range(n)]
    assert s.quality.tolist() == [QUALITY_GOOD] * n and s.valid.all()
    assert (d.overflows, d.dropped, d.gaps) == (0, 0, 0)
    assert not s.overflow.any()


async def test_queue_overflow_is_counted(sim, client):
    await sim.set({"force": -1.0, "count": 0})
    await client.subscribe(sampling_interval_ms=10, queue_size=3, publishing_interval_ms=100)
    await _drain_until(client, "force", 1)
    discarded = sim.discarded
    bursts, size = 4, 10
    got: list[float] = []
    flagged: list[bool] = []
    for b in range(bursts):
        # one synchronous burst: all `size` values land between two publishes; the queue keeps the last 3
        for i in range(size):
            sim.set_nowait({"force": float(100 * b + i)})
        d = await _drain_until(client, "force", 3)
        got += d.series["force"].values["force"].tolist()
        flagged += d.series["force"].overflow.tolist()
    assert got == [float(100 * b + i) for b in range(bursts) for i in range(size - 3, size)]
    assert flagged == [True, False, False] * bursts  # the value after each gap carries the Overflow bit
    assert client.overflows == bursts
    assert sim.discarded - discarded == bursts * (size - 3)
    assert client.drain().count == 0


async def test_queue_of_one_keeps_the_newest_unflagged(sim, client):
    await sim.set({"force": -1.0})
    await client.subscribe(sampling_interval_ms=10, queue_size=1, publishing_interval_ms=100)
    await _drain_until(client, "force", 1)
    for i in range(10):
        sim.set_nowait({"force": float(i)})
    d = await _drain_until(client, "force", 1)
    # spec Part 4 5.12.1.5: a queue of one always holds the newest value and sets no Overflow bit
    assert d.series["force"].values["force"].tolist() == [9.0]
    assert d.overflows == 0 and client.overflows == 0


async def test_client_buffer_overflow_is_counted(sim):
    c = OpcUaClient(_settings(sim), [NodeSpec("force", sim.node_id("force"))], max_buffered=5)
    await c.connect()
    try:
        await sim.set({"force": -1.0})
        await c.subscribe(sampling_interval_ms=10, queue_size=50, publishing_interval_ms=100)
        await _drain_until(c, "force", 1)
        for i in range(20):
            sim.set_nowait({"force": float(i)})
        d = await _drain_until(c, "force", 5)
        deadline = asyncio.get_running_loop().time() + 10
        while c.dropped + d.count < 20:  # the rest of the publish is refused and counted, not lost silently
            assert asyncio.get_running_loop().time() < deadline, (c.dropped, d.count)
            await asyncio.sleep(0.02)
        d2 = c.drain()
        assert d.series["force"].values["force"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert d.dropped + d2.dropped == 15 == c.dropped
        assert d2.count == 0 and c.overflows == 0
    finally:
        await c.close()


async def test_subscription_bad_and_uncertain_values(sim, client):
    await sim.set({"force": -1.0, "count": 0})
    await client.subscribe(sampling_interval_ms=10, queue_size=10, publishing_interval_ms=50)
    await _drain_until(client, "force", 1)
    sim.set_nowait({"force": 1.0}, status={"force": UNCERTAIN})
    sim.set_nowait({}, status={"force": BAD})
    sim.set_nowait({"force": 3.0})
    d = await _drain_until(client, "force", 3)
    s = d.series["force"]
    assert s.quality.tolist() == [QUALITY_PARTIAL, QUALITY_BAD, QUALITY_GOOD]
    assert s.status.tolist() == [UNCERTAIN, BAD, 0]
    assert s.valid.tolist() == [True, False, True]
    v = s.values["force"]
    assert v[0] == 1.0 and np.isnan(v[1]) and v[2] == 3.0


async def test_timestamp_trigger_reports_repeated_values(sim, client):
    await sim.set({"count": 5})
    await client.subscribe(sampling_interval_ms=10, queue_size=10, publishing_interval_ms=50,
                           trigger="StatusValueTimestamp")
    await _drain_until(client, "count", 1)
    t0 = 1_767_225_600_000_000_000
    for i in range(3):  # the same value, sampled anew: a real sample each time
        sim.set_nowait({"count": 5}, source_ns=t0 + i * 1_000)
    d = await _drain_until(client, "count", 3)
    assert d.series["count"].values["count"].tolist() == [5, 5, 5]
    assert d.series["count"].values["count"].dtype == np.int64
    assert d.series["count"].t_ns.tolist() == [t0, t0 + 1_000, t0 + 2_000]


# ---------------------------------------------------------------------- reconnect


async def test_server_restart_polling(own_sim):
    sim = own_sim
    client = OpcUaClient(_settings(sim), _specs(sim))
    await client.connect()
    out = client.new_buffers(2)
    await sim.set({"force": 1.0, "count": 1})
    await client.read(out, 0)
    assert client.connects == 1
    await sim.stop()
    with pytest.raises(OpcUaError) as err:
        await client.read(out, 1)
    assert err.value.kind in ("disconnected", "timeout")
    assert not client.connected
    with pytest.raises(OpcUaError) as err:  # the server is still away
        await client.connect()
    assert err.value.kind == "disconnected"
    await sim.start()  # same port
    await sim.set({"force": 2.5, "count": -9})
    await _reconnect(client)
    r = await client.read(out, 1)
    assert r.quality == QUALITY_GOOD
    assert out["force"][1] == 2.5 and out["count"][1] == -9
    assert client.connects == 2
    await client.close()


async def test_server_restart_subscription(own_sim):
    sim = own_sim
    client = OpcUaClient(_settings(sim), _specs(sim))
    await client.connect()
    await sim.set({"force": 0.0})
    await client.subscribe(sampling_interval_ms=10, queue_size=20, publishing_interval_ms=50)
    await _drain_until(client, "force", 1)
    for i in range(1, 6):
        await sim.set({"force": float(i)})
        await asyncio.sleep(0.01)
    before = await _drain_until(client, "force", 5)
    assert before.series["force"].values["force"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    await sim.stop()
    deadline = asyncio.get_running_loop().time() + 10
    with pytest.raises(OpcUaError) as err:
        while True:  # the client notices the loss from the socket closing
            client.drain()
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
    assert err.value.kind == "disconnected"
    await sim.start()
    await _reconnect(client)
    assert client.connects == 2
    after = await _drain_until(client, "force", 1)  # the re-created subscription's first value
    assert after.series["force"].values["force"].tolist() == [5.0]  # the retained image
    for i in range(6, 11):
        await sim.set({"force": float(i)})
        await asyncio.sleep(0.01)
    after = await _drain_until(client, "force", 5)
    assert after.series["force"].values["force"].tolist() == [6.0, 7.0, 8.0, 9.0, 10.0]
    await client.close()


# ---------------------------------------------------------------------- security


def _cert(tmp: Path, who: str, uri: str, usage) -> tuple[str, str]:
    key = generate_private_key()
    host = socket.gethostname()
    cert = generate_self_signed_app_certificate(
        key, f"rigdaq test {who}", {"organizationName": "rigdaq"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(host), x509.DNSName("localhost")], extended=usage)
    cert_path, key_path = tmp / f"{who}.der", tmp / f"{who}.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(dump_private_key_as_pem(key))
    return str(cert_path), str(key_path)


async def test_signed_and_encrypted_sessions(tmp_path):
    server_cert, server_key = _cert(tmp_path, "server", "urn:rigdaq:test:server",
                                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    client_cert, client_key = _cert(tmp_path, "client", "urn:rigdaq:test:client", [ExtendedKeyUsageOID.CLIENT_AUTH])
    sim = OpcUaSimServer("PressPLC", CHANNELS, port=free_port(), certificate=server_cert, private_key=server_key,
                         policies=["Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"])
    await sim.start()
    try:
        await sim.set({"force": 42.125, "count": 3, "recipe": "geheim"})
        secured = dict(security_policy="Basic256Sha256", certificate=client_cert, private_key=client_key)
        for mode, pinned in (("SignAndEncrypt", server_cert), ("Sign", server_cert), ("SignAndEncrypt", None)):
            c = OpcUaClient(_settings(sim, security_mode=mode, server_certificate=pinned, **secured), _specs(sim))
            await c.connect()
            try:
                out = c.new_buffers(1)
                r = await c.read(out, 0)
                assert r.quality == QUALITY_GOOD
                assert out["force"][0] == 42.125 and out["count"][0] == 3 and out["recipe"][0] == "geheim"
            finally:
                await c.close()
        plain = OpcUaClient(_settings(sim), _specs(sim))
        with pytest.raises(OpcUaError) as err:
            await plain.connect()
        assert err.value.kind == "security"
        assert "None/None" in err.value.detail and "SignAndEncrypt/Basic256Sha256" in err.value.detail
        assert not plain.connected
        wrong_pin = OpcUaClient(_settings(sim, security_mode="SignAndEncrypt", server_certificate=client_cert,
                                          **secured), _specs(sim))
        with pytest.raises(OpcUaError) as err:
            await wrong_pin.connect()
        assert err.value.kind == "security" and "other than the pinned" in err.value.detail, err.value
    finally:
        await sim.stop()


async def test_username_and_password():
    sim = OpcUaSimServer("PressPLC", CHANNELS, port=free_port(), users={"operator": "s3cret"})
    await sim.start()
    try:
        await sim.set({"force": 7.5})
        good = OpcUaClient(_settings(sim, username="operator", password="s3cret"), _specs(sim))
        await good.connect()
        out = good.new_buffers(1)
        await good.read(out, 0)
        assert out["force"][0] == 7.5
        await good.close()
        for settings in (_settings(sim, username="operator", password="wrong"),
                         _settings(sim, username="intruder", password="s3cret")):
            bad = OpcUaClient(settings, _specs(sim))
            with pytest.raises(OpcUaError) as err:
                await bad.connect()
            assert err.value.kind == "auth", err.value
            assert "BadUserAccessDenied" in err.value.detail
        anonymous = OpcUaClient(_settings(sim), _specs(sim))
        with pytest.raises(OpcUaError) as err:
            await anonymous.connect()
        assert err.value.kind == "auth" and "anonymous" in err.value.detail
    finally:
        await sim.stop()


# ---------------------------------------------------------------------- configuration errors


async def test_unknown_nodes_are_named(sim):
    cases = [
        (NodeSpec("x", f"Objects/{sim.ns}:PressPLC/{sim.ns}:nope"), f"'{sim.ns}:nope' under Objects/{sim.ns}:PressPLC"),
        (NodeSpec("x", f"{sim.ns}:Press/{sim.ns}:force"), f"'{sim.ns}:Press' under Objects"),
        (NodeSpec("x", f"0:Objects/{sim.ns}:PressPLC/1:force"), f"'1:force' under Objects/{sim.ns}:PressPLC"),
        (NodeSpec("x", f"ns={sim.ns};s=PressPLC.nope"), f"ns={sim.ns};s=PressPLC.nope"),
        (NodeSpec("x", sim.node_id("force"), type="Int32"), "DataType Double, the NodeSpec says Int32"),
        (NodeSpec("x", sim.node_id("profile"), length=3), "ArrayDimensions [4], the NodeSpec says length 3"),
        (NodeSpec("x", sim.node_id("profile")), "is an array"),
        (NodeSpec("x", sim.node_id("force"), length=4), "is a scalar"),
        (NodeSpec("x", f"Objects/{sim.ns}:PressPLC"), "is a Object, not a Variable"),
        (NodeSpec("x", "nsu=urn:elsewhere;s=PressPLC.force"), "no namespace 'urn:elsewhere'"),
    ]
    for spec, message in cases:
        c = OpcUaClient(_settings(sim), [NodeSpec("ok", sim.node_id("count"), type="Int32"), spec])
        with pytest.raises(OpcUaError) as err:
            await c.connect()
        assert err.value.kind == "node", err.value
        assert message in err.value.detail and "'x'" in err.value.detail, err.value.detail
        assert not c.connected
    # a namespace by URI is looked up on the server (its index may differ from server to server)
    c = OpcUaClient(_settings(sim), [NodeSpec("count", f"nsu={sim.namespace_uri};s=PressPLC.count", type="Int32")])
    await sim.set({"count": 77})
    await c.connect()
    out = c.new_buffers(1)
    await c.read(out, 0)
    assert out["count"][0] == 77
    await c.close()


async def test_run_now_finishes_or_hands_over():
    async def quick():
        return 5

    async def slow(fut):
        await asyncio.sleep(0)
        return await fut + 1

    assert run_now(quick()) == 5
    fut = asyncio.get_running_loop().create_future()
    tasks: set[asyncio.Task] = set()
    assert run_now(slow(fut), tasks) is None
    [task] = tasks
    fut.set_result(41)
    assert await task == 42
