"""The analytic evaluator: the vectorized cost model of `objectives` over a batch of configurations,
with the spec's objectives, SLO and limit constraints, and the reason each infeasible
configuration fails.

With an arrival rate (any workload that is not offline) the latencies are those under load
(`objectives.queueing` through `objectives.serving.evaluate`): TTFT / TPOT / end-to-end at the
percentile the spec's objective on that metric names (else the SLO's, else the median), for the
workload's length distributions and the spec's arrival process (`simulation.arrivals` / `cv`, a
trace's own inter-arrival cv and lengths), split over the replicas as the simulator does
(`simulation.dispatch` over groups of `simulation.max_replicas`); replicas are sized so every SLO
percentile holds at the rate with at most `constraints.target_utilization` of each replica's
capacity in use (default 0.8). SLO constraints are checked at each SLO's own percentile. Offline
workloads keep the steady state at the batch cap (microseconds per configuration; under load it is
about a millisecond)."""

from __future__ import annotations

from typing import Any

import numpy as np

from objectives.accelerators import load_accelerators, price_basis
from objectives.batch import ConfigBatch, build_batch, concat
from objectives.cost import OwnershipTerms, tco_usd_per_gpu_hour
from objectives.efficiency import default_efficiency
from objectives.models import load_model
from objectives.queueing import LengthNodes, interarrival_cv
from objectives.serving import REASONS, evaluate
from search.calibration import efficiency_from_record
from search.sweeps.evaluation import METRIC_COLUMNS, EvalResult
from search.sweeps.space import SearchSpace
from search.sweeps.spec import LATENCY_METRICS, SweepSpec


class AnalyticEvaluator:
    """The vectorized cost model: one call evaluates any number of configurations."""

    name = "analytic"

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.space = SearchSpace(spec)
        self.model = load_model(spec.model)
        self.workload = spec.resolved_workload()
        self.catalog = load_accelerators(spec.pricing.price_file)
        # one price list for every GPU of the sweep (pricing.provider; see objectives.accelerators.price_basis)
        self.cloud_prices = price_basis(self.catalog, spec.accelerators, spec.pricing.provider).usd_per_gpu_hour
        self.efficiency = (
            efficiency_from_record(spec.calibration_record) if spec.calibration_record else default_efficiency()
        )
        self.terms = _ownership_terms(spec)
        self.constraint_names = self._constraint_names()
        self.latency_percentile = {m: self._percentile_for(m) for m in LATENCY_METRICS}
        self.under_load = self._load_arguments()

    def _percentile_for(self, metric: str) -> float:
        """The percentile the column of `metric` holds: the objective's, else the SLO's, else 50."""
        for o in self.spec.objectives:
            if o.metric == metric:
                return o.percentile
        slo = self.workload.slo(metric)  # type: ignore[arg-type]
        return slo.percentile if slo is not None else 50.0

    def _load_arguments(self) -> dict[str, Any]:
        """Keyword arguments of `objectives.serving.evaluate` for latencies under load (empty
        for an offline workload: the steady state at the batch cap)."""
        if self.workload.offline:
            return {}
        sim = self.spec.simulation
        inputs: Any = self.workload.input_tokens
        outputs: Any = self.workload.output_tokens
        cv = sim.cv if sim.arrivals == "gamma" else 1.0
        if sim.trace:
            inputs, outputs, cv = _trace_shape(sim.trace, sim.requests)
        return {
            "latency_percentile": self.latency_percentile,
            "slos": list(self.workload.slos) if self.spec.constraints.slos else [],
            "target_utilization": self.spec.constraints.target_utilization,
            "input_lengths": inputs,
            "output_lengths": outputs,
            "arrival_cv": cv,
            "dispatch": sim.dispatch,
            "dispatch_group": float(sim.max_replicas),
        }

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
            return self.cloud_prices.get(gpu_id, gpu.usd_per_gpu_hour)
        if gpu.purchase_usd is None:
            return float("nan")
        return float(tco_usd_per_gpu_hour(np.array([gpu.purchase_usd]), np.array([gpu.tdp_w]), self.terms)[0])

    def _batch(self, idx: dict[str, np.ndarray], rows: np.ndarray) -> tuple[ConfigBatch, np.ndarray]:
        dims = {d.name: d for d in self.space.dimensions}
        gpu_id = dims["accelerator"].values[int(idx["accelerator"][rows[0]])]
        weights = dims["weights"].values[int(idx["weights"][rows[0]])]
        kv = dims["kv_cache"].values[int(idx["kv_cache"][rows[0]])]
        engine = dims["engine"].values[int(idx["engine"][rows[0]])] if "engine" in dims else None

        def values(name: str) -> np.ndarray:
            return np.asarray(dims[name].values, dtype=np.float64)[idx[name][rows]]

        modes = {name: values(name) for name in ("attention_dp", "mtp") if name in dims}

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
            **modes,  # type: ignore[arg-type]
            engine=engine,
        )
        b = b.replace(max_num_tokens=values("chunked_prefill"))
        price = np.full(len(rows), self.price_per_gpu_hour(gpu_id))
        return b, price

    def configuration_batch(self, ids: np.ndarray) -> tuple[ConfigBatch, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """The data path's arrow space -> configuration batch: configuration ids decoded into one
        `ConfigBatch` (rows grouped by accelerator, weights and KV dtype, so each group is one
        `build_batch` call), with each row's $/GPU-hour, the grouping order (batch row k is
        configuration ids[order[k]]) and the decoded value indices."""
        idx = self.space.decode(ids)
        group = (idx["accelerator"] * 1000 + idx["weights"]) * 1000 + idx["kv_cache"]
        if "engine" in idx:  # one build_batch per engine too (its profile)
            group = group * 16 + idx["engine"]
        order = np.argsort(group, kind="stable")
        bounds = np.flatnonzero(np.diff(group[order])) + 1
        parts, prices = [], []
        for rows in np.split(order, bounds):
            if rows.size:
                b, p = self._batch(idx, rows)
                parts.append(b)
                prices.append(p)
        return concat(parts), np.concatenate(prices), order, idx

    def evaluate(self, ids: np.ndarray) -> EvalResult:
        ids = np.asarray(ids, dtype=np.int64)
        if self.spec.space.disaggregation is not None:  # aggregated and disaggregated rows
            from search.sweeps.disaggregated import evaluate_mixed

            return evaluate_mixed(self, ids)
        return self._evaluate_aggregated(ids)

    def _evaluate_aggregated(self, ids: np.ndarray) -> EvalResult:
        ids = np.asarray(ids, dtype=np.int64)
        batch, price, order, idx = self.configuration_batch(ids)
        common = {
            "arrival_rate_per_s": self._rate(),
            "max_position_embeddings": self.model.max_position_embeddings,
            "usd_per_gpu_hour": price,
            "replicas": self._fixed_replicas(idx)[order] if "replicas" in idx else None,
        }
        m = evaluate(batch, **common, **self.under_load)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        metrics = {k: getattr(m, k)[inverse] for k in METRIC_COLUMNS if hasattr(m, k)}
        slo_latency = {k: v[inverse] for k, v in self._slo_latencies(batch, m, common).items()}
        metrics["total_gpus"] = metrics["gpus"] * metrics["replicas"]
        reason = [REASONS[int(c)] for c in m.reason_code[inverse]]
        return self.scored(ids, idx, metrics, reason, m.reason_code[inverse] == 0, price[inverse], slo_latency)

    def scored(
        self,
        ids: np.ndarray,
        idx: dict[str, np.ndarray],
        metrics: dict[str, np.ndarray],
        reason: list[str],
        built: np.ndarray,
        price: np.ndarray,
        slo_latency: dict[str, np.ndarray],
    ) -> EvalResult:
        """The EvalResult of evaluated rows: `reason` (structural, "" where the configuration can
        be built: `built`), the price's and the engine's reasons, the constraints (SLOs at their
        percentiles from `slo_latency`), feasibility, the 'violates ...' reasons and the
        objectives (at their p90 bound with `risk: p90`). Shared by the aggregated and the
        disaggregated paths (search.sweeps.disaggregated)."""
        no_price = ~np.isfinite(price)
        reason = [
            ("no purchase price in the catalog for owned pricing" if np_ else r)
            for r, np_ in zip(reason, no_price, strict=True)
        ]
        unsupported = self._unsupported_engine(idx)
        if unsupported is not None:  # e.g. TensorRT-LLM on an AMD GPU
            reason = [u or r for r, u in zip(reason, unsupported, strict=True)]
            no_price = no_price | np.array([bool(u) for u in unsupported])
        fits = np.where(built & ~no_price, 0.0, 1.0)
        cons = self._constraints(metrics, fits, slo_latency)
        feasible = np.all(cons <= 0.0, axis=1)
        reason = [r or _violated(self.constraint_names, cons[i]) for i, r in enumerate(reason)]
        objectives = np.stack([metrics[o.column] for o in self.spec.objectives], axis=1)
        if self.spec.risk == "p90":
            objectives = objectives * self._risk_factors(idx)
        return EvalResult(
            ids=ids,
            feasible=feasible,
            reason=reason,
            objectives=objectives,
            constraints=cons,
            constraint_names=self.constraint_names,
            metrics=metrics,
        )

    def _unsupported_engine(self, idx: dict[str, np.ndarray]) -> list[str] | None:
        """Per row, why its engine cannot run on its GPU ("" where it can); None without engines."""
        if "engine" not in idx:
            return None
        from objectives.engines import get_profile, vendor_label

        dims = {d.name: d for d in self.space.dimensions}
        out = [""] * len(idx["engine"])
        pairs = idx["accelerator"] * 16 + idx["engine"]
        for pair in np.unique(pairs):
            gpu = self.catalog[dims["accelerator"].values[int(pair // 16)]]
            prof = get_profile(dims["engine"].values[int(pair % 16)])
            if not prof.supports(gpu.vendor):
                vendors = " or ".join(vendor_label(v) for v in prof.vendors)
                why = f"{prof.name} runs on {vendors} GPUs only"
                for i in np.flatnonzero(pairs == pair):
                    out[int(i)] = why
        return out

    def _risk_factors(self, idx: dict[str, np.ndarray]) -> np.ndarray:
        """(rows, objectives) factors taking each objective to its pessimistic bound (`risk: p90`):
        the region (GPU family, model class, weights) of each row, `objectives.uncertainty`."""
        from objectives.uncertainty import IntervalTable, gpu_family, model_class, pessimistic_factors

        dims = {d.name: d for d in self.space.dimensions}
        table = IntervalTable.load()
        cls = model_class(self.model.n_experts, self.model.is_mla)
        out = np.ones((len(idx["accelerator"]), len(self.spec.objectives)))
        pairs = idx["accelerator"] * 1000 + idx["weights"]
        for pair in np.unique(pairs):
            gpu = dims["accelerator"].values[int(pair // 1000)]
            weights = dims["weights"].values[int(pair % 1000)]
            f = pessimistic_factors(table, gpu_family=gpu_family(gpu), model_class=cls, weights=weights)
            out[pairs == pair] = [f.get(o.column, 1.0) for o in self.spec.objectives]
        return out

    def _slo_latencies(self, batch: ConfigBatch, m: Any, common: dict[str, Any]) -> dict[str, np.ndarray]:
        """Each SLO's latency at its own percentile ({"ttft@99": values}, batch order): the
        metric's column where it holds that percentile, else a second evaluation at the SLO
        percentiles (with the replicas of the first, so the fleet is the same)."""
        slos = self.workload.slos if self.spec.constraints.slos else []
        out = {f"{s.metric}@{s.percentile:g}": getattr(m, LATENCY_METRICS[s.metric]) for s in slos}
        other = {s.metric: s.percentile for s in slos if s.percentile != self.latency_percentile[s.metric]}
        if other and self.under_load:
            again = evaluate(
                batch,
                **{**common, "replicas": m.replicas},
                **{**self.under_load, "latency_percentile": {**self.latency_percentile, **other}},
            )
            for metric, pct in other.items():
                out[f"{metric}@{pct:g}"] = getattr(again, LATENCY_METRICS[metric])
        return out

    def _rate(self) -> float | None:
        """The arrival rate replicas are provisioned for (None: offline)."""
        return None if self.workload.offline else self.workload.arrival_rate_per_s

    def _fixed_replicas(self, idx: dict[str, np.ndarray]) -> np.ndarray:
        """Replicas of each configuration when the space fixes them (a `replicas` dimension)."""
        dim = next(d for d in self.space.dimensions if d.name == "replicas")
        return np.asarray(dim.values, dtype=np.float64)[idx["replicas"]]

    def _constraints(
        self, metrics: dict[str, np.ndarray], fits: np.ndarray, slo_latency: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Constraint values (<= 0 satisfied; columns `constraint_names`) from the metrics and
        `fits` (0: the configuration fits and has a price, 1: it does not); an SLO is checked on
        `slo_latency["ttft@99"]` where given, else on its metric's column."""
        cols = [fits]
        if self.spec.constraints.slos:
            for s in self.workload.slos:
                value = (slo_latency or {}).get(f"{s.metric}@{s.percentile:g}", metrics[LATENCY_METRICS[s.metric]])
                cols.append(np.nan_to_num(value, nan=np.inf) - s.max_s)
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


def _trace_shape(path: str, n: int) -> tuple[LengthNodes, LengthNodes, float]:
    """(input nodes, output nodes, inter-arrival cv) of the first `n` requests of a trace."""
    from workloads.arrivals import read_trace

    reqs = read_trace(path, limit=n)
    return (
        LengthNodes.empirical(reqs.input_tokens),
        LengthNodes.empirical(reqs.output_tokens),
        interarrival_cv(reqs.arrival_s),
    )


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
