"""The lease that lets one process at a time drive a sweep, and proves it before each write.

A part of `search.store.Store` (a mixin: it uses the store's engine and transactions).

Two parts. Exclusion at acquisition: PostgreSQL, a session advisory lock on a connection of its
own; SQLite, flock on `<database>.locks/<name>.lock` — either is released when its holder dies,
so a crashed driver never blocks a resume. And a row in `svc_leases` per sweep: a fencing token,
bumped by every acquisition, and the holder's heartbeat. While a Store holds a sweep's lease,
every write it makes for that sweep (evaluations, fronts, sweep fields, Optuna trials through
`add_trials(fence=...)`) first updates the row `WHERE token = <its token>` in the same
transaction, and on PostgreSQL checks that the lock connection is alive and still holds the
lock. So a holder whose lock connection died (idle-session timeout, pgbouncer, NAT, failover,
pg_terminate_backend) stops at its next write with LeaseLostError, and one that another process
has meanwhile taken the sweep from cannot write a single row: the token it fences with is old.

A heartbeat thread renews the row every `lease_heartbeat_s`; readers show a `running` sweep
whose heartbeat is older than `lease_ttl_s` (or whose lease was released) as `interrupted`.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import threading
import uuid
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

from search.store.engine import pg_connect_args
from search.store.rows import (
    _name,
)
from search.store.schema import LEASES, _utcnow

log = logging.getLogger("servesweep.store")

HEARTBEAT_S = 5.0
LEASE_TTL_S = 30.0  # a running sweep whose driver has not beaten for this long has no live driver


class SweepBusyError(ValueError):
    """Another process holds the sweep's lease (it is running the sweep)."""


class LeaseLostError(RuntimeError):
    """This process no longer holds the lease of the sweep it drives: it must stop writing."""


class SweepLease:
    """A held lease: its fencing token, the check made before every write, the heartbeat."""

    def __init__(self, store: Any, name: str, token: int, holder: str, lock_conn: Connection | None, key: int) -> None:
        self.store = store
        self.name = name
        self.token = token
        self.holder = holder
        self.lost: str | None = None
        self._lock_conn = lock_conn
        self._key = key
        self._mutex = threading.Lock()  # the lock connection is used by the driver and the heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _lose(self, why: str) -> LeaseLostError:
        if self.lost is None:
            self.lost = (
                f"lost the lease on sweep {self.name!r} ({why}); stopped writing — another process may be "
                f"driving it now. Resume it (`servesweep run --resume {self.name}`) once no other driver runs it"
            )
            log.error("%s", self.lost)
        return LeaseLostError(self.lost)

    def check(self) -> None:
        """LeaseLostError unless the lease is still ours (PostgreSQL: the lock connection is alive
        and holds the advisory lock)."""
        if self.lost is not None:
            raise LeaseLostError(self.lost)
        if self._lock_conn is None:
            return
        with self._mutex:
            try:
                held = self._lock_conn.execute(
                    sa.text(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND pid = pg_backend_pid() AND classid = 0 AND objid::bigint = :k)"
                    ),
                    {"k": self._key},
                ).scalar()
                self._lock_conn.commit()
            except sa.exc.SQLAlchemyError as exc:
                raise self._lose(f"its advisory-lock connection is gone: {type(exc).__name__}") from None
        if not held:
            raise self._lose("the advisory lock is no longer held")

    def fence(self, conn: Connection) -> None:
        """Renew the heartbeat in the caller's transaction, only if the token is still ours."""
        self.check()
        result = conn.execute(
            LEASES.update()
            .where(LEASES.c.sweep_name == self.name, LEASES.c.token == self.token, LEASES.c.holder == self.holder)
            .values(heartbeat_at=_utcnow())
        )
        if result.rowcount != 1:
            raise self._lose("another process has taken it over (fencing token superseded)")

    def _beat(self) -> None:
        while not self._stop.wait(self.store.lease_heartbeat_s):
            try:
                with self.store._write() as conn:
                    self.fence(conn)
            except LeaseLostError:
                return
            except Exception as exc:  # the database is unreachable: readers will see a stale heartbeat
                log.warning("sweep %s: lease heartbeat failed: %s: %s", self.name, type(exc).__name__, exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class SweepLeases:
    """The lease that lets one process at a time drive a sweep."""

    lease_heartbeat_s: float = HEARTBEAT_S
    lease_ttl_s: float = LEASE_TTL_S

    def _held_leases(self) -> dict[str, SweepLease]:
        held = self.__dict__.get("_leases")
        if held is None:
            held = self.__dict__.setdefault("_leases", {})
        return held

    def _fence(self, conn: Connection, name: str) -> None:
        """Before a write for sweep `name`: prove, in the write's transaction, that this store's
        lease on it (if it holds one) is still valid."""
        lease = self._held_leases().get(name)
        if lease is not None:
            lease.fence(conn)

    def lease_fence(self, name: str) -> Any:
        """A callable fencing a transaction on another engine of the same database (Optuna's):
        `fence(connection)`; a no-op when this store holds no lease on `name`."""
        return lambda conn: self._fence(conn, name)

    def _take_lease_row(self, name: str, holder: str) -> int:
        now = _utcnow()
        with self._write() as conn:  # type: ignore[attr-defined]
            row = conn.execute(sa.select(LEASES).where(LEASES.c.sweep_name == name).with_for_update()).first()
            token = (row.token if row is not None else 0) + 1
            values = {"token": token, "holder": holder, "acquired_at": now, "heartbeat_at": now}
            if row is None:
                conn.execute(LEASES.insert().values(sweep_name=name, **values))
            else:
                conn.execute(LEASES.update().where(LEASES.c.sweep_name == name).values(**values))
        return token

    def _release_lease_row(self, lease: SweepLease) -> None:
        with self._write() as conn:  # type: ignore[attr-defined]
            conn.execute(
                LEASES.update()
                .where(LEASES.c.sweep_name == lease.name, LEASES.c.token == lease.token)
                .values(holder=None, heartbeat_at=_utcnow())
            )

    @contextmanager
    def sweep_lease(self, name: str) -> Iterator[SweepLease]:
        """The right to drive sweep `name`, exclusive across processes and hosts while held;
        SweepBusyError at once when another holder has it (see the module docstring). Every
        write this store makes for the sweep while it is held is fenced; a lost lease raises
        LeaseLostError there. Failures to release are logged, never raised over the body's."""
        busy = SweepBusyError(f"sweep {name!r} is being run by another process on {self!r}")
        holder = f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        key = zlib.crc32(f"servesweep.sweep:{name}".encode())
        with ExitStack() as stack:
            lock_conn = None
            if self.dialect == "postgresql":  # type: ignore[attr-defined]
                url = make_url(self.url)  # type: ignore[attr-defined]
                engine = sa.create_engine(url, poolclass=NullPool, connect_args=pg_connect_args(url))
                stack.callback(engine.dispose)
                lock_conn = engine.connect()
                stack.callback(_quietly, lock_conn.close, f"sweep {name}: closing the lease connection")
                if not lock_conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar():
                    raise busy
                lock_conn.commit()
                stack.callback(_quietly, _pg_unlock, f"sweep {name}: releasing the advisory lock", lock_conn, key)
            else:
                database = make_url(self.url).database or ""  # type: ignore[attr-defined]
                if not (database in ("", ":memory:") or database.startswith("file::memory:")):
                    folder = Path(f"{Path(database).expanduser()}.locks")
                    folder.mkdir(exist_ok=True)
                    path = folder / f"{hashlib.sha256(_name(name).encode()).hexdigest()[:32]}.lock"
                    handle = stack.enter_context(open(path, "a+"))
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise busy from None
                    stack.callback(fcntl.flock, handle, fcntl.LOCK_UN)
            lease = SweepLease(self, name, self._take_lease_row(name, holder), holder, lock_conn, key)
            held = self._held_leases()
            held[name] = lease
            stack.callback(held.pop, name, None)
            stack.callback(_quietly, self._release_lease_row, f"sweep {name}: releasing the lease row", lease)
            lease.start()
            stack.callback(lease.stop)
            yield lease


def _pg_unlock(conn: Connection, key: int) -> None:
    conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
    conn.commit()


def _quietly(fn: Any, what: str, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.warning("%s failed (ignored): %s: %s", what, type(exc).__name__, exc)


def lease_is_live(holder: str | None, heartbeat_at: Any, ttl_s: float) -> bool:
    """Whether a lease row says a live driver holds the sweep."""
    return holder is not None and heartbeat_at is not None and heartbeat_at >= _utcnow() - timedelta(seconds=ttl_s)
