"""search.storage against real databases: a SQLite file in tmp_path and the local PostgreSQL
(a fresh database per module, dropped at teardown; skipped only if the server is unreachable)."""

from __future__ import annotations

import json
import multiprocessing
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import optuna
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from search.store import (
    VERSION_TABLE,
    Base,
    Store,
    SweepNotFoundError,
    alembic_config,
    default_storage_url,
    include_name,
    include_object,
)

PG_ADMIN_URL = os.environ.get("SERVESWEEP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SVC_TABLES = {
    "svc_sweeps",
    "svc_evaluations",
    "svc_fronts",
    "svc_calibrations",
    "svc_leases",
    "svc_shards",
    VERSION_TABLE,
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


def _pg_admin() -> sa.Engine:
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


@pytest.fixture(scope="module")
def pg_databases() -> Iterator[Callable[[], str]]:
    """Factory of fresh PostgreSQL databases (URLs); all dropped when the module ends."""
    admin = _pg_admin()
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is unreachable in CI: {exc.orig}")
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc.orig}")
    created: list[str] = []

    def make() -> str:
        name = f"servesweep_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def shared_pg_url(pg_databases: Callable[[], str]) -> str:
    """The module's shared PostgreSQL database."""
    return pg_databases()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty database of each dialect."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'servesweep.db'}"
    return request.getfixturevalue("pg_databases")()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    """A migrated Store of each dialect (PostgreSQL: the module's shared database)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'servesweep.db'}"
    else:
        url = request.getfixturevalue("shared_pg_url")
    s = Store(url)
    yield s
    s.close()


def _name() -> str:
    return f"sweep-{uuid.uuid4().hex[:8]}"


def _row(key: str, feasible: bool = True, **extra) -> dict:
    return {
        "config_key": key,
        "config": {"tp": 2, "weights": "fp8", "key": key},
        "feasible": feasible,
        "reason": None if feasible else "out of memory",
        "metrics": {"tpot_s": 0.02, "usd_per_hour": 12.5},
        "objectives": [0.02, 12.5] if feasible else None,
        "trial_number": None,
        "evaluator": "analytic",
        **extra,
    }


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _assert_jsonable(value) -> None:
    json.dumps(value, allow_nan=False)


# --------------------------------------------------------------------------------------------
# migrations
# --------------------------------------------------------------------------------------------


def test_migrations_add_only_svc_tables_and_leave_optuna_alone(fresh_url: str) -> None:
    Store(fresh_url).close()  # SQLite: also creates the missing directory
    assert _tables(fresh_url) == SVC_TABLES


def test_existing_optuna_study_untouched(fresh_url: str, tmp_path) -> None:
    if fresh_url.startswith("sqlite"):
        (tmp_path / "sub").mkdir()
    study = optuna.create_study(storage=fresh_url, study_name="s", directions=["minimize", "minimize"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_int("n", 1, 4)), n_trials=3)
    optuna_tables = _tables(fresh_url)
    engine = sa.create_engine(fresh_url)
    with engine.connect() as conn:
        optuna_version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    engine.dispose()

    for _ in range(2):  # idempotent
        Store(fresh_url).close()

    assert _tables(fresh_url) == optuna_tables | SVC_TABLES
    engine = sa.create_engine(fresh_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).all() == optuna_version
        assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == ["0006"]
    engine.dispose()
    loaded = optuna.load_study(study_name="s", storage=fresh_url)
    assert len(loaded.trials) == 3
    assert [t.values for t in loaded.trials] == [t.values for t in study.trials]


def test_models_match_migrations_and_autogenerate_ignores_optuna(fresh_url: str, tmp_path) -> None:
    if fresh_url.startswith("sqlite"):
        (tmp_path / "sub").mkdir()
    optuna.create_study(storage=fresh_url, study_name="s")
    s = Store(fresh_url)
    with s.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "include_name": include_name,
                "include_object": include_object,
                "compare_type": True,
                "version_table": VERSION_TABLE,
            },
        )
        assert compare_metadata(ctx, Base.metadata) == []
    s.close()
    command.check(alembic_config(fresh_url))  # env.py opening its own connection, as the CLI would


def test_sqlite_wal_mode(tmp_path) -> None:
    s = Store(f"sqlite:///{tmp_path / 'x.db'}")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 30_000
    s.close()


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://u:p@localhost/db",
        "postgresql://postgres@127.0.0.1/test",
        "not a url",
        "",
        "postgresql+psycopg://postgres@127.0.0.1:5432",
    ],
)
def test_bad_url(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite:///") as err:
        Store(url)
    assert repr(url) in str(err.value)
    assert "postgresql+psycopg://" in str(err.value)


def test_default_storage_url(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("SERVESWEEP_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_storage_url() == f"sqlite:///{tmp_path}/servesweep.db"
    monkeypatch.setenv("SERVESWEEP_STORAGE", "postgresql+psycopg://u@h/db")
    assert default_storage_url() == "postgresql+psycopg://u@h/db"


# --------------------------------------------------------------------------------------------
# sweeps
# --------------------------------------------------------------------------------------------


def test_sweep_create_get_list_update_delete(store: Store) -> None:
    a, b = _name(), _name()
    created = store.create_sweep(a, "name: a\n", {"name": a, "space": {"tp": (1, 2)}}, "alice", "abc123", {"H100": 2.5})
    assert created["status"] == "pending"
    assert created["spec"] == {"name": a, "space": {"tp": [1, 2]}}
    assert created["price_table"] == {"H100": 2.5}
    assert datetime.fromisoformat(created["created_at"]).tzinfo is not None
    _assert_jsonable(created)
    store.create_sweep(b, "name: b\n", {"name": b})

    assert store.get_sweep(a) == created
    assert store.get_sweep("no-such-sweep") is None
    names = [s["name"] for s in store.list_sweeps()]
    assert names.index(b) < names.index(a)  # newest first

    started = datetime.now(UTC) - timedelta(minutes=5)
    updated = store.update_sweep(
        a, status="running", started_at=started, optuna_study_name="study-a", summary={"hv": np.float64(1.5)}
    )
    assert updated["status"] == "running"
    assert datetime.fromisoformat(updated["started_at"]) == started
    assert updated["summary"] == {"hv": 1.5}
    assert updated["updated_at"] >= created["updated_at"]
    assert store.get_sweep(a) == updated
    _assert_jsonable(store.list_sweeps())

    with pytest.raises(ValueError, match="status"):
        store.update_sweep(a, status="done")
    with pytest.raises(ValueError, match="name"):
        store.update_sweep(a, name="renamed")
    with pytest.raises(ValueError, match="naive"):
        store.update_sweep(a, finished_at=datetime(2025, 1, 1))
    with pytest.raises(SweepNotFoundError, match="no-such"):
        store.update_sweep("no-such-sweep", status="failed")
    assert store.get_sweep(a) == updated  # bad input wrote nothing

    store.add_evaluations(a, [_row("k1")])
    store.save_front(a, "final", [{"tp": 1}])
    assert store.delete_sweep(a) is True
    assert store.get_sweep(a) is None
    assert store.delete_sweep(a) is False
    assert store.get_sweep(b) is not None


def test_duplicate_sweep_name_rejected(store: Store) -> None:
    name = _name()
    store.create_sweep(name, "x: 1\n", {"x": 1})
    with pytest.raises(ValueError, match=name):
        store.create_sweep(name, "x: 2\n", {"x": 2})
    assert store.get_sweep(name)["spec"] == {"x": 1}


# --------------------------------------------------------------------------------------------
# evaluations and fronts
# --------------------------------------------------------------------------------------------


def test_add_evaluations_skips_duplicates(store: Store) -> None:
    name, other = _name(), _name()
    store.create_sweep(name, "", {})
    store.create_sweep(other, "", {})
    assert store.add_evaluations(name, [_row("a"), _row("b", feasible=False), _row("a")]) == 2
    assert store.add_evaluations(name, [_row("b"), _row("c", trial_number=np.int64(7), measured=True)]) == 1
    assert store.add_evaluations(name, []) == 0
    assert store.add_evaluations(other, [_row("a")]) == 1  # keys are per sweep
    assert store.evaluated_keys(name) == {"a", "b", "c"}
    assert store.count_evaluations(name) == {"total": 3, "feasible": 2, "measured": 1}

    rows = store.get_evaluations(name)
    _assert_jsonable(rows)
    assert [r["config_key"] for r in rows] == ["a", "b", "c"]
    assert rows[1]["feasible"] is False and rows[1]["objectives"] is None and rows[1]["reason"] == "out of memory"
    assert rows[2]["trial_number"] == 7 and rows[2]["measured"] is True and rows[0]["measured"] is False
    assert rows[0]["objectives"] == [0.02, 12.5]
    assert rows[0]["config"] == {"tp": 2, "weights": "fp8", "key": "a"}
    assert [r["config_key"] for r in store.get_evaluations(name, keys=["c", "a", "zz"])] == ["a", "c"]
    assert [r["config_key"] for r in store.get_evaluations(name, feasible_only=True)] == ["a", "c"]
    assert store.get_evaluations(name, keys=[]) == []


def test_add_evaluations_validates_before_writing(store: Store) -> None:
    name = _name()
    store.create_sweep(name, "", {})
    with pytest.raises(ValueError, match="objectives"):
        store.add_evaluations(name, [_row("ok"), _row("bad", objectives=[1.0, float("nan")])])
    with pytest.raises(ValueError, match="feasible"):
        store.add_evaluations(name, [_row("ok"), _row("bad", feasible="yes")])
    with pytest.raises(ValueError, match="config_key"):
        store.add_evaluations(name, [{"config": {}, "feasible": True}])
    with pytest.raises(SweepNotFoundError):
        store.add_evaluations("no-such-sweep", [_row("ok")])
    assert store.count_evaluations(name) == {"total": 0, "feasible": 0, "measured": 0}
    # non-finite metrics are stored as null, numpy values as plain Python
    store.add_evaluations(name, [_row("m", metrics={"ttft_s": float("inf"), "arr": np.arange(2)})])
    assert store.get_evaluations(name)[0]["metrics"] == {"ttft_s": None, "arr": [0, 1]}


def test_bulk_insert_large_batch(store: Store) -> None:
    name = _name()
    store.create_sweep(name, "", {})
    rows = [_row(f"k{i}", feasible=i % 3 != 0) for i in range(3000)]
    assert store.add_evaluations(name, rows) == 3000
    assert store.add_evaluations(name, [*rows[:1500], _row("new")]) == 1
    assert store.count_evaluations(name) == {"total": 3001, "feasible": 2001, "measured": 0}
    assert len(store.get_evaluations(name, keys=[f"k{i}" for i in range(0, 3000, 2)])) == 1500


def test_fronts_round_trip(store: Store) -> None:
    name = _name()
    store.create_sweep(name, "", {})
    assert store.latest_front(name) is None
    points = [{"config": {"tp": 1}, "objectives": [0.1, 3.0]}, {"config": {"tp": 8}, "objectives": [0.02, 9.0]}]
    first = store.save_front(name, "exhaustive", points, hypervolume=4.25, reference_point=np.array([1.0, 10.0]))
    second = store.save_front(name, "guided", points[:1], hypervolume=None, reference_point=None)
    _assert_jsonable([first, second])
    assert first["points"] == points and first["hypervolume"] == 4.25 and first["reference_point"] == [1.0, 10.0]
    assert store.latest_front(name) == second
    assert store.latest_front(name, kind="exhaustive") == first
    assert store.latest_front(name, kind="final") is None
    with pytest.raises(ValueError, match="kind"):
        store.save_front(name, "best", points)
    with pytest.raises(ValueError, match="hypervolume"):
        store.save_front(name, "final", points, hypervolume=float("nan"))
    assert store.latest_front(name) == second


# --------------------------------------------------------------------------------------------
# concurrency
# --------------------------------------------------------------------------------------------


def _writer(url: str, sweep: str, barrier, batches: int, batch: int) -> None:
    barrier.wait(timeout=30)
    store = Store(url)  # both processes migrate the fresh database at once
    store.create_sweep(sweep, "", {"sweep": sweep})
    for b in range(batches):
        rows = [_row(f"{sweep}-{b}-{i}") for i in range(batch)]
        assert store.add_evaluations(sweep, rows + rows[:5]) == batch
    store.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_two_processes_write_concurrently(dialect: str, request: pytest.FixtureRequest, tmp_path) -> None:
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("pg_databases")()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    batches, batch = 10, 200
    procs = [ctx.Process(target=_writer, args=(url, s, barrier, batches, batch)) for s in ("left", "right")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    store = Store(url)
    for sweep in ("left", "right"):
        assert store.count_evaluations(sweep) == {
            "total": batches * batch,
            "feasible": batches * batch,
            "measured": 0,
        }
        assert len(store.evaluated_keys(sweep)) == batches * batch
    assert _tables(url) == SVC_TABLES
    store.close()


def test_calibrations_round_trip(store: Store) -> None:
    record = {"serving": {"bw_factor": 0.9}, "fit": {"n": 3}}
    saved = store.save_calibration("cal-1", "measurements", record, gpu=None, device=None)
    assert saved["record"] == record
    store.save_calibration("cal-2", "probe", {"gpus": {"CPU": {}}}, gpu="CPU", device="cpu")
    assert store.latest_calibration()["name"] == "cal-2"
    assert store.latest_calibration(gpu="CPU")["device"] == "cpu"
    assert store.get_calibration("cal-1")["kind"] == "measurements"
    assert [c["name"] for c in store.list_calibrations()] == ["cal-2", "cal-1"]
    with pytest.raises(ValueError, match="cal-1"):
        store.save_calibration("cal-1", "measurements", record)
    with pytest.raises(ValueError, match="kind"):
        store.save_calibration("cal-3", "guess", record)
    assert store.get_calibration("nope") is None


def test_a_database_at_0001_upgrades_and_keeps_its_data(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    command.upgrade(alembic_config(url), "0001")
    assert "svc_calibrations" not in _tables(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        now = datetime.now(UTC)
        conn.execute(
            sa.text(
                "INSERT INTO svc_sweeps (name, status, spec_yaml, spec, created_at, updated_at) "
                "VALUES ('old', 'finished', 'x: 1', '{}', :t, :t)"
            ),
            {"t": now},
        )
    engine.dispose()
    store = Store(url)
    assert "svc_calibrations" in _tables(url)
    assert store.get_sweep("old")["status"] == "finished"
    store.save_calibration("c", "measurements", {"serving": {}})


def test_a_database_at_0002_upgrades_to_allow_cancelled_and_keeps_its_data(fresh_url: str, tmp_path) -> None:
    """0003 widens the status CHECK; on SQLite without rebuilding svc_sweeps (whose DROP would
    cascade to the evaluations and fronts)."""
    if fresh_url.startswith("sqlite"):
        (tmp_path / "sub").mkdir()
    command.upgrade(alembic_config(fresh_url), "0002")
    engine = sa.create_engine(fresh_url)
    with engine.begin() as conn:
        now = datetime.now(UTC)
        conn.execute(
            sa.text(
                "INSERT INTO svc_sweeps (name, status, spec_yaml, spec, created_at, updated_at) "
                "VALUES ('old', 'running', 'x: 1', '{}', :t, :t)"
            ),
            {"t": now},
        )
        sweep_id = conn.execute(sa.text("SELECT id FROM svc_sweeps")).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO svc_evaluations (sweep_id, config_key, config, feasible, measured, created_at) "
                "VALUES (:s, 'k', '{}', :f, :f, :t)"
            ),
            {"s": sweep_id, "f": False, "t": now},
        )
        conn.execute(
            sa.text("INSERT INTO svc_fronts (sweep_id, kind, points, created_at) VALUES (:s, 'final', '[]', :t)"),
            {"s": sweep_id, "t": now},
        )
    engine.dispose()
    store = Store(fresh_url)
    assert store.count_evaluations("old")["total"] == 1
    assert store.latest_front("old") is not None
    assert store.update_sweep("old", status="cancelled")["status"] == "cancelled"
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:  # the CHECK still holds
        conn.execute(sa.text("UPDATE svc_sweeps SET status = 'bogus'"))
    with store.engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one() == "0006"
    store.close()


def test_a_database_at_0003_upgrades_to_leases_and_error_and_back(fresh_url: str, tmp_path) -> None:
    """0004 adds svc_leases and svc_sweeps.error without touching stored sweeps (a running sweep
    with no lease row reads as stored); it downgrades cleanly on both dialects."""
    if fresh_url.startswith("sqlite"):
        (tmp_path / "sub").mkdir()
    command.upgrade(alembic_config(fresh_url), "0003")
    engine = sa.create_engine(fresh_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO svc_sweeps (name, status, spec_yaml, spec, created_at, updated_at) "
                "VALUES ('old', 'running', 'x: 1', '{}', :t, :t)"
            ),
            {"t": datetime.now(UTC)},
        )
    engine.dispose()
    store = Store(fresh_url)
    old = store.get_sweep("old")
    assert old["status"] == "running" and old["error"] is None
    assert store.update_sweep("old", status="failed", error="OverflowError: x")["error"] == "OverflowError: x"
    store.close()
    command.downgrade(alembic_config(fresh_url), "0003")
    assert "svc_leases" not in _tables(fresh_url)
    engine = sa.create_engine(fresh_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM svc_sweeps")).scalar_one() == "failed"
    engine.dispose()
