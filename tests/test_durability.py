"""Durable state a shared service relies on (issue 17): leases that cannot be lost silently,
a driver's liveness, failure reasons, bounded work. PostgreSQL tests use the real server."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
import yaml

from search.store import LeaseLostError, Store, SweepBusyError, make_optuna_storage
from search.sweeps import parse_spec, run_sweep, start_sweep

GUIDED = {
    "name": "durable",
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "workload": "chat",
    "accelerators": ["H100-SXM", "A100-SXM-80GB", "L40S"],
    "space": {
        "tp": [1, 2, 4, 8],
        "weights": ["bf16", "fp8"],
        "kv_cache": ["bf16", "fp8"],
        "max_batch": [1, 2, 4, 8, 16, 32, 64, 128],
        "chunked_prefill": [8192],
    },
    "sampler": "tpe",
    "budget": {"trials": 240},
    "seed": 5,
}


def _spec(**changes: Any):
    data = json.loads(json.dumps(GUIDED))
    data.update(changes)
    return parse_spec(data), yaml.safe_dump(data)


def _row(key: str) -> dict[str, Any]:
    return {"config_key": key, "config": {"k": key}, "feasible": True, "objectives": [1.0], "metrics": {}}


def _kill_lease_connections(url: str) -> int:
    """pg_terminate_backend every backend of the database holding an advisory lock (what an
    idle-session timeout, pgbouncer or a failover does to the lease's idle connection)."""
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND d.datname = current_database() AND l.pid <> pg_backend_pid()"
            )
        ).scalar()
    admin.dispose()
    return int(killed)


# ------------------------------------------------------------------ 1. the lease


def test_a_lost_postgresql_lease_refuses_every_write_and_releases_quietly(pg_url: str, caplog) -> None:
    """The advisory-lock connection killed under a holder: its next write fails with
    LeaseLostError (nothing written), another process can take the sweep and write, and the
    holder's release logs the failed unlock instead of raising it over the real error."""
    spec, text = _spec()
    a = Store(pg_url)
    name = start_sweep(a, spec, text, None, workers=1)
    b = Store(pg_url)
    with pytest.raises(LeaseLostError, match="lost the lease on sweep 'durable'"):
        with a.sweep_lease(name):
            a.add_evaluations(name, [_row("before")])
            assert _kill_lease_connections(pg_url) == 1
            with b.sweep_lease(name):  # the lock is gone: another driver gets the sweep
                assert b.add_evaluations(name, [_row("b")]) == 1
                a.add_evaluations(name, [_row("a-after-loss")])
    assert a.evaluated_keys(name) == {"before", "b"}
    assert "releasing the advisory lock failed" in caplog.text
    a.close()
    b.close()


def test_a_superseded_token_is_fenced_out(tmp_path) -> None:
    """A holder whose fencing token another acquisition superseded writes nothing more (SQLite:
    the token is bumped by hand, as a takeover would)."""
    spec, text = _spec()
    store = Store(f"sqlite:///{tmp_path}/fence.db")
    name = start_sweep(store, spec, text, None, workers=1)
    with store.sweep_lease(name) as lease:
        store.update_sweep(name, status="running")
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE svc_leases SET token = token + 1"))
        for write in (
            lambda: store.add_evaluations(name, [_row("x")]),
            lambda: store.update_sweep(name, status="failed"),
            lambda: store.save_front(name, "partial", []),
        ):
            with pytest.raises(LeaseLostError, match="fencing token superseded"):
                write()
        assert lease.lost
    assert store.count_evaluations(name)["total"] == 0 and store.latest_front(name) is None
    store.close()


def test_two_drivers_never_share_a_postgresql_sweep(pg_url: str) -> None:
    """The issue's reproducer: idle_session_timeout on the database, a guided sweep running, its
    lease connection killed, a `run --resume` started. Before: both drivers ran, the study got
    more trials than its budget and duplicated trial numbers. Now the first driver stops with
    LeaseLostError at its next write, the resume finishes, and the study has exactly the budget
    of trials, numbered 0..n-1 once each."""
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        database = sa.engine.make_url(pg_url).database
        conn.execute(sa.text(f"ALTER DATABASE \"{database}\" SET idle_session_timeout = '2s'"))
    admin.dispose()
    spec, text = _spec()
    first = Store(pg_url)
    name = start_sweep(first, spec, text, None, workers=4)
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            run_sweep(first, name, local=True)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=drive)
    thread.start()
    storage = make_optuna_storage(pg_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if len(optuna.load_study(study_name=f"servesweep:{name}", storage=storage).trials) >= 20:
                break
        except KeyError:
            pass
        time.sleep(0.2)
    _kill_lease_connections(pg_url)  # unless the idle-session timeout already closed it
    second = Store(pg_url)
    summary = run_sweep(second, name, local=True)
    thread.join(120)
    assert failure and isinstance(failure[0], LeaseLostError), failure
    numbers = [t.number for t in optuna.load_study(study_name=f"servesweep:{name}", storage=storage).trials]
    assert [n for n, c in Counter(numbers).items() if c > 1] == []
    # every number once, no gaps; the budget counts distinct configurations (issue 16, finding 12),
    # so repeated suggestions may add trials beyond it
    assert sorted(numbers) == list(range(len(numbers))) and len(numbers) >= spec.budget.trials
    assert summary["evaluated"] == spec.budget.trials
    assert second.get_sweep(name)["status"] == "finished"
    first.close()
    second.close()


# ------------------------------------------------------------------ 2. liveness


def test_a_running_sweep_without_a_live_driver_reads_interrupted(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/live.db"
    spec, text = _spec()
    holder, reader = Store(url), Store(url)
    reader.lease_ttl_s = 1.0
    holder.lease_heartbeat_s = 0.2
    name = start_sweep(holder, spec, text, None, workers=1)
    with holder.sweep_lease(name) as lease:
        holder.update_sweep(name, status="running")
        time.sleep(1.5)  # the heartbeat keeps it live
        assert reader.get_sweep(name)["status"] == "running" and reader.get_sweep(name)["driver"] == "live"
        lease.stop()  # the driver hangs or its database fails: no heartbeat
        time.sleep(1.5)
        assert reader.get_sweep(name)["status"] == "interrupted"
        assert [s["status"] for s in reader.list_sweeps()] == ["interrupted"]
        assert reader.get_sweep(name)["driver"] == "lost"
    holder.close()
    reader.close()


def test_a_storage_failure_mid_sweep_does_not_leave_it_running(tmp_path, monkeypatch, caplog) -> None:
    """The database fails under the driver (every write from some point on): run_sweep raises
    the real error (not the failed status update's), and readers see `interrupted` once the
    heartbeat is stale; a resume then finishes it."""
    url = f"sqlite:///{tmp_path}/broken.db"
    spec, text = _spec(budget={"trials": 24})
    store, reader = Store(url), Store(url)
    reader.lease_ttl_s = 1.0
    name = start_sweep(store, spec, text, None, workers=4)
    real_write = Store._write
    writes = {"n": 0}

    def failing_write(self):
        writes["n"] += 1
        if writes["n"] > 6:
            raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))
        return real_write(self)

    monkeypatch.setattr(Store, "_write", failing_write)
    with pytest.raises(sa.exc.OperationalError, match="disk I/O error"):
        run_sweep(store, name, local=True)
    monkeypatch.setattr(Store, "_write", real_write)
    assert "could not record status 'failed'" in caplog.text
    time.sleep(1.5)
    assert reader.get_sweep(name)["status"] == "interrupted"
    assert run_sweep(reader, name, local=True)["evaluated"] == 24  # the budget: distinct configurations
    store.close()
    reader.close()


def test_the_service_frees_a_dead_drivers_slot(tmp_path) -> None:
    """A service sweep left `running` by a dead driver no longer counts against its token's cap,
    and cancelling it is not refused as 'running in another process'."""
    from search.service.jobs import SweepManager

    url = f"sqlite:///{tmp_path}/slot.db"
    spec, text = _spec()
    store = Store(url)
    store.lease_ttl_s = 1.0
    name = start_sweep(store, spec, text, None, workers=1, submitter="alice", service=True)
    with store.sweep_lease(name) as lease:
        store.update_sweep(name, status="running")
        assert SweepManager(store).active_for("alice") == {name}
        lease.stop()
        time.sleep(1.5)
        assert SweepManager(store).active_for("alice") == set()
    store.close()


def test_a_busy_sweep_is_still_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/busy.db"
    spec, text = _spec()
    a, b = Store(url), Store(url)
    name = start_sweep(a, spec, text, None, workers=1)
    with a.sweep_lease(name), pytest.raises(SweepBusyError):
        with b.sweep_lease(name):
            pass
    a.close()
    b.close()


# ------------------------------------------------------------------ 3. failure reasons


def test_a_failed_sweeps_reason_is_stored_and_shown(tmp_path) -> None:
    """The reason a sweep failed is stored with it and shown by `ls` and `show`."""
    from typer.testing import CliRunner

    from search.cli import app

    url = f"sqlite:///{tmp_path}/why.db"
    spec, text = _spec(constraints={"max_gpus": 10**400}, budget={"trials": 8})
    store = Store(url)
    name = start_sweep(store, spec, text, None, workers=2)
    with pytest.raises(OverflowError):
        run_sweep(store, name, local=True)
    assert store.get_sweep(name)["error"].startswith("OverflowError: ")
    runner = CliRunner()
    shown = runner.invoke(app, ["show", name, "--storage", url])
    assert shown.exit_code == 0 and "failed: OverflowError" in shown.output, shown.output
    listed = runner.invoke(app, ["ls", "--storage", url], env={"COLUMNS": "250"})
    assert listed.exit_code == 0 and "OverflowError" in listed.output, listed.output
    store.close()


# ------------------------------------------------------------------ 5. space size


def test_space_sizes_are_exact_and_bounded_by_the_tier() -> None:
    """Six dimensions of 2,000 values: np.prod over int64 wrapped to a negative size (a
    'finished' sweep with nothing evaluated); now sizes are Python ints and a space a tier
    cannot cover is refused naming `space`."""
    from search.sweeps import SearchSpace
    from search.sweeps.spec import SpecError

    big = list(range(1, 2001))
    space = {"tp": big, "pp": big, "ep": big, "max_batch": big, "chunked_prefill": big, "replicas": big}
    with pytest.raises(SpecError, match=r"space: 7\.68e\+20 configurations \(3 accelerators x 2000 tp.* 64-bit"):
        _spec(space=space)
    with pytest.raises(SpecError, match=r"exhaustive sampler evaluates every configuration.*guided sampler"):
        _spec(
            sampler="exhaustive",
            space={**GUIDED["space"], "max_batch": big, "chunked_prefill": big, "replicas": big[:10]},
        )
    spec, _ = _spec(space={**GUIDED["space"], "max_batch": big, "chunked_prefill": big, "replicas": big[:10]})
    assert SearchSpace(spec).size == 3 * 4 * 2 * 2 * 2000 * 2000 * 10 > 10**9  # fine for a guided sampler
    wide = {**GUIDED["space"], "max_batch": big, "chunked_prefill": big, "replicas": big[:600]}
    assert SearchSpace(_spec(space=wide)[0]).size == 3 * 4 * 2 * 2 * 2000 * 2000 * 600


# ------------------------------------------------------------------ 6. bounded simulator work


@pytest.mark.parametrize(
    ("simulation", "field"),
    [({"max_replicas": 10**9}, "simulation.max_replicas"), ({"requests": 10**6}, "simulation.requests")],
)
def test_simulator_work_is_bounded(simulation: dict, field: str) -> None:
    from search.sweeps.spec import SpecError

    with pytest.raises(SpecError, match=field):
        _spec(evaluator="simulator", simulation=simulation)
    top = {"max_replicas": 64} if "max_replicas" in field else {"requests": 100_000}
    assert _spec(evaluator="simulator", simulation=top)[0].simulation.model_dump()[next(iter(top))] == next(
        iter(top.values())
    )


# ------------------------------------------------------------------ 10. huge integers


def test_a_5001_digit_integer_in_a_spec_file_is_a_spec_error(tmp_path) -> None:
    from search.sweeps import load_spec
    from search.sweeps.spec import SpecError

    path = tmp_path / "huge.yaml"
    path.write_text("model: " + "9" * 5001 + "\n")
    with pytest.raises(SpecError, match="too many digits"):
        load_spec(path)


# ------------------------------------------------------------------ 7. PostgreSQL timeouts


def test_postgresql_connections_have_timeouts_and_keepalives(pg_url: str) -> None:
    store = Store(pg_url)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "5min"
        dsn = conn.connection.dbapi_connection.info.dsn  # the client side's libpq parameters
        for part in ("connect_timeout=10", "keepalives=1", "keepalives_idle=30", "tcp_user_timeout=60000"):
            assert part in dsn, dsn
    storage = make_optuna_storage(pg_url)
    with storage.engine.connect() as conn:
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "5min"
    storage.engine.dispose()
    store.close()


def test_an_unresponsive_postgresql_fails_fast(monkeypatch) -> None:
    """A server that accepts TCP and never answers (a paused proxy): connecting fails after the
    connect timeout instead of hanging."""
    import socket

    from search.store import StoreUnavailableError
    from search.store import engine as store_engine

    monkeypatch.setattr(store_engine, "PG_CONNECT_TIMEOUT_S", 2)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            Store(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test").close()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(20)
    silent.close()
    # the store turns the driver's OperationalError into one line naming the database
    assert outcome and isinstance(outcome[0], StoreUnavailableError), outcome
    assert "timeout" in str(outcome[0])
    assert time.monotonic() - started < 15


# ------------------------------------------------------------------ 11. ties on the exhaustive front


def test_ties_on_the_exhaustive_front_are_broken_by_configuration_id() -> None:
    """Shards finishing in either order give the same front: of equal objectives, the smallest
    configuration id stays (before, whichever shard was merged first)."""
    import numpy as np

    from search.sweeps.evaluation import EvalResult
    from search.sweeps.exhaustive import merge_front

    def result(ids: list[int], objectives: list[list[float]]) -> EvalResult:
        n = len(ids)
        return EvalResult(
            ids=np.array(ids, dtype=np.int64),
            feasible=np.ones(n, dtype=bool),
            reason=[""] * n,
            objectives=np.array(objectives, dtype=float),
            constraints=np.zeros((n, 0)),
            constraint_names=[],
        )

    early = result([7, 40], [[1.0, 2.0], [3.0, 1.0]])
    late = result([900, 3], [[1.0, 2.0], [3.0, 1.0]])  # the same objectives, other ids
    directions = ["minimize", "minimize"]
    one = merge_front(merge_front(None, early, directions), late, directions)
    other = merge_front(merge_front(None, late, directions), early, directions)
    assert sorted(one.ids.tolist()) == sorted(other.ids.tolist()) == [3, 7]


# ------------------------------------------------------------------ 12. duplicate values


def test_aliases_and_repeats_in_a_spec_count_once() -> None:
    """`[H100-SXM, h100, H100]` made a space of three times the size, two thirds of it stored
    under the same keys; aliases are normalized and repeats dropped, in the order first given."""
    from search.sweeps import SearchSpace

    spec, _ = _spec(
        accelerators=["H100-SXM", "h100", "H100", "L40S"],
        space={**GUIDED["space"], "weights": ["bf16", "BF16", "fp8"], "kv_cache": ["fp8", "FP8", "bf16"]},
    )
    assert spec.accelerators == ["H100-SXM", "L40S"]
    assert spec.space.weights == ["bf16", "fp8"] and spec.space.kv_cache == ["fp8", "bf16"]
    assert SearchSpace(spec).size == 2 * 4 * 2 * 2 * 8


# ------------------------------------------------------------------ 8. exhaustive resume


def test_an_exhaustive_resume_redoes_only_the_shards_in_flight(tmp_path, local_ray, monkeypatch) -> None:
    """The driver dies right after three shards landed (no checkpoint yet: before, a resume
    started from the last 2-second checkpoint and redid every shard). Now each shard is recorded
    with its rows: the resume starts from those shards, counts every configuration once and ends
    with the uninterrupted run's front."""
    from search.sweeps import SearchSpace, exhaustive

    monkeypatch.setattr(exhaustive, "CHECKPOINT_S", 3600.0)  # the kill lands between checkpoints
    url = f"sqlite:///{tmp_path}/shards.db"
    spec, text = _spec(sampler="exhaustive", space={**GUIDED["space"], "max_batch": list(range(1, 401))})
    store = Store(url)
    size = SearchSpace(spec).size
    reference = start_sweep(store, spec, text, "reference", workers=1)
    run_sweep(store, reference, workers=1)
    name = start_sweep(store, spec, text, "killed", workers=1)
    landed = []

    def die_after_three(progress) -> None:
        landed.append(progress.evaluated)
        if len(landed) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(store, name, workers=1, progress=die_after_three)
    first_resumed: list[int] = []
    summary = run_sweep(store, name, workers=1, progress=lambda p: first_resumed.append(p.evaluated))
    # the tier reports once before its first shard (issue 16, finding 9): from the three stored
    # shards, never from zero, and then every shard still to do
    assert first_resumed[0] == landed[-1] and first_resumed[1] > landed[-1] and first_resumed[-1] == size
    assert summary["evaluated"] == size and store.count_evaluations(name)["total"] == size
    points = lambda n: sorted(p["id"] for p in store.latest_front(n, kind="final")["points"])  # noqa: E731
    assert points(name) == points(reference)
    store.close()


# ------------------------------------------------------------------ 9. exact guided resumes


def _stored_trials(store: Store, name: str, suffix: str = "") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=f"servesweep:{name}{suffix}", storage=make_optuna_storage(store.url)).trials


def _stop_at(store: Store, name: str, trials: int, suffix: str = ""):
    """should_stop: 'interrupted' once the stored study has `trials` trials (checked between waves)."""

    def check() -> str | None:
        try:
            return "interrupted" if len(_stored_trials(store, name, suffix)) >= trials else None
        except KeyError:  # the study is not created yet
            return None

    return check


@pytest.mark.parametrize(
    ("sampler", "trials", "stop_at", "backend"),
    [
        ("tpe", 60, 28, "sqlite"),
        ("nsga2", 100, 72, "sqlite"),  # in NSGA-II's second generation (population 50): its parents are cached
        ("nsga2", 100, 72, "postgresql"),
        ("gp", 14, 12, "sqlite"),  # after GP's 10 random start-up trials (torch and scipy: the gp extra)
    ],
)
def test_a_guided_resume_makes_the_uninterrupted_runs_decisions(
    tmp_path, request, sampler: str, trials: int, stop_at: int, backend: str
) -> None:
    """Stopped part-way and resumed, a guided sweep asks exactly the trials of a sweep never
    stopped: every trial's parameters, and so the front, are the same, and nothing evaluated
    before the stop is evaluated again. Before, NSGA-II lost its parent populations (study
    system attributes, never stored) and GP read the constraints of reloaded trials in the
    database's order (SQLite's: by key), and both drifted from the first trial after the resume."""
    if sampler == "gp":
        pytest.importorskip("torch")
        pytest.importorskip("scipy")
    url = f"sqlite:///{tmp_path}/resume.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    spec, text = _spec(sampler=sampler, budget={"trials": trials})
    store = Store(url)
    reference = start_sweep(store, spec, text, "reference", workers=4)
    run_sweep(store, reference, workers=4, local=True)
    name = start_sweep(store, spec, text, "resumed", workers=4)
    stopped = run_sweep(store, name, workers=4, local=True, should_stop=_stop_at(store, name, stop_at))
    assert stopped == {"stopped": "interrupted"}
    before = {r["config_key"]: r["created_at"] for r in store.get_evaluations(name)}
    assert stop_at <= len(_stored_trials(store, name)) < trials
    if sampler == "nsga2":  # the parents NSGA-II cached are stored with their wave
        stored = optuna.load_study(study_name=f"servesweep:{name}", storage=make_optuna_storage(url))
        attrs = stored._storage.get_study_system_attrs(stored._study_id)
        waves = [v for k, v in attrs.items() if k.startswith("servesweep:wave:")]
        assert any("NSGAIISampler:parent:1" in w["attrs"] for w in waves)
    run_sweep(store, name, workers=4, local=True)

    params = lambda n: [(t.number, t.params) for t in _stored_trials(store, n)]  # noqa: E731
    assert params(name) == params(reference)
    after = store.get_evaluations(name)
    assert len({r["config_key"] for r in after}) == len(after) == len(store.get_evaluations(reference))
    assert all(r["created_at"] == before[r["config_key"]] for r in after if r["config_key"] in before)
    points = lambda n: sorted(p["id"] for p in store.latest_front(n, kind="final")["points"])  # noqa: E731
    assert points(name) == points(reference)
    store.close()


def test_an_auto_sweeps_simulated_study_resumes_exactly(tmp_path, local_ray) -> None:
    """The default multi-fidelity sweep, stopped inside its simulated stage's TPE study (past
    the seeds) and resumed: the study's trials and the final front are an uninterrupted run's."""
    data = {
        **json.loads(json.dumps(GUIDED)),
        "sampler": "auto",
        "space": {**GUIDED["space"], "tp": [1, 2], "max_batch": [1, 4, 16, 64, 256]},
        "simulation": {"requests": 100},
        "budget": {"trials": 40},
    }
    spec, text = parse_spec(data), yaml.safe_dump(data)
    store = Store(f"sqlite:///{tmp_path}/auto.db")
    reference = start_sweep(store, spec, text, "reference", workers=2)
    run_sweep(store, reference, workers=2)
    seeded = store.get_sweep(reference)["summary"]["stages"][1]["seeds"]
    assert seeded < 30  # the study samples beyond its seeds
    name = start_sweep(store, spec, text, "resumed", workers=2)
    stop = _stop_at(store, name, 32, ":simulated")
    assert run_sweep(store, name, workers=2, should_stop=stop) == {"stopped": "interrupted"}
    run_sweep(store, name, workers=2)
    params = lambda n: [t.params for t in _stored_trials(store, n, ":simulated")]  # noqa: E731
    assert params(name) == params(reference)
    points = lambda n: sorted(p["id"] for p in store.latest_front(n, kind="final")["points"])  # noqa: E731
    assert points(name) == points(reference)
    store.close()


def test_a_study_stored_without_wave_records_still_resumes(tmp_path) -> None:
    """A study a driver stored before wave records (trials only) resumes as it did: the last
    whole multiple of the wave is reloaded and the rest replayed, evaluating nothing twice."""
    spec, text = _spec(budget={"trials": 40})
    url = f"sqlite:///{tmp_path}/old.db"
    store = Store(url)
    name = start_sweep(store, spec, text, "old", workers=4)
    run_sweep(store, name, workers=4, local=True, should_stop=_stop_at(store, name, 20))
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # what an older driver left: no records, a wave cut short
        conn.execute(sa.text("DELETE FROM study_system_attributes WHERE key LIKE 'servesweep:wave:%'"))
        last = conn.execute(sa.text("SELECT max(trial_id) FROM trials")).scalar()
        for table in ("trial_values", "trial_params", "trial_user_attributes", "trial_system_attributes"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE trial_id = :t"), {"t": last})
        conn.execute(sa.text("DELETE FROM trials WHERE trial_id = :t"), {"t": last})
    engine.dispose()
    before = {r["config_key"]: r["created_at"] for r in store.get_evaluations(name)}
    summary = run_sweep(store, name, workers=4, local=True)
    after = store.get_evaluations(name)
    assert summary["evaluated"] == 40 == len(after) == len({r["config_key"] for r in after})
    assert all(r["created_at"] == before[r["config_key"]] for r in after if r["config_key"] in before)
    numbers = [t.number for t in _stored_trials(store, name)]
    assert numbers == list(range(len(numbers)))
    store.close()


def test_evaluation_tasks_log_what_they_evaluated_for_the_fault_bench(tmp_path, monkeypatch) -> None:
    """With $SERVESWEEP_EVAL_LOG set, an evaluation task appends a JSON line of what it
    evaluated (scripts/bench_faults.py counts re-evaluations from it); unset, nothing is written."""
    import os

    import numpy as np

    from search.cluster import EVAL_LOG_ENV
    from search.sweeps.control import _spec_json
    from search.sweeps.remote import evaluate_local

    spec, _ = _spec()
    log = tmp_path / "evaluated.jsonl"
    evaluate_local(_spec_json(spec), np.array([3], dtype=np.int64))
    assert not log.exists()
    monkeypatch.setenv(EVAL_LOG_ENV, str(log))
    evaluate_local(_spec_json(spec), np.array([0, 5], dtype=np.int64))
    evaluate_local(_spec_json(spec), np.array([7], dtype=np.int64))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == [
        {"evaluator": "analytic", "pid": os.getpid(), "ids": [0, 5]},
        {"evaluator": "analytic", "pid": os.getpid(), "ids": [7]},
    ]


# ------------------------------------------------------------------ 16. Ray start-up


def _ray_not_started(monkeypatch, init) -> None:
    """ensure_ray as in a fresh process (no Ray yet), with `init` standing in for ray.init."""
    from search.cluster import ray_cluster

    monkeypatch.setattr(ray_cluster.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_cluster.ray, "init", init)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_a_ray_that_hangs_at_start_up_is_one_clear_error_within_the_timeout(monkeypatch) -> None:
    from search.cluster import ClusterUnavailableError, ensure_ray

    _ray_not_started(monkeypatch, lambda **kw: time.sleep(60))
    monkeypatch.setenv("SERVESWEEP_RAY_START_TIMEOUT_S", "0.5")
    began = time.monotonic()
    with pytest.raises(ClusterUnavailableError) as caught:
        ensure_ray(None, 1)
    assert time.monotonic() - began < 5
    message = str(caught.value)
    assert "did not start within 0.5 s" in message and "\n" not in message, message


def test_a_ray_process_killed_during_start_up_is_one_clear_error(monkeypatch) -> None:
    """What ray.init raises when a process it started dies (a ConnectionError, a RaySystemError,
    a RuntimeError with a multi-line message) becomes one ClusterUnavailableError line."""
    from search.cluster import ClusterUnavailableError, ensure_ray

    def dies(**kw: Any) -> None:
        raise ConnectionError("Failed to connect to the raylet.\n  The raylet died during start-up (SIGKILL).")

    _ray_not_started(monkeypatch, dies)
    with pytest.raises(ClusterUnavailableError) as caught:
        ensure_ray(None, 1)
    message = str(caught.value)
    assert (
        message.startswith("the local Ray failed to start: ConnectionError: Failed to connect") and "\n" not in message
    )


def test_a_sweep_whose_ray_does_not_start_is_interrupted_not_pending(tmp_path, monkeypatch) -> None:
    from search.cluster import ClusterUnavailableError

    store = Store(f"sqlite:///{tmp_path}/ray.db")
    spec, text = _spec(budget={"trials": 4})
    name = start_sweep(store, spec, text, None, workers=1)

    def dies(**kw: Any) -> None:
        raise RuntimeError("a worker died during start-up")

    _ray_not_started(monkeypatch, dies)
    with pytest.raises(ClusterUnavailableError):
        run_sweep(store, name)
    record = store.get_sweep(name)
    assert record["status"] == "interrupted", record["status"]  # resumable with run --resume
    assert "failed to start: RuntimeError: a worker died during start-up" in record["error"]
    store.close()


def test_run_reports_a_ray_start_up_timeout_in_one_line(tmp_path) -> None:
    """The CLI, in a fresh process: exit 2, one error line, no traceback, no sweep stored."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**GUIDED, "budget": {"trials": 4}}))
    env = {**os.environ, "SERVESWEEP_RAY_START_TIMEOUT_S": "0.3", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("servesweep")),
            "run",
            str(spec),
            "--storage",
            f"sqlite:///{tmp_path}/r.db",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "did not start within 0.3 s" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert Store(f"sqlite:///{tmp_path}/r.db").get_sweep("durable") is None


def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path) -> None:
    """SIGKILL the driver of the embedded Ray: every process it started (GCS, raylet, workers,
    the dashboard and runtime-env agents) is gone within seconds, not 60-120 s."""
    import os
    import subprocess
    import sys

    import ray  # noqa: F401  (its bundled psutil)

    psutil = pytest.importorskip("psutil")
    pids = tmp_path / "pids"
    code = (
        "import os, signal, time, ray\n"
        "import psutil  # after ray, which puts its bundled psutil on the path\n"
        "from search.cluster import ensure_ray\n"
        "ensure_ray(None, 1)\n"
        "ray.get(ray.remote(lambda: 1).remote())\n"
        "time.sleep(1)\n"
        f"open({str(pids)!r}, 'w').write(' '.join(str(p.pid) for p in psutil.Process().children(recursive=True)))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=120, capture_output=True, text=True)
    assert pids.is_file(), proc.stderr[-2000:]
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) >= 3  # at least the GCS, the raylet and a worker
    deadline = time.monotonic() + 20
    alive = started
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in started if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, [" ".join(psutil.Process(p).cmdline())[:120] for p in alive if psutil.pid_exists(p)]
