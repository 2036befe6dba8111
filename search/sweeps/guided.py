"""The guided tier: an Optuna study in the sweep database, driven ask-and-tell in waves.

Each wave of `workers` trials is evaluated as Ray tasks in flight together and told in trial
order. Each ask uses a sampler seeded from (seed, trial number), so a resumed sweep makes the
same decisions as an uninterrupted one. The study is sampled in memory and each wave persisted
in one transaction (search.store.add_trials) together with what the samplers keep beyond the
trials — NSGA-II's parent populations, study system attributes — as a wave record
(`servesweep:wave:<end>`: the wave's end and the attributes it changed). A resumed driver
rebuilds the in-memory study exactly as it stood after the last persisted wave: its trials (with
their system attributes in the order the driver set them: a sampler reads constraints in dict
order, and a database returns them in its own) and the sampler state of the wave records, trial
ids mapped through trial numbers; then it asks the next wave, whose evaluations (if the killed
driver had stored them) are found stored. A configuration already stored is never evaluated
again, and the trial budget counts distinct configurations: a repeated suggestion does not spend
it. Simulator sweeps are seeded with the analytic front (`enqueue_trial`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
import ray

from search.store import Store, add_trials, make_optuna_storage
from search.sweeps.control import (
    Progress,
    ProgressCallback,
    StopCheck,
    SweepStopped,
    _hv_frame,
    _spec_json,
    _stop_requested,
)
from search.sweeps.evaluators import make_evaluator
from search.sweeps.exhaustive import exact_front
from search.sweeps.pareto import normalized_hypervolume, pareto_mask, to_minimization
from search.sweeps.remote import evaluate_ids
from search.sweeps.space import SearchSpace
from search.sweeps.spec import SweepSpec

EXHAUSTIVE_REFERENCE_LIMIT = 2_000_000  # guided sweeps compute the exact front up to this size
SIMULATED_REFERENCE_LIMIT = 64  # ... or this size with the simulator (tens of ms per configuration)
MAX_TRIALS_PER_BUDGET = 20  # trials asked per configuration of the budget before giving up on new ones
PENALTY = 1e12  # objective value told to Optuna when the model gives none (does not fit)


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


def _share_search_space(sampler: optuna.samplers.BaseSampler, shared: dict[str, Any]) -> None:
    """Give every TPE sampler of one run the same incremental intersection search space: a new
    sampler per ask (seeded by trial number, for resumable decisions) would otherwise recompute
    it over every trial at every ask, quadratic in the trials (most of a 300-trial sweep's time).
    The intersection of the trials' distributions is the same however it is accumulated, so the
    decisions do not change."""
    if isinstance(sampler, optuna.samplers.TPESampler) and hasattr(sampler, "_search_space"):
        space = shared.setdefault("space", sampler._search_space)
        sampler._search_space = space


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
    *,
    study_suffix: str = "",
    seeds: list[dict[str, Any]] | None = None,
    write_rows: Callable[[list[dict]], Any] | None = None,
    front_kind: str = "final",
    wave: int | None = None,
) -> dict[str, Any]:
    """Ask-and-tell in waves of `workers` trials on an in-memory study (so the sampler never
    waits on the database), persisting each finished wave to the stored study — its trials in
    trial order and its record of the sampler state, one transaction — after its evaluations
    are stored. A resumed driver rebuilds the study as it stood after the last stored wave and
    asks the next one (same history, same sampler state, same per-trial seeds: the same
    suggestions), finding the evaluations its predecessor stored of it. (A study stored without
    wave records replays its last whole multiple of `wave` trials.)

    A stage of a multi-fidelity sweep (search.sweeps.staged) runs its own study
    (`study_suffix`), enqueues its own `seeds` (default: the analytic front, for a slower
    evaluator), counts as known only the rows of its own evaluator, writes new rows with
    `write_rows` (default Store.add_evaluations), saves its front as `front_kind` and may ask
    waves of `wave` trials (default `workers`)."""
    space = SearchSpace(spec)
    directions = [o.direction for o in spec.objectives]
    spec_json = _spec_json(spec)
    evaluator = make_evaluator(spec)
    stored_study_name = f"servesweep:{name}{study_suffix}"
    optuna_storage = optuna_storage or make_optuna_storage(store.url)
    stored = optuna.create_study(
        storage=optuna_storage,
        study_name=stored_study_name,
        directions=directions,
        load_if_exists=True,
    )
    store.update_sweep(name, optuna_study_name=stored_study_name)
    persisted = stored.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    wave = wave or workers
    records = _wave_records(optuna_storage.get_study_system_attrs(stored._study_id))
    if records and max(records) == len(persisted):
        resume_at = len(persisted)  # every wave was stored whole, with its record
    else:  # a study stored before wave records: replay the last, possibly partial, wave
        resume_at = len(persisted) // wave * wave
        records = {}
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), directions=directions)
    study.add_trials([_canonical_trial(t, space, evaluator.constraint_names) for t in persisted[:resume_at]])
    sampler_attrs = _restore_sampler_state(study, records, resume_at)
    n_persisted = len(persisted)
    budget_trials = spec.budget.trials
    seeds = _analytic_seeds(spec, space) if seeds is None else seeds
    for params in seeds[resume_at:budget_trials]:
        study.enqueue_trial(params)  # asked first, in order: a resumed driver re-enqueues the rest
    deadline = None if spec.budget.wall_time_s is None else time.monotonic() + spec.budget.wall_time_s
    # rows of another evaluator (a lower-fidelity stage) are not this tier's evaluations
    known = {r["config_key"]: r for r in store.get_evaluations(name) if r.get("evaluator") == evaluator.name}
    write_rows = write_rows or (lambda rows: store.add_evaluations(name, rows))
    shared_space: dict[str, Any] = {}
    # The budget counts distinct configurations: a suggestion of one already stored is told
    # again (the sampler learns it) but costs nothing, so trials may outnumber the budget.
    target = space.size if budget_trials is None else min(budget_trials, space.size)
    max_trials = max(target, wave) * MAX_TRIALS_PER_BUDGET  # a sampler that only repeats itself stops
    already = len({t.user_attrs.get("config_key") for t in study.get_trials(deepcopy=False, states=_TOLD)})
    state = Progress(total=target, evaluated=already, resumed=already)

    while True:
        told = study.get_trials(deepcopy=False, states=_TOLD)
        n_done = len(told)
        n_distinct = len({t.user_attrs.get("config_key") for t in told})
        if (
            n_distinct >= target
            or n_done >= max_trials
            or (deadline is not None and time.monotonic() >= deadline and n_done >= n_persisted)
        ):
            break
        stop = _stop_requested(should_stop)
        if stop is not None:  # between waves: every told trial is persisted
            raise SweepStopped(stop)
        wave_size = min(wave, target - n_distinct)
        trials: list[optuna.trial.Trial] = []
        for k in range(wave_size):
            study.sampler = make_sampler(spec.tier_sampler, _ask_seed(spec.seed, n_done + k))
            _share_search_space(study.sampler, shared_space)
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
            write_rows(new_rows)
        for trial, key in zip(trials, keys, strict=True):
            _tell(study, trial, known[key], evaluator.constraint_names, directions)
        done = study.get_trials(deepcopy=False)  # by number (seeds not yet asked are WAITING)
        # persist in trial order, skipping what a killed driver had written, with the wave's
        # record of the sampler state it changed
        new_trials = [done[t.number] for t in trials if t.number >= n_persisted]
        record = _wave_record(study, done, sampler_attrs, trials[-1].number + 1) if new_trials else {}
        add_trials(optuna_storage, stored, new_trials, fence=store.lease_fence(name), study_attrs=record)
        n_persisted = max(n_persisted, trials[-1].number + 1)
        if progress:
            told = study.get_trials(deepcopy=False, states=_TOLD)
            state.evaluated = len({t.user_attrs.get("config_key") for t in told})
            state.feasible = len({t.user_attrs.get("config_key") for t in told if t.user_attrs.get("feasible")})
            state.front_size = len(_study_front(told, directions))
            progress(state)
    told = study.get_trials(deepcopy=False, states=_TOLD)
    return _guided_summary(store, name, spec, space, told, directions, front_kind)


_TOLD = (optuna.trial.TrialState.COMPLETE,)
_WAVE_PREFIX = "servesweep:wave:"
_CONSTRAINT_PREFIX = "constraints:"
_GA_PARENT_MARK = ":parent:"  # optuna's BaseGASampler caches parents as '<Sampler>:parent:<generation>'
_MISSING = object()


def _trial_id_lists(key: str) -> bool:
    """Whether a study system attribute holds trial ids (a genetic sampler's parent cache),
    which the driver stores as trial numbers: the ids of a rebuilt in-memory study differ."""
    return _GA_PARENT_MARK in key


def _study_attrs(study: optuna.Study) -> dict[str, Any]:
    return dict(study._storage.get_study_system_attrs(study._study_id))


def _wave_record(
    study: optuna.Study, trials: list[optuna.trial.FrozenTrial], known: dict[str, Any], end: int
) -> dict[str, Any]:
    """The study attribute recording a wave that ends before trial `end`: the sampler state
    (study system attributes, trial ids as numbers) it set or changed; `known` (the state up to
    the previous wave) is updated."""
    number_of = {t._trial_id: t.number for t in trials}
    changed: dict[str, Any] = {}
    for key, value in _study_attrs(study).items():
        if _trial_id_lists(key):
            value = [number_of[i] for i in value]
        if known.get(key, _MISSING) != value:
            changed[key] = known[key] = value
    return {f"{_WAVE_PREFIX}{end:09d}": {"end": end, "attrs": changed}}


def _wave_records(stored_attrs: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The stored study's wave records, by the trial count each wave ends at."""
    return {
        int(v["end"]): v.get("attrs") or {}
        for k, v in stored_attrs.items()
        if k.startswith(_WAVE_PREFIX) and isinstance(v, dict) and "end" in v
    }


def _restore_sampler_state(study: optuna.Study, records: dict[int, dict[str, Any]], upto: int) -> dict[str, Any]:
    """Set on the rebuilt in-memory `study` the sampler state its wave records hold up to trial
    `upto` (trial numbers back to this study's trial ids); returns that state as recorded."""
    state: dict[str, Any] = {}
    for end in sorted(records):
        if end <= upto:
            state.update(records[end])
    id_of = {t.number: t._trial_id for t in study.get_trials(deepcopy=False)}
    for key, value in state.items():
        if _trial_id_lists(key):
            value = [id_of[n] for n in value]
        study._storage.set_study_system_attr(study._study_id, key, value)
    return state


def _canonical_trial(
    trial: optuna.trial.FrozenTrial, space: SearchSpace, constraint_names: list[str]
) -> optuna.trial.FrozenTrial:
    """A stored trial with its parameters in the order the driver suggests them and its system
    attributes in the order it sets them (the sampler's, then the constraints in the
    evaluator's order): Optuna reads a trial's constraints in dict order, and a database
    returns attributes in an order of its own (SQLite: by key), which changes what GP samples."""
    order = {d.name: i for i, d in enumerate(space.dimensions)}
    by_dim = sorted(trial.params, key=lambda n: (order.get(n, len(order)), n))
    rank = {f"{_CONSTRAINT_PREFIX}{c}": i for i, c in enumerate(constraint_names)}
    attrs = trial.system_attrs
    sampler_keys = [k for k in attrs if not k.startswith(_CONSTRAINT_PREFIX)]
    constraint_keys = sorted(
        (k for k in attrs if k.startswith(_CONSTRAINT_PREFIX)), key=lambda k: (rank.get(k, len(rank)), k)
    )
    return optuna.trial.FrozenTrial(
        number=trial.number,
        state=trial.state,
        value=None,
        values=trial.values,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params={n: trial.params[n] for n in by_dim},
        distributions={n: trial.distributions[n] for n in by_dim},
        user_attrs=trial.user_attrs,
        system_attrs={k: attrs[k] for k in sampler_keys + constraint_keys},
        intermediate_values=trial.intermediate_values,
        trial_id=trial._trial_id,
    )


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
    front_kind: str = "final",
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
        "sampler": spec.tier_sampler,
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
    store.save_front(name, front_kind, points, hv, None)
    return summary
