"""Run changes announced between nodes of one PostgreSQL catalogue (``LISTEN``/``NOTIFY``).

A run started or stopped on an API node must reach the agent acquiring the rig before
the rig's next samples, or those samples are stored without the run's tag. Polling the
catalogue alone (:meth:`daq.catalogue.runs.RunManager.follow_forever`, every second) leaves
up to a second untagged. On PostgreSQL the node that changed a run sends
``NOTIFY rigdaq_runs, '<rig>'`` after its transaction committed, and every node listening
follows at once (milliseconds); the poll stays as the safety net for a notification
missed while the listening connection was down. SQLite (one box, one process) has
nothing to announce: there both functions do nothing.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

CHANNEL = "rigdaq_runs"


def is_postgres(url: str) -> bool:
    """Whether a catalogue URL is PostgreSQL's (the only back end with notifications)."""
    return make_url(url).get_backend_name() == "postgresql"


def announce_run_change(catalogue, rig: str) -> None:
    """Tell every listening node that ``rig``'s run changed (after the change committed)."""
    if not is_postgres(catalogue.url):
        return
    with catalogue.engine.begin() as c:
        c.execute(text("SELECT pg_notify(:channel, :rig)"), {"channel": CHANNEL, "rig": rig})


def _libpq_url(url: str) -> str:
    """The SQLAlchemy URL as libpq takes it (``postgresql+psycopg://`` → ``postgresql://``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen_run_changes(url: str, changed: asyncio.Event, retry_s: float = 2.0) -> None:
    """Set ``changed`` on every run change another node announces; reconnect while the database is away.

    Runs until cancelled. Set once on every (re)connect too: what was announced while the
    connection was down is then caught by the follow it triggers.
    """
    import psycopg

    away = False
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(_libpq_url(url), autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                if away:
                    log.info("runs: listening for run changes again")
                away = False
                changed.set()
                async for _ in conn.notifies():
                    changed.set()
        except psycopg.Error as e:
            if not away:
                log.warning("runs: cannot listen for run changes (%s); following by polling until it is back",
                            str(e).splitlines()[0] if str(e) else type(e).__name__)
            away = True
        await asyncio.sleep(retry_s)
