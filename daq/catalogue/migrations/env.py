"""Alembic environment: runs on the connection :func:`daq.catalogue.migrations.upgrade` hands in.

Without one (the ``alembic`` command line with a ``sqlalchemy.url``) it opens its own engine;
offline (``--sql``) it writes the SQL for that URL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from daq.catalogue.tables import meta

cfg = context.config


def _configure(**kwargs) -> None:
    context.configure(target_metadata=meta, render_as_batch=True, compare_type=True, **kwargs)


if context.is_offline_mode():
    _configure(url=cfg.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (conn := cfg.attributes.get("connection")) is not None:
    _configure(connection=conn)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(cfg.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(connection=conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
