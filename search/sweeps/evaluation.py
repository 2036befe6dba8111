"""The one interface of evaluators: a batch of configuration ids in, a table of metrics out.

`Evaluator.evaluate(ids)` returns an `EvalResult` — per configuration its metrics
(`METRIC_COLUMNS`), objectives, constraint values, feasibility and reason — that the driver
stores and turns into fronts. The analytic (search.sweeps.analytic), simulator
(search.sweeps.simulated) and probe (search.sweeps.probed) evaluators implement it; an evaluator
is built from the spec alone (search.sweeps.evaluators.make_evaluator), so a Ray worker can
rebuild it from the spec's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from search.sweeps.space import SearchSpace

PROBE_STATUS = ("not a candidate", "measured", "dtype not probed", "GPU type not in the cluster")
PROBE_MEASURED = float(PROBE_STATUS.index("measured"))
# Which fidelity produced a row's latencies (metric `stage_code`: the index): the analytic cost
# model, the serving simulator (percentiles under load) or a probe on a real GPU.
STAGES = ("analytic", "simulated", "measured")


def stage_of(metrics: dict | None, evaluator: str | None = None) -> str:
    """The stage ("analytic", "simulated" or "measured") of a stored row or front point from its
    metrics: `stage_code` where stored, else what its columns show (rows stored before stages
    were recorded: a probe's `probe_status`, the simulator's `sim_*` columns)."""
    m = metrics or {}
    code = m.get("stage_code")
    if code is not None:
        return STAGES[int(code)]
    if m.get("probe_status") == PROBE_MEASURED:
        return "measured"
    if "sim_replicas" in m or evaluator == "simulator":
        return "simulated"
    return "analytic"


# Metrics kept for every evaluation (stored, shown, exported).
METRIC_COLUMNS = (
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "output_tokens_per_s_per_gpu",
    "output_tokens_per_s_per_user",
    "output_tokens_per_s",
    "batch",
    "max_batch",
    "gpus",
    "replicas",
    "total_gpus",
    "usd_per_hour",
    "usd_per_million_output_tokens",
    "energy_j_per_output_token",
    "memory_per_gpu_bytes",
    "weight_bytes_per_gpu",
    "bound_code",
    "utilization",  # each replica's arrival rate / its capacity (1: offline, full load)
    "load_batch",  # time-average sequences decoding per replica under that load
    "usd_per_request",
    "usd_per_million_total_tokens",
)


@dataclass
class EvalResult:
    """Results for `ids` (parallel arrays). `objectives` are raw values (n, k) in the spec's
    order; `constraints` (n, m) are feasible when <= 0, named by `constraint_names`."""

    ids: np.ndarray
    feasible: np.ndarray
    reason: list[str]
    objectives: np.ndarray
    constraints: np.ndarray
    constraint_names: list[str]
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def take(self, index: np.ndarray) -> EvalResult:
        return EvalResult(
            ids=self.ids[index],
            feasible=self.feasible[index],
            reason=[self.reason[i] for i in np.arange(len(self))[index]],
            objectives=self.objectives[index],
            constraints=self.constraints[index],
            constraint_names=self.constraint_names,
            metrics={k: v[index] for k, v in self.metrics.items()},
        )

    def rows(self, space: SearchSpace, evaluator: str) -> list[dict]:
        """One storable dict per configuration."""
        out = []
        for i in range(len(self)):
            config = space.config(int(self.ids[i]))
            metrics = {k: _plain(v[i]) for k, v in self.metrics.items()}
            metrics["stage_code"] = float(STAGES.index(stage_of(metrics)))
            metrics["constraints"] = {
                n: _plain(c) for n, c in zip(self.constraint_names, self.constraints[i], strict=True)
            }
            out.append(
                {
                    "config_key": space.key(config),
                    "config": {"id": int(self.ids[i]), **config},
                    "feasible": bool(self.feasible[i]),
                    "reason": self.reason[i] or None,
                    "metrics": metrics,
                    "objectives": [_plain(v) for v in self.objectives[i]],
                    "evaluator": evaluator,
                }
            )
            if "probe_status" in self.metrics and self.metrics["probe_status"][i] == PROBE_MEASURED:
                out[-1]["measured"] = True
        return out


def _plain(value: object) -> float | None:
    v = float(value)  # type: ignore[arg-type]
    return v if np.isfinite(v) else None


class Evaluator(Protocol):
    """Evaluates configurations of a sweep's space.

    `name` labels stored evaluations; `evaluate(ids)` returns an EvalResult for those ids,
    in the same order. Implementations must be deterministic for a given spec and id.
    """

    name: str

    def evaluate(self, ids: np.ndarray) -> EvalResult: ...
