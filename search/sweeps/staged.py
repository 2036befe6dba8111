"""The multi-fidelity sweep (`sampler: auto`, the default): stages of rising fidelity, each stored
and resumable.

1. analytic — the analytic model over the whole space: the exhaustive tier (Ray shards) when
   the space has at most AUTO_EXHAUSTIVE_LIMIT configurations (its front is the exact analytic
   front, hypervolume ratio 1 against `exact_front`), else a TPE search of `budget.trials`.
   Its front is stored as kind "analytic".
2. simulated — for workloads with an arrival rate (offline ones skip it, saying why): the
   serving simulator evaluates the analytic front and its neighbourhood (every configuration
   one value away along one dimension from a front point), then a TPE study on the simulator,
   seeded with those, runs until `budget.trials` distinct configurations are simulated (the
   seeds count). TPE serves one to three objectives alike; `sampler: nsga2` or `gp` with
   `evaluator: simulator` chooses another sampler for a single-tier sweep. A simulated row
   replaces the analytic row of its configuration (Store.replace_evaluations) and keeps the
   analytic latencies as `analytic_ttft_s`, `analytic_tpot_s`, `analytic_e2e_s`. The final
   front is the Pareto front of the simulated rows (also stored as kind "simulated").
3. measured — where the cluster has GPUs of a finalist's type: the finalists (the final front,
   best first objective first, up to `probe.max_candidates`) are probed as the probe evaluator
   does (search.sweeps.probed); a measured row replaces the simulated one, keeping the
   simulated latencies as `simulated_*_s`, and the final front is taken again. Otherwise the
   stage is skipped: "no <GPU> in the cluster".

Every stored row and front point carries its stage (metric `stage_code`, an index into STAGES).
The sweep's summary lists the stages in order with their counts, seconds, hypervolume, or why
they were skipped; `stage` names the one in progress, so a killed driver resumes there: a done
stage is never redone, the analytic stage resumes by its shards, the simulated stage by the
configurations already simulated and its Optuna study, the measured stage by the rows already
measured — nothing is evaluated twice at the same fidelity.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import ray

from search.store import Store
from search.sweeps.control import (
    ProgressCallback,
    StopCheck,
    SweepStopped,
    _hv_frame,
    _spec_json,
    _stop_requested,
)
from search.sweeps.evaluation import PROBE_MEASURED, STAGES, EvalResult, _plain, stage_of
from search.sweeps.evaluators import make_evaluator
from search.sweeps.exhaustive import _run_exhaustive, exact_front
from search.sweeps.guided import EXHAUSTIVE_REFERENCE_LIMIT, _run_guided
from search.sweeps.pareto import normalized_hypervolume, pareto_mask, to_minimization
from search.sweeps.remote import evaluate_ids
from search.sweeps.space import SearchSpace
from search.sweeps.spec import AUTO_EXHAUSTIVE_LIMIT, LATENCY_METRICS, SweepSpec

SEED_CHUNK = 8  # simulated configurations per Ray task while the seeds are simulated


def _run_staged(
    store: Store,
    name: str,
    spec: SweepSpec,
    workers: int,
    progress: ProgressCallback | None,
    local: bool = False,
    optuna_storage: optuna.storages.BaseStorage | None = None,
    should_stop: StopCheck | None = None,
) -> dict[str, Any]:
    """Run (or resume) the stages of a multi-fidelity sweep; returns its summary."""
    space = SearchSpace(spec)
    previous = (store.get_sweep(name) or {}).get("summary") or {}
    summary: dict[str, Any] = (
        previous if previous.get("kind") == "auto" else {"kind": "auto", "sampler": "auto", "space_size": space.size}
    )
    summary.setdefault("stages", [])

    def record(entry: dict[str, Any]) -> None:
        stages = [s for s in summary["stages"] if s["stage"] != entry["stage"]]
        stages.append(entry)
        summary["stages"] = sorted(stages, key=lambda s: STAGES.index(s["stage"]))
        store.update_sweep(name, summary=summary)

    runners: dict[str, Callable[..., dict[str, Any]]] = {
        "analytic": _analytic_stage,
        "simulated": _simulated_stage,
        "measured": _measured_stage,
    }
    for stage in STAGES:
        before = _entry(summary, stage)
        if before is not None and before["status"] in ("done", "skipped"):
            continue
        stop = _stop_requested(should_stop)
        if stop is not None:  # between stages: every finished stage is stored
            raise SweepStopped(stop)
        summary["stage"] = stage
        spent = float((before or {}).get("seconds") or 0.0)
        started = time.monotonic()

        def checkpoint(
            part: dict[str, Any], stage: str = stage, spent: float = spent, started: float = started
        ) -> None:
            part = {k: v for k, v in part.items() if k != "done_shards"}  # the shards are stored (get_shards)
            record({**part, "stage": stage, "status": "running", "seconds": spent + time.monotonic() - started})

        record({**(before or {}), "stage": stage, "status": "running"})
        try:
            entry = runners[stage](
                store,
                name,
                spec,
                space,
                workers,
                progress,
                local,
                optuna_storage,
                should_stop,
                before or {},
                checkpoint,
            )
        except SweepStopped:
            current = _entry(summary, stage) or {}
            record({**current, "seconds": spent + time.monotonic() - started})
            raise
        later = STAGES[STAGES.index(stage) + 1 :]
        summary["stage"] = later[0] if later else "done"  # where a resumed driver starts
        record({**entry, "stage": stage, "seconds": spent + time.monotonic() - started})
    summary["stage"] = "done"
    final = store.latest_front(name, kind="final") or {}
    counts = store.count_evaluations(name)
    analytic = _entry(summary, "analytic") or {}
    summary.update(
        evaluated=counts["total"],
        feasible=counts["feasible"],
        measured=counts["measured"],
        front_size=len(final.get("points") or []),
        hypervolume=final.get("hypervolume"),
        analytic_hypervolume_ratio=analytic.get("hypervolume_ratio"),
        reasons=analytic.get("reasons", {}),
    )
    store.update_sweep(name, summary=summary)
    return summary


def _entry(summary: dict[str, Any], stage: str) -> dict[str, Any] | None:
    return next((s for s in summary.get("stages", []) if s["stage"] == stage), None)


# ---------------------------------------------------------------- 1. analytic


def _analytic_stage(
    store: Store,
    name: str,
    spec: SweepSpec,
    space: SearchSpace,
    workers: int,
    progress: ProgressCallback | None,
    local: bool,
    optuna_storage: optuna.storages.BaseStorage | None,
    should_stop: StopCheck | None,
    before: dict[str, Any],
    checkpoint: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    if space.size <= AUTO_EXHAUSTIVE_LIMIT:
        aspec = spec.model_copy(update={"sampler": "exhaustive", "evaluator": "analytic"})
        s = _run_exhaustive(
            store, name, aspec, workers, progress, before, should_stop, front_kind="analytic", write_summary=checkpoint
        )
        entry = {k: v for k, v in s.items() if k not in ("kind", "done_shards")}
        entry.update(status="done", tier="exhaustive")
    else:
        aspec = spec.model_copy(update={"sampler": "tpe", "evaluator": "analytic"})
        s = _run_guided(
            store,
            name,
            aspec,
            workers,
            progress,
            local,
            optuna_storage,
            should_stop,
            study_suffix=":analytic",
            seeds=[],
            front_kind="analytic",
        )
        entry = {k: v for k, v in s.items() if k != "kind"}
        entry.update(status="done", tier="tpe")
    front = store.latest_front(name, kind="analytic") or {}
    entry.update(_ratio_to_exact(aspec, space, front.get("points") or [], exhaustive=entry["tier"] == "exhaustive"))
    return entry


def _ratio_to_exact(spec: SweepSpec, space: SearchSpace, points: list[dict], exhaustive: bool) -> dict[str, Any]:
    """The stage front's hypervolume against the exact analytic front's (`exact_front`,
    computed in-process up to EXHAUSTIVE_REFERENCE_LIMIT configurations; beyond, an exhaustive
    stage's front is the exact front by construction)."""
    if space.size > EXHAUSTIVE_REFERENCE_LIMIT:
        return {"hypervolume_ratio": 1.0, "reference": "exact by construction"} if exhaustive else {}
    directions = [o.direction for o in spec.objectives]
    _, exact = exact_front(spec)
    if not len(exact):
        return {"exact_front_size": 0}
    ideal, nadir = _hv_frame(exact)
    exact_hv = normalized_hypervolume(exact, ideal, nadir)
    objs = to_minimization(np.array([p["objectives"] for p in points], dtype=float), directions) if points else []
    hv = normalized_hypervolume(objs, ideal, nadir) if len(objs) else 0.0
    return {
        "exact_front_size": len(exact),
        "exact_hypervolume": exact_hv,
        "hypervolume_ratio": hv / exact_hv if exact_hv > 0 else None,
        "reference": "exact_front",
    }


# ---------------------------------------------------------------- 2. simulated


def neighbourhood(space: SearchSpace, ids: np.ndarray) -> np.ndarray:
    """Configurations one value away from `ids` along one dimension (the values of each
    dimension in their spec order: tp 2 is next to 1 and 4), without `ids`, sorted."""
    ids = np.asarray(ids, dtype=np.int64)
    if not ids.size:
        return ids
    idx = space.decode(ids)
    out = []
    for d in space.dimensions:
        for step in (-1, 1):
            moved = idx[d.name] + step
            ok = (moved >= 0) & (moved < d.size)
            if ok.any():
                out.append(space.encode({**{k: v[ok] for k, v in idx.items()}, d.name: moved[ok]}))
    near = np.unique(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)
    return near[~np.isin(near, ids)]


def superseding_writer(store: Store, name: str, spec: SweepSpec) -> Callable[[list[dict]], int]:
    """A writer of higher-fidelity rows that replace the stored rows of their configurations,
    with the analytic model's latencies kept as `analytic_*` metrics."""
    analytic = make_evaluator(spec.model_copy(update={"evaluator": "analytic"}))

    def write(rows: list[dict]) -> int:
        if not rows:
            return 0
        base = analytic.evaluate(np.array([int(r["config"]["id"]) for r in rows], dtype=np.int64))
        for i, row in enumerate(rows):
            for col in LATENCY_METRICS.values():
                row["metrics"][f"analytic_{col}"] = _plain(base.metrics[col][i])
        return store.replace_evaluations(name, rows)

    return write


def _simulated_stage(
    store: Store,
    name: str,
    spec: SweepSpec,
    space: SearchSpace,
    workers: int,
    progress: ProgressCallback | None,
    local: bool,
    optuna_storage: optuna.storages.BaseStorage | None,
    should_stop: StopCheck | None,
    before: dict[str, Any],
    checkpoint: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    analytic = store.latest_front(name, kind="analytic") or {"points": [], "hypervolume": None}
    if spec.resolved_workload().offline:
        store.save_front(name, "final", analytic["points"], analytic["hypervolume"], None)
        return {
            "status": "skipped",
            "reason": "offline workload (no arrival rate): there is no load to simulate; the final front is "
            "the analytic front",
        }
    sspec = spec.model_copy(update={"evaluator": "simulator", "sampler": "tpe"})
    sim = make_evaluator(sspec)
    write = superseding_writer(store, name, spec)
    front_ids = np.sort(np.array([int(p["id"]) for p in analytic["points"]], dtype=np.int64))
    seed_ids = np.concatenate([front_ids, neighbourhood(space, front_ids)])
    budget = sspec.budget.trials
    if budget is not None:
        seed_ids = seed_ids[:budget]  # the front first
    keys = [space.key(space.config(int(i))) for i in seed_ids]
    done = {r["config_key"] for r in store.get_evaluations(name, keys=keys) if r.get("evaluator") == sim.name}
    todo = np.array([i for i, k in zip(seed_ids, keys, strict=True) if k not in done], dtype=np.int64)
    checkpoint({"seeds": int(seed_ids.size), "seed_front": int(front_ids.size), "sampler": "tpe"})
    _simulate_seeds(store, name, sspec, space, sim, todo, workers, local, write, should_stop)
    s = _run_guided(
        store,
        name,
        sspec,
        workers,
        progress,
        local,
        optuna_storage,
        should_stop,
        study_suffix=":simulated",
        seeds=[space.config(int(i)) for i in seed_ids],
        write_rows=write,
        front_kind="simulated",
        wave=2 * workers,
    )
    simulated = store.latest_front(name, kind="simulated") or {}
    store.save_front(name, "final", simulated.get("points") or [], simulated.get("hypervolume"), None)
    entry = {k: v for k, v in s.items() if k != "kind"}
    entry.update(
        status="done", seeds=int(seed_ids.size), seed_front=int(front_ids.size), requests=sspec.simulation.requests
    )
    return entry


def _simulate_seeds(
    store: Store,
    name: str,
    spec: SweepSpec,
    space: SearchSpace,
    sim: Any,
    ids: np.ndarray,
    workers: int,
    local: bool,
    write: Callable[[list[dict]], int],
    should_stop: StopCheck | None,
) -> None:
    """Simulate the seed configurations in chunks, `2 x workers` Ray tasks in flight, storing
    each chunk as it lands (a stop leaves the rest for the resumed driver)."""
    chunks = [ids[i : i + SEED_CHUNK] for i in range(0, ids.size, SEED_CHUNK)]
    if local:
        for chunk in chunks:
            if _stop_requested(should_stop) is not None:
                raise SweepStopped(_stop_requested(should_stop) or "interrupted")
            write(sim.evaluate(chunk).rows(space, sim.name))
        return
    spec_json = _spec_json(spec)
    in_flight: list[Any] = []
    while chunks or in_flight:
        stop = _stop_requested(should_stop)
        if stop is not None:
            raise SweepStopped(stop)
        while chunks and len(in_flight) < 2 * workers:
            in_flight.append(evaluate_ids.remote(spec_json, chunks.pop(0)))
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        for ref in ready:
            result: EvalResult = ray.get(ref)
            write(result.rows(space, sim.name))


# ---------------------------------------------------------------- 3. measured


def _measured_stage(
    store: Store,
    name: str,
    spec: SweepSpec,
    space: SearchSpace,
    workers: int,
    progress: ProgressCallback | None,
    local: bool,
    optuna_storage: optuna.storages.BaseStorage | None,
    should_stop: StopCheck | None,
    before: dict[str, Any],
    checkpoint: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    from search.calibration import probe_coverage
    from search.cluster import ray_accelerator_type
    from search.sweeps.evaluation import PROBE_STATUS

    final = store.latest_front(name, kind="final") or {"points": []}
    directions = [o.direction for o in spec.objectives]
    points = [p for p in final["points"] if p.get("objectives") and None not in p["objectives"]]
    first = to_minimization(np.array([[p["objectives"][0]] for p in points], dtype=float), directions[:1])
    order = np.argsort(first[:, 0], kind="stable") if points else np.zeros(0, dtype=int)
    finalists = [points[int(i)] for i in order][: spec.probe.max_candidates]
    if not finalists:
        why = "no finalists to probe (the final front is empty or probe.max_candidates is 0)"
        return {"status": "skipped", "reason": why}
    gpus = list(dict.fromkeys(str(p["accelerator"]) for p in finalists))
    missing = probe_coverage(gpus, spec.probe.device)
    if len(missing) == len(gpus):
        kinds = ", ".join(dict.fromkeys(ray_accelerator_type(g) for g in gpus))
        return {
            "status": "skipped",
            "reason": f"no {kinds} GPU in the cluster",
            "finalists": len(finalists),
            "gpus": {g: missing[g] for g in gpus},
        }
    keys = [space.key({k: p[k] for k in space.names}) for p in finalists]
    stored = {r["config_key"]: r for r in store.get_evaluations(name, keys=keys)}
    todo = [int(p["id"]) for p, k in zip(finalists, keys, strict=True) if not stored.get(k, {}).get("measured")]
    statuses: dict[str, int] = dict(before.get("probe_candidates") or {})
    if todo:
        pev = make_evaluator(spec.model_copy(update={"evaluator": "probe"}))
        pev._probe_ids = set(todo)  # type: ignore[attr-defined]  # the finalists, not the analytic front
        result = pev.evaluate(np.array(sorted(todo), dtype=np.int64))
        rows = result.rows(space, pev.name)
        for code in result.metrics["probe_status"]:
            status = PROBE_STATUS[int(code)]
            statuses[status] = statuses.get(status, 0) + 1
        measured = [r for r in rows if r["metrics"].get("probe_status") == PROBE_MEASURED]
        for row in measured:
            old = (stored.get(row["config_key"]) or {}).get("metrics") or {}
            if stage_of(old) == "simulated":
                for col in LATENCY_METRICS.values():
                    row["metrics"][f"simulated_{col}"] = old.get(col)
        superseding_writer(store, name, spec)(measured)
    _final_front(store, name, spec, space, final)
    return {
        "status": "done",
        "finalists": len(finalists),
        "measured": sum(1 for r in store.get_evaluations(name, keys=keys) if r["measured"]),
        "probe_candidates": statuses,
        **({"gpus_missing": missing} if missing else {}),
    }


def _final_front(store: Store, name: str, spec: SweepSpec, space: SearchSpace, final: dict[str, Any]) -> None:
    """The final front again after measurements: the Pareto front of the stored simulated and
    measured rows (of the previous final front's rows when nothing was simulated)."""
    rows = store.get_evaluations(name, feasible_only=True)
    higher = [r for r in rows if stage_of(r.get("metrics"), r.get("evaluator")) != "analytic"]
    if not any(stage_of(r.get("metrics"), r.get("evaluator")) == "simulated" for r in higher):
        keys = {space.key({k: p[k] for k in space.names}) for p in final["points"]}
        higher = [r for r in rows if r["config_key"] in keys]
    higher = [r for r in higher if r.get("objectives") and None not in r["objectives"]]
    if not higher:
        return
    directions = [o.direction for o in spec.objectives]
    objs = to_minimization(np.array([r["objectives"] for r in higher], dtype=float), directions)
    keep = pareto_mask(objs)
    points = [
        {**r["config"], "objectives": r["objectives"], "metrics": r["metrics"]}
        for r, k in zip(higher, keep, strict=True)
        if k
    ]
    ideal, nadir = _hv_frame(objs[keep])
    store.save_front(name, "final", points, normalized_hypervolume(objs[keep], ideal, nadir), None)
