"""Alembic environment for servesweep's own tables (`svc_*`, version table `svc_alembic_version`).

Run by `search.storage.Store` with the connection in `config.attributes["connection"]` (already
inside a transaction, under a lock); otherwise it opens its own from `sqlalchemy.url`. The
`include_name` / `include_object` filters keep autogenerate away from Optuna's tables, which live
in the same database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection, make_url

from search.store.engine import make_engine
from search.store.schema import VERSION_TABLE, Base, include_name, include_object

config = context.config
target_metadata = Base.metadata


def _options(dialect_name: str) -> dict:
    return {
        "target_metadata": target_metadata,
        "version_table": VERSION_TABLE,
        "include_name": include_name,
        "include_object": include_object,
        "compare_type": True,
        "render_as_batch": dialect_name == "sqlite",
    }


def run_migrations_offline() -> None:
    """Emit the migration SQL to the script output (`alembic upgrade --sql`)."""
    url = make_url(config.get_main_option("sqlalchemy.url"))
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the given connection, or one opened from `sqlalchemy.url`."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(make_url(config.get_main_option("sqlalchemy.url")))
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
