"""The simulator evaluator: each configuration replays a seeded request stream through the
discrete-event simulator (`objectives.simulator`, tens of milliseconds per configuration) for
latency percentiles under load; the analytic model sizes the replicas and fills in the rest."""

from __future__ import annotations

from typing import Any

import numpy as np

from search.sweeps.analytic import AnalyticEvaluator
from search.sweeps.evaluation import EvalResult
from search.sweeps.spec import LATENCY_METRICS, SweepSpec

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

    def _simulate_one(self, config_id: int, replicas: float) -> Any:
        from objectives.simulator import simulate_config

        idx = self.space.decode(np.array([config_id], dtype=np.int64))
        if "disaggregated" in idx and self.space.config(config_id)["disaggregated"]:
            from search.sweeps.disaggregated import simulate_two_pools

            return simulate_two_pools(self, config_id)
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
        return self._rescored(base, metrics, cons)
