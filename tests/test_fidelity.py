"""Multi-fidelity sweeps (`sampler: auto`): stages stored and resumable, the analytic front exact,
simulated rows superseding analytic ones, every point's stage in the outputs, and headlines that
claim an SLO only where simulation or measurement shows it met. Real local Ray, real SQLite
files, the real PostgreSQL for the upsert."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from search.outputs import for_store, front_rows
from search.outputs.candidates import TITLES
from search.outputs.fidelity import MODELLED_TITLES
from search.store import Store
from search.sweeps import (
    STAGES,
    SearchSpace,
    exact_front,
    make_evaluator,
    neighbourhood,
    parse_spec,
    run_sweep,
    stage_of,
    start_sweep,
)

AUTO = {
    "name": "auto",
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
    "simulation": {"requests": 200},
    "budget": {"trials": 30},
    "seed": 3,
}  # 240 configurations; no sampler: auto is the default


def _sweep(tmp_path, data=None, **changes):
    data = {**json.loads(json.dumps(data or AUTO)), **changes}
    spec = parse_spec(data)
    store = Store(f"sqlite:///{tmp_path}/fidelity.db")
    name = start_sweep(store, spec, yaml.safe_dump(data), data["name"], workers=2)
    return spec, store, name


def _stage(summary, stage):
    return next(s for s in summary["stages"] if s["stage"] == stage)


def _front_ids(store, name, kind):
    return {int(p["id"]) for p in store.latest_front(name, kind=kind)["points"]}


def test_auto_is_the_default_and_explicit_samplers_stay():
    assert parse_spec(AUTO).sampler == "auto" and parse_spec(AUTO).staged
    assert parse_spec({**AUTO, "sampler": "tpe"}).tier_sampler == "tpe"
    sim = parse_spec({**AUTO, "evaluator": "simulator"})
    assert not sim.staged and sim.tier_sampler == "tpe"  # auto with another evaluator: tpe on it, as before


def test_neighbourhood_is_one_value_away_along_one_dimension():
    space = SearchSpace(parse_spec(AUTO))
    near = neighbourhood(space, np.array([0]))
    assert 0 not in near
    configs = [space.config(int(i)) for i in near]
    origin = space.config(0)
    for c in configs:
        assert sum(c[k] != origin[k] for k in origin) == 1
    # the first value of every dimension has one neighbour up each dimension with >1 value
    assert len(near) == sum(1 for d in space.dimensions if d.size > 1)


def test_auto_sweep_stores_every_stage(tmp_path, local_ray):
    spec, store, name = _sweep(tmp_path)
    summary = run_sweep(store, name, workers=2)
    space = SearchSpace(spec)
    assert [s["stage"] for s in summary["stages"]] == list(STAGES)
    analytic, simulated, measured = (_stage(summary, s) for s in STAGES)
    # (a) the exact analytic front, every configuration stored once
    assert analytic["status"] == "done" and analytic["tier"] == "exhaustive"
    assert analytic["evaluated"] == space.size and analytic["hypervolume_ratio"] == pytest.approx(1.0)
    ids, _ = exact_front(spec.model_copy(update={"evaluator": "analytic"}))
    assert _front_ids(store, name, "analytic") == {int(i) for i in ids}
    assert summary["analytic_hypervolume_ratio"] == pytest.approx(1.0)
    rows = store.get_evaluations(name)
    assert len(rows) == len({r["config_key"] for r in rows}) == space.size
    # (b) the simulator on the front, its neighbourhood and TPE, up to the budget
    assert simulated["status"] == "done" and simulated["evaluated"] == 30
    assert simulated["seed_front"] == len(ids) and simulated["seeds"] <= 30
    sim_rows = [r for r in rows if r["evaluator"] == "simulator"]
    assert len(sim_rows) == 30
    assert {int(i) for i in ids} <= {r["config"]["id"] for r in sim_rows}
    base = make_evaluator(spec.model_copy(update={"evaluator": "analytic"}))
    check = base.evaluate(np.array([r["config"]["id"] for r in sim_rows]))
    for i, r in enumerate(sim_rows):
        m = r["metrics"]
        assert stage_of(m) == "simulated" and m["stage_code"] == 1.0
        assert m["analytic_tpot_s"] == pytest.approx(check.metrics["tpot_s"][i], nan_ok=True)
        assert m["analytic_ttft_s"] == pytest.approx(check.metrics["ttft_s"][i], nan_ok=True)
        assert "analytic_e2e_s" in m and "sim_tpot_p99_s" in m
    assert all(stage_of(r["metrics"]) == "analytic" for r in rows if r["evaluator"] == "analytic")
    # the final front: simulated points only; the analytic front stays stored beside it
    final = store.latest_front(name, kind="final")["points"]
    assert final and all(stage_of(p["metrics"]) == "simulated" for p in final)
    assert _front_ids(store, name, "simulated") == {int(p["id"]) for p in final}
    # (c) no GPU here: skipped, saying which
    assert measured["status"] == "skipped" and "in the cluster" in measured["reason"]
    assert measured["reason"].startswith("no ")
    # outputs: every front row has its stage; headlines follow the stage
    _, front = front_rows(store, name)
    assert front and {r["stage"] for r in front} == {"simulated"}
    analysis = for_store(store, name)
    assert analysis["stages"]["simulated"] == 30 and analysis["stages"]["analytic"] == space.size - 30
    for kind, rec in analysis["recommendations"].items():
        if rec is not None:
            assert rec["stage"] == "simulated" and rec["title"] == TITLES[kind]
    assert store.get_sweep(name)["status"] == "finished"


def test_offline_workload_skips_the_simulator_and_headlines_say_modelled(tmp_path, local_ray):
    _, store, name = _sweep(tmp_path, name="offline", workload="batch", constraints={"max_gpus": 8})
    summary = run_sweep(store, name, workers=2)
    simulated = _stage(summary, "simulated")
    assert simulated["status"] == "skipped" and "offline" in simulated["reason"]
    assert _front_ids(store, name, "final") == _front_ids(store, name, "analytic")
    assert all(r["evaluator"] == "analytic" for r in store.get_evaluations(name))
    recs = for_store(store, name)["recommendations"]
    picked = {k: r for k, r in recs.items() if r is not None}
    assert picked
    for kind, rec in picked.items():
        assert rec["stage"] == "analytic" and rec["title"] == MODELLED_TITLES[kind]
    _, front = front_rows(store, name)
    assert {r["stage"] for r in front} == {"analytic"}


def test_resume_between_stages_evaluates_nothing_again(tmp_path, local_ray):
    _, store, name = _sweep(tmp_path, name="resumed")

    def after_analytic():
        return "interrupted" if store.latest_front(name, kind="analytic") is not None else None

    assert run_sweep(store, name, workers=2, should_stop=after_analytic) == {"stopped": "interrupted"}
    record = store.get_sweep(name)
    assert record["status"] == "interrupted" and record["summary"]["stage"] == "simulated"
    first = _stage(record["summary"], "analytic")
    assert first["status"] == "done"
    before = {r["config_key"]: r["created_at"] for r in store.get_evaluations(name)}
    shards = store.get_shards(name)

    simulated_rows = []

    def mid_simulation():  # stop again once some seeds are simulated
        simulated_rows[:] = [r for r in store.get_evaluations(name) if r["evaluator"] == "simulator"]
        return "interrupted" if len(simulated_rows) >= 8 else None

    assert run_sweep(store, name, workers=2, should_stop=mid_simulation) == {"stopped": "interrupted"}
    middle = {r["config_key"]: r["created_at"] for r in store.get_evaluations(name) if r["evaluator"] == "simulator"}
    assert len(middle) >= 8

    summary = run_sweep(store, name, workers=2)
    assert _stage(summary, "analytic") == first  # not redone
    assert store.get_shards(name) == shards
    after = store.get_evaluations(name)
    assert len(after) == len(before)
    for r in after:
        if r["evaluator"] == "analytic":
            assert r["created_at"] == before[r["config_key"]]  # never evaluated again
        elif r["config_key"] in middle:
            assert r["created_at"] == middle[r["config_key"]]  # simulated once, before the stop
    assert sum(r["evaluator"] == "simulator" for r in after) == 30
    # the same result as a sweep never stopped
    (tmp_path / "straight").mkdir()
    _, other, other_name = _sweep(tmp_path / "straight", name="straight")
    straight = run_sweep(other, other_name, workers=2)
    assert _front_ids(store, name, "final") == _front_ids(other, other_name, "final")
    assert _stage(straight, "simulated")["evaluated"] == _stage(summary, "simulated")["evaluated"]


TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 1024,
    "max_position_embeddings": 4096,
    "torch_dtype": "bfloat16",
}


def test_measured_stage_probes_the_finalists_on_the_cpu(tmp_path, local_ray):
    pytest.importorskip("torch")
    tiny = tmp_path / "tiny-llama"
    tiny.mkdir()
    (tiny / "config.json").write_text(json.dumps(TINY_LLAMA))
    data = {
        "name": "probed",
        "model": str(tiny),
        "workload": {
            "input_tokens": {"kind": "fixed", "mean": 64},
            "output_tokens": {"kind": "fixed", "mean": 16},
            "arrival_rate_per_s": 2.0,
            "slos": [{"metric": "tpot", "max_s": 10.0, "percentile": 99}],
        },
        "accelerators": ["H100-SXM"],
        "space": {"tp": [1, 2], "weights": ["bf16"], "kv_cache": ["bf16"], "max_batch": [1, 2, 4]},
        "objectives": [{"metric": "tpot", "percentile": 99}, {"metric": "usd_per_million_output_tokens"}],
        "probe": {"device": "cpu", "max_candidates": 2, "repeats": 1},
        "simulation": {"requests": 50},
        "budget": {"trials": 6},
    }
    _, store, name = _sweep(tmp_path, data)
    summary = run_sweep(store, name, workers=2)
    measured = _stage(summary, "measured")
    assert measured["status"] == "done" and measured["measured"] >= 1
    rows = {r["config_key"]: r for r in store.get_evaluations(name)}
    probed = [r for r in rows.values() if r["measured"]]
    assert len(probed) == measured["measured"] <= 2
    for r in probed:
        m = r["metrics"]
        assert stage_of(m) == "measured" and r["evaluator"] == "probe"
        assert m["simulated_tpot_s"] is not None and m["analytic_tpot_s"] is not None
    final = store.latest_front(name, kind="final")["points"]
    assert {stage_of(p["metrics"]) for p in final} <= {"simulated", "measured"}
    # resumed after it finished: nothing runs again
    again = run_sweep(store, name, workers=2)
    assert again == summary


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, tmp_path):
    url = f"sqlite:///{tmp_path}/upsert.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(url)
    yield store
    store.close()


def test_replace_evaluations_upserts_on_both_backends(any_store):
    store = any_store
    store.create_sweep("up", "name: up\n", {"name": "up"})
    row = {
        "config_key": "a",
        "config": {"id": 1},
        "feasible": True,
        "metrics": {"tpot_s": 0.01},
        "evaluator": "analytic",
    }
    assert store.add_evaluations("up", [row, {**row, "config_key": "b", "config": {"id": 2}}]) == 2
    better = {
        "config_key": "a",
        "config": {"id": 1},
        "feasible": False,
        "reason": "violates slo_tpot_p99",
        "metrics": {"tpot_s": 0.2, "analytic_tpot_s": 0.01},
        "objectives": [0.2, 1.0],
        "evaluator": "simulator",
        "trial_number": 4,
    }
    new = {**row, "config_key": "c", "config": {"id": 3}}
    assert store.replace_evaluations("up", [better, new]) == 2
    got = {r["config_key"]: r for r in store.get_evaluations("up")}
    assert set(got) == {"a", "b", "c"}
    a = got["a"]
    assert a["evaluator"] == "simulator" and a["feasible"] is False and a["trial_number"] == 4
    assert a["metrics"] == {"tpot_s": 0.2, "analytic_tpot_s": 0.01} and a["objectives"] == [0.2, 1.0]
    assert got["b"]["evaluator"] == "analytic"
    assert store.count_evaluations("up")["total"] == 3
    assert store.replace_evaluations("up", []) == 0
    with pytest.raises(ValueError):
        store.replace_evaluations("up", [{"config_key": "d"}])  # validated before anything is written
    # the stage fronts are front kinds of their own
    store.save_front("up", "analytic", [{"id": 1, "objectives": [1.0], "metrics": {}}], 1.0)
    assert store.latest_front("up", kind="analytic")["hypervolume"] == 1.0
