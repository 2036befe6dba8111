"""Evaluators: a batch of configuration ids in, a table of metrics out.

`Evaluator` is the one interface (see `evaluate`); `AnalyticEvaluator` runs the vectorized
cost model of `objectives` (microseconds per configuration); `SimulatorEvaluator` replays a
seeded request stream through the discrete-event simulator (`objectives.simulator`, tens of
milliseconds per configuration) for latency percentiles under load. GPU probes come behind the
same interface later. An evaluator is built from the spec alone, so a Ray worker can rebuild it
from the spec's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from objectives.accelerators import load_accelerators
from objectives.batch import ConfigBatch, build_batch, concat
from objectives.cost import OwnershipTerms, tco_usd_per_gpu_hour
from objectives.efficiency import default_efficiency
from objectives.models import load_model
from objectives.serving import REASONS, evaluate
from search.calibration import efficiency_from_record
from search.space import SearchSpace
from search.spec import LATENCY_METRICS, SweepSpec

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


class AnalyticEvaluator:
    """The vectorized cost model: one call evaluates any number of configurations."""

    name = "analytic"

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.space = SearchSpace(spec)
        self.model = load_model(spec.model)
        self.workload = spec.resolved_workload()
        self.catalog = load_accelerators(spec.pricing.price_file)
        self.efficiency = (
            efficiency_from_record(spec.calibration_record) if spec.calibration_record else default_efficiency()
        )
        self.terms = _ownership_terms(spec)
        self.constraint_names = self._constraint_names()

    def _constraint_names(self) -> list[str]:
        names = ["fits"]
        if self.spec.constraints.slos:
            names += [f"slo_{s.metric}_p{s.percentile:g}" for s in self.workload.slos]
        if self.spec.constraints.max_gpus is not None:
            names.append("max_gpus")
        if self.spec.constraints.max_usd_per_hour is not None:
            names.append("max_usd_per_hour")
        if isinstance(self.spec.space.replicas, list) and self.workload.arrival_rate_per_s:
            names.append("serves_rate")
        return names

    def price_per_gpu_hour(self, gpu_id: str) -> float:
        """$ per GPU-hour of `gpu_id` under the spec's pricing (NaN: owned, no purchase price)."""
        gpu = self.catalog[gpu_id]
        if self.spec.pricing.basis == "cloud":
            return gpu.usd_per_gpu_hour
        if gpu.purchase_usd is None:
            return float("nan")
        return float(tco_usd_per_gpu_hour(np.array([gpu.purchase_usd]), np.array([gpu.tdp_w]), self.terms)[0])

    def _batch(self, idx: dict[str, np.ndarray], rows: np.ndarray) -> tuple[ConfigBatch, np.ndarray]:
        dims = {d.name: d for d in self.space.dimensions}
        gpu_id = dims["accelerator"].values[int(idx["accelerator"][rows[0]])]
        weights = dims["weights"].values[int(idx["weights"][rows[0]])]
        kv = dims["kv_cache"].values[int(idx["kv_cache"][rows[0]])]

        def values(name: str) -> np.ndarray:
            return np.asarray(dims[name].values, dtype=np.float64)[idx[name][rows]]

        b = build_batch(
            self.model,
            self.catalog[gpu_id],
            weights=weights,
            kv_cache=kv,
            tp=values("tp"),
            pp=values("pp"),
            ep=values("ep"),
            batch=values("max_batch"),
            isl=self.workload.isl,
            osl=self.workload.osl,
            efficiency=self.efficiency,
        )
        b = b.replace(max_num_tokens=values("chunked_prefill"))
        price = np.full(len(rows), self.price_per_gpu_hour(gpu_id))
        return b, price

    def evaluate(self, ids: np.ndarray) -> EvalResult:
        ids = np.asarray(ids, dtype=np.int64)
        idx = self.space.decode(ids)
        # Group rows sharing (accelerator, weights, kv) so each group is one build_batch call.
        group = (idx["accelerator"] * 1000 + idx["weights"]) * 1000 + idx["kv_cache"]
        order = np.argsort(group, kind="stable")
        bounds = np.flatnonzero(np.diff(group[order])) + 1
        parts, prices = [], []
        for rows in np.split(order, bounds):
            if rows.size:
                b, p = self._batch(idx, rows)
                parts.append(b)
                prices.append(p)
        batch = concat(parts)
        price = np.concatenate(prices)
        fixed_replicas = "replicas" in idx
        rate = None if (self.workload.offline or fixed_replicas) else self.workload.arrival_rate_per_s
        m = evaluate(
            batch,
            arrival_rate_per_s=rate,
            max_position_embeddings=self.model.max_position_embeddings,
            usd_per_gpu_hour=price,
        )
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        metrics = {k: getattr(m, k)[inverse] for k in METRIC_COLUMNS if hasattr(m, k)}
        reason = [REASONS[int(c)] for c in m.reason_code[inverse]]
        if fixed_replicas:
            replicas = np.asarray(self.space.dimensions[-1].values, dtype=np.float64)[idx["replicas"]]
            scale = replicas / metrics["replicas"]
            metrics["replicas"] = replicas
            metrics["usd_per_hour"] = metrics["usd_per_hour"] * scale
        metrics["total_gpus"] = metrics["gpus"] * metrics["replicas"]
        if fixed_replicas and self.workload.arrival_rate_per_s:
            served = np.minimum(
                self.workload.arrival_rate_per_s * self.workload.osl,
                metrics["replicas"] * metrics["output_tokens_per_s"],
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                metrics["usd_per_million_output_tokens"] = metrics["usd_per_hour"] / (served * 3600.0) * 1e6
        no_price = ~np.isfinite(price[inverse])
        reason = [
            ("no purchase price in the catalog for owned pricing" if np_ else r)
            for r, np_ in zip(reason, no_price, strict=True)
        ]
        fits = np.where((m.reason_code[inverse] == 0) & ~no_price, 0.0, 1.0)
        constraints = [fits]
        if self.spec.constraints.slos:
            for s in self.workload.slos:
                value = np.nan_to_num(metrics[LATENCY_METRICS[s.metric]], nan=np.inf)
                constraints.append(value - s.max_s)
        if self.spec.constraints.max_gpus is not None:
            constraints.append(metrics["total_gpus"] - self.spec.constraints.max_gpus)
        if self.spec.constraints.max_usd_per_hour is not None:
            constraints.append(
                np.nan_to_num(metrics["usd_per_hour"], nan=np.inf) - self.spec.constraints.max_usd_per_hour
            )
        if "serves_rate" in self.constraint_names:
            capacity = metrics["replicas"] * np.nan_to_num(metrics["output_tokens_per_s"], nan=0.0)
            constraints.append(self.workload.arrival_rate_per_s * self.workload.osl - capacity)
        cons = np.stack(constraints, axis=1)
        cons = np.where(np.isfinite(cons), cons, 1e30)
        feasible = np.all(cons <= 0.0, axis=1)
        reason = [r or _violated(self.constraint_names, cons[i]) for i, r in enumerate(reason)]
        objectives = np.stack([metrics[o.column] for o in self.spec.objectives], axis=1)
        return EvalResult(
            ids=ids,
            feasible=feasible,
            reason=reason,
            objectives=objectives,
            constraints=cons,
            constraint_names=self.constraint_names,
            metrics=metrics,
        )


def _violated(names: list[str], values: np.ndarray) -> str:
    bad = [n for n, v in zip(names, values, strict=True) if v > 0]
    return ("violates " + ", ".join(bad)) if bad else ""


def _ownership_terms(spec: SweepSpec) -> OwnershipTerms:
    terms = OwnershipTerms.default()
    p = spec.pricing
    return OwnershipTerms(
        years=p.years or terms.years,
        usd_per_kwh=p.usd_per_kwh if p.usd_per_kwh is not None else terms.usd_per_kwh,
        pue=p.pue or terms.pue,
        hosting_usd_per_kw_month=(
            p.hosting_usd_per_kw_month if p.hosting_usd_per_kw_month is not None else terms.hosting_usd_per_kw_month
        ),
    )


SIM_PERCENTILES = (50.0, 90.0, 99.0)


class SimulatorEvaluator(AnalyticEvaluator):
    """The analytic model for what fits, the replicas and the cost; the serving simulator for
    latencies. Each feasible configuration serves the same seeded request stream (common random
    numbers: configurations differ only by themselves), its group of replicas sharing the
    workload's rate; groups larger than `simulation.max_replicas` are simulated as that many
    replicas at their share of the rate.

    The columns ttft_s / tpot_s / e2e_s hold the percentile an objective on that metric asks
    for (else the SLO's, else the median); SLO constraints use their own percentiles. Extra
    columns: sim_{ttft,tpot,e2e}_p{50,90,99}_s, sim_queue_mean_s, sim_queue_p99_s,
    sim_output_tokens_per_s (per simulated group), sim_kv_utilization, sim_preemptions,
    sim_slo_attainment and sim_replicas."""

    name = "simulator"

    def __init__(self, spec: SweepSpec) -> None:
        super().__init__(spec)
        from workloads.arrivals import sample_requests, trace_requests

        sim = spec.simulation
        seed = spec.seed if sim.seed is None else sim.seed
        rate = self.workload.arrival_rate_per_s
        if sim.trace:
            self.requests = trace_requests(sim.trace, n=sim.requests, rate_per_s=rate)
        else:
            self.requests = sample_requests(
                self.workload, sim.requests, rate_per_s=rate, process=sim.arrivals, cv=sim.cv, seed=seed
            )
        self.max_context = float(np.max(self.requests.input_tokens + self.requests.output_tokens)) + 1.0
        self.latency_percentile = {m: self._percentile_for(m) for m in LATENCY_METRICS}

    def _percentile_for(self, metric: str) -> float:
        for o in self.spec.objectives:
            if o.metric == metric:
                return o.percentile
        slo = self.workload.slo(metric)  # type: ignore[arg-type]
        return slo.percentile if slo is not None else 50.0

    def _simulate_one(self, config_id: int, replicas: float) -> Any:
        from objectives.simulator import simulate_config

        idx = self.space.decode(np.array([config_id], dtype=np.int64))
        b, _ = self._batch(idx, np.array([0]))
        group = int(max(1, min(int(replicas), self.spec.simulation.max_replicas)))
        reqs = self.requests
        arrival = reqs.arrival_s * (float(replicas) / group) if replicas > group else reqs.arrival_s
        return simulate_config(
            b,
            arrival,
            reqs.input_tokens,
            reqs.output_tokens,
            replicas=group,
            dispatch=self.spec.simulation.dispatch,
            block_size=self.spec.simulation.block_size,
        ), group

    def evaluate(self, ids: np.ndarray) -> EvalResult:
        base = super().evaluate(ids)
        n = len(base)
        metrics = dict(base.metrics)
        extra = [f"sim_{m}_p{p:g}_s" for m in LATENCY_METRICS for p in SIM_PERCENTILES] + [
            "sim_queue_mean_s",
            "sim_queue_p99_s",
            "sim_output_tokens_per_s",
            "sim_kv_utilization",
            "sim_preemptions",
            "sim_slo_attainment",
            "sim_replicas",
        ]
        for k in extra:
            metrics[k] = np.full(n, np.nan)
        for k in LATENCY_METRICS.values():
            metrics[k] = np.full(n, np.nan)
        slos = list(self.workload.slos)
        slo_values = np.full((n, len(slos)), np.nan)
        fits = base.constraints[:, 0] <= 0.0
        for i in np.flatnonzero(fits):
            result, group = self._simulate_one(int(base.ids[i]), float(base.metrics["replicas"][i]))
            for m, col in LATENCY_METRICS.items():
                metrics[col][i] = result.percentile(m, self.latency_percentile[m])
                for p in SIM_PERCENTILES:
                    metrics[f"sim_{m}_p{p:g}_s"][i] = result.percentile(m, p)
            queue = result.queue_s[np.isfinite(result.queue_s)]
            metrics["sim_queue_mean_s"][i] = float(np.mean(queue)) if queue.size else np.nan
            metrics["sim_queue_p99_s"][i] = result.percentile("queue", 99.0)
            metrics["sim_output_tokens_per_s"][i] = result.output_tokens_per_s()
            metrics["sim_kv_utilization"][i] = result.kv_utilization()
            metrics["sim_preemptions"][i] = float(np.sum(result.preemptions))
            attained = result.slo_attainment(slos)
            metrics["sim_slo_attainment"][i] = np.nan if attained is None else attained
            metrics["sim_replicas"][i] = group
            for j, s in enumerate(slos):
                slo_values[i, j] = result.percentile(s.metric, s.percentile)
        cons = base.constraints.copy()
        if self.spec.constraints.slos:
            for j, s in enumerate(slos):
                c = self.constraint_names.index(f"slo_{s.metric}_p{s.percentile:g}")
                cons[:, c] = np.where(np.isfinite(slo_values[:, j]), slo_values[:, j] - s.max_s, 1e30)
        feasible = np.all(cons <= 0.0, axis=1)
        reason = [
            (_violated(self.constraint_names, cons[i]) if (not r or r.startswith("violates ")) else r)
            for i, r in enumerate(base.reason)
        ]
        objectives = np.stack([metrics[o.column] for o in self.spec.objectives], axis=1)
        return EvalResult(
            ids=base.ids,
            feasible=feasible,
            reason=reason,
            objectives=objectives,
            constraints=cons,
            constraint_names=self.constraint_names,
            metrics=metrics,
        )


def make_evaluator(spec: SweepSpec) -> Evaluator:
    """The evaluator a spec asks for."""
    if spec.evaluator == "analytic":
        return AnalyticEvaluator(spec)
    if spec.evaluator == "simulator":
        return SimulatorEvaluator(spec)
    raise ValueError(f"evaluator {spec.evaluator!r} is not available")
