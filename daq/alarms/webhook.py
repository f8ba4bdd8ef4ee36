"""The optional alarm webhook: a JSON POST for each new alarm of at least a priority.

Alarms wait in a bounded queue and are sent by a task of their own, one at a time, so a
slow or dead endpoint never delays the alarm stage, the bus or acquisition. A failed POST
(a connection error, a timeout or a non-2xx answer) is retried after 0.5 s, 1 s, 2 s …
(at most 30 s) up to ``retries`` times; then that alarm is given up. Every alarm that
could not be sent — the queue was full, or the retries ran out — is counted in ``dropped``
(``/metrics``: ``rigdaq_alarm_webhook_dropped``).

The body::

    {"event": "alarm_raised", "service": "<service name>", "raised_at": "2026-11-28T21:00:00.123456Z",
     "alarm": {"uid": …, "rig": …, "source": …, "key": …, "priority": …, "message": …,
               "state": "active_unacked", "raised_ns": …}}
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import httpx

from daq.alarms.model import RANK, Alarm

log = logging.getLogger(__name__)


def payload(alarm: Alarm, service: str) -> dict:
    """The JSON body the webhook gets for ``alarm``."""
    raised = datetime.fromtimestamp(alarm.raised_ns // 1000 / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"event": "alarm_raised", "service": service, "raised_at": raised,
            "alarm": {k: getattr(alarm, k) for k in ("uid", "rig", "source", "key", "priority", "message",
                                                     "state", "raised_ns")}}


class WebhookNotifier:
    """POSTs new alarms to ``url`` from its own task; never blocks the caller."""

    def __init__(self, url: str, service: str = "rigdaq", min_priority: str = "high", timeout_s: float = 5.0,
                 queue_max: int = 1000, retries: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 30.0):
        self.url = url
        self.service = service
        self.min_rank = RANK[min_priority]
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.queue: asyncio.Queue[dict] = asyncio.Queue(queue_max)
        self.sent = 0          # alarms the endpoint took
        self.attempts = 0      # POSTs made, retries included
        self.retried = 0       # POSTs that failed and were tried again
        self.dropped = {"queue_full": 0, "gave_up": 0}
        self.last_error = ""

    def wants(self, alarm: Alarm) -> bool:
        """Whether ``alarm`` is urgent enough to be sent."""
        return RANK.get(alarm.priority, 0) >= self.min_rank

    def notify(self, alarm: Alarm) -> bool:
        """Queue ``alarm`` for sending (if urgent enough); False if it was dropped: the queue is full."""
        if not self.wants(alarm):
            return True
        try:
            self.queue.put_nowait(payload(alarm, self.service))
        except asyncio.QueueFull:
            self.dropped["queue_full"] += 1
            log.error("alarm webhook: queue full (%d waiting), alarm %s not sent", self.queue.qsize(), alarm.key)
            return False
        return True

    async def run(self) -> None:
        """Send queued alarms, oldest first, until cancelled."""
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            while True:
                body = await self.queue.get()
                await self._send(client, body)

    async def _send(self, client: httpx.AsyncClient, body: dict) -> bool:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            self.attempts += 1
            try:
                r = await client.post(self.url, json=body)
                if 200 <= r.status_code < 300:
                    self.sent += 1
                    self.last_error = ""
                    return True
                self.last_error = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                self.last_error = f"{type(e).__name__}: {e}"
            if attempt == self.retries:
                break
            self.retried += 1
            log.warning("alarm webhook: %s: %s; retry in %.1f s", self.url, self.last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
        self.dropped["gave_up"] += 1
        log.error("alarm webhook: gave up on alarm %s after %d attempts: %s", body["alarm"]["key"],
                  self.retries + 1, self.last_error)
        return False
