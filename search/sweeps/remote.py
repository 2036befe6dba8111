"""The Ray tasks that evaluate configurations: workers rebuild the evaluator from the spec's JSON
(cached per worker process), so only configuration ids travel, and shards come back as fronts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import ray

from search.cluster import EVAL_LOG_ENV, KILL_ONCE_ENV
from search.sweeps.evaluation import EvalResult, Evaluator
from search.sweeps.evaluators import make_evaluator
from search.sweeps.pareto import pareto_mask, to_minimization
from search.sweeps.spec import SweepSpec

# Fault injection for tests: when set to a path that does not exist yet, the first task that
# sees it creates the file and kills its own worker process (Ray then retries the task).

_EVALUATORS: dict[str, Evaluator] = {}


def _evaluator(spec_json: str) -> Evaluator:
    ev = _EVALUATORS.get(spec_json)
    if ev is None:
        ev = make_evaluator(SweepSpec.model_validate(json.loads(spec_json)))
        _EVALUATORS.clear()
        _EVALUATORS[spec_json] = ev
    return ev


def _maybe_die() -> None:
    marker = os.environ.get(KILL_ONCE_ENV)
    if marker and not Path(marker).exists():
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)


def _log_evaluated(evaluator: str, **what: Any) -> None:
    """With $SERVESWEEP_EVAL_LOG set, append one JSON line saying what this task evaluated
    (`ids`, or the range `start`..`stop`) to that file: fault accounting for
    scripts/bench_faults.py. One O_APPEND write per line, so concurrent workers do not interleave."""
    path = os.environ.get(EVAL_LOG_ENV)
    if not path:
        return
    line = json.dumps({"evaluator": evaluator, "pid": os.getpid(), **what}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def evaluate_local(spec_json: str, ids: np.ndarray) -> EvalResult:
    """Evaluate in this process (what a worker does)."""
    ev = _evaluator(spec_json)
    result = ev.evaluate(ids)
    _log_evaluated(ev.name, ids=[int(i) for i in ids])
    return result


@ray.remote(max_retries=3)
def evaluate_ids(spec_json: str, ids: np.ndarray) -> EvalResult:
    """Evaluate configuration ids on a worker; the whole result comes back."""
    _maybe_die()
    return evaluate_local(spec_json, ids)


@ray.remote(max_retries=3)
def evaluate_shard(spec_json: str, start: int, stop: int, keep_all: bool) -> dict[str, Any]:
    """Evaluate ids [start, stop) and return counts, the shard's feasible Pareto front and, with
    `keep_all`, every result — so memory on the driver stays bounded by the fronts."""
    _maybe_die()
    ev = _evaluator(spec_json)
    result = ev.evaluate(np.arange(start, stop, dtype=np.int64))
    _log_evaluated(ev.name, start=int(start), stop=int(stop))
    return summarize_shard(result, [o.direction for o in ev.spec.objectives], keep_all)  # type: ignore[attr-defined]


def summarize_shard(result: EvalResult, directions: list[str], keep_all: bool) -> dict[str, Any]:
    feasible = np.flatnonzero(result.feasible)
    reasons: dict[str, int] = {}
    for r in result.reason:
        if r:
            reasons[r] = reasons.get(r, 0) + 1
    front_idx = feasible[pareto_mask(to_minimization(result.objectives[feasible], directions))]
    return {
        "evaluated": len(result),
        "feasible": int(feasible.size),
        "reasons": reasons,
        "front": result.take(front_idx),
        "all": result if keep_all else None,
    }
