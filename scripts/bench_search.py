"""Benchmark the search service, every figure measured in one run.

    python scripts/bench_search.py [--trials 150] [--pg-url URL] [--big 10000000] [--json OUT]

1. Persistence: the guided driver (TPE, evaluation in-process so only storage differs) with
   Optuna's in-memory storage and an in-memory svc store, then on a SQLite file, then on
   PostgreSQL: trials/s and the ratio to the in-memory loop (target: at most 3x).
2. Exhaustive evaluations/s through Ray with 1 and 2 workers.
3. Guided search quality on examples/llama-70b-chat.yaml: hypervolume of the TPE front after
   1 %, 5 % and 20 % of the space, as a fraction of the exact front's (target >= 0.99 at 5 %),
   without seeding from that front.
4. An exhaustive sweep of a 10-million-configuration space and the driver's peak resident
   memory (target < 1.5 GB: shards stream through, only fronts come back).
5. The default multi-fidelity sweep (`sampler: auto`) of examples/llama-70b-chat.yaml beside
   the TPE-only sweep it replaced (sampler tpe, analytic evaluator, 300 trials: the example
   before auto), each end to end on a SQLite file including a fresh `ray.init(address="local")`:
   seconds, the analytic stage's hypervolume ratio to the exact front (target 1.000) and the
   simulated front (target: auto in <= 15 s on a 2-core machine). `--only fidelity` runs this alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import ray  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import yaml  # noqa: E402

from search.store import Store, make_optuna_storage  # noqa: E402
from search.sweeps import (  # noqa: E402
    SearchSpace,
    exact_front,
    load_spec,
    normalized_hypervolume,
    pareto_mask,
    parse_spec,
    run_sweep,
    start_sweep,
    to_minimization,
)

EXAMPLE = ROOT / "examples" / "llama-70b-chat.yaml"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def persistence(trials: int, pg_admin: str | None, tmp: Path) -> dict:
    spec, text = load_spec(EXAMPLE)
    spec = spec.model_copy(update={"sampler": "tpe", "budget": spec.budget.model_copy(update={"trials": trials})})

    def timed(store: Store, storage: optuna.storages.BaseStorage | None, label: str) -> float:
        name = f"bench-{label}"
        start_sweep(store, spec, text, name, workers=8)
        t0 = time.perf_counter()
        run_sweep(store, name, workers=8, local=True, optuna_storage=storage)
        dt = time.perf_counter() - t0
        print(f"  {label:<10} {trials / dt:8.1f} trials/s  ({dt:.2f} s for {trials} trials)")
        return dt

    out = {"trials": trials}
    out["memory_s"] = timed(Store("sqlite://"), optuna.storages.InMemoryStorage(), "in-memory")
    url = f"sqlite:///{tmp}/bench.db"
    out["sqlite_s"] = timed(Store(url), make_optuna_storage(url), "sqlite")
    if pg_admin:
        admin = sa.create_engine(pg_admin, isolation_level="AUTOCOMMIT")
        db = f"servesweep_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{db}"'))
        try:
            pg = pg_admin.rsplit("/", 1)[0] + "/" + db
            store = Store(pg)
            out["postgresql_s"] = timed(store, make_optuna_storage(pg), "postgresql")
            store.close()
        finally:
            with admin.connect() as c:
                c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname=:d"), {"d": db})
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}"'))
    for k in ("sqlite", "postgresql"):
        if f"{k}_s" in out:
            out[f"{k}_ratio"] = out[f"{k}_s"] / out["memory_s"]
            print(f"  {k} / in-memory = {out[f'{k}_ratio']:.2f}x (target <= 3x)")
    return out


def big_spec(target: int) -> dict:
    """A spec whose space has about `target` configurations."""
    batches = [int(b) for b in np.unique(np.geomspace(1, 4096, 128).astype(int))]
    data = {
        "name": "big",
        "model": "meta-llama/Llama-3.1-70B-Instruct",
        "workload": "chat",
        "accelerators": "all",
        "space": {
            "tp": [1, 2, 4, 8],
            "pp": [1, 2, 4],
            "weights": ["bf16", "fp8", "int8", "int8-wo", "int4", "fp4"],
            "kv_cache": ["bf16", "fp8"],
            "max_batch": batches,
            "chunked_prefill": [512, 1024, 2048, 4096, 8192, 16384],
        },
        "sampler": "exhaustive",
    }
    size = SearchSpace(parse_spec(data)).size
    reps = max(1, round(target / size))
    if reps > 1:
        data["space"]["replicas"] = list(range(1, reps + 1))
    return data


def exhaustive_rate(workers_list: list[int], size: int, tmp: Path) -> dict:
    out = {}
    data = big_spec(size)
    for w in workers_list:
        ray.shutdown()
        ray.init(address="local", num_cpus=w, include_dashboard=False, log_to_driver=False)
        store = Store(f"sqlite:///{tmp}/exh-{w}.db")
        spec = parse_spec(data)
        name = start_sweep(store, spec, yaml.safe_dump(data), f"exh-{w}", workers=w)
        t0 = time.perf_counter()
        s = run_sweep(store, name, workers=w)
        dt = time.perf_counter() - t0
        out[f"workers_{w}"] = {"evaluated": s["evaluated"], "seconds": dt, "per_s": s["evaluated"] / dt}
        print(f"  {w} worker(s): {s['evaluated']:,} configurations in {dt:.1f} s = {s['evaluated'] / dt:,.0f}/s")
    if len(workers_list) == 2:
        a, b = (out[f"workers_{w}"]["per_s"] for w in workers_list)
        out["speedup"] = b / a
        print(f"  speedup {workers_list[1]} vs {workers_list[0]} workers: {b / a:.2f}x")
    return out


def guided_quality(fractions: list[float], tmp: Path, sampler: str = "tpe") -> dict:
    spec, text = load_spec(EXAMPLE)
    size = SearchSpace(spec).size
    budget = int(np.ceil(max(fractions) * size))
    spec = spec.model_copy(update={"sampler": sampler, "budget": spec.budget.model_copy(update={"trials": budget})})
    directions = [o.direction for o in spec.objectives]
    _, exact = exact_front(spec)
    ideal, nadir = exact.min(axis=0), exact.max(axis=0)
    exact_hv = normalized_hypervolume(exact, ideal, nadir)
    store = Store("sqlite://")
    storage = optuna.storages.InMemoryStorage()
    name = start_sweep(store, spec, text, "quality", workers=8)
    t0 = time.perf_counter()
    run_sweep(store, name, workers=8, local=True, optuna_storage=storage)
    dt = time.perf_counter() - t0
    study = optuna.load_study(study_name=f"servesweep:{name}", storage=storage)
    trials = sorted(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.number)
    out = {"space_size": size, "exact_front_size": len(exact), "seconds": dt, "sampler": sampler}
    for f in fractions:
        n = int(np.ceil(f * size))
        feas = [t for t in trials[:n] if t.user_attrs.get("feasible")]
        objs = to_minimization(np.array([t.values for t in feas]), directions) if feas else np.zeros((0, 2))
        objs = objs[pareto_mask(objs)] if len(objs) else objs
        ratio = normalized_hypervolume(objs, ideal, nadir) / exact_hv
        out[f"hv_ratio_{f:g}"] = ratio
        print(f"  after {f:>5.0%} of the space ({n:>5} trials): hypervolume {ratio:.4f} of the exact front")
    return out


def big_exhaustive(size: int, tmp: Path, workers: int) -> dict:
    ray.shutdown()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    data = big_spec(size)
    spec = parse_spec(data)
    store = Store(f"sqlite:///{tmp}/big.db")
    name = start_sweep(store, spec, yaml.safe_dump(data), "big", workers=workers)
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    s = run_sweep(store, name, workers=workers)
    dt = time.perf_counter() - t0
    rss = peak_rss_mb()
    print(
        f"  {s['evaluated']:,} configurations in {dt:.1f} s ({s['evaluated'] / dt:,.0f}/s), front {s['front_size']}; "
        f"driver peak RSS {rss:,.0f} MB (before the sweep {rss0:,.0f} MB; target < 1,536 MB)"
    )
    return {
        "evaluated": s["evaluated"],
        "seconds": dt,
        "front_size": s["front_size"],
        "driver_peak_rss_mb": rss,
        "driver_rss_before_mb": rss0,
    }


def fidelity(tmp: Path, workers: int = 2, tpe_trials: int = 300) -> dict:
    """The auto sweep of the flagship example and the TPE-only sweep it replaced, end to end."""
    spec, text = load_spec(EXAMPLE)
    tpe = spec.model_copy(
        update={
            "sampler": "tpe",
            "evaluator": "analytic",
            "budget": spec.budget.model_copy(update={"trials": tpe_trials}),
        }
    )
    out: dict = {"space_size": SearchSpace(spec).size, "workers": workers}
    for label, sweep_spec in (("tpe_only", tpe), ("auto", spec)):
        ray.shutdown()
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
        ray_s = time.perf_counter() - t0
        store = Store(f"sqlite:///{tmp}/fidelity-{label}.db")
        name = start_sweep(store, sweep_spec, text, f"fidelity-{label}", workers=workers)
        s = run_sweep(store, name, workers=workers)
        total = time.perf_counter() - t0
        row = {"seconds": total, "ray_start_s": ray_s, "evaluated": s["evaluated"], "front_size": s["front_size"]}
        if label == "tpe_only":
            row.update(trials=s["trials"], hypervolume_ratio=s.get("hypervolume_ratio"))
            print(
                f"  TPE only ({tpe_trials} trials, analytic): {total:5.1f} s end to end (Ray start {ray_s:.1f} s), "
                f"front {s['front_size']}, hypervolume ratio {s.get('hypervolume_ratio') or 0:.3f}"
            )
        else:
            stages = {st["stage"]: st for st in s["stages"]}
            a, sim, meas = stages["analytic"], stages["simulated"], stages["measured"]
            row.update(
                analytic_seconds=a["seconds"],
                analytic_front_size=a["front_size"],
                analytic_hypervolume_ratio=a.get("hypervolume_ratio"),
                simulated_seconds=sim.get("seconds"),
                simulated_evaluated=sim.get("evaluated"),
                simulated_seeds=sim.get("seeds"),
                simulated_front_size=sim.get("front_size"),
                simulated_requests=sim.get("requests"),
                measured=meas.get("status") + (f": {meas['reason']}" if meas.get("reason") else ""),
            )
            print(
                f"  auto: {total:5.1f} s end to end (target <= 15 s; Ray start {ray_s:.1f} s)\n"
                f"    analytic  {a['seconds']:5.1f} s: {a['evaluated']:,} configurations, exact front "
                f"{a['front_size']}, hypervolume ratio {a.get('hypervolume_ratio') or 0:.3f}\n"
                f"    simulated {sim.get('seconds') or 0:5.1f} s: {sim.get('evaluated')} configurations "
                f"({sim.get('seeds')} seeds: front + neighbourhood; {sim.get('requests')} requests each), "
                f"simulated front {sim.get('front_size')}\n"
                f"    measured  {row['measured']}"
            )
        out[label] = row
        store.close()
    ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=150)
    p.add_argument(
        "--pg-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="admin URL of a PostgreSQL server (a scratch database is created); '' to skip",
    )
    p.add_argument("--exhaustive-size", type=int, default=1_000_000)
    p.add_argument("--big", type=int, default=10_000_000)
    p.add_argument("--json", type=Path)
    p.add_argument("--only", choices=["fidelity"], help="run one section alone")
    args = p.parse_args(argv)
    results: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.only == "fidelity":
            print("5. multi-fidelity (auto) vs TPE only, examples/llama-70b-chat.yaml, end to end:")
            results["fidelity"] = fidelity(tmp)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2) + "\n")
            return 0
        print("1. persistence (guided driver, TPE, in-process evaluation):")
        results["persistence"] = persistence(args.trials, args.pg_url or None, tmp)
        print("3. guided hypervolume vs the exact front (examples/llama-70b-chat.yaml, not seeded):")
        results["guided"] = guided_quality([0.01, 0.05, 0.20], tmp)
        print("2. exhaustive evaluations through Ray:")
        results["exhaustive"] = exhaustive_rate([1, 2], args.exhaustive_size, tmp)
        print(f"4. exhaustive sweep of ~{args.big:,} configurations (2 workers):")
        results["big"] = big_exhaustive(args.big, tmp, 2)
        print("5. multi-fidelity (auto) vs TPE only, examples/llama-70b-chat.yaml, end to end:")
        results["fidelity"] = fidelity(tmp)
    ray.shutdown()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
