"""Sweeps end to end: real local Ray, real SQLite files, the real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from search.store import Store, make_optuna_storage
from search.sweeps import (
    SearchSpace,
    SpecError,
    exact_front,
    hypervolume,
    load_spec,
    pareto_mask,
    parse_spec,
    run_sweep,
    start_sweep,
)

ROOT = Path(__file__).resolve().parent.parent
SERVESWEEP = str(Path(sys.executable).with_name("servesweep"))

SMALL = {
    "name": "small",
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "workload": "chat",
    "accelerators": ["H100-SXM", "A100-SXM-80GB", "L40S"],
    "space": {
        "tp": [1, 2],
        "weights": ["bf16", "fp8"],
        "kv_cache": ["bf16", "fp8"],
        "max_batch": [1, 4, 16, 64, 256],
        "chunked_prefill": [2048, 8192],
    },
    "sampler": "exhaustive",
    "seed": 3,
}


def _spec(**changes):
    data = json.loads(json.dumps(SMALL))
    data.update(changes)
    return parse_spec(data), yaml.safe_dump(data)


def _front_keys(store: Store, name: str) -> set[str]:
    front = store.latest_front(name, kind="final")
    return {
        SearchSpace.key({k: v for k, v in p.items() if k not in ("id", "objectives", "metrics")})
        for p in front["points"]
    }


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", **extra)
    env.pop("RAY_ADDRESS", None)
    return env


# ---------------------------------------------------------------- spec, space, Pareto


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sampler": "random"}, "sampler"),
        ({"space": {"tp": [0]}}, "space.tp"),
        ({"space": {"weights": ["fp7"]}}, "space.weights"),
        ({"space": {"kv_cache": ["fp2"]}}, "space.kv_cache"),
        ({"accelerators": ["H100-SMX"]}, "accelerators"),
        ({"model": "acme/NoSuchModel"}, "model"),
        ({"workload": "chatty"}, "workload"),
        ({"objectives": [{"metric": "speed"}]}, "objectives.0.metric"),
        ({"budget": {"trials": 0}}, "budget.trials"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_malformed_specs_name_the_field(change, field):
    data = {**SMALL, **change}
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert field in str(info.value)


def test_cli_rejects_a_bad_spec_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SMALL, "space": {"tp": ["four"]}}))
    proc = subprocess.run(
        [SERVESWEEP, "run", str(bad), "--storage", f"sqlite:///{tmp_path}/x.db"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert proc.returncode == 2
    assert "space.tp" in proc.stderr
    notyaml = tmp_path / "bad2.yaml"
    notyaml.write_text("model: [unclosed\n")
    proc = subprocess.run([SERVESWEEP, "run", str(notyaml)], capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr


def test_example_specs_load():
    sizes = {p.stem: SearchSpace(load_spec(p)[0]).size for p in (ROOT / "examples").glob("*.yaml")}
    assert set(sizes) >= {"llama-8b-chat", "llama-70b-chat", "mixtral-8x7b-chat"}
    spec, _ = load_spec(ROOT / "examples" / "llama-70b-chat.yaml")
    vendors = {g.split("-")[0][:2] for g in spec.accelerators}
    assert len(spec.accelerators) >= 6 and "MI" in vendors


def test_space_ids_round_trip():
    spec, _ = _spec()
    space = SearchSpace(spec)
    ids = np.arange(space.size)
    assert np.array_equal(space.encode(space.decode(ids)), ids)
    cfg = space.config(17)
    assert space.id_of(cfg) == 17
    with pytest.raises(ValueError, match="tp=3"):
        space.id_of({**cfg, "tp": 3})


def test_hypervolume_by_hand():
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.5, 2.5]])
    assert list(pareto_mask(pts)) == [True, True, True, False]
    assert hypervolume(pts, np.array([4.0, 4.0])) == pytest.approx(6.0)
    cube = np.array([[1.0, 2.0, 2.0], [2.0, 1.0, 2.0], [2.0, 2.0, 1.0]])
    assert hypervolume(cube, np.array([3.0, 3.0, 3.0])) == pytest.approx(4.0)  # 3*2 - 3*1 + 1


# ---------------------------------------------------------------- sweeps in process


def test_exhaustive_sweep_end_to_end(tmp_path, local_ray):
    spec, text = _spec(constraints={"max_gpus": 4})  # fleets sized with headroom: some exceed it
    store = Store(f"sqlite:///{tmp_path}/sweeps.db")
    name = start_sweep(store, spec, text, None, workers=2)
    summary = run_sweep(store, name, workers=2)
    size = SearchSpace(spec).size
    assert summary["evaluated"] == size
    assert store.count_evaluations(name)["total"] == size  # every configuration stored
    ids, _ = exact_front(spec)
    stored = store.latest_front(name, kind="final")
    assert {p["id"] for p in stored["points"]} == {int(i) for i in ids}
    infeasible = [e for e in store.get_evaluations(name) if not e["feasible"]]
    assert infeasible and all(e["reason"] for e in infeasible)
    assert store.get_sweep(name)["status"] == "finished"


def test_guided_sweep_stores_trials_for_the_dashboard(tmp_path, local_ray):
    spec, text = _spec(sampler="tpe", budget={"trials": 24})
    url = f"sqlite:///{tmp_path}/guided.db"
    store = Store(url)
    name = start_sweep(store, spec, text, "guided", workers=2)
    summary = run_sweep(store, name, workers=2)
    # the budget counts distinct configurations; repeated suggestions are told but cost nothing
    assert summary["evaluated"] == 24 and summary["trials"] >= 24
    assert 0 < summary["hypervolume_ratio"] <= 1.0 + 1e-9
    study = optuna.load_study(study_name=store.get_sweep(name)["optuna_study_name"], storage=make_optuna_storage(url))
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == summary["trials"]
    t = trials[0]
    assert {"feasible", "ttft_s", "tpot_s", "usd_per_million_output_tokens", "config_key"} <= set(t.user_attrs)
    assert any(k.startswith("constraints") for k in t.system_attrs)
    keys = [e["config_key"] for e in store.get_evaluations(name)]
    assert len(keys) == len(set(keys)) == len({t.user_attrs["config_key"] for t in trials})


def test_sweep_with_a_usd_per_request_objective(tmp_path):
    """A cost-per-request objective end to end: evaluated, stored in SQLite, on the front, and the
    recommendations' cost axis (in process: `local` guided trials, no Ray)."""
    from search.outputs import for_store, front_rows

    space = {"tp": [1, 2], "weights": ["fp8"], "kv_cache": ["fp8"], "max_batch": [4, 16, 64]}
    objectives = [{"metric": "tpot"}, {"metric": "usd_per_request"}]
    spec, text = _spec(workload="rag", space=space, objectives=objectives, sampler="tpe", budget={"trials": 10})
    store = Store(f"sqlite:///{tmp_path}/cost.db")
    name = start_sweep(store, spec, text, "per-request", workers=1)
    summary = run_sweep(store, name, workers=1, local=True)
    assert summary["evaluated"] == 10
    evaluations = store.get_evaluations(name)
    feasible = [e for e in evaluations if e["feasible"]]
    assert feasible
    for e in feasible:
        m = e["metrics"]
        assert e["objectives"][1] == pytest.approx(m["usd_per_request"])
        assert m["usd_per_request"] == pytest.approx(m["usd_per_hour"] / (5.0 * 3600))  # rag: 5 requests/s
        total = m["usd_per_million_output_tokens"] * 256 / (8192 + 256)  # rag: 8192 in, 256 out
        assert m["usd_per_million_total_tokens"] == pytest.approx(total)
    _, front = front_rows(store, name)
    assert front and all(r["objective_usd_per_request"] == pytest.approx(r["usd_per_request"]) for r in front)
    cheapest = for_store(store, name)["recommendations"]["cheapest"]
    best = min(feasible, key=lambda e: (e["metrics"]["usd_per_request"], e["metrics"]["tpot_s"], e["config"]["id"]))
    assert cheapest["id"] == best["config"]["id"] and cheapest["cost_metric"] == "usd_per_request"
    assert "$ per request" in cheapest["reason"]


@pytest.mark.parametrize("sampler", ["nsga2", "gp"])
def test_other_samplers_run(tmp_path, local_ray, sampler):
    spec, text = _spec(sampler=sampler, budget={"trials": 12})
    store = Store(f"sqlite:///{tmp_path}/{sampler}.db")
    name = start_sweep(store, spec, text, sampler, workers=2)
    summary = run_sweep(store, name, workers=2)
    assert summary["evaluated"] == 12 and summary["trials"] >= 12


# ---------------------------------------------------------------- faults


def _wait_for(predicate, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def _write_spec(tmp_path: Path, **changes) -> Path:
    data = {**json.loads(json.dumps(SMALL)), **changes}
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_resume_after_driver_sigkill_matches_an_uninterrupted_run(tmp_path, local_ray):
    spec_path = _write_spec(tmp_path, name="resumable", sampler="tpe", budget={"trials": 40})
    url = f"sqlite:///{tmp_path}/resume.db"
    store = Store(url)
    proc = subprocess.Popen(
        [SERVESWEEP, "run", str(spec_path), "--storage", url, "--workers", "2", "--quiet"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(
            lambda: store.get_sweep("resumable") is not None and store.count_evaluations("resumable")["total"] >= 6, 120
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = store.count_evaluations("resumable")["total"]
    assert store.get_sweep("resumable")["status"] == "running"  # killed: never finished
    keys_before = {e["config_key"] for e in store.get_evaluations("resumable")}

    run_sweep(store, "resumable", workers=2)
    after = store.get_evaluations("resumable")
    assert {e["config_key"] for e in after} >= keys_before  # nothing lost
    assert len({e["config_key"] for e in after}) == len(after) >= before  # nothing twice

    spec, text = load_spec(spec_path)
    ref = start_sweep(store, spec, text, "uninterrupted", workers=2)
    run_sweep(store, ref, workers=2)
    assert _front_keys(store, "resumable") == _front_keys(store, "uninterrupted")


def test_exhaustive_resume_after_sigkill(tmp_path, local_ray):
    big = {
        "accelerators": "all",
        "space": {
            **SMALL["space"],
            "tp": [1, 2, 4, 8],
            "pp": [1, 2],
            "weights": ["bf16", "fp8", "int4"],
            "chunked_prefill": [1024, 2048, 4096, 8192],
            "max_batch": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
        },
    }
    spec_path = _write_spec(tmp_path, name="exh", **big)
    url = f"sqlite:///{tmp_path}/exh.db"
    store = Store(url)
    proc = subprocess.Popen(
        [SERVESWEEP, "run", str(spec_path), "--storage", url, "--workers", "1", "--quiet"],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(
            lambda: (
                store.get_sweep("exh") is not None
                and len((store.get_sweep("exh")["summary"] or {}).get("done_shards", [])) >= 1
            ),
            120,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert store.get_sweep("exh")["status"] == "running"  # killed part-way
    done_before = len(store.get_sweep("exh")["summary"]["done_shards"])
    summary = run_sweep(store, "exh", workers=2)
    assert done_before < len(summary["done_shards"])
    spec, _ = load_spec(spec_path)
    size = SearchSpace(spec).size
    assert summary["evaluated"] == size
    assert store.count_evaluations("exh")["total"] == size
    ids, _ = exact_front(spec)
    assert {p["id"] for p in store.latest_front("exh", kind="final")["points"]} == {int(i) for i in ids}


def test_a_worker_killed_mid_batch_is_retried(tmp_path):
    spec_path = _write_spec(tmp_path, name="crashy")
    marker = tmp_path / "killed-once"
    url = f"sqlite:///{tmp_path}/crash.db"
    proc = subprocess.run(
        [SERVESWEEP, "run", str(spec_path), "--storage", url, "--workers", "2", "--quiet"],
        env=_env(SERVESWEEP_TEST_KILL_WORKER_ONCE=str(marker)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert marker.exists()  # a worker really died
    store = Store(url)
    spec, _ = load_spec(spec_path)
    assert store.count_evaluations("crashy")["total"] == SearchSpace(spec).size
    assert store.get_sweep("crashy")["status"] == "finished"


def test_two_sweeps_write_one_postgresql_database_at_once(tmp_path, pg_url):
    a = _write_spec(tmp_path, name="pg-a", sampler="tpe", budget={"trials": 16})
    b = _write_spec(tmp_path, name="pg-b")
    procs = [
        subprocess.Popen(
            [SERVESWEEP, "run", str(p), "--storage", pg_url, "--workers", "1", "--quiet"],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in (a, b)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, errout) in zip(procs, outs, strict=True):
        assert p.returncode == 0, errout[-2000:]
    store = Store(pg_url)
    assert {s["name"] for s in store.list_sweeps()} == {"pg-a", "pg-b"}
    assert all(s["status"] == "finished" for s in store.list_sweeps())
    spec_b, _ = load_spec(b)
    assert store.count_evaluations("pg-b")["total"] == SearchSpace(spec_b).size
    assert store.count_evaluations("pg-a")["total"] >= 1


def test_cli_front_and_export(tmp_path):
    spec_path = _write_spec(tmp_path, name="cli")
    url = f"sqlite:///{tmp_path}/cli.db"
    env = _env()
    run = subprocess.run(
        [SERVESWEEP, "run", str(spec_path), "--storage", url, "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = subprocess.run(
        [SERVESWEEP, "front", "cli", "--storage", url, "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    front = json.loads(out)["front"]
    assert front and {"accelerator", "tp", "objective_tpot", "objective_usd_per_million_output_tokens"} <= set(front[0])
    csv_out = subprocess.run(
        [SERVESWEEP, "front", "cli", "--storage", url, "--format", "csv"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert csv_out.count("\n") == len(front) + 1
    for suffix in ("csv", "json", "parquet"):
        target = tmp_path / f"front.{suffix}"
        subprocess.run(
            [SERVESWEEP, "export", "cli", "-o", str(target), "--storage", url], env=env, check=True, capture_output=True
        )
        assert target.stat().st_size > 0
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "front.parquet").num_rows == len(front)
    listing = subprocess.run(
        [SERVESWEEP, "ls", "--storage", url], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "cli" in listing and "finished" in listing
    missing = subprocess.run([SERVESWEEP, "front", "nope", "--storage", url], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_dashboard_serves_the_sweep_database(tmp_path, local_ray):
    import socket
    import urllib.request

    spec, text = _spec(sampler="tpe", budget={"trials": 8})
    url = f"sqlite:///{tmp_path}/dash.db"
    store = Store(url)
    run_sweep(store, start_sweep(store, spec, text, "dash", workers=2), workers=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [SERVESWEEP, "dashboard", "--storage", url, "--port", str(port)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = {}

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    body.update(json.loads(r.read()))
                return True
            except OSError:
                return False

        _wait_for(up, 60)
        assert "servesweep:dash" in json.dumps(body), body
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("bad", ["../../etc", "a/b", "..", "-x", "x" * 101, "sp ace"])
def test_sweep_names_cannot_escape(tmp_path, bad):
    spec, text = _spec()
    store = Store(f"sqlite:///{tmp_path}/n.db")
    with pytest.raises(ValueError, match="invalid sweep name"):
        start_sweep(store, spec, text, bad, workers=1)
    assert store.list_sweeps() == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_running_sweep_has_one_driver(tmp_path, backend, request, local_ray):
    """While a process holds a sweep's lease, another driver (here: a run_sweep on its own
    connection, and the CLI's --resume) is refused at once and stores nothing; once the lease
    is released the sweep runs."""
    from typer.testing import CliRunner

    from search.cli import app
    from search.store import SweepBusyError

    url = f"sqlite:///{tmp_path}/lease.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(url)
    spec, text = _spec(name="leased")
    name = start_sweep(store, spec, text, None, workers=1)
    holder = Store(url)  # another process's connection
    with holder.sweep_lease(name):
        with pytest.raises(SweepBusyError, match="being run by another process"):
            run_sweep(store, name, workers=1)
        res = CliRunner().invoke(app, ["run", "--resume", name, "--storage", url, "--quiet"])
        assert res.exit_code == 2 and "being run by another process" in res.output
        assert store.get_sweep(name)["status"] == "pending" and store.count_evaluations(name)["total"] == 0
    holder.close()
    summary = run_sweep(store, name, workers=1)
    assert summary["evaluated"] == SearchSpace(spec).size
    assert store.get_sweep(name)["status"] == "finished"
