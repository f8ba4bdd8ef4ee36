"""A simulated device's OPC UA face: an asyncua server whose variables a simulator sets.

The server exposes one object per simulated device, ``Objects/<ns>:<name>``, with one
variable per channel, ``Objects/<ns>:<name>/<ns>:<channel>``, NodeId
``ns=<ns>;s=<name>.<channel>`` (``ns`` is the index of ``namespace_uri``). Variables
carry their declared DataType, ValueRank and ArrayDimensions, so a client's type and
shape checks see what a PLC would show. They are read-only for clients.

Values go in through the server's own address space (``iserver.aspace``), with the
source timestamp and StatusCode the simulator gives, so reads and subscriptions see
exactly those. :meth:`OpcUaSimServer.set` is the coroutine; :meth:`~OpcUaSimServer.set_nowait`
does the same from synchronous code (a simulator's publish hook): asyncua's write
path is a coroutine, but it does not suspend while every subscription publishes on a
timer (publishing interval > 0, which is what clients ask for), so ``set_nowait``
steps it to completion on the spot; should it ever suspend, the rest runs as a task.

Two things asyncua's server leaves out are added here, because the client driver is
tested against them:

* Queue overflow. When a monitored item's queue (size > 1) is full, asyncua drops the
  oldest entry silently. The spec (Part 4, 5.12.1.5) wants the Overflow bit (InfoType
  DataValue, ``0x0480``) set on the value that now heads the queue. Each subscription's
  enqueue is wrapped to do that; ``discarded`` counts the values dropped. With queue
  size 1 nothing is flagged: that queue holds the newest value by definition.
* Restarts. ``stop()`` then ``start()`` brings the server back on the same port with the
  values (and their status and timestamps) it had, like a PLC that reboots with a
  retained image. Sessions and subscriptions do not survive, as on a real server.

This wraps a few asyncua internals (``aspace``, the subscription service's
``create_subscription``, an internal subscription's queue); they are pinned by the
``asyncua<3`` requirement.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from asyncua import Server, ua
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole

from drivers.opcua.nodes import OVERFLOW_BITS, certificate_uri, ns_datetime

log = logging.getLogger(__name__)

SIM_TYPES = ("Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float",
             "Double", "String")
POLICIES = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}
_INT_RANGE = {t: np.iinfo(np.dtype(t.lower())) for t in ("Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64")}
_INT_RANGE["SByte"] = np.iinfo(np.int8)
_INT_RANGE["Byte"] = np.iinfo(np.uint8)


class _PasswordUsers:
    """asyncua user manager: the given user names with their passwords, nobody else."""

    def __init__(self, users: Mapping[str, str]):
        self.users = dict(users)

    def get_user(self, iserver, username=None, password=None, certificate=None) -> User | None:
        expected = self.users.get(username or "")
        if expected is not None and hmac.compare_digest(expected.encode(), (password or "").encode()):
            return User(role=UserRole.User, name=username)
        return None


class _Resume:
    """Awaitable that finishes a coroutine which already yielded ``pending`` to its (synchronous) driver."""

    def __init__(self, coro, pending):
        self._coro, self._pending = coro, pending

    def __await__(self):
        coro, pending = self._coro, self._pending
        while True:
            try:
                yield pending
            except BaseException as e:  # the task was cancelled: pass it on
                try:
                    pending = coro.throw(e)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(None)
                except StopIteration as stop:
                    return stop.value


async def _await(awaitable):
    return await awaitable


def run_now(coro, tasks: set[asyncio.Task] | None = None):
    """Run a coroutine synchronously as far as it goes; returns its result if it finished.

    If it suspends, the rest runs as a task of the running loop (added to ``tasks`` if
    given) and None is returned.
    """
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        return stop.value
    task = asyncio.get_running_loop().create_task(_await(_Resume(coro, pending)))
    if tasks is not None:
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    return None


class OpcUaSimServer:
    """An OPC UA server for one simulated device; see the module docstring.

    ``channels`` maps channel name → type name (one of :data:`SIM_TYPES`) or
    ``(type name, length)`` for an array. ``certificate``/``private_key`` (files) enable
    the secured endpoints; ``policies`` chooses what is offered among ``"None"``,
    ``"Basic256Sha256_Sign"`` and ``"Basic256Sha256_SignAndEncrypt"`` (default: None
    only without a certificate, all three with one). ``users`` (name → password) turns
    anonymous sessions off and admits only those users. ``port`` 0 picks a free port
    at the first start; restarts keep it.
    """

    def __init__(self, name: str, channels: Mapping[str, str | tuple[str, int]], host: str = "127.0.0.1",
                 port: int = 0, namespace_uri: str = "urn:rigdaq:sim", certificate: str | Path | None = None,
                 private_key: str | Path | None = None, policies: Sequence[str] | None = None,
                 users: Mapping[str, str] | None = None, path: str = "/rigdaq"):
        if not channels:
            raise ValueError("channels: at least one is needed")
        self.name = name
        self.types: dict[str, tuple[str, int]] = {}
        for ch, spec in channels.items():
            typ, length = (spec, 0) if isinstance(spec, str) else (spec[0], int(spec[1]))
            if typ not in SIM_TYPES:
                raise ValueError(f"channels: {ch!r} has type {typ!r}; known: {', '.join(SIM_TYPES)}")
            if length < 0:
                raise ValueError(f"channels: {ch!r} has length {length}")
            self.types[ch] = (typ, length)
        self.host, self.port, self.path = host, port, path
        self.namespace_uri = namespace_uri
        self.certificate = str(certificate) if certificate else None
        self.private_key = str(private_key) if private_key else None
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        if policies is None:
            policies = list(POLICIES) if self.certificate else ["None"]
        unknown = [p for p in policies if p not in POLICIES]
        if unknown or not policies:
            raise ValueError(f"policies: {unknown or policies!r}; choose from {', '.join(POLICIES)}")
        if self.certificate is None and any(p != "None" for p in policies):
            raise ValueError("policies: secured endpoints need certificate and private_key")
        self.policies = list(policies)
        self.users = dict(users) if users else None
        self.ns = 0
        #: values dropped from monitored-item queues (each drop flags the next value with Overflow)
        self.discarded = 0
        self._server: Server | None = None
        self._node_ids = {ch: None for ch in self.types}
        self._image: dict[str, ua.DataValue] = {}  # last value of each channel, kept across restarts
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """True while serving."""
        return self._server is not None

    @property
    def endpoint(self) -> str:
        """The ``opc.tcp://`` URL clients connect to."""
        return f"opc.tcp://{self.host}:{self.port}{self.path}"

    def node_id(self, channel: str) -> str:
        """The NodeId string of a channel's variable (valid once started: it needs the namespace index)."""
        return f"ns={self.ns};s={self.name}.{channel}"

    def browse_path(self, channel: str) -> str:
        """The browse path of a channel's variable below the Objects folder."""
        return f"Objects/{self.ns}:{self.name}/{self.ns}:{channel}"

    async def start(self) -> None:
        """Build the address space and listen; returns once clients can connect."""
        if self._server is not None:
            return
        server = Server(user_manager=_PasswordUsers(self.users) if self.users else None)
        server.disable_clock()  # its 1 s CurrentTime loop would hold up every stop() by up to a second
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"rigdaq simulator {self.name}")
        server.set_security_policy([POLICIES[p] for p in self.policies])
        server.set_identity_tokens([ua.UserNameIdentityToken] if self.users else [ua.AnonymousIdentityToken])
        if self.certificate:
            cert = await uacrypto.load_certificate(self.certificate)
            uri = certificate_uri(cert)
            if uri:
                await server.set_application_uri(uri)
            await server.load_certificate(self.certificate)
            await server.load_private_key(self.private_key)
        self.ns = await server.register_namespace(self.namespace_uri)
        await self._build(server)
        self._hook_subscriptions(server)
        try:
            await server.start()
        except OSError as e:
            raise OSError(f"OPC UA simulator {self.name}: cannot listen on {self.host}:{self.port} ({e})") from None
        if server.bserver is not None and self.port == 0:
            self.port = server.bserver.port
        self._server = server
        log.info("OPC UA simulator %s on %s", self.name, self.endpoint)

    async def stop(self) -> None:
        """Close every session and the listener. The values are kept for the next start."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _build(self, server: Server) -> None:
        ns = self.ns
        obj = await server.nodes.objects.add_object(ua.NodeId(self.name, ns), ua.QualifiedName(self.name, ns))
        aspace = server.iserver.aspace
        for ch, (typ, length) in self.types.items():
            vt = ua.VariantType[typ]
            zero = {"Boolean": False, "String": ""}.get(typ, 0.0 if typ in ("Float", "Double") else 0)
            init = ua.Variant([zero] * length if length else zero, vt)
            nid = ua.NodeId(f"{self.name}.{ch}", ns)
            var = await obj.add_variable(nid, ua.QualifiedName(ch, ns), init, varianttype=vt,
                                         datatype=ua.NodeId(vt.value))
            if length:
                await var.write_value_rank(ua.ValueRank.OneDimension)
                await var.write_array_dimensions([length])
            self._node_ids[ch] = nid
            kept = self._image.get(ch)
            if kept is not None:
                await aspace.write_attribute_value(nid, ua.AttributeIds.Value, kept)

    def _hook_subscriptions(self, server: Server) -> None:
        """Flag queue overflows as the spec asks (asyncua drops the oldest value silently)."""
        svc = server.iserver.subscription_service
        create = svc.create_subscription

        async def create_subscription(*args, **kwargs):
            result = await create(*args, **kwargs)
            isub = svc.subscriptions.get(result.SubscriptionId)
            if isub is not None:
                isub.enqueue_datachange_event = functools.partial(
                    self._enqueue_flagging_overflow, isub, isub.enqueue_datachange_event)
            return result

        svc.create_subscription = create_subscription

    async def _enqueue_flagging_overflow(self, isub, enqueue, mid: int, notification, maxsize: int) -> None:
        queue = isub._triggered_datachanges.get(mid)
        full = queue is not None and maxsize > 1 and len(queue) >= maxsize
        await enqueue(mid, notification, maxsize)  # drops the oldest when full
        if full:
            self.discarded += 1
            queue = isub._triggered_datachanges.get(mid)
            if queue:
                head = queue[0]
                code = head.Value.StatusCode.value if head.Value.StatusCode is not None else 0
                head.Value = dataclasses.replace(head.Value, StatusCode=ua.StatusCode(code | OVERFLOW_BITS))

    # ------------------------------------------------------------------ values

    def _datavalues(self, values: Mapping[str, Any], source_ns: int | None,
                    status: Mapping[str, int] | None) -> list[tuple[str, ua.DataValue]]:
        now = datetime.now(UTC)
        src = ns_datetime(source_ns) if source_ns is not None else now
        status = status or {}
        out = []
        for ch in dict.fromkeys([*values, *status]):
            if ch not in self.types:
                raise KeyError(f"{self.name} has no channel {ch!r}")
            typ, length = self.types[ch]
            vt = ua.VariantType[typ]
            code = int(status.get(ch, 0))
            v = values.get(ch)
            variant = ua.Variant(None, ua.VariantType.Null) if v is None else ua.Variant(
                _coerce(ch, typ, length, v), vt)
            out.append((ch, ua.DataValue(Value=variant, StatusCode=ua.StatusCode(code), SourceTimestamp=src,
                                         ServerTimestamp=now)))
        return out

    async def set(self, values: Mapping[str, Any], source_ns: int | None = None,
                  status: Mapping[str, int] | None = None) -> None:
        """Write channel values (source time ``source_ns``, default now; StatusCode per channel, default Good).

        A channel named only in ``status`` gets a null value with that status (the
        server takes a null only with a Bad status; with a Bad status it stores null
        whatever the value). Arrays take any sequence of the declared length.
        """
        server = self._require()
        for ch, dv in self._datavalues(values, source_ns, status):
            self._check(ch, await server.iserver.aspace.write_attribute_value(
                self._node_ids[ch], ua.AttributeIds.Value, dv))
            self._image[ch] = dv

    def set_nowait(self, values: Mapping[str, Any], source_ns: int | None = None,
                   status: Mapping[str, int] | None = None) -> None:
        """:meth:`set` for synchronous callers (call it from inside the running event loop).

        The values are in the address space, and queued for subscribers, when this
        returns (see the module docstring for why that holds).
        """
        server = self._require()
        aspace = server.iserver.aspace
        for ch, dv in self._datavalues(values, source_ns, status):
            result = run_now(aspace.write_attribute_value(self._node_ids[ch], ua.AttributeIds.Value, dv), self._tasks)
            if result is not None:
                self._check(ch, result)
            self._image[ch] = dv

    def value(self, channel: str) -> ua.DataValue | None:
        """The DataValue a channel currently holds (None before the first start)."""
        if self._server is None:
            return self._image.get(channel)
        return self._server.iserver.aspace.read_attribute_value(self._node_ids[channel], ua.AttributeIds.Value)

    def _require(self) -> Server:
        if self._server is None:
            raise RuntimeError(f"OPC UA simulator {self.name} is not running")
        return self._server

    def _check(self, ch: str, code: ua.StatusCode) -> None:
        if not code.is_good():
            raise ValueError(f"{self.name}.{ch}: the server refused the value ({code.name})")


def _coerce(ch: str, typ: str, length: int, v: Any) -> Any:
    """A Python value of the channel's type (numpy scalars and arrays included)."""
    if length:
        items = np.asarray(v).tolist() if not isinstance(v, list | tuple) else list(v)
        if not isinstance(items, list) or len(items) != length:
            raise ValueError(f"{ch}: needs {length} elements, got {v!r}")
        return [_coerce_one(ch, typ, x) for x in items]
    return _coerce_one(ch, typ, v)


def _coerce_one(ch: str, typ: str, v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if typ == "Boolean":
        return bool(v)
    if typ == "String":
        return str(v)
    if typ in ("Float", "Double"):
        return float(v)
    iv = int(v)
    if iv != v:
        raise ValueError(f"{ch}: {v!r} is not an integer")
    info = _INT_RANGE[typ]
    if not info.min <= iv <= info.max:
        raise ValueError(f"{ch}: {iv} is out of range for {typ}")
    return iv
