"""The exhaustive tier: every configuration of the space, evaluated vectorized in Ray tasks.

The space is cut into shards of consecutive configuration ids; tasks evaluate them and send back
each shard's Pareto front (and every row when the space is small enough to store,
`STORE_ALL_LIMIT`); the driver merges fronts, so its memory holds fronts, not the space.
Each finished shard is recorded (its counts and front, search.store add_shard) in the
transaction that stores its rows, so a killed driver resumes redoing only the shards that were
in flight, and ends with the same exact front. `exact_front` is the same front computed in-process,
the reference that measures the guided tier.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import ray

from search.store import Store
from search.sweeps.control import (
    CHECKPOINT_S,
    Progress,
    ProgressCallback,
    StopCheck,
    SweepStopped,
    _front_points,
    _hv_frame,
    _spec_json,
    _stop_requested,
)
from search.sweeps.evaluation import EvalResult
from search.sweeps.evaluators import make_evaluator
from search.sweeps.pareto import normalized_hypervolume, pareto_mask, to_minimization
from search.sweeps.remote import evaluate_shard, summarize_shard
from search.sweeps.space import SearchSpace
from search.sweeps.spec import SweepSpec

STORE_ALL_LIMIT = 200_000  # exhaustive sweeps up to this size store every evaluation


# ---------------------------------------------------------------- exhaustive


SLOW_SHARD_LIMIT = 16  # configurations per shard for the simulator and probes (~tens of ms each)


def _shard_size(size: int, workers: int, evaluator: str = "analytic") -> int:
    """Configurations per shard: the vectorized analytic model takes thousands at once; the
    simulator and probes take one at a time, so their shards stay small enough that a cancel
    (checked between shard results) lands within seconds."""
    per_worker = -(-size // (workers * 8))
    if evaluator != "analytic":
        return int(max(1, min(SLOW_SHARD_LIMIT, per_worker)))
    return int(min(65_536, max(1_024, per_worker)))


def _run_exhaustive(
    store: Store,
    name: str,
    spec: SweepSpec,
    workers: int,
    progress: ProgressCallback | None,
    previous: dict,
    should_stop: StopCheck | None = None,
    *,
    front_kind: str = "final",
    write_summary: Callable[[dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """Every configuration in Ray tasks (module docstring). A stage of a multi-fidelity sweep
    (search.sweeps.staged) saves its front as `front_kind` and its checkpoints through
    `write_summary` (default: the sweep's summary), with `previous` its last checkpoint."""
    space = SearchSpace(spec)
    write_summary = write_summary or (lambda summary: store.update_sweep(name, summary=summary))
    size = space.size
    directions = [o.direction for o in spec.objectives]
    shard = int(previous.get("shard_size") or _shard_size(size, workers, spec.evaluator))
    n_shards = -(-size // shard)
    done: set[int] = set(previous.get("done_shards", []))
    counts = {"evaluated": int(previous.get("evaluated", 0)), "feasible": int(previous.get("feasible", 0))}
    reasons: dict[str, int] = dict(previous.get("reasons", {}))
    keep_all = size <= STORE_ALL_LIMIT
    spec_json = _spec_json(spec)
    evaluator = make_evaluator(spec)

    front: EvalResult | None = None
    stored_shards = store.get_shards(name)
    if done and not stored_shards:
        # resume of a sweep checkpointed before shards were stored one by one: its checkpoint
        # (front, counts, done shards) becomes the baseline shard -1
        saved = store.latest_front(name, kind="partial")
        store.add_shard(
            name,
            -1,
            [],
            covers=sorted(done),
            evaluated=counts["evaluated"],
            feasible=counts["feasible"],
            reasons=reasons,
            front=(saved or {}).get("points", []),
        )
        stored_shards = store.get_shards(name)
    # resume: every recorded shard is done, its counts and front stored with its rows
    done, counts, reasons = set(), {"evaluated": 0, "feasible": 0}, {}
    for rec in stored_shards:
        done.update(rec["covers"])
        counts["evaluated"] += rec["evaluated"]
        counts["feasible"] += rec["feasible"]
        for r, c in rec["reasons"].items():
            reasons[r] = reasons.get(r, 0) + c
        part = _result_from_points(rec["front"], evaluator.constraint_names)
        if part is not None:
            front = merge_front(front, part, directions)

    stored = counts["evaluated"]
    state = Progress(total=size, evaluated=stored, feasible=counts["feasible"], resumed=stored)

    def merge(part: EvalResult) -> None:
        nonlocal front
        front = merge_front(front, part, directions)

    def checkpoint(final: bool = False) -> None:
        pts = _front_points(front, space, spec) if front is not None else []
        store.save_front(name, "final" if final else "partial", pts, None, None)
        write_summary(
            {
                "kind": "exhaustive",
                "shard_size": shard,
                "done_shards": sorted(done),
                "space_size": size,
                **counts,
                "reasons": reasons,
            }
        )

    pending = [i for i in range(n_shards) if i not in done]
    in_flight: dict[Any, int] = {}
    checkpoint()  # the summary (kind, space size, counts) is there from the start
    if progress:
        progress(state)
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
            store.add_shard(  # the shard is done exactly when its rows are stored
                name,
                i,
                part["all"].rows(space, evaluator.name) if keep_all and part["all"] is not None else [],
                evaluated=part["evaluated"],
                feasible=part["feasible"],
                reasons=part["reasons"],
                front=_front_points(part["front"], space, spec) if len(part["front"]) else [],
            )
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
    store.save_front(name, front_kind, pts, hv, None)
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


def merge_front(front: EvalResult | None, part: EvalResult, directions: list[str]) -> EvalResult | None:
    """The Pareto front of `front` and a shard's front `part`. Of configurations with equal
    objectives the one with the smallest id stays, whichever shard finished first, so the final
    front does not depend on completion order."""
    if len(part) == 0:
        return front
    both = part if front is None or len(front) == 0 else _concat_results(front, part)
    both = both.take(np.argsort(both.ids, kind="stable"))
    keep = np.flatnonzero(pareto_mask(to_minimization(both.objectives, directions)))
    return both.take(keep)


def _result_from_points(points: list[dict], constraint_names: list[str]) -> EvalResult | None:
    """An EvalResult of stored front points (all feasible), without evaluating them again."""
    if not points:
        return None
    # stage_code is written by EvalResult.rows, not an evaluator's column
    metric_names = [k for k in points[0]["metrics"] if k not in ("constraints", "stage_code")]
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
