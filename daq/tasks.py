"""Stopping asyncio tasks reliably."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: list[asyncio.Task], patience_s: float = 5.0) -> None:
    """Cancel tasks and wait for them; cancel again any that swallowed the first request.

    Libraries built on ``asyncio.wait_for`` can lose a cancellation on Python 3.11 when
    it races with a completion; a second request gets them out.
    """
    for t in tasks:
        t.cancel()
    pending = {t for t in tasks if not t.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=patience_s)
        for t in pending:
            log.warning("task %s ignored cancellation; cancelling again", t.get_name())
            t.cancel()
