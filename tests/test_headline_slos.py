"""The report's headline picks hold under load (issue 13): for every example spec — the RAG
question among them — the default run's cheapest, fastest and knee picks are replayed as their
whole fleet in the serving simulator at the workload's rate, and each must meet every SLO of
the workload. Real local Ray, a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from search.outputs import for_store, simulate_deployment
from search.store import Store
from search.sweeps import load_spec, run_sweep, start_sweep

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))
REPLAY_REQUESTS = 4000  # requests replayed through the whole fleet at the workload's rate
REPLAY_SEED = 11  # not the sweep's seed: an independent stream


def _replay(spec, rec: dict, workload_file: Path) -> dict:
    config = rec["config"]
    return simulate_deployment(
        model=spec.model,
        gpu=rec["accelerator"],
        workload=str(workload_file),
        requests=REPLAY_REQUESTS,
        seed=REPLAY_SEED,
        tp=int(config["tp"]),
        pp=int(config["pp"]),
        ep=int(config["ep"]),
        attention_dp=int(config.get("attention_dp") or 1),
        mtp=int(config.get("mtp") or 0),
        weights=config["weights"],
        kv_cache=config["kv_cache"],
        max_num_seqs=int(config["max_batch"]),
        max_num_batched_tokens=int(config["chunked_prefill"]),
        replicas=int(rec["replicas"]),
        dispatch=spec.simulation.dispatch,
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_headline_picks_meet_their_slos_in_the_simulator(example, tmp_path, local_ray):
    spec, text = load_spec(example)
    workload = spec.resolved_workload()
    assert workload.arrival_rate_per_s and workload.slos, "every example serves a rate under SLOs"
    workload_file = tmp_path / "workload.yaml"
    workload_file.write_text(yaml.safe_dump(workload.model_dump(mode="json")))
    store = Store(f"sqlite:///{tmp_path}/sweeps.db")
    name = start_sweep(store, spec, text, None, workers=2)
    run_sweep(store, name, workers=2)
    recs = for_store(store, name)["recommendations"]
    assert recs["cheapest"] is not None, f"{example.name}: no pick meets the SLOs"
    missed = []
    for kind, rec in recs.items():
        if rec is None:
            continue
        result = _replay(spec, rec, workload_file)
        for slo in result["simulation"]["slos"]:
            if not slo["met"]:
                missed.append(
                    f"{kind} {rec['label']}: simulated p{slo['percentile']:g} {slo['metric']} "
                    f"{slo['value_s']:.3f} s > {slo['max_s']:g} s"
                )
    assert not missed, f"{example.name}: " + "; ".join(missed)
