"""One MQTT connection that comes back by itself: what the publisher, Sparkplug and the subscriber share.

:func:`keep_connected` runs a *session* (connect, work, until the connection breaks)
again and again with a capped exponential backoff, and keeps a :class:`LinkStatus` for
``/api/health`` and ``/metrics``. A session notices a broken connection even while it
has nothing to send: :func:`run_session` runs its workers next to a reader of the
client's messages, which ends as soon as the connection does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiomqtt

log = logging.getLogger(__name__)

#: seconds a publish or subscribe may wait for the broker before the connection counts as broken
BROKER_TIMEOUT_S = 10.0
#: MQTT keepalive: a broker that stops answering is noticed within about 1.5 × this
KEEPALIVE_S = 15


@dataclass
class LinkStatus:
    """One connection's state and counters."""

    name: str
    connected: bool = False
    connects: int = 0
    failures: int = 0  # attempts that failed and connections that broke
    last_error: str = ""
    last_connect_ns: int = 0

    def as_dict(self) -> dict:
        """For ``/api/health``."""
        return {"connected": self.connected, "connects": self.connects, "failures": self.failures,
                "last_error": self.last_error or None, "last_connect_ns": self.last_connect_ns or None}


def make_client(settings, *, identifier: str, will: aiomqtt.Will | None = None) -> aiomqtt.Client:
    """An MQTT 3.1.1 client with a clean session for ``settings`` (:class:`daq.config.MqttSettings`)."""
    return aiomqtt.Client(settings.host, settings.port, username=settings.username, password=settings.password,
                          identifier=identifier, will=will, clean_session=True, keepalive=KEEPALIVE_S,
                          timeout=BROKER_TIMEOUT_S)


async def run_session(client: aiomqtt.Client, *workers: Awaitable[None],
                      on_message: Callable[[aiomqtt.Message], None] | None = None) -> None:
    """Run ``workers`` until the first returns or the connection breaks (then raise MqttError).

    A worker that returns ends the session cleanly (a stop); one that raises ends it
    with that error.
    """

    async def read() -> None:
        async for message in client.messages:  # raises MqttError when the connection ends
            if on_message is not None:
                try:
                    on_message(message)
                except Exception:
                    log.exception("mqtt: cannot handle a message on %s", message.topic)
        raise aiomqtt.MqttError("the message stream ended")

    tasks = [asyncio.ensure_future(w) for w in workers]
    reader = asyncio.ensure_future(read())
    try:
        done, _ = await asyncio.wait([*tasks, reader], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in [*tasks, reader]:
            t.cancel()
        for t in [*tasks, reader]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
    for t in done:  # a worker's or the reader's error ends the session with it
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()


async def keep_connected(status: LinkStatus, session: Callable[[], Awaitable[None]], *,
                         stopping: Callable[[], bool] = lambda: False,
                         min_backoff_s: float = 0.1, max_backoff_s: float = 5.0) -> None:
    """Run ``session()`` forever, reconnecting with backoff; return once it ends while ``stopping()``.

    ``session`` sets ``status.connected`` when its connection is up; the backoff starts
    afresh after every connection that was up.
    """
    delay = min_backoff_s
    said = ""
    while True:
        try:
            await session()
        except aiomqtt.MqttError as e:
            status.failures += 1
            status.last_error = str(e) or type(e).__name__
            if status.last_error != said:  # once per kind of trouble, not per retry
                log.warning("mqtt %s: %s; retrying", status.name, status.last_error)
                said = status.last_error
        finally:
            was_up = status.connected
            status.connected = False
        if stopping():
            return
        if was_up:
            delay = min_backoff_s
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff_s)


def connected(status: LinkStatus) -> None:
    """Mark ``status`` connected (call it right after the client is in)."""
    status.connected = True
    status.connects += 1
    status.last_connect_ns = time.time_ns()
    log.info("mqtt %s: connected", status.name)
