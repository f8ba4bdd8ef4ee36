"""OPC UA client driver: polled reads and data-change subscriptions over asyncua.

One :class:`OpcUaClient` talks to one server endpoint and owns a fixed list of
:class:`NodeSpec` (channel name, node, unit, scale, array length). It has two ways of
getting values, usable side by side:

Polling
    :meth:`OpcUaClient.read` sends one Read service call for every node and writes the
    (scaled) values into row ``i`` of preallocated column arrays, as the Modbus poller
    does with its raw rows. The per-node StatusCodes and source timestamps of that read
    come back in a :class:`ReadResult`.

Subscription
    :meth:`OpcUaClient.subscribe` creates one subscription with one monitored item per
    node (server-side queue of ``queue_size`` with discard-oldest). The publish
    responses are unpacked straight into per-node Python lists (time, value, status);
    :meth:`OpcUaClient.drain` turns everything buffered since the previous drain into
    numpy columns per node (:class:`NodeSeries`). With a queue at least as long as
    publishing interval / sampling interval the server keeps every sample it took
    between two publish responses, so none is lost. Losses that do happen are counted,
    never silent: the server flags a discarded queue entry with the Overflow bit
    (StatusCode InfoType "DataValue", bit 7: ``code & 0x0C80 == 0x0480``) on the value
    that follows the gap; the client buffer is bounded (``max_buffered``) and counts what
    it refuses; a notification message missing from the sequence numbers is counted
    as a gap.

The low-level asyncua services are used directly (``uaclient.read``,
``create_subscription`` with a plain publish callback, ``create_monitored_items``):
the high-level ``Subscription`` class creates a task or a queue entry per notification,
which is exactly the per-sample overhead this driver avoids.

Quality: an OPC UA StatusCode's severity (its top two bits) maps to the block quality
codes, see :func:`status_quality`. Timestamps are ns since the Unix epoch. asyncua
decodes OPC UA DateTime (100 ns ticks) into Python ``datetime``, so what arrives here
has **1 µs resolution**; the ``*Picoseconds`` fields, when a server sends them, are
added back.

Node addressing: ``NodeSpec.node`` is either a NodeId string (``ns=2;s=Press.Force``,
``ns=2;i=1234``) or a browse path of qualified names ``NS:Name`` separated by ``/``
(``Objects/2:PressPLC/2:force_kN``), relative to the Objects folder. Browse paths are
translated once per session; each node's DataType and array shape are checked against
its spec at connect, so a wrong configuration fails there with the offending node
named, not later as odd values.

Connection handling mirrors :class:`drivers.modbus.ModbusPoller`: the caller drives
:meth:`OpcUaClient.connect`, which honours a capped exponential :class:`Backoff`. A lost
connection surfaces once as ``OpcUaError("disconnected")`` from ``read``/``drain``; the
next successful ``connect`` builds a fresh session (and the subscription, if one was
requested). asyncua's own auto-reconnect is switched off so there is exactly one owner of
the reconnect policy.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.crypto import security_policies, uacrypto

from drivers.block import QUALITY_BAD, QUALITY_GOOD
from drivers.modbus import Backoff
from drivers.opcua.errors import OpcUaError, _classify
from drivers.opcua.nodes import (
    _KIND_DTYPES,
    _KIND_FILL,
    _KIND_FLOAT,
    _KIND_STR,
    OVERFLOW_BITS,
    OVERFLOW_MASK,
    NodeSpec,
    certificate_uri,
    datetime_ns,
    format_browse_path,
    is_node_id,
    parse_browse_path,
    status_quality,
)

log = logging.getLogger(__name__)

SECURITY_MODES = ("None", "Sign", "SignAndEncrypt")
SECURITY_POLICIES = ("None", "Basic256Sha256")



@dataclass(frozen=True)
class OpcUaSettings:
    """How to reach and authenticate to one OPC UA server.

    ``security_mode`` None/Sign/SignAndEncrypt with ``security_policy`` None (only with
    mode None) or Basic256Sha256. A secured connection needs the client's
    ``certificate`` (DER or PEM) and ``private_key`` (PEM) files; ``server_certificate``
    pins the server's certificate (otherwise the one the server presents in its endpoint
    description is used). ``username``/``password`` select a user-name identity instead
    of the anonymous one. ``timeout_s`` bounds every request.
    """

    endpoint: str
    security_mode: str = "None"
    security_policy: str = "None"
    certificate: str | None = None
    private_key: str | None = None
    server_certificate: str | None = None
    username: str | None = None
    password: str | None = None
    timeout_s: float = 2.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        url = urlparse(self.endpoint or "")
        if url.scheme != "opc.tcp" or not url.hostname:
            raise ValueError(f"endpoint: {self.endpoint!r} is not an opc.tcp://host[:port][/path] URL")
        try:
            _ = url.port
        except ValueError:
            raise ValueError(f"endpoint: {self.endpoint!r} has an invalid port") from None
        if self.security_mode not in SECURITY_MODES:
            raise ValueError(f"security_mode: {self.security_mode!r}; one of {', '.join(SECURITY_MODES)}")
        if self.security_policy not in SECURITY_POLICIES:
            raise ValueError(f"security_policy: {self.security_policy!r}; one of {', '.join(SECURITY_POLICIES)}")
        if self.security_mode == "None" and self.security_policy != "None":
            raise ValueError(f"security_policy: {self.security_policy!r} needs security_mode Sign or "
                             "SignAndEncrypt, not None")
        if self.security_mode != "None":
            if self.security_policy == "None":
                raise ValueError(f"security_policy: security_mode {self.security_mode!r} needs a policy "
                                 "(Basic256Sha256), not None")
            for name in ("certificate", "private_key"):
                path = getattr(self, name)
                if not path:
                    raise ValueError(f"{name}: security_mode {self.security_mode!r} needs the client's {name} file")
                if not Path(path).is_file():
                    raise ValueError(f"{name}: file not found: {path}")
        if self.server_certificate and not Path(self.server_certificate).is_file():
            raise ValueError(f"server_certificate: file not found: {self.server_certificate}")
        if self.password is not None and not self.username:
            raise ValueError("password: given without username")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s: {self.timeout_s!r}; must be > 0")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError(f"reconnect_min_s/reconnect_max_s: need 0 < min <= max, got "
                             f"{self.reconnect_min_s!r}/{self.reconnect_max_s!r}")


@dataclass(slots=True)
class ReadResult:
    """Outcome of one polled read, one entry per node in NodeSpec order.

    ``quality`` is the worst node quality. ``status`` holds the raw StatusCodes;
    ``source_ns``/``server_ns`` the timestamps (ns since epoch, None when the server sent
    none).
    """

    quality: int
    status: list[int]
    source_ns: list[int | None]
    server_ns: list[int | None]

    @property
    def t_ns(self) -> int | None:
        """The newest source timestamp of the read (None if no node had one)."""
        stamps = [t for t in self.source_ns if t is not None]
        return max(stamps) if stamps else None


@dataclass(slots=True)
class NodeSeries:
    """Notifications of one node drained from the subscription buffer, oldest first.

    ``t_ns``: source timestamp, else server timestamp, else the time the publish
    response arrived. ``values`` maps each channel of the node to its column (scaled);
    ``valid`` is False where the notification carried no usable value (Bad status or
    null); there the column holds NaN / 0 / False / "".
    """

    t_ns: np.ndarray
    status: np.ndarray
    quality: np.ndarray
    values: dict[str, np.ndarray]
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.t_ns)

    @property
    def overflow(self) -> np.ndarray:
        """Mask of the notifications flagged with the Overflow bit (values were dropped just before them)."""
        return (self.status & OVERFLOW_MASK) == OVERFLOW_BITS


@dataclass(slots=True)
class Drained:
    """Everything the subscription delivered since the previous drain.

    ``series`` per NodeSpec name. Loss accounting since the previous drain:
    ``overflows`` notifications the server flagged with the Overflow bit (each marks at
    least one value dropped from its monitored-item queue), ``dropped`` notifications
    refused because the client buffer was full, ``gaps`` notification messages missing
    from the sequence.
    """

    series: dict[str, NodeSeries]
    overflows: int = 0
    dropped: int = 0
    gaps: int = 0

    @property
    def count(self) -> int:
        """Notifications drained, over all nodes."""
        return sum(len(s) for s in self.series.values())


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """What the server granted for the subscription (its revised parameters)."""

    publishing_interval_ms: float
    sampling_interval_ms: tuple[float, ...]
    queue_size: tuple[int, ...]


@dataclass
class _Session:
    """State of one connected session (replaced on reconnect)."""

    client: Client
    generation: int
    node_ids: list[ua.NodeId]
    read_params: ua.ReadParameters
    subscription_id: int | None = None
    lost: str | None = None  # why the session is known dead
    last_seq: dict[int, int] = field(default_factory=dict)  # subscription id → last sequence number


class OpcUaClient:
    """One OPC UA server session feeding a fixed list of nodes; see the module docstring."""

    def __init__(self, settings: OpcUaSettings, nodes: list[NodeSpec], max_buffered: int = 1_000_000):
        if not nodes:
            raise ValueError("nodes: at least one NodeSpec is needed")
        names = [c for n in nodes for c in n.channel_names]
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise ValueError(f"nodes: channel names used twice: {', '.join(dup)}")
        if max_buffered < 1:
            raise ValueError("max_buffered: must be >= 1")
        self.settings = settings
        self.nodes = list(nodes)
        self.max_buffered = max_buffered
        self.backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        self.connects = 0
        #: cumulative loss counters (``Drained`` carries the per-drain share)
        self.overflows = 0
        self.dropped = 0
        self.gaps = 0
        self.subscription: SubscriptionInfo | None = None
        self._session: _Session | None = None
        self._generation = 0
        self._sub_request: tuple[float, int, float, str] | None = None
        self._closing: set[asyncio.Task] = set()
        self._kinds = [n._kind for n in self.nodes]
        self._scales = [float(n.scale) for n in self.nodes]
        self._chans = [n.channel_names for n in self.nodes]
        self._widths = [n.length for n in self.nodes]
        self._reset_buffer()
        self._drained_overflows = self._drained_dropped = self._drained_gaps = 0

    # ------------------------------------------------------------------ channels

    def channels(self) -> list[tuple[str, np.dtype]]:
        """``(channel name, numpy dtype)`` of every channel, in NodeSpec order."""
        return [c for n in self.nodes for c in n.channels()]

    def new_buffers(self, rows: int) -> dict[str, np.ndarray]:
        """Preallocated columns for :meth:`read`: one array of ``rows`` per channel.

        Missing values read as NaN/0/False/"". String columns are object arrays (a numpy
        unicode array needs its width up front); ``.astype(str)`` makes them unicode.
        """
        out: dict[str, np.ndarray] = {}
        for n, kind in zip(self.nodes, self._kinds, strict=True):
            for c in n.channel_names:
                if kind == _KIND_STR:
                    out[c] = np.full(rows, "", dtype=object)
                else:
                    out[c] = np.full(rows, _KIND_FILL[kind], dtype=_KIND_DTYPES[kind])
        return out

    # ------------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        """True while the session is up (as far as the client has noticed)."""
        s = self._session
        return s is not None and s.lost is None and s.client.uaclient.state is UaClientState.CONNECTED

    async def connect(self) -> None:
        """Open a session, resolve and check every node, re-create the subscription if one was asked for.

        Does nothing when connected. Raises :class:`OpcUaError` on failure; failures back
        off exponentially, and a call before the next attempt is due raises
        ``OpcUaError("disconnected", "... next attempt in …")`` without trying.
        """
        if self.connected:
            return
        if self._session is not None:  # died unnoticed: no read or drain saw it yet
            self._lost("connection lost", back_off=False)
        await self._settle()
        now = time.monotonic()
        if not self.backoff.due(now):
            raise OpcUaError("disconnected", f"not connected; next attempt in {self.backoff.next_try - now:.1f} s")
        try:
            session = await self._open()
        except OpcUaError:
            self.backoff.failed(time.monotonic())
            raise
        self._session = session  # before the subscription: its first notifications may come at once
        if self._sub_request is not None:
            try:
                await self._create_subscription(session, *self._sub_request)
            except OpcUaError:
                self._session = None
                await self._discard(session.client)
                self.backoff.failed(time.monotonic())
                raise
        self.backoff.succeeded()
        self.connects += 1
        log.info("OPC UA session %d to %s: %d nodes", self.connects, self.settings.endpoint, len(self.nodes))

    async def close(self) -> None:
        """Close the session (and its subscription). Buffered notifications stay drainable."""
        session, self._session = self._session, None
        if session is not None:
            await self._discard(session.client)
        await self._settle()

    async def _open(self) -> _Session:
        st = self.settings
        client = Client(st.endpoint, timeout=st.timeout_s, watchdog_intervall=max(1.0, st.timeout_s),
                        auto_reconnect=False)
        client.session_timeout = 60_000
        client.name = client.description = "rigdaq"
        try:
            endpoints = await client.connect_and_get_server_endpoints()
        except Exception as e:
            raise _classify(e, f"getting endpoints of {st.endpoint}") from None
        endpoint = self._pick_endpoint(endpoints)
        if st.security_mode != "None":
            await self._set_security(client, endpoint)
        if st.username:
            client.set_user(st.username)
            if st.password is not None:
                client.set_password(st.password)
        try:
            await client.connect()
        except Exception as e:
            with contextlib.suppress(Exception):
                client.disconnect_socket()
            raise _classify(e, f"opening a session on {st.endpoint}") from None
        try:
            node_ids = await self._resolve(client)
            await self._check_nodes(client, node_ids)
        except BaseException:
            await self._discard(client)
            raise
        params = ua.ReadParameters(
            MaxAge=0, TimestampsToReturn=ua.TimestampsToReturn.Both,
            NodesToRead=[ua.ReadValueId(NodeId=nid, AttributeId=ua.AttributeIds.Value) for nid in node_ids])
        self._generation += 1
        return _Session(client, self._generation, node_ids, params)

    def _pick_endpoint(self, endpoints: list[ua.EndpointDescription]) -> ua.EndpointDescription:
        """The endpoint matching the settings, or a clear security/auth error listing what the server offers."""
        st = self.settings
        mode = _MODES[st.security_mode]
        policy_uri = _POLICIES[st.security_policy].URI
        offered = [f"{e.SecurityMode.name.rstrip('_')}/{e.SecurityPolicyUri.rpartition('#')[2]}" for e in endpoints]
        match = [e for e in endpoints if e.SecurityMode == mode and e.SecurityPolicyUri == policy_uri]
        if not match:
            raise OpcUaError("security", f"{st.endpoint} offers no endpoint with security "
                             f"{st.security_mode}/{st.security_policy}; it offers {', '.join(offered) or 'none'}")
        endpoint = match[0]
        tokens = {t.TokenType for t in endpoint.UserIdentityTokens or []}
        if st.username and ua.UserTokenType.UserName not in tokens:
            raise OpcUaError("auth", f"{st.endpoint} does not accept user names on the "
                             f"{st.security_mode}/{st.security_policy} endpoint")
        if not st.username and ua.UserTokenType.Anonymous not in tokens:
            raise OpcUaError("auth", f"{st.endpoint} refuses anonymous sessions; set username and password")
        return endpoint

    async def _set_security(self, client: Client, endpoint: ua.EndpointDescription) -> None:
        st = self.settings
        try:
            cert = await uacrypto.load_certificate(st.certificate)
            uri = certificate_uri(cert)
            if uri:
                client.application_uri = uri  # servers check it against the certificate
            presented = endpoint.ServerCertificate or b""
            if not presented:
                raise OpcUaError("security", f"{st.endpoint} presents no server certificate")
            server_cert: str | bytes = uacrypto.der_from_x509(uacrypto.x509_from_der(presented))  # leaf of a chain
            if st.server_certificate:
                pinned = uacrypto.der_from_x509(await uacrypto.load_certificate(st.server_certificate))
                if not presented.startswith(pinned):  # the endpoint may carry a chain, leaf first
                    raise OpcUaError("security", f"{st.endpoint} presents a certificate (sha256 "
                                     f"{hashlib.sha256(presented).hexdigest()[:16]}…) other than the pinned "
                                     f"server_certificate {st.server_certificate} (sha256 "
                                     f"{hashlib.sha256(pinned).hexdigest()[:16]}…)")
                server_cert = st.server_certificate
            await client.set_security(_POLICIES[st.security_policy], st.certificate, st.private_key,
                                      server_certificate=server_cert, mode=_MODES[st.security_mode])
        except OpcUaError:
            raise
        except Exception as e:
            raise OpcUaError("security", f"loading certificate/key: {e!r}") from None

    async def _resolve(self, client: Client) -> list[ua.NodeId]:
        """NodeIds of all nodes, browse paths translated in one call."""
        node_ids: list[ua.NodeId | None] = [None] * len(self.nodes)
        paths: list[tuple[int, tuple[tuple[int, str], ...]]] = []
        namespaces: list[str] | None = None
        for k, n in enumerate(self.nodes):
            if not is_node_id(n.node):
                paths.append((k, parse_browse_path(n.node)))
                continue
            nid = ua.NodeId.from_string(n.node.strip())
            uri = getattr(nid, "NamespaceUri", None)
            ns = nid.NamespaceIndex
            if uri:  # nsu=…: the namespace by URI, looked up once per session (indexes may change)
                if namespaces is None:
                    try:
                        namespaces = await client.get_namespace_array()
                    except Exception as e:
                        raise _classify(e, "reading the namespace array") from None
                if uri not in namespaces:
                    raise OpcUaError("node", f"channel {n.name!r}: node {n.node!r}: the server has no namespace "
                                             f"{uri!r}")
                ns = namespaces.index(uri)
            node_ids[k] = ua.NodeId(nid.Identifier, ns, nid.NodeIdType)
        if paths:
            results = await self._translate(client, [p for _, p in paths])
            for (k, steps), res in zip(paths, results, strict=True):
                if not res.StatusCode.is_good() or not res.Targets:
                    raise OpcUaError("node", await self._missing_step(client, self.nodes[k], steps))
                target = res.Targets[0].TargetId  # an ExpandedNodeId: keep the plain NodeId part
                node_ids[k] = ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)
        assert all(nid is not None for nid in node_ids)
        return node_ids  # type: ignore[return-value]

    async def _translate(self, client: Client, paths: list[tuple[tuple[int, str], ...]]) -> list[ua.BrowsePathResult]:
        bpaths = [ua.BrowsePath(StartingNode=ua.NodeId(ua.ObjectIds.ObjectsFolder), RelativePath=ua.RelativePath(
            Elements=[ua.RelativePathElement(
                ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences), IsInverse=False,
                IncludeSubtypes=True, TargetName=ua.QualifiedName(name, ns)) for ns, name in steps]))
            for steps in paths]
        try:
            return await client.uaclient.translate_browsepaths_to_nodeids(bpaths)
        except Exception as e:
            raise _classify(e, "translating browse paths") from None

    async def _missing_step(self, client: Client, spec: NodeSpec, steps: tuple[tuple[int, str], ...]) -> str:
        """Which step of a browse path does not exist (asks for each prefix, on the error path only)."""
        prefixes = [steps[: i + 1] for i in range(len(steps))]
        results = await self._translate(client, prefixes)
        for i, res in enumerate(results):
            if not res.StatusCode.is_good() or not res.Targets:
                ns, name = steps[i]
                parent = format_browse_path(steps[:i])
                return (f"channel {spec.name!r}: browse path {spec.node!r}: no node '{ns}:{name}' under "
                        f"{parent} ({ua.StatusCode(res.StatusCode.value).name})")
        return f"channel {spec.name!r}: browse path {spec.node!r} does not resolve"

    async def _check_nodes(self, client: Client, node_ids: list[ua.NodeId]) -> None:
        """Each node must exist, be a Variable of the declared type and have the declared shape."""
        attrs = (ua.AttributeIds.NodeClass, ua.AttributeIds.DataType, ua.AttributeIds.ValueRank,
                 ua.AttributeIds.ArrayDimensions, ua.AttributeIds.Value)
        params = ua.ReadParameters(TimestampsToReturn=ua.TimestampsToReturn.Neither, NodesToRead=[
            ua.ReadValueId(NodeId=nid, AttributeId=a) for nid in node_ids for a in attrs])
        try:
            dvs = await client.uaclient.read(params)
        except Exception as e:
            raise _classify(e, "reading node attributes") from None
        for k, (spec, nid) in enumerate(zip(self.nodes, node_ids, strict=True)):
            ncls, dtype, rank, dims, value = dvs[5 * k : 5 * k + 5]
            where = f"channel {spec.name!r}: node {nid.to_string()}" + (
                "" if is_node_id(spec.node) else f" (browse path {spec.node!r})")
            if not ncls.StatusCode.is_good():
                raise OpcUaError("node", f"{where}: {ua.StatusCode(ncls.StatusCode.value).name}")
            if ncls.Value.Value != ua.NodeClass.Variable:
                raise OpcUaError("node", f"{where} is a {ua.NodeClass(ncls.Value.Value).name}, not a Variable")
            want = spec.variant_type
            declared = dtype.Value.Value if dtype.StatusCode.is_good() else None
            current = value.Value.VariantType if value.Value is not None and value.Value.Value is not None else None
            builtin = (isinstance(declared, ua.NodeId) and declared.NamespaceIndex == 0
                       and isinstance(declared.Identifier, int) and declared.Identifier <= 25)
            if builtin and declared.Identifier != want.value:
                # a subtype (Duration of Double …) is encoded as its base type: accept it by the value
                got = ua.VariantType(declared.Identifier).name if declared.Identifier in _VT_VALUES else declared
                raise OpcUaError("node", f"{where} has DataType {got}, the NodeSpec says {spec.type}")
            if not builtin and current is not None and current != want:
                raise OpcUaError("node", f"{where} holds {current.name} values, the NodeSpec says {spec.type}")
            vrank = rank.Value.Value if rank.StatusCode.is_good() else -2
            adims = dims.Value.Value if dims.StatusCode.is_good() else None
            is_arr = value.Value is not None and value.Value.is_array and value.Value.Value is not None
            cur_len = len(value.Value.Value) if is_arr else None
            if spec.length == 0:
                if (vrank is not None and vrank >= 0) or is_arr:
                    raise OpcUaError("node", f"{where} is an array (ValueRank {vrank}), the NodeSpec has no length")
            else:
                if vrank == -1 or (vrank is not None and vrank > 1):
                    shape = "a scalar" if vrank == -1 else f"{vrank}-dimensional"
                    raise OpcUaError("node", f"{where} is {shape} (ValueRank {vrank}), the NodeSpec says an "
                                             f"array of {spec.length}")
                if adims and adims[0] and adims[0] != spec.length:
                    raise OpcUaError("node", f"{where} has ArrayDimensions {list(adims)}, the NodeSpec says "
                                             f"length {spec.length}")
                if cur_len is not None and cur_len != spec.length:
                    raise OpcUaError("node", f"{where} holds {cur_len} elements, the NodeSpec says {spec.length}")
                if value.Value is not None and value.Value.Value is not None and not is_arr:
                    raise OpcUaError("node", f"{where} holds a scalar, the NodeSpec says an array of {spec.length}")

    # ------------------------------------------------------------------ losing a session

    def _lost(self, why: str, back_off: bool = True) -> None:
        """Forget the current session (closing it in the background); the next connect starts afresh."""
        session, self._session = self._session, None
        if session is None:
            return
        log.warning("OPC UA session to %s lost: %s", self.settings.endpoint, why)
        if back_off:
            self.backoff.failed(time.monotonic())
        task = asyncio.get_running_loop().create_task(self._discard(session.client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _settle(self) -> None:
        """Wait for background session closes to finish."""
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    async def _discard(self, client: Client) -> None:
        try:
            async with asyncio.timeout(self.settings.timeout_s + 1.0):
                await client.disconnect()
        except Exception as e:  # the server may already be gone: nothing more to do
            log.debug("closing OPC UA client: %r", e)
            with contextlib.suppress(Exception):
                client.disconnect_socket()

    def _require(self) -> _Session:
        s = self._session
        if s is None:
            raise OpcUaError("disconnected", f"not connected to {self.settings.endpoint}")
        if s.lost is not None or s.client.uaclient.state is not UaClientState.CONNECTED:
            why = s.lost or f"connection {s.client.uaclient.state.value}"
            self._lost(why)
            raise OpcUaError("disconnected", why)
        return s

    def _failed(self, e: BaseException, what: str) -> OpcUaError:
        err = e if isinstance(e, OpcUaError) else _classify(e, what)
        if err.kind == "disconnected":
            self._lost(err.detail)
        return err

    # ------------------------------------------------------------------ polling

    async def read(self, out: dict[str, np.ndarray], i: int,
                   valid: dict[str, np.ndarray] | None = None) -> ReadResult:
        """One Read of every node into row ``i`` of ``out`` (see :meth:`new_buffers`).

        Values are scaled; a node whose value is unusable (Bad status, null, wrong
        array length) leaves NaN/0/False/"" and, when ``valid`` masks are given, False
        there. Raises :class:`OpcUaError` when the read as a whole fails (a lost
        connection, once, as ``disconnected``; call :meth:`connect` afterwards).
        """
        s = self._require()
        try:
            dvs = await s.client.uaclient.read(s.read_params)
        except Exception as e:
            raise self._failed(e, "reading values") from None
        if len(dvs) != len(self.nodes):
            raise OpcUaError("protocol", f"asked for {len(self.nodes)} values, got {len(dvs)}")
        worst = QUALITY_GOOD
        status: list[int] = []
        source: list[int | None] = []
        server: list[int | None] = []
        for k, dv in enumerate(dvs):
            code = dv.StatusCode.value if dv.StatusCode is not None else 0
            q = status_quality(code)
            v = dv.Value.Value if dv.Value is not None else None
            kind, scale, chans = self._kinds[k], self._scales[k], self._chans[k]
            ok = v is not None and q != QUALITY_BAD
            if ok and self._widths[k]:
                ok = isinstance(v, list | tuple) and len(v) == len(chans)
                if ok:
                    for c, x in zip(chans, v, strict=True):
                        out[c][i] = x * scale if kind == _KIND_FLOAT else x
            elif ok:
                ok = not isinstance(v, list | tuple)
                if ok:
                    out[chans[0]][i] = v * scale if kind == _KIND_FLOAT else v
            if not ok:
                fill = _KIND_FILL[kind]
                for c in chans:
                    out[c][i] = fill
                q = QUALITY_BAD
            if valid is not None:
                for c in chans:
                    valid[c][i] = ok
            worst = max(worst, q)
            status.append(code)
            source.append(datetime_ns(dv.SourceTimestamp, dv.SourcePicoseconds))
            server.append(datetime_ns(dv.ServerTimestamp, dv.ServerPicoseconds))
        return ReadResult(worst, status, source, server)

    # ------------------------------------------------------------------ subscription

    async def subscribe(self, sampling_interval_ms: float, queue_size: int,
                        publishing_interval_ms: float | None = None, trigger: str = "StatusValue") -> None:
        """Monitor every node: data changes sampled every ``sampling_interval_ms``.

        Each monitored item queues up to ``queue_size`` values on the server
        (discard-oldest). ``publishing_interval_ms`` defaults to
        ``sampling_interval_ms * max(1, queue_size // 2)``, so the queue holds two
        publishing intervals' worth of samples. ``trigger`` StatusValue reports changes
        of value or status; StatusValueTimestamp also a new source timestamp with an
        unchanged value. The request is remembered: :meth:`connect` re-creates it on
        every new session. Not connected, it only takes effect at the next connect.
        """
        if not sampling_interval_ms >= 0:
            raise ValueError(f"sampling_interval_ms: {sampling_interval_ms!r}; must be >= 0")
        if queue_size < 1:
            raise ValueError(f"queue_size: {queue_size!r}; must be >= 1")
        if trigger not in ("Status", "StatusValue", "StatusValueTimestamp"):
            raise ValueError(f"trigger: {trigger!r}; Status, StatusValue or StatusValueTimestamp")
        if publishing_interval_ms is None:
            publishing_interval_ms = max(1.0, sampling_interval_ms) * max(1, queue_size // 2)
        if not publishing_interval_ms > 0:
            raise ValueError(f"publishing_interval_ms: {publishing_interval_ms!r}; must be > 0")
        if self._session is not None and self._session.subscription_id is not None:
            await self.unsubscribe()
        self._sub_request = (float(sampling_interval_ms), int(queue_size), float(publishing_interval_ms), trigger)
        if self._session is not None:
            s = self._require()
            try:
                await self._create_subscription(s, *self._sub_request)
            except OpcUaError as e:
                raise self._failed(e, "creating the subscription") from None

    async def unsubscribe(self) -> None:
        """Delete the subscription (buffered notifications stay drainable)."""
        self._sub_request = None
        s = self._session
        if s is None or s.subscription_id is None:
            return
        sid, s.subscription_id = s.subscription_id, None
        try:
            await s.client.uaclient.delete_subscriptions([sid])
        except Exception as e:
            raise self._failed(e, "deleting the subscription") from None

    async def _create_subscription(self, s: _Session, sampling_ms: float, queue_size: int, publishing_ms: float,
                                   trigger: str) -> None:
        keepalive = max(1, math.ceil(2000.0 / publishing_ms))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing_ms, RequestedLifetimeCount=10 * keepalive,
            RequestedMaxKeepAliveCount=keepalive, MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0)
        flt = None
        if trigger != "StatusValue":
            flt = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger[trigger])
        try:
            res = await s.client.uaclient.create_subscription(
                params, functools.partial(self._on_publish, s.generation))
            s.subscription_id = res.SubscriptionId
            items = [ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(NodeId=nid, AttributeId=ua.AttributeIds.Value),
                MonitoringMode=ua.MonitoringMode.Reporting,
                RequestedParameters=ua.MonitoringParameters(
                    ClientHandle=k, SamplingInterval=sampling_ms, Filter=flt, QueueSize=queue_size,
                    DiscardOldest=True))
                for k, nid in enumerate(s.node_ids)]
            results = await s.client.uaclient.create_monitored_items(ua.CreateMonitoredItemsParameters(
                SubscriptionId=res.SubscriptionId, TimestampsToReturn=ua.TimestampsToReturn.Both,
                ItemsToCreate=items))
        except Exception as e:
            raise _classify(e, "creating the subscription") from None
        for spec, r in zip(self.nodes, results, strict=True):
            if not r.StatusCode.is_good():
                raise OpcUaError("node", f"channel {spec.name!r}: cannot monitor {spec.node!r}: "
                                         f"{ua.StatusCode(r.StatusCode.value).name}")
        self.subscription = SubscriptionInfo(
            float(res.RevisedPublishingInterval),
            tuple(float(r.RevisedSamplingInterval) for r in results),
            tuple(int(r.RevisedQueueSize) for r in results))
        short = [spec.name for spec, r in zip(self.nodes, results, strict=True)
                 if r.RevisedQueueSize * max(r.RevisedSamplingInterval, 1e-3) < res.RevisedPublishingInterval]
        if short:
            log.warning("OPC UA queue shorter than a publishing interval for %s: samples may be dropped "
                        "(counted as overflows)", ", ".join(short))

    def _reset_buffer(self) -> None:
        n = len(self.nodes)
        self._buf_t: list[list[int]] = [[] for _ in range(n)]
        self._buf_v: list[list[Any]] = [[] for _ in range(n)]
        self._buf_s: list[list[int]] = [[] for _ in range(n)]
        self._buffered = 0

    def _on_publish(self, generation: int, result: ua.PublishResult) -> None:
        """Publish callback (from asyncua's publish loop): unpack the notifications into the per-node lists."""
        s = self._session
        if s is None or s.generation != generation:
            return  # a session already given up
        msg = result.NotificationMessage
        data = msg.NotificationData
        if not data:
            return  # keep-alive
        seq, last = msg.SequenceNumber, s.last_seq.get(result.SubscriptionId)
        if last is not None and seq > last + 1:
            self.gaps += seq - last - 1
        s.last_seq[result.SubscriptionId] = seq
        recv_ns = time.time_ns()
        buf_t, buf_v, buf_s = self._buf_t, self._buf_v, self._buf_s
        for notif in data:
            if type(notif) is ua.DataChangeNotification:
                for item in notif.MonitoredItems:
                    if self._buffered >= self.max_buffered:
                        self.dropped += 1
                        continue
                    k = item.ClientHandle
                    dv = item.Value
                    code = dv.StatusCode.value if dv.StatusCode is not None else 0
                    if code & OVERFLOW_MASK == OVERFLOW_BITS:
                        self.overflows += 1
                    t = datetime_ns(dv.SourceTimestamp, dv.SourcePicoseconds)
                    if t is None:
                        t = datetime_ns(dv.ServerTimestamp, dv.ServerPicoseconds) or recv_ns
                    buf_t[k].append(t)
                    buf_v[k].append(dv.Value.Value if dv.Value is not None else None)
                    buf_s[k].append(code)
                    self._buffered += 1
            elif isinstance(notif, ua.StatusChangeNotification):
                code = notif.Status.value if notif.Status is not None else 0
                if status_quality(code) == QUALITY_BAD:
                    s.lost = f"subscription ended: {ua.StatusCode(code).name}"

    def drain(self) -> Drained:
        """Everything buffered since the previous drain, as columns per node (see :class:`Drained`).

        When the session has been lost this raises ``OpcUaError("disconnected")`` once;
        what was buffered before the loss is kept and comes out of a later drain.
        """
        s = self._session
        if s is not None and (s.lost is not None or s.client.uaclient.state is not UaClientState.CONNECTED):
            self._require()  # raises
        series: dict[str, NodeSeries] = {}
        for k, spec in enumerate(self.nodes):
            series[spec.name] = self._columns(k, self._buf_t[k], self._buf_v[k], self._buf_s[k])
        self._reset_buffer()
        out = Drained(series, self.overflows - self._drained_overflows, self.dropped - self._drained_dropped,
                      self.gaps - self._drained_gaps)
        self._drained_overflows, self._drained_dropped, self._drained_gaps = self.overflows, self.dropped, self.gaps
        return out

    def _columns(self, k: int, ts: list[int], vals: list[Any], codes: list[int]) -> NodeSeries:
        kind, scale, chans = self._kinds[k], self._scales[k], self._chans[k]
        n = len(ts)
        t_ns = np.array(ts, dtype=np.int64)
        status = np.array(codes, dtype=np.uint32)
        quality = np.minimum(status >> 30, 2).astype(np.uint8)  # 0 Good, 1 Uncertain, 2 Bad (and 3)
        valid = quality != QUALITY_BAD
        dt = _KIND_DTYPES[kind]
        width = self.nodes[k].length
        fast = bool(valid.all()) and (n == 0 or None not in vals)
        cols = None
        if fast:
            try:
                arr = np.array(vals, dtype=dt) if n else np.zeros((0, width) if width else 0, dtype=dt)
                if arr.shape == ((n, width) if width else (n,)):
                    cols = arr
            except (ValueError, TypeError):
                cols = None
        if cols is None:  # some values missing or malformed: row by row
            fill = _KIND_FILL[kind]
            cols = np.full((n, width) if width else n, fill, dtype=object if kind == _KIND_STR else dt)
            for j, v in enumerate(vals):
                if not valid[j] or v is None:
                    valid[j] = False
                elif width:
                    if isinstance(v, list | tuple) and len(v) == width:
                        cols[j] = v
                    else:
                        valid[j] = False
                elif isinstance(v, list | tuple):
                    valid[j] = False
                else:
                    cols[j] = v
            if kind == _KIND_STR:
                cols = cols.astype(str)
            quality[~valid] = QUALITY_BAD
        if kind == _KIND_FLOAT and scale != 1.0:
            cols = cols * scale
        values = {c: np.ascontiguousarray(cols[:, j]) for j, c in enumerate(chans)} if width else {chans[0]: cols}
        return NodeSeries(t_ns, status, quality, values, valid)


_VT_VALUES = {vt.value for vt in ua.VariantType}
_MODES = {"None": ua.MessageSecurityMode.None_, "Sign": ua.MessageSecurityMode.Sign,
          "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}
_POLICIES = {"None": security_policies.SecurityPolicyNone,
             "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256}
