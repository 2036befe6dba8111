"""The lease that lets one process at a time drive a sweep.

A part of `search.store.Store` (a mixin: it uses the store's engine and transactions).
"""

from __future__ import annotations

import fcntl
import hashlib
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from search.store.rows import (
    _name,
)


class SweepBusyError(ValueError):
    """Another process holds the sweep's lease (it is running the sweep)."""


class SweepLeases:
    """The lease that lets one process at a time drive a sweep."""

    @contextmanager
    def sweep_lease(self, name: str) -> Iterator[None]:
        """The right to drive sweep `name`, exclusive across processes and hosts while held;
        SweepBusyError at once when another holder has it. PostgreSQL: a session advisory lock
        on a connection of its own; SQLite: flock on `<database>.locks/<name>.lock`. Either is
        released when the holder exits or dies (its connection or file closes), so a crashed
        driver never blocks a resume. An in-memory SQLite database has one process: no lock."""
        busy = SweepBusyError(f"sweep {name!r} is being run by another process on {self!r}")
        if self.dialect == "postgresql":
            key = zlib.crc32(f"servesweep.sweep:{name}".encode())
            engine = sa.create_engine(make_url(self.url), poolclass=NullPool)
            try:
                with engine.connect() as conn:
                    if not conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar():
                        raise busy
                    conn.commit()
                    try:
                        yield
                    finally:
                        conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                        conn.commit()
            finally:
                engine.dispose()
            return
        database = make_url(self.url).database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            yield
            return
        folder = Path(f"{Path(database).expanduser()}.locks")
        folder.mkdir(exist_ok=True)
        with open(folder / f"{hashlib.sha256(_name(name).encode()).hexdigest()[:32]}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise busy from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
