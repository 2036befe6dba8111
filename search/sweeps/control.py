"""What a running sweep's tiers share: the progress a display shows, cooperative stop requests
(cancel / interrupt, honoured after the work in hand is stored), the code version recorded with
a sweep, and how front points are written."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search.sweeps.evaluation import EvalResult
from search.sweeps.space import SearchSpace
from search.sweeps.spec import SweepSpec

CHECKPOINT_S = 2.0


@dataclass
class Progress:
    """What a progress display shows; `callback(progress)` is called as work lands."""

    total: int
    evaluated: int = 0
    feasible: int = 0
    front_size: int = 0
    hypervolume: float | None = None
    started: float = field(default_factory=time.monotonic)
    resumed: int = 0  # evaluations stored before this driver started (a resume): not its pace

    @property
    def eta_s(self) -> float | None:
        """Seconds left at this driver's own pace (what it evaluated since it started)."""
        done = self.evaluated - self.resumed
        if done <= 0:
            return None
        return (time.monotonic() - self.started) / done * max(self.total - self.evaluated, 0)


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


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)
