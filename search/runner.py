"""The sweep driver: exhaustive and guided search over a spec's space, stored as it goes.

Exhaustive: the space is cut into shards of consecutive configuration ids; Ray tasks evaluate
them vectorized and send back each shard's Pareto front (and every row when the space is small
enough to store, `STORE_ALL_LIMIT`); the driver merges fronts, so its memory holds fronts, not
the space. Finished shards and the running front are checkpointed, so a killed driver resumes
where it stopped and ends with the same exact front.

Guided: an Optuna study in the same database, driven ask-and-tell in waves of `workers` trials,
each wave's configurations evaluated as Ray tasks in flight together, told in trial order.
Each ask uses a sampler seeded from (seed, trial number), so a resumed sweep (the trials its
predecessor asked but never told are finished first, inside their wave) makes the same
decisions as an uninterrupted one. A configuration already stored is never evaluated again.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import ray

from search.distributed import ensure_ray, evaluate_ids, evaluate_shard, summarize_shard
from search.evaluators import EvalResult, make_evaluator
from search.optuna_storage import add_trials, make_optuna_storage
from search.pareto import normalized_hypervolume, pareto_mask, to_minimization
from search.space import SearchSpace
from search.spec import SWEEP_NAME_PATTERN, SweepSpec
from search.storage import Store

STORE_ALL_LIMIT = 200_000  # exhaustive sweeps up to this size store every evaluation
EXHAUSTIVE_REFERENCE_LIMIT = 2_000_000  # guided sweeps compute the exact front up to this size
SIMULATED_REFERENCE_LIMIT = 64  # ... or this size with the simulator (tens of ms per configuration)
PENALTY = 1e12  # objective value told to Optuna when the model gives none (does not fit)
CHECKPOINT_S = 2.0

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class Progress:
    """What a progress display shows; `callback(progress)` is called as work lands."""

    total: int
    evaluated: int = 0
    feasible: int = 0
    front_size: int = 0
    hypervolume: float | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def eta_s(self) -> float | None:
        done = self.evaluated
        if not done:
            return None
        return (time.monotonic() - self.started) / done * max(self.total - done, 0)


ProgressCallback = Callable[[Progress], None]
StopCheck = Callable[[], str | None]  # None: go on; else the status to stop with


class SweepStopped(Exception):
    """Raised in the driver loops when `should_stop` asks for a stop (after storing the work)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _stop_requested(should_stop: StopCheck | None) -> str | None:
    status = should_stop() if should_stop is not None else None
    if status is not None and status not in ("cancelled", "interrupted"):
        raise ValueError(f"should_stop must return None, 'cancelled' or 'interrupted', not {status!r}")
    return status


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("servesweep")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _spec_json(spec: SweepSpec) -> str:
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True)


def _front_points(result: EvalResult, space: SearchSpace, spec: SweepSpec) -> list[dict]:
    return [
        {**row["config"], "objectives": row["objectives"], "metrics": row["metrics"]}
        for row in result.rows(space, "front")
    ]


def _hv_frame(objs_min: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return objs_min.min(axis=0), objs_min.max(axis=0)


def start_sweep(
    store: Store,
    spec: SweepSpec,
    spec_yaml: str,
    name: str | None,
    workers: int,
    submitter: str | None = None,
    service: bool = False,
) -> str:
    """Create the sweep record (a name is generated when none is given); returns the name.
    `submitter` defaults to $USER; `service` marks a sweep the HTTP service owns (and resumes)."""
    name = name or spec.name or f"{spec.model.split('/')[-1].lower()}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not re.match(SWEEP_NAME_PATTERN, name) or ".." in name:
        raise ValueError(
            f"invalid sweep name {name!r}: use letters, digits, '.', '_' and '-' (at most 100, "
            "starting with a letter or digit)"
        )
    if spec.calibration != "none" and spec.calibration_record is None:
        from search.calibration import load_record

        if spec.calibration == "latest":
            found = store.latest_calibration(for_gpus=spec.accelerators)
            if found is None:
                raise ValueError(
                    f"calibration: latest, but no calibration that applies to {', '.join(spec.accelerators)} "
                    f"is stored in {store.url}"
                )
            record = found["record"]
        else:
            record = load_record(spec.calibration)
        spec = spec.model_copy(update={"calibration_record": record})
    evaluator = make_evaluator(spec)
    prices = {g: evaluator.price_per_gpu_hour(g) for g in spec.accelerators}  # type: ignore[attr-defined]
    store.create_sweep(
        name,
        spec_yaml=spec_yaml,
        spec={**spec.model_dump(mode="json"), "_workers": workers, **({"_service": True} if service else {})},
        submitter=submitter or os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown",
        code_version=code_version(),
        price_table={"basis": spec.pricing.basis, "usd_per_gpu_hour": prices},
    )
    return name


def run_sweep(
    store: Store,
    name: str,
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    local: bool = False,
    optuna_storage: optuna.storages.BaseStorage | None = None,
    should_stop: StopCheck | None = None,
) -> dict[str, Any]:
    """Run (or resume) the stored sweep `name` to completion; returns its summary.

    `local` evaluates guided trials in this process instead of on Ray, and `optuna_storage`
    replaces the study's storage (the benchmark compares persistence with Optuna's in-memory
    storage this way); neither is needed in normal use. `should_stop` is polled between
    shard results and between waves: when it returns a status ('cancelled' or 'interrupted'),
    the work done so far is stored, the sweep gets that status and `{"stopped": status}` is
    returned; a later run_sweep resumes it.

    One driver per sweep: the sweep's lease (Store.sweep_lease) is held throughout, so a second
    process asked to run it (a resume, another service instance) gets SweepBusyError at once
    instead of evaluating it twice."""
    if store.get_sweep(name) is None:
        raise ValueError(f"no sweep named {name!r} in {store.url}")
    with store.sweep_lease(name):
        return _drive(store, name, ray_address, workers, progress, local, optuna_storage, should_stop)


def _drive(
    store: Store,
    name: str,
    ray_address: str | None,
    workers: int | None,
    progress: ProgressCallback | None,
    local: bool,
    optuna_storage: optuna.storages.BaseStorage | None,
    should_stop: StopCheck | None,
) -> dict[str, Any]:
    """run_sweep's work, under the sweep's lease."""
    record = store.get_sweep(name)
    if record is None:  # deleted meanwhile
        raise ValueError(f"no sweep named {name!r} in {store.url}")
    if record["status"] == "finished":
        return record["summary"] or {}
    stored = dict(record["spec"])
    workers = int(stored.pop("_workers", None) or workers or os.cpu_count() or 1)
    stored.pop("_service", None)
    spec = SweepSpec.model_validate(stored)
    if not local:
        ensure_ray(ray_address, workers)
    store.update_sweep(name, status="running", started_at=record.get("started_at") or _now())
    try:
        if spec.sampler == "exhaustive":
            summary = _run_exhaustive(store, name, spec, workers, progress, record.get("summary") or {}, should_stop)
        else:
            summary = _run_guided(store, name, spec, workers, progress, local, optuna_storage, should_stop)
    except SweepStopped as stop:
        store.update_sweep(name, status=stop.status)
        return {"stopped": stop.status}
    except KeyboardInterrupt:
        store.update_sweep(name, status="interrupted")
        raise
    except Exception:
        store.update_sweep(name, status="failed")
        raise
    if spec.evaluator == "probe":
        summary = {**summary, **_probe_summary(store, name, spec)}
    store.update_sweep(name, status="finished", finished_at=_now(), summary=summary)
    return summary


def _probe_summary(store: Store, name: str, spec: SweepSpec) -> dict[str, Any]:
    """What a probe sweep measured: stored rows by probe status (candidates not measured say
    why), and which accelerators the cluster lacks."""
    from search.evaluators import PROBE_STATUS
    from search.probes import probe_coverage

    counts: dict[str, int] = {}
    for row in store.get_evaluations(name):
        code = (row.get("metrics") or {}).get("probe_status")
        if code:
            status = PROBE_STATUS[int(code)]
            counts[status] = counts.get(status, 0) + 1
    return {
        "measured": store.count_evaluations(name)["measured"],
        "probe_candidates": counts,
        "probe_analytic": probe_coverage(list(spec.accelerators), spec.probe.device),
    }


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------- exhaustive


def _shard_size(size: int, workers: int) -> int:
    return int(min(65_536, max(1_024, -(-size // (workers * 8)))))


def _run_exhaustive(
    store: Store,
    name: str,
    spec: SweepSpec,
    workers: int,
    progress: ProgressCallback | None,
    previous: dict,
    should_stop: StopCheck | None = None,
) -> dict[str, Any]:
    space = SearchSpace(spec)
    size = space.size
    directions = [o.direction for o in spec.objectives]
    shard = int(previous.get("shard_size") or _shard_size(size, workers))
    n_shards = -(-size // shard)
    done: set[int] = set(previous.get("done_shards", []))
    counts = {"evaluated": int(previous.get("evaluated", 0)), "feasible": int(previous.get("feasible", 0))}
    reasons: dict[str, int] = dict(previous.get("reasons", {}))
    keep_all = size <= STORE_ALL_LIMIT
    spec_json = _spec_json(spec)
    evaluator = make_evaluator(spec)

    front: EvalResult | None = None
    if done:  # resume: the checkpointed front covers the finished shards
        saved = store.latest_front(name, kind="partial")
        front = _result_from_points((saved or {}).get("points", []), evaluator.constraint_names)

    state = Progress(total=size, evaluated=counts["evaluated"], feasible=counts["feasible"])

    def merge(part: EvalResult) -> None:
        nonlocal front
        if len(part) == 0:
            return
        both = part if front is None or len(front) == 0 else _concat_results(front, part)
        keep = np.flatnonzero(pareto_mask(to_minimization(both.objectives, directions)))
        front = both.take(keep)

    def checkpoint(final: bool = False) -> None:
        pts = _front_points(front, space, spec) if front is not None else []
        store.save_front(name, "final" if final else "partial", pts, None, None)
        store.update_sweep(
            name,
            summary={
                "kind": "exhaustive",
                "shard_size": shard,
                "done_shards": sorted(done),
                "space_size": size,
                **counts,
                "reasons": reasons,
            },
        )

    pending = [i for i in range(n_shards) if i not in done]
    in_flight: dict[Any, int] = {}
    last = time.monotonic()
    while pending or in_flight:
        stop = _stop_requested(should_stop)
        if stop is not None:
            checkpoint()  # the finished shards' front and counts; shards in flight are redone on resume
            raise SweepStopped(stop)
        while pending and len(in_flight) < 2 * workers:
            i = pending.pop(0)
            ref = evaluate_shard.remote(spec_json, i * shard, min(size, (i + 1) * shard), keep_all)
            in_flight[ref] = i
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in ready:
            i = in_flight.pop(ref)
            part = ray.get(ref)
            if keep_all and part["all"] is not None:
                store.add_evaluations(name, part["all"].rows(space, evaluator.name))
            merge(part["front"])
            counts["evaluated"] += part["evaluated"]
            counts["feasible"] += part["feasible"]
            for r, c in part["reasons"].items():
                reasons[r] = reasons.get(r, 0) + c
            done.add(i)
        state.evaluated, state.feasible = counts["evaluated"], counts["feasible"]
        state.front_size = 0 if front is None else len(front)
        if progress:
            progress(state)
        if time.monotonic() - last > CHECKPOINT_S:
            checkpoint()
            last = time.monotonic()
    if not keep_all and front is not None:
        store.add_evaluations(name, front.rows(space, evaluator.name))
    hv = None
    if front is not None and len(front):
        objs = to_minimization(front.objectives, directions)
        ideal, nadir = _hv_frame(objs)
        hv = normalized_hypervolume(objs, ideal, nadir)
    checkpoint()
    pts = _front_points(front, space, spec) if front is not None else []
    store.save_front(name, "final", pts, hv, None)
    state.hypervolume = hv
    if progress:
        progress(state)
    return {
        "kind": "exhaustive",
        "space_size": size,
        "shard_size": shard,
        "done_shards": sorted(done),
        **counts,
        "reasons": reasons,
        "front_size": len(pts),
        "hypervolume": hv,
        "stored_every_evaluation": keep_all,
    }


def _result_from_points(points: list[dict], constraint_names: list[str]) -> EvalResult | None:
    """An EvalResult of stored front points (all feasible), without evaluating them again."""
    if not points:
        return None
    metric_names = [k for k in points[0]["metrics"] if k != "constraints"]
    return EvalResult(
        ids=np.array([p["id"] for p in points], dtype=np.int64),
        feasible=np.ones(len(points), dtype=bool),
        reason=["" for _ in points],
        objectives=np.array([[np.nan if v is None else v for v in p["objectives"]] for p in points]),
        constraints=np.array([[p["metrics"]["constraints"].get(c) or 0.0 for c in constraint_names] for p in points]),
        constraint_names=constraint_names,
        metrics={
            k: np.array([np.nan if p["metrics"][k] is None else p["metrics"][k] for p in points]) for k in metric_names
        },
    )


def _concat_results(a: EvalResult, b: EvalResult) -> EvalResult:
    return EvalResult(
        ids=np.concatenate([a.ids, b.ids]),
        feasible=np.concatenate([a.feasible, b.feasible]),
        reason=[*a.reason, *b.reason],
        objectives=np.vstack([a.objectives, b.objectives]),
        constraints=np.vstack([a.constraints, b.constraints]),
        constraint_names=a.constraint_names,
        metrics={k: np.concatenate([a.metrics[k], b.metrics[k]]) for k in a.metrics},
    )


def exact_front(spec: SweepSpec) -> tuple[np.ndarray, np.ndarray]:
    """(ids, minimization-form objectives) of the exact feasible front, computed in-process in
    chunks (the reference a guided search is measured against)."""
    ev = make_evaluator(spec)
    space = SearchSpace(spec)
    directions = [o.direction for o in spec.objectives]
    ids = np.zeros(0, dtype=np.int64)
    objs = np.zeros((0, len(directions)))
    for start in range(0, space.size, 65_536):
        r = ev.evaluate(np.arange(start, min(space.size, start + 65_536)))
        s = summarize_shard(r, directions, keep_all=False)["front"]
        ids = np.concatenate([ids, s.ids])
        objs = np.vstack([objs, to_minimization(s.objectives, directions)])
        keep = pareto_mask(objs)
        ids, objs = ids[keep], objs[keep]
    return ids, objs


# ---------------------------------------------------------------- guided


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """A sampler of the spec's kind; constraints are read from trial.set_constraint."""
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if kind == "gp":
        try:
            import scipy  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            raise ValueError("sampler 'gp' needs PyTorch and SciPy: pip install 'servesweep[gp]'") from None
        return optuna.samplers.GPSampler(seed=seed)
    raise ValueError(f"unknown sampler {kind!r}")


def _ask_seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number * 7_919 + 17) % (2**31 - 1)


def _run_guided(
    store: Store,
    name: str,
    spec: SweepSpec,
    workers: int,
    progress: ProgressCallback | None,
    local: bool = False,
    optuna_storage: optuna.storages.BaseStorage | None = None,
    should_stop: StopCheck | None = None,
) -> dict[str, Any]:
    """Ask-and-tell in waves of `workers` trials on an in-memory study (so the sampler never
    waits on the database), persisting each finished wave to the stored study — one
    transaction per trial, in trial order — after its evaluations are stored. A resumed driver
    reloads the stored trials of whole waves and replays the wave that was cut short; its asks
    repeat (same history, same per-trial seeds) and find their evaluations already stored."""
    space = SearchSpace(spec)
    directions = [o.direction for o in spec.objectives]
    spec_json = _spec_json(spec)
    evaluator = make_evaluator(spec)
    stored_study_name = f"servesweep:{name}"
    optuna_storage = optuna_storage or make_optuna_storage(store.url)
    stored = optuna.create_study(
        storage=optuna_storage,
        study_name=stored_study_name,
        directions=directions,
        load_if_exists=True,
    )
    store.update_sweep(name, optuna_study_name=stored_study_name)
    persisted = stored.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    whole_waves = len(persisted) // workers * workers
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), directions=directions)
    study.add_trials(persisted[:whole_waves])
    n_persisted = len(persisted)
    budget_trials = spec.budget.trials
    for params in _analytic_seeds(spec, space)[whole_waves:budget_trials]:
        study.enqueue_trial(params)  # asked first, in order: a resumed driver re-enqueues the rest
    deadline = None if spec.budget.wall_time_s is None else time.monotonic() + spec.budget.wall_time_s
    known = {r["config_key"]: r for r in store.get_evaluations(name)}
    state = Progress(total=budget_trials or space.size)

    while True:
        n_done = len(study.get_trials(deepcopy=False, states=_TOLD))
        if (budget_trials is not None and n_done >= budget_trials) or (
            deadline is not None and time.monotonic() >= deadline and n_done >= n_persisted
        ):
            break
        stop = _stop_requested(should_stop)
        if stop is not None:  # between waves: every told trial is persisted
            raise SweepStopped(stop)
        wave_size = workers if budget_trials is None else min(workers, budget_trials - n_done)
        trials: list[optuna.trial.Trial] = []
        for k in range(wave_size):
            study.sampler = make_sampler(spec.sampler, _ask_seed(spec.seed, n_done + k))
            trial = study.ask()
            _suggest(trial, space)
            trials.append(trial)
        ids = np.array([space.id_of(t.params) for t in trials], dtype=np.int64)
        keys = [space.key(space.config(int(i))) for i in ids]
        todo = sorted({int(i) for i, k in zip(ids, keys, strict=True) if k not in known})
        if local:
            results = [evaluator.evaluate(np.array(todo, dtype=np.int64))] if todo else []
        else:
            refs = [evaluate_ids.remote(spec_json, np.array([i], dtype=np.int64)) for i in todo]
            results = [ray.get(ref) for ref in refs]
        number_of = {k: t.number for t, k in zip(trials, keys, strict=True)}
        new_rows = [row for result in results for row in result.rows(space, evaluator.name)]
        for row in new_rows:
            row["trial_number"] = number_of.get(row["config_key"])
            known[row["config_key"]] = row
        if new_rows:
            store.add_evaluations(name, new_rows)
        for trial, key in zip(trials, keys, strict=True):
            _tell(study, trial, known[key], evaluator.constraint_names, directions)
        done = study.get_trials(deepcopy=False)  # by number (seeds not yet asked are WAITING)
        # persist in trial order, skipping what a killed driver had written
        add_trials(optuna_storage, stored, [done[t.number] for t in trials if t.number >= n_persisted])
        n_persisted = max(n_persisted, trials[-1].number + 1)
        if progress:
            told = study.get_trials(deepcopy=False, states=_TOLD)
            state.evaluated = len(told)
            state.feasible = sum(1 for t in told if t.user_attrs.get("feasible"))
            state.front_size = len(_study_front(told, directions))
            progress(state)
    return _guided_summary(store, name, spec, space, study.get_trials(deepcopy=False, states=_TOLD), directions)


_TOLD = (optuna.trial.TrialState.COMPLETE,)


def _analytic_seeds(spec: SweepSpec, space: SearchSpace) -> list[dict[str, Any]]:
    """Configurations of the analytic model's exact front, in id order, to seed a guided search
    run with a slower evaluator (none for the analytic evaluator itself, or when the space is
    too large to enumerate). Deterministic, so a resumed driver enqueues the same list."""
    if spec.evaluator == "analytic" or space.size > EXHAUSTIVE_REFERENCE_LIMIT:
        return []
    ids, _ = exact_front(spec.model_copy(update={"evaluator": "analytic"}))
    return [space.config(int(i)) for i in np.sort(ids)]


def _suggest(trial: optuna.trial.Trial, space: SearchSpace) -> dict[str, Any]:
    return {d.name: trial.suggest_categorical(d.name, list(d.values)) for d in space.dimensions}


def _tell(
    study: optuna.Study,
    trial: optuna.trial.Trial,
    row: dict,
    constraint_names: list[str],
    directions: list[str],
) -> None:
    values = [PENALTY if v is None else float(v) for v in row["objectives"]]
    values = [(-PENALTY if d == "maximize" and v == PENALTY else v) for v, d in zip(values, directions, strict=True)]
    cons = row["metrics"].get("constraints", {})
    for cname in constraint_names:
        value = cons.get(cname)
        trial.set_constraint(cname, 1e30 if value is None else float(value))
    trial.set_user_attr("feasible", bool(row["feasible"]))
    trial.set_user_attr("reason", row.get("reason") or "")
    trial.set_user_attr("config_key", row["config_key"])
    for k, v in row["metrics"].items():
        if k != "constraints":
            trial.set_user_attr(k, v)
    study.tell(trial, values, skip_if_finished=True)


def _study_front(trials: list[optuna.trial.FrozenTrial], directions: list[str]) -> list[optuna.trial.FrozenTrial]:
    feas = [t for t in trials if t.user_attrs.get("feasible") and t.values is not None]
    if not feas:
        return []
    objs = to_minimization(np.array([t.values for t in feas]), directions)
    keep = pareto_mask(objs)
    return [t for t, k in zip(feas, keep, strict=True) if k]


def _guided_summary(
    store: Store,
    name: str,
    spec: SweepSpec,
    space: SearchSpace,
    trials: list[optuna.trial.FrozenTrial],
    directions: list[str],
) -> dict[str, Any]:
    front = _study_front(trials, directions)
    keys = [t.user_attrs["config_key"] for t in front]
    rows = {r["config_key"]: r for r in store.get_evaluations(name, keys=keys)}
    points = [
        {**rows[k]["config"], "objectives": rows[k]["objectives"], "metrics": rows[k]["metrics"]}
        for k in dict.fromkeys(keys)
    ]
    objs = to_minimization(np.array([t.values for t in front]), directions) if front else np.zeros((0, len(directions)))
    summary: dict[str, Any] = {
        "kind": "guided",
        "sampler": spec.sampler,
        "space_size": space.size,
        "trials": len(trials),
        "evaluated": len({t.user_attrs.get("config_key") for t in trials}),
        "feasible": len({t.user_attrs.get("config_key") for t in trials if t.user_attrs.get("feasible")}),
        "front_size": len(points),
    }
    hv = None
    # A probe sweep measures a few candidates on GPUs; measuring the whole space again for a
    # reference front is not what they are for, so its hypervolume stands alone.
    reference_limit = {"analytic": EXHAUSTIVE_REFERENCE_LIMIT, "simulator": SIMULATED_REFERENCE_LIMIT}.get(
        spec.evaluator, -1
    )
    if space.size <= reference_limit:
        _, exact = exact_front(spec)
        if len(exact):
            ideal, nadir = _hv_frame(exact)
            exact_hv = normalized_hypervolume(exact, ideal, nadir)
            hv = normalized_hypervolume(objs, ideal, nadir) if len(objs) else 0.0
            summary.update(
                exact_front_size=len(exact),
                exact_hypervolume=exact_hv,
                hypervolume_ratio=(hv / exact_hv if exact_hv > 0 else None),
            )
    elif len(objs):
        ideal, nadir = _hv_frame(objs)
        hv = normalized_hypervolume(objs, ideal, nadir)
    summary["hypervolume"] = hv
    store.save_front(name, "final", points, hv, None)
    return summary
