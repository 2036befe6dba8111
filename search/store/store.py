"""The service's own tables (`svc_*`), next to Optuna's RDB tables in the same database.

One `Store` per process. SQLite (`sqlite:///path.db`, WAL mode) by default, PostgreSQL
(`postgresql+psycopg://...`) for clusters. The schema (search.store.schema) is created and
upgraded by the Alembic migrations shipped in `search/store/migrations/` (search.store.engine),
with their own version table `svc_alembic_version`, so Optuna's tables and its `alembic_version`
are never touched. What is stored is split by kind: sweeps, evaluations and fronts
(search.store.sweeps), calibrations (search.store.calibrations), leases (search.store.leases).

Every method is one transaction; input is validated before anything is written
(search.store.rows); every value returned is plain JSON-able Python (datetimes as ISO 8601 UTC
strings).

New migration (autogenerate only ever looks at `svc_*` tables)::

    from alembic import command
    from search.store import alembic_config
    command.revision(alembic_config("sqlite:////tmp/x.db"), message="...", autogenerate=True)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, make_url

from search.store.calibrations import CalibrationRecords
from search.store.engine import _upgrade_to_head, check_creatable, make_engine, parse_url, unavailable
from search.store.leases import SweepLeases
from search.store.sweeps import SweepRecords


class Store(SweepRecords, CalibrationRecords, SweepLeases):
    """The service's tables in one database; migrates the schema to head on construction.

    `create` False refuses a SQLite file that does not exist yet (read-only use: nothing is
    created), `mkdir` False refuses to create its missing directory; a database that cannot be
    opened raises StoreUnavailableError (one line: host, port and database, or the file)."""

    def __init__(self, url: str, *, create: bool = True, mkdir: bool = True) -> None:
        parsed = parse_url(url)
        check_creatable(parsed, create=create, mkdir=mkdir)
        self.url: str = parsed.render_as_string(hide_password=False)
        self.dialect: str = parsed.get_backend_name()
        self.engine: Engine = make_engine(parsed)
        try:
            _upgrade_to_head(self.engine, parsed)
        except sa.exc.DBAPIError as exc:
            self.engine.dispose()
            raise unavailable(parsed, exc) from None
        except BaseException:
            self.engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"Store({make_url(self.url).render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    def _insert(self, table: sa.Table) -> Any:
        module = sqlite_dialect if self.dialect == "sqlite" else pg_dialect
        return module.insert(table)
