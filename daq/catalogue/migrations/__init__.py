"""The catalogue's schema migrations (Alembic), shipped with the package and run in code.

:func:`upgrade` brings a database to the newest schema when :class:`~daq.catalogue.Catalogue`
opens it: no ``alembic.ini`` is needed, the :class:`~alembic.config.Config` is built here with
this directory as the script location. A catalogue made before migrations existed (its tables
present, no ``alembic_version``) is stamped at the baseline and upgraded in place, its data kept.

Revisions: ``0001_baseline`` (the schema as ``create_all`` made it before), then
``0002_stable_identities`` (cycle and artifact uids, one active run per rig). A developer
adding one: ``command.revision(config(url=...), "what changes")`` with ``alembic.command``,
then write its ``upgrade()`` by hand (SQLite needs ``op.batch_alter_table`` to alter columns).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
BASELINE = "0001_baseline"
#: a PostgreSQL advisory lock key: agents and API nodes opening one catalogue migrate it one at a time
LOCK_KEY = 0x7269_6764_6171  # "rigdaq"


def config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic configuration for this directory, on ``connection`` (or ``url``, for offline use)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE).replace("%", "%%"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head() -> str:
    """The newest revision."""
    return ScriptDirectory.from_config(config()).get_current_head()


def current(connection: Connection) -> str | None:
    """The database's revision (None: no ``alembic_version``, i.e. new or from before migrations)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> None:
    """Bring the database to the newest schema, in one transaction (``connection`` must not be in one).

    PostgreSQL: under a transaction-scoped advisory lock, so two processes opening a new or old
    catalogue at once migrate it once. SQLite: the caller's connection should begin ``IMMEDIATE``.
    """
    with connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
        at = current(connection)
        if at == head():
            return  # another process did it meanwhile
        names = set(inspect(connection).get_table_names())
        cfg = config(connection)
        if at is None and "runs" in names:
            log.warning("catalogue: tables from before schema migrations found: stamping them at %s and "
                        "upgrading them in place", BASELINE)
            # the baseline creates only the tables an older version did not have, then stamps itself
            command.upgrade(cfg, BASELINE)
        command.upgrade(cfg, "head")
        log.info("catalogue schema: %s -> %s", at or "(none)", head())
