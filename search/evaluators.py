"""Evaluators: a batch of configuration ids in, a table of metrics out.

`Evaluator` is the one interface (see `evaluate`); `AnalyticEvaluator` runs the vectorized
cost model of `objectives` (microseconds per configuration); `SimulatorEvaluator` replays a
seeded request stream through the discrete-event simulator (`objectives.simulator`, tens of
milliseconds per configuration) for latency percentiles under load; `ProbeEvaluator` measures
one real decoder layer per candidate on a GPU (search.probes). An evaluator is built from the
spec alone, so a Ray worker can rebuild it from the spec's JSON.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from objectives.accelerators import load_accelerators
from objectives.batch import ConfigBatch, build_batch, concat
from objectives.cost import OwnershipTerms, tco_usd_per_gpu_hour
from objectives.efficiency import default_efficiency
from objectives.models import load_model
from objectives.quantization import get_scheme
from objectives.serving import REASONS, SteadyState, evaluate, steady_state
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
        m = evaluate(
            batch,
            arrival_rate_per_s=self._rate(),
            max_position_embeddings=self.model.max_position_embeddings,
            usd_per_gpu_hour=price,
            replicas=self._fixed_replicas(idx)[order] if "replicas" in idx else None,
        )
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        metrics = {k: getattr(m, k)[inverse] for k in METRIC_COLUMNS if hasattr(m, k)}
        reason = [REASONS[int(c)] for c in m.reason_code[inverse]]
        metrics["total_gpus"] = metrics["gpus"] * metrics["replicas"]
        no_price = ~np.isfinite(price[inverse])
        reason = [
            ("no purchase price in the catalog for owned pricing" if np_ else r)
            for r, np_ in zip(reason, no_price, strict=True)
        ]
        fits = np.where((m.reason_code[inverse] == 0) & ~no_price, 0.0, 1.0)
        cons = self._constraints(metrics, fits)
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

    def _rate(self) -> float | None:
        """The arrival rate replicas are provisioned for (None: offline)."""
        return None if self.workload.offline else self.workload.arrival_rate_per_s

    def _fixed_replicas(self, idx: dict[str, np.ndarray]) -> np.ndarray:
        """Replicas of each configuration when the space fixes them (a `replicas` dimension)."""
        return np.asarray(self.space.dimensions[-1].values, dtype=np.float64)[idx["replicas"]]

    def _constraints(self, metrics: dict[str, np.ndarray], fits: np.ndarray) -> np.ndarray:
        """Constraint values (<= 0 satisfied; columns `constraint_names`) from the metrics and
        `fits` (0: the configuration fits and has a price, 1: it does not)."""
        cols = [fits]
        if self.spec.constraints.slos:
            for s in self.workload.slos:
                cols.append(np.nan_to_num(metrics[LATENCY_METRICS[s.metric]], nan=np.inf) - s.max_s)
        if self.spec.constraints.max_gpus is not None:
            cols.append(metrics["total_gpus"] - self.spec.constraints.max_gpus)
        if self.spec.constraints.max_usd_per_hour is not None:
            cols.append(np.nan_to_num(metrics["usd_per_hour"], nan=np.inf) - self.spec.constraints.max_usd_per_hour)
        if "serves_rate" in self.constraint_names:
            capacity = metrics["replicas"] * np.nan_to_num(metrics["output_tokens_per_s"], nan=0.0)
            cols.append(self.workload.arrival_rate_per_s * self.workload.osl - capacity)
        cons = np.stack(cols, axis=1)
        return np.where(np.isfinite(cons), cons, 1e30)

    def _rescored(self, base: EvalResult, metrics: dict[str, np.ndarray], cons: np.ndarray) -> EvalResult:
        """`base` with new metrics and constraint values: feasibility, the 'violates ...'
        reasons and the objectives follow them (a structural reason stays)."""
        reason = [
            (_violated(self.constraint_names, cons[i]) if (not r or r.startswith("violates ")) else r)
            for i, r in enumerate(base.reason)
        ]
        return EvalResult(
            ids=base.ids,
            feasible=np.all(cons <= 0.0, axis=1),
            reason=reason,
            objectives=np.stack([metrics[o.column] for o in self.spec.objectives], axis=1),
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
        return self._rescored(base, metrics, cons)


PROBED_STEADY_STATE = tuple(f.name for f in dataclasses.fields(SteadyState))  # metrics a probe replaces
# What happened to each row of a probe sweep (metric probe_status: the index). A candidate is
# "dtype not probed" unless the layer probe builds its weights (bf16, or fp8 W8A8 on fp8
# tensor cores) with a bf16 KV cache.
PROBE_STATUS = ("not a candidate", "measured", "dtype not probed", "GPU type not in the cluster")
PROBE_MEASURED = float(PROBE_STATUS.index("measured"))
PROBE_FRONT_LIMIT = 2_000_000  # spaces up to this size pick probe candidates from their exact analytic front


def _probe_weights(weights: str, activation_bytes: float) -> str | None:
    """The layer probe's linear-layer dtype for a candidate's weight scheme, or None when the
    probe cannot build it: bf16 (2-byte weights and activations), or fp8 W8A8 where the GPU
    computes in fp8 (1-byte activations; a GPU without fp8 tensor cores runs it otherwise)."""
    scheme = get_scheme(weights)
    if scheme.bytes_per_weight == 2 and activation_bytes == 2 and not scheme.weight_only:
        return "bf16"
    if scheme.name == "fp8" and activation_bytes == 1:
        return "fp8"
    return None


class ProbeEvaluator(AnalyticEvaluator):
    """The analytic model, with the layer times of the analytic front's best candidates measured:
    one real decoder layer of the model (search.probes.probe_layer) at the candidate's per-GPU
    shapes, timed for a decode step at its batch and context and for a prefill chunk, on a GPU of
    its type (a Ray task asking num_gpus=1 and the accelerator type) or, with
    `probe.device: cpu`, in this process (tests). The measured / analytic ratio of the linear
    layers (plus the analytic LM head) and of attention, at the probed shapes, replaces the
    analytic `gemm_s` and `attention_s` of the decode and prefill steps; communication and
    overheads stay analytic. Only the first `probe.max_candidates` configurations of the
    analytic front of the whole space are probed (`probe_ids`), and only layers the probe can
    build (`_probe_weights`: bf16, or fp8 W8A8 on a GPU with fp8 tensor cores; KV cache bf16).
    Rows carry `probe_status` (an index into PROBE_STATUS): measured rows are stored as
    measured; candidates the probe could not measure say why (dtype, or no GPU of that type).

    On a CPU the probe exists for tests: its times are a CPU's, not the GPU's."""

    name = "probe"

    def __init__(self, spec: SweepSpec) -> None:
        super().__init__(spec)
        self.settings = spec.probe
        self.probed = 0
        self._cache: dict[tuple, dict[str, float]] = {}
        self._available: dict[str, str | None] = {}
        self._probe_ids: set[int] | None = None

    def _unavailable(self, gpu_id: str) -> str | None:
        """Why `gpu_id` cannot be probed, or None."""
        if gpu_id not in self._available:
            from search.probes import probe_coverage

            why = probe_coverage([gpu_id], self.settings.device).get(gpu_id)
            self._available[gpu_id] = why
            if why:
                logging.getLogger("servesweep.probe").warning("%s candidates stay analytic: %s", gpu_id, why)
        return self._available[gpu_id]

    def _measure(
        self, gpu_id: str, b: ConfigBatch, micro: int, context: int, prefill: int, weights: str
    ) -> dict[str, float]:
        from search.probes import layer_shape, probe_layer, probe_layer_remote, ray_accelerator_type

        tp, ep = int(b.tp[0]), int(b.ep[0])
        key = (gpu_id, tp, ep, micro, context, prefill, weights, self.settings.device)
        if key not in self._cache:
            shape = layer_shape(
                self.model,
                tp=tp,
                ep=ep,
                batch=micro,
                context=context,
                prefill_tokens=prefill,
                seed=self.spec.seed,
                weights=weights,
            )
            if self.settings.device == "cpu":
                self._cache[key] = probe_layer(shape, "cpu", self.settings.repeats)
            else:
                self._cache[key] = probe_layer_remote(shape, ray_accelerator_type(gpu_id), self.settings.repeats)
        return self._cache[key]

    def _front_order(self, result: EvalResult, rows: np.ndarray) -> np.ndarray:
        """`rows` of `result` on their analytic Pareto front, best first objective first."""
        from search.pareto import pareto_mask, to_minimization

        if not rows.size:
            return rows
        objs = to_minimization(
            np.nan_to_num(result.objectives[rows], nan=np.inf), [o.direction for o in self.spec.objectives]
        )
        objs = np.where(np.isfinite(objs), objs, 1e300)
        keep = pareto_mask(objs)
        front, first = rows[keep], objs[keep, 0]
        return front[np.argsort(first, kind="stable")]

    def probe_ids(self) -> set[int] | None:
        """The configurations worth a probe: the first `max_candidates` of the analytic front of
        the whole space (feasible, best first objective first) — the same in every process, so
        a sweep probes at most that many distinct configurations. None when the space is too
        large to enumerate (then each evaluate call probes its own front, up to the cap)."""
        if self._probe_ids is None and self.space.size <= PROBE_FRONT_LIMIT:
            ids, objs = np.zeros(0, dtype=np.int64), []
            results = []
            for start in range(0, self.space.size, 65_536):
                r = AnalyticEvaluator.evaluate(self, np.arange(start, min(self.space.size, start + 65_536)))
                front = self._front_order(r, np.flatnonzero(r.feasible))
                results.append(r.take(front))
            ids = np.concatenate([r.ids for r in results])
            objs = np.vstack([r.objectives for r in results])
            merged = EvalResult(
                ids=ids,
                feasible=np.ones(ids.size, dtype=bool),
                reason=[""] * ids.size,
                objectives=objs,
                constraints=np.zeros((ids.size, 0)),
                constraint_names=[],
            )
            best = self._front_order(merged, np.arange(ids.size))[: self.settings.max_candidates]
            self._probe_ids = {int(i) for i in ids[best]}
        return self._probe_ids

    def _order(self, base: EvalResult) -> list[int]:
        """Rows to probe, best first."""
        chosen = self.probe_ids()
        if chosen is not None:
            rows = np.array([i for i in range(len(base)) if int(base.ids[i]) in chosen], dtype=np.int64)
            return [int(i) for i in self._front_order(base, rows)] if rows.size else []
        return [int(i) for i in self._front_order(base, np.flatnonzero(base.constraints[:, 0] <= 0.0))]

    def evaluate(self, ids: np.ndarray) -> EvalResult:
        from objectives.memory import layers_per_gpu
        from objectives.timing import (
            decode_step_time_s,
            forward_time_s,
            lm_head_time_s,
            prefill_time_s,
        )

        base = super().evaluate(ids)
        n = len(base)
        metrics = dict(base.metrics)
        metrics["probe_status"] = np.zeros(n)
        for k in ("probe_decode_layer_s", "probe_prefill_layer_s", "analytic_tpot_s", "analytic_ttft_s"):
            metrics[k] = np.full(n, np.nan)
        for k in ("ttft_s", "total_gpus", *PROBED_STEADY_STATE):  # overwritten for probed rows
            metrics[k] = metrics[k].copy()
        wl = self.workload
        isl, osl = float(wl.isl), float(wl.osl)
        mean_ctx = isl + osl / 2.0
        fixed = "replicas" in {d.name for d in self.space.dimensions}
        for i in self._order(base):
            if self.probe_ids() is None and self.probed >= self.settings.max_candidates:
                break
            idx = self.space.decode(base.ids[i : i + 1])
            b, _ = self._batch(idx, np.array([0]))
            dims = {d.name: d for d in self.space.dimensions}
            gpu_id = dims["accelerator"].values[int(idx["accelerator"][0])]
            weights = dims["weights"].values[int(idx["weights"][0])]
            kv = dims["kv_cache"].values[int(idx["kv_cache"][0])]
            probed_as = _probe_weights(weights, float(b.activation_bytes[0]))
            if probed_as is None or kv != "bf16":
                metrics["probe_status"][i] = PROBE_STATUS.index("dtype not probed")
                continue
            if self._unavailable(gpu_id):
                metrics["probe_status"][i] = PROBE_STATUS.index("GPU type not in the cluster")
                continue
            batch = float(metrics["batch"][i])
            pp = float(b.pp[0])
            micro = max(1, round(batch / pp))
            chunks = max(1.0, np.ceil(isl / float(b.max_num_tokens[0])))
            prefill = int(self.settings.prefill_tokens or max(1, round(isl / chunks)))
            t = self._measure(gpu_id, b, micro, round(mean_ctx), prefill, probed_as)
            self.probed += 1
            layers = float(layers_per_gpu(b)[0])

            def lm_head_s(tokens: float, b: ConfigBatch = b) -> float:
                return float(lm_head_time_s(b, np.array([tokens]))[0])

            a_dec = forward_time_s(b, np.array([float(micro)]), mean_ctx)
            a_pre = forward_time_s(
                b, np.array([0.0]), 0.0, prefill_tokens=float(prefill), prefill_context=prefill / 2.0, prefill_seqs=1.0
            )
            r_gemm_dec = (layers * t["decode_linear_s"] + lm_head_s(micro)) / float(a_dec.gemm_s[0])
            r_att_dec = layers * t["decode_attention_s"] / max(float(a_dec.attention_s[0]), 1e-30)
            r_gemm_pre = (layers * t["prefill_linear_s"] + lm_head_s(1.0)) / float(a_pre.gemm_s[0])
            r_att_pre = layers * t["prefill_attention_s"] / max(float(a_pre.attention_s[0]), 1e-30)

            def measured(st: Any, rg: float, ra: float) -> float:
                return float(st.total_s[0] + (rg - 1.0) * st.gemm_s[0] + (ra - 1.0) * st.attention_s[0])

            bb = np.array([batch])
            dec = decode_step_time_s(b, bb, mean_ctx)
            pre_all = prefill_time_s(b, isl, bb)
            first = prefill_time_s(b, isl, 1.0, running_seqs=bb - 1.0, running_context=mean_ctx)
            st = steady_state(
                osl=osl,
                batch=bb,
                decode_step_s=np.array([measured(dec, r_gemm_dec, r_att_dec)]),
                prefill_all_s=np.array([measured(pre_all, r_gemm_pre, r_att_pre)]),
                ttft_s=np.array([measured(first, r_gemm_pre, r_att_pre)]),
                gpus=b.gpus,
                tdp_w=b.tdp_w,
                usd_per_gpu_hour=np.array([self.price_per_gpu_hour(gpu_id)]),
                arrival_rate_per_s=self._rate(),
                replicas=self._fixed_replicas(idx) if fixed else None,
            )
            metrics["analytic_tpot_s"][i] = metrics["tpot_s"][i]
            metrics["analytic_ttft_s"][i] = metrics["ttft_s"][i]
            metrics["ttft_s"][i] = measured(first, r_gemm_pre, r_att_pre)
            for key in PROBED_STEADY_STATE:
                metrics[key][i] = float(getattr(st, key)[0])
            metrics["total_gpus"][i] = metrics["replicas"][i] * metrics["gpus"][i]
            metrics["probe_status"][i] = PROBE_MEASURED
            metrics["probe_decode_layer_s"][i] = t["decode_linear_s"] + t["decode_attention_s"]
            metrics["probe_prefill_layer_s"][i] = t["prefill_linear_s"] + t["prefill_attention_s"]
        cons = self._constraints(metrics, base.constraints[:, 0])
        return self._rescored(base, metrics, cons)


def make_evaluator(spec: SweepSpec) -> Evaluator:
    """The evaluator a spec asks for."""
    if spec.evaluator == "analytic":
        return AnalyticEvaluator(spec)
    if spec.evaluator == "simulator":
        return SimulatorEvaluator(spec)
    if spec.evaluator == "probe":
        return ProbeEvaluator(spec)
    raise ValueError(f"evaluator {spec.evaluator!r} is not available")
