"""Recommendations from a stored sweep: what to buy or rent, and why.

Everything here is a function of the sweep record (`Store.get_sweep`) and its stored rows
(`Store.get_evaluations`, optionally merged with `Store.latest_front` points); results are
plain JSON-able dicts, shared by `servesweep front --format json` and the HTML report.

Candidates. A stored row is a candidate when it passes every constraint of the spec (fits,
max_gpus, the rate it must serve, the hourly budget `constraints.max_usd_per_hour`) and meets
every SLO of the workload (checked on its metrics, so also when the spec turned SLO constraints
off), with a finite latency and cost. Latency is the spec's first latency objective (TPOT by
default); cost is $ per million output tokens.

The three recommendations:

* cheapest — the candidate with the lowest $/Mtok (ties: lower latency);
* fastest — the candidate with the lowest latency within the hourly budget (ties: lower
  $/Mtok); without `max_usd_per_hour` the budget is unbounded and that is said;
* knee — the point of the candidates' (latency, $/Mtok) Pareto front farthest from the straight
  line joining the front's two extremes (its fastest and its cheapest point), after each
  objective is log-transformed and min-max normalized over the front. In those coordinates the
  extremes are (0, 1) and (1, 0) and the distance of a point (x, y) on the utopia side is
  (1 - x - y) / sqrt(2). Logs make equal distances equal *percentage* changes, so the knee is
  where a further percentage cut in latency starts to cost a larger percentage in dollars,
  whatever the units; fronts spanning a 50x cost range would otherwise put every linear knee
  at the cheap end.

Prices. $/hour and $/Mtok of a row scale linearly with its GPU's $/GPU-hour (replicas do not
depend on price), so the price sensitivity re-ranks the stored rows with one GPU's price moved
±30% — including rows that only the hourly budget excluded — without evaluating anything again.
Rent vs own uses the catalog's on-demand price and `objectives.cost.tco_usd_per_gpu_hour` with
the sweep's ownership terms and the catalog's `purchase_usd`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from objectives.accelerators import Accelerator
from objectives.cost import HOURS_PER_YEAR, OwnershipTerms, load_pricing_defaults, tco_usd_per_gpu_hour
from objectives.efficiency import default_efficiency
from objectives.quantization import get_scheme, resolve_compute_dtype
from objectives.serving import BOUNDS
from search.evaluators import PROBE_MEASURED, AnalyticEvaluator
from search.launch import launch_commands
from search.pareto import pareto_mask
from search.spec import LATENCY_METRICS, SweepSpec
from workloads import Workload

__all__ = [
    "CONFIG_FIELDS",
    "KINDS",
    "SENSITIVITY_FACTORS",
    "SweepContext",
    "analyze",
    "candidate_mask",
    "knee_index",
    "per_accelerator_best",
    "price_sensitivity",
    "recommendations",
    "rent_vs_own",
    "rows_from",
    "sweep_context",
]

KINDS = ("cheapest", "fastest", "knee")
TITLES = {
    "cheapest": "Cheapest that meets every SLO",
    "fastest": "Fastest within the budget",
    "knee": "Knee of the front",
}
CONFIG_FIELDS = ("accelerator", "tp", "pp", "ep", "weights", "kv_cache", "max_batch", "chunked_prefill", "replicas")
COST = "usd_per_million_output_tokens"
SENSITIVITY_FACTORS = (0.7, 1.3)
HOURS_PER_MONTH = HOURS_PER_YEAR / 12.0
YEARS_COMPARED = 3.0
GB = 1e9
BUDGET_CONSTRAINT = "max_usd_per_hour"

BOUND_HINTS = {
    "bandwidth": "HBM bandwidth sets its speed: faster HBM, fewer bytes per token (lower-precision "
    "weights or KV cache) or more GPUs per replica (TP) would make it faster",
    "compute": "tensor-core throughput sets its speed: a GPU with more FLOP/s in its compute dtype, "
    "or lower-precision math, would make it faster",
    "interconnect": "GPU-to-GPU communication (TP all-reduce / PP hand-off) sets its speed: a faster "
    "scale-up fabric or less parallelism would help",
    "overhead": "per-step runtime overheads (kernel launches, scheduling, sampling) set its speed: "
    "a leaner runtime or larger steps would help",
    "capacity": "HBM capacity caps its batch below the configured limit: more memory per replica "
    "(more GPUs, a larger-HBM GPU, fp8 KV cache) would raise throughput",
}


# ------------------------------------------------------------------------------ context


@dataclass
class SweepContext:
    """What the recommendations need to know about a sweep besides its rows."""

    name: str
    spec: SweepSpec
    workload: Workload
    catalog: dict[str, Accelerator]
    terms: OwnershipTerms
    prices: dict[str, float]  # $/GPU-hour the sweep priced with (its basis)
    basis: str
    latency_metric: str  # "tpot", "ttft" or "e2e"
    budget_usd_per_hour: float | None
    evaluator: AnalyticEvaluator = field(repr=False)

    @property
    def latency_column(self) -> str:
        return LATENCY_METRICS[self.latency_metric]


def sweep_context(record: dict[str, Any]) -> SweepContext:
    """The context of a stored sweep record (`Store.get_sweep`)."""
    try:
        spec = SweepSpec.model_validate({k: v for k, v in record["spec"].items() if not k.startswith("_")})
        ev = AnalyticEvaluator(spec)
    except (ValidationError, ValueError) as exc:  # e.g. a price_file that is gone
        raise ValueError(f"cannot rebuild the spec of sweep {record.get('name')!r}: {exc}") from None
    latency = next((o.metric for o in spec.objectives if o.metric in LATENCY_METRICS), "tpot")
    table = (record.get("price_table") or {}).get("usd_per_gpu_hour") or {}
    prices = {g: float(table[g]) if table.get(g) is not None else ev.price_per_gpu_hour(g) for g in spec.accelerators}
    return SweepContext(
        name=record.get("name") or spec.name or "sweep",
        spec=spec,
        workload=ev.workload,
        catalog=ev.catalog,
        terms=ev.terms,
        prices=prices,
        basis=spec.pricing.basis,
        latency_metric=latency,
        budget_usd_per_hour=spec.constraints.max_usd_per_hour,
        evaluator=ev,
    )


# ------------------------------------------------------------------------------ rows


def rows_from(
    evaluations: list[dict[str, Any]] | None = None, front_points: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Flat rows (config fields, `id`, `feasible`, `reason`, metrics, `constraints`) from stored
    evaluations and/or front points, one per configuration id (evaluations win)."""
    out: dict[int, dict[str, Any]] = {}
    for e in evaluations or []:
        row = _flat(e["config"], e.get("metrics"), bool(e["feasible"]), e.get("reason") or "")
        out[int(row["id"])] = row
    for p in front_points or []:
        if int(p["id"]) not in out:
            config = {k: v for k, v in p.items() if k not in ("metrics", "objectives")}
            out[int(p["id"])] = _flat(config, p.get("metrics"), True, "")
    return [out[k] for k in sorted(out)]


def _flat(config: dict[str, Any], metrics: dict[str, Any] | None, feasible: bool, reason: str) -> dict[str, Any]:
    """Metrics, then the configuration over them: the metric `max_batch` (the largest batch
    whose KV cache fits) is renamed `batch_that_fits`, so `max_batch` stays the batch limit."""
    m = dict(metrics or {})
    constraints = m.pop("constraints", None)
    if "max_batch" in m:
        m["batch_that_fits"] = m.pop("max_batch")
    return {**m, **config, "feasible": feasible, "reason": reason, "constraints": constraints}


def _col(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=np.float64)


@dataclass
class _Table:
    rows: list[dict[str, Any]]
    acc: np.ndarray
    ids: np.ndarray
    latency: np.ndarray
    cost: np.ndarray
    usd_h: np.ndarray
    slo_ok: np.ndarray
    other_ok: np.ndarray  # every constraint except the SLOs and the budget
    violations: list[set[str]]  # names of violated constraints (SLOs included, budget excluded)

    def __len__(self) -> int:
        return len(self.rows)


def _slo_name(metric: str, percentile: float) -> str:
    return f"slo_{metric}_p{percentile:g}"


def _table(ctx: SweepContext, rows: list[dict[str, Any]]) -> _Table:
    latency = _col(rows, ctx.latency_column)
    cost = _col(rows, COST)
    slo_ok = np.ones(len(rows), dtype=bool)
    violations: list[set[str]] = [set() for _ in rows]
    for s in ctx.workload.slos:
        value = _col(rows, LATENCY_METRICS[s.metric])
        ok = np.nan_to_num(value, nan=np.inf) <= s.max_s
        slo_ok &= ok
        for i in np.flatnonzero(~ok):
            violations[i].add(_slo_name(s.metric, s.percentile))
    other_ok = np.ones(len(rows), dtype=bool)
    for i, r in enumerate(rows):
        cons = r.get("constraints")
        if cons is None:  # no per-constraint record: trust the stored verdict
            if not r.get("feasible"):
                other_ok[i] = False
                violations[i].add("fits")
            continue
        for name, value in cons.items():
            if name == BUDGET_CONSTRAINT or name.startswith("slo_"):
                continue
            if value is None or not math.isfinite(float(value)) or float(value) > 0:
                other_ok[i] = False
                violations[i].add(name)
    return _Table(
        rows=rows,
        acc=np.array([str(r["accelerator"]) for r in rows], dtype=object),
        ids=np.array([int(r["id"]) for r in rows], dtype=np.int64),
        latency=latency,
        cost=cost,
        usd_h=_col(rows, "usd_per_hour"),
        slo_ok=slo_ok,
        other_ok=other_ok,
        violations=violations,
    )


def _scale(t: _Table, prices: dict[str, float] | None) -> np.ndarray:
    """Per-row price multiplier for {accelerator: factor} (1 where not given)."""
    out = np.ones(len(t))
    for gpu, factor in (prices or {}).items():
        out[t.acc == gpu] = factor
    return out


def _budget_ok(ctx: SweepContext, usd_h: np.ndarray) -> np.ndarray:
    if ctx.budget_usd_per_hour is None:
        return np.ones(usd_h.shape, dtype=bool)
    return np.nan_to_num(usd_h, nan=np.inf) <= ctx.budget_usd_per_hour


def candidate_mask(ctx: SweepContext, rows: list[dict[str, Any]], prices: dict[str, float] | None = None) -> np.ndarray:
    """Rows passing every constraint and SLO (see the module docstring), with GPU prices moved
    by the factors in `prices` ({accelerator: factor})."""
    t = _table(ctx, rows)
    return _candidates(ctx, t, _scale(t, prices))


def _candidates(ctx: SweepContext, t: _Table, scale: np.ndarray) -> np.ndarray:
    finite = np.isfinite(t.latency) & np.isfinite(t.cost)
    return t.other_ok & t.slo_ok & finite & _budget_ok(ctx, t.usd_h * scale)


# ------------------------------------------------------------------------------ knee


def knee_index(latency: np.ndarray, cost: np.ndarray) -> int:
    """Index (into the arguments) of the knee of a two-objective front, both minimized: the
    point farthest, on the utopia side, from the line joining the front's extremes after
    log-transforming and min-max normalizing each objective (module docstring). Ties and
    fronts of one or two points give the cheaper point. The arguments must be a front."""
    x = np.log(np.asarray(latency, dtype=np.float64))
    y = np.log(np.asarray(cost, dtype=np.float64))
    if x.size == 0:
        raise ValueError("empty front")

    def unit(v: np.ndarray) -> np.ndarray:
        span = v.max() - v.min()
        return (v - v.min()) / span if span > 0 else np.zeros_like(v)

    distance = (1.0 - unit(x) - unit(y)) / math.sqrt(2.0)
    order = np.lexsort((np.asarray(latency), np.asarray(cost), -np.round(distance, 12)))
    return int(order[0])


# ------------------------------------------------------------------------------ pieces


def _pick_cheapest(t: _Table, mask: np.ndarray, cost: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    return int(idx[np.lexsort((t.ids[idx], t.latency[idx], cost[idx]))[0]])


def _pick_fastest(t: _Table, mask: np.ndarray, cost: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    return int(idx[np.lexsort((t.ids[idx], cost[idx], t.latency[idx]))[0]])


def _front(t: _Table, mask: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Row indices of the candidates' (latency, cost) Pareto front, fastest first."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return idx
    on = pareto_mask(np.stack([t.latency[idx], cost[idx]], axis=1))
    front = idx[on]
    return front[np.lexsort((cost[front], t.latency[front]))]


def _picks(ctx: SweepContext, t: _Table, scale: np.ndarray) -> dict[str, int | None]:
    mask = _candidates(ctx, t, scale)
    cost = t.cost * scale
    front = _front(t, mask, cost)
    knee = None if front.size == 0 else int(front[knee_index(t.latency[front], cost[front])])
    return {
        "cheapest": _pick_cheapest(t, mask, cost),
        "fastest": _pick_fastest(t, mask, cost),
        "knee": knee,
    }


def _gb(v: Any) -> float | None:
    return None if v is None else float(v) / GB


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def compute_dtype(ctx: SweepContext, gpu: str, weights: str) -> str:
    """The tensor-core dtype the GEMMs of `weights` run in on `gpu` (objectives.quantization)."""
    acc = ctx.catalog[gpu]
    return resolve_compute_dtype(get_scheme(weights), frozenset(acc.peak_flops))


def label(row: dict[str, Any]) -> str:
    """A short readable name of a configuration."""
    par = f"TP{row['tp']}"
    if int(row.get("pp") or 1) > 1:
        par += f" PP{row['pp']}"
    if int(row.get("ep") or 1) > 1:
        par += f" EP{row['ep']}"
    total = row.get("total_gpus")
    count = f"{int(total)}× " if total is not None else ""
    return (
        f"{count}{row['accelerator']} · {par} · {row['weights']} weights, {row['kv_cache']} KV · "
        f"batch ≤ {row['max_batch']}"
    )


def _summary(ctx: SweepContext, t: _Table, i: int, scale: np.ndarray | None = None) -> dict[str, Any]:
    r = t.rows[i]
    s = 1.0 if scale is None else float(scale[i])
    return {
        "id": int(r["id"]),
        "label": label(r),
        "accelerator": r["accelerator"],
        "total_gpus": _num(r.get("total_gpus")),
        ctx.latency_column: _num(r.get(ctx.latency_column)),
        COST: _num(t.cost[i] * s),
        "usd_per_hour": _num(t.usd_h[i] * s),
    }


def _describe(ctx: SweepContext, t: _Table, i: int) -> dict[str, Any]:
    """Everything the report shows about one recommended configuration."""
    r = t.rows[i]
    gpu = ctx.catalog.get(r["accelerator"])
    bound_code = r.get("bound_code")
    bound = BOUNDS[int(bound_code)] if bound_code is not None else None
    cdtype = compute_dtype(ctx, r["accelerator"], r["weights"]) if gpu else None
    scheme = get_scheme(r["weights"])
    quant = scheme.description
    if cdtype and not scheme.weight_only and cdtype != scheme.compute_dtype:
        quant += f"; no {scheme.compute_dtype} tensor cores on {r['accelerator']}: weight-only, {cdtype} compute"
    return {
        "id": int(r["id"]),
        "label": label(r),
        "config": {k: r[k] for k in CONFIG_FIELDS if k in r and k != "replicas"},
        "accelerator": r["accelerator"],
        "vendor": gpu.vendor if gpu else None,
        "gpus_per_replica": _num(r.get("gpus")),
        "replicas": _num(r.get("replicas")),
        "total_gpus": _num(r.get("total_gpus")),
        "parallelism": {"tp": r["tp"], "pp": r["pp"], "ep": r["ep"]},
        "weights": r["weights"],
        "kv_cache": r["kv_cache"],
        "compute_dtype": cdtype,
        "quantization": quant,
        "max_batch": r["max_batch"],
        "batch": _num(r.get("batch")),
        "batch_that_fits": _num(r.get("batch_that_fits")),
        "chunked_prefill": r.get("chunked_prefill"),
        "usd_per_hour": _num(r.get("usd_per_hour")),
        COST: _num(r.get(COST)),
        "ttft_s": _num(r.get("ttft_s")),
        "tpot_s": _num(r.get("tpot_s")),
        "e2e_s": _num(r.get("e2e_s")),
        "latency_metric": ctx.latency_metric,
        "output_tokens_per_s_per_gpu": _num(r.get("output_tokens_per_s_per_gpu")),
        "output_tokens_per_s_per_user": _num(r.get("output_tokens_per_s_per_user")),
        "output_tokens_per_s_per_replica": _num(r.get("output_tokens_per_s")),
        "energy_j_per_output_token": _num(r.get("energy_j_per_output_token")),
        "memory_per_gpu_gb": _gb(r.get("memory_per_gpu_bytes")),
        "weights_per_gpu_gb": _gb(r.get("weight_bytes_per_gpu")),
        "hbm_per_gpu_gb": gpu.hbm_bytes / GB if gpu else None,
        "bound": bound,
        "bound_hint": BOUND_HINTS.get(bound or "", ""),
        "basis": _basis(ctx, r),
    }


def _basis(ctx: SweepContext, r: dict[str, Any]) -> str:
    """Where a configuration's latencies come from: the cost model, the serving simulator, or
    a probe of its decoder layer on a GPU of its type (probe sweeps)."""
    if r.get("probe_status") == PROBE_MEASURED:
        return "measured: one decoder layer timed on the GPU, the rest of the model around it"
    if ctx.spec.evaluator == "simulator":
        return "simulated: continuous batching replayed under the workload's arrivals"
    return "modelled: the analytic cost model"


def _pct(a: float, b: float) -> str:
    """a relative to b as a signed percentage."""
    return f"{(a / b - 1.0) * 100:+.0f}%"


def _fmt_latency(ctx: SweepContext, v: float) -> str:
    return f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"


def _constraint_words(ctx: SweepContext, name: str, row: dict[str, Any]) -> str:
    if name.startswith("slo_"):
        metric = name.split("_")[1]
        slo = ctx.workload.slo(metric)  # type: ignore[arg-type]
        value = row.get(LATENCY_METRICS[metric])
        have = "-" if value is None else _fmt_latency(ctx, float(value))
        limit = "-" if slo is None else _fmt_latency(ctx, slo.max_s)
        return f"the {metric.upper()} SLO ({have} against ≤ {limit})"
    if name == "max_gpus":
        return f"the GPU limit ({int(row.get('total_gpus') or 0)} GPUs against ≤ {ctx.spec.constraints.max_gpus})"
    if name == BUDGET_CONSTRAINT:
        return f"the hourly budget (${row.get('usd_per_hour') or 0:,.0f}/h against ≤ ${ctx.budget_usd_per_hour:,.0f}/h)"
    if name == "serves_rate":
        return "the arrival rate it must serve"
    return name


def _binding(ctx: SweepContext, t: _Table, best: int, objective: np.ndarray, what: str) -> list[str]:
    """Constraints that, relaxed alone, would admit a row better in `objective` than `best`."""
    out = []
    finite = np.isfinite(t.latency) & np.isfinite(t.cost)
    budget_ok = _budget_ok(ctx, t.usd_h)
    names: list[str] = sorted({n for v in t.violations for n in v} - {"fits"})
    if ctx.budget_usd_per_hour is not None:
        names.append(BUDGET_CONSTRAINT)
    for name in names:
        if name == BUDGET_CONSTRAINT:
            only = t.other_ok & t.slo_ok & ~budget_ok
        else:
            only = np.array([v == {name} for v in t.violations]) & budget_ok
        better = np.flatnonzero(only & finite & (objective < objective[best]))
        if better.size == 0:
            continue
        j = int(better[np.argmin(objective[better])])
        r = t.rows[j]
        gain = _pct(objective[j], objective[best])
        value = (
            f"${t.cost[j]:.3g}/Mtok"
            if what == "cost"
            else _fmt_latency(ctx, float(t.latency[j])) + " " + ctx.latency_metric.upper()
        )
        words = _constraint_words(ctx, name, r)
        out.append(f"{words[0].upper()}{words[1:]} binds: relaxing it would admit {label(r)} at {value} ({gain}).")
    return out


def _runner_up_other_gpu(ctx: SweepContext, t: _Table, mask: np.ndarray, best: int, kind: str) -> str | None:
    others = mask & (t.acc != t.acc[best])
    if kind == "cheapest":
        j = _pick_cheapest(t, others, t.cost)
        if j is None:
            return None
        drop = 1.0 - t.cost[best] / t.cost[j]
        rise = t.cost[j] / t.cost[best] - 1.0
        return (
            f"The best on another GPU is {label(t.rows[j])} at ${t.cost[j]:.3g}/Mtok "
            f"({_pct(t.cost[j], t.cost[best])}); "
            f"it would win if {t.acc[j]}'s price fell {drop * 100:.0f}% or {t.acc[best]}'s rose {rise * 100:.0f}%."
        )
    j = _pick_fastest(t, others, t.cost)
    if j is None:
        return None
    return (
        f"The fastest on another GPU is {label(t.rows[j])}: "
        f"{_fmt_latency(ctx, float(t.latency[j]))} {ctx.latency_metric.upper()} "
        f"({_pct(t.latency[j], t.latency[best])}) "
        f"at ${t.cost[j]:.3g}/Mtok."
    )


def _knee_neighbours(ctx: SweepContext, t: _Table, front: np.ndarray, best: int) -> list[str]:
    pos = int(np.flatnonzero(front == best)[0])
    out = []
    lat = ctx.latency_metric.upper()
    if pos + 1 < front.size:
        j = int(front[pos + 1])
        out.append(
            f"One step cheaper on the front, {label(t.rows[j])} costs {_pct(t.cost[j], t.cost[best])} "
            f"per token for {_pct(t.latency[j], t.latency[best])} {lat}."
        )
    if pos > 0:
        j = int(front[pos - 1])
        out.append(
            f"One step faster, {label(t.rows[j])} cuts {lat} {_pct(t.latency[j], t.latency[best])} "
            f"for {_pct(t.cost[j], t.cost[best])} per token."
        )
    return out


def _reason(ctx: SweepContext, t: _Table, kind: str, i: int, n_candidates: int, front_size: int) -> str:
    lat = ctx.latency_metric.upper()
    slos = ", ".join(f"{s.metric.upper()} ≤ {_fmt_latency(ctx, s.max_s)}" for s in ctx.workload.slos)
    meets = f"meet every SLO ({slos})" if slos else "pass every constraint (the workload has no SLOs)"
    if kind == "cheapest":
        return (
            f"Lowest $ per million output tokens of the {n_candidates} stored configurations that {meets}: "
            f"${t.cost[i]:.3g}/Mtok at {_fmt_latency(ctx, float(t.latency[i]))} {lat}."
        )
    if kind == "fastest":
        budget = (
            f"within the ${ctx.budget_usd_per_hour:,.0f}/h budget"
            if ctx.budget_usd_per_hour is not None
            else "with no budget limit (the spec sets no constraints.max_usd_per_hour)"
        )
        return (
            f"Lowest {lat} among the configurations that {meets}, {budget}: "
            f"{_fmt_latency(ctx, float(t.latency[i]))} at ${t.usd_h[i]:,.2f}/h."
        )
    return (
        f"The best trade-off on the {front_size}-point front of {lat} against $/Mtok: farthest from the line "
        f"joining its fastest and cheapest points (log-normalized), so moving either way costs more "
        f"in percent than it saves."
    )


# ------------------------------------------------------------------------------ public


def recommendations(
    ctx: SweepContext, rows: list[dict[str, Any]], sensitivity: list[dict[str, Any]] | None = None
) -> dict[str, dict[str, Any] | None]:
    """The cheapest, fastest-within-budget and knee recommendations, each with its metrics,
    reason and what would change it (None where no row qualifies). `sensitivity`
    (`price_sensitivity`) adds the price moves that change each answer."""
    t = _table(ctx, rows)
    scale = np.ones(len(t))
    mask = _candidates(ctx, t, scale)
    front = _front(t, mask, t.cost)
    picks = _picks(ctx, t, scale)
    out: dict[str, dict[str, Any] | None] = {}
    for kind in KINDS:
        i = picks[kind]
        if i is None:
            out[kind] = None
            continue
        rec = {"kind": kind, "title": TITLES[kind], **_describe(ctx, t, i)}
        rec["reason"] = _reason(ctx, t, kind, i, int(mask.sum()), int(front.size))
        changes: list[str] = []
        if kind == "cheapest":
            changes += _binding(ctx, t, i, t.cost, "cost")
            other = _runner_up_other_gpu(ctx, t, mask, i, kind)
            changes += [other] if other else []
        elif kind == "fastest":
            changes += _binding(ctx, t, i, t.latency, "latency")
            other = _runner_up_other_gpu(ctx, t, mask, i, kind)
            changes += [other] if other else []
        else:
            changes += _knee_neighbours(ctx, t, front, i)
        if rec["bound_hint"]:
            changes.append(f"It is {rec['bound']}-bound: {rec['bound_hint']}.")
        for s in sensitivity or []:
            new = s[kind]
            if new is not None and new["id"] != rec["id"]:
                changes.append(
                    f"{s['accelerator']} at {s['change_pct']:+.0f}% price: {new['label']} "
                    f"(${new[COST]:.3g}/Mtok, {_fmt_latency(ctx, new[ctx.latency_column])} "
                    f"{ctx.latency_metric.upper()})."
                )
        if sensitivity is not None and not any(s[kind] and s[kind]["id"] != rec["id"] for s in sensitivity):
            moves = ", ".join(f"{(f - 1) * 100:+.0f}%" for f in SENSITIVITY_FACTORS)
            changes.append(f"Robust to price: no single GPU's price moving {moves} changes it.")
        rec["what_would_change"] = changes
        rec["launch"] = launch_commands(
            ctx.spec.model,
            rec["config"],
            vendor=rec["vendor"],
            replicas=rec["replicas"],
            compute_dtype=rec["compute_dtype"],
        )
        out[kind] = rec
    return out


def price_sensitivity(
    ctx: SweepContext, rows: list[dict[str, Any]], factors: tuple[float, ...] = SENSITIVITY_FACTORS
) -> list[dict[str, Any]]:
    """For each accelerator of the sweep and each factor, the three recommendations after
    scaling that GPU's $/GPU-hour by the factor ($/h and $/Mtok scale linearly; rows the hourly
    budget excluded may come back), with `changed` flags against the unscaled answer."""
    t = _table(ctx, rows)
    base = _picks(ctx, t, np.ones(len(t)))
    out = []
    for gpu in ctx.spec.accelerators:
        if not np.any(t.acc == gpu):
            continue
        for f in factors:
            scale = _scale(t, {gpu: f})
            picks = _picks(ctx, t, scale)
            entry: dict[str, Any] = {
                "accelerator": gpu,
                "factor": f,
                "change_pct": (f - 1.0) * 100.0,
                "usd_per_gpu_hour": ctx.prices.get(gpu, math.nan) * f,
            }
            for kind in KINDS:
                i = picks[kind]
                entry[kind] = None if i is None else _summary(ctx, t, i, scale)
            entry["changed"] = {k: picks[k] != base[k] for k in KINDS}
            out.append(entry)
    return out


def _common_reason(t: _Table, idx: np.ndarray) -> str:
    reasons = Counter()
    for i in idx:
        r = t.rows[i]
        reasons[r.get("reason") or ("misses an SLO" if not t.slo_ok[i] else "over the hourly budget")] += 1
    if not reasons:
        return ""
    text, n = reasons.most_common(1)[0]
    return f"{text} ({n} of {idx.size})"


def per_accelerator_best(ctx: SweepContext, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per GPU type of the sweep: how many stored rows, how many candidates, the cheapest
    candidate and its fastest one, and the price move that would make it the overall cheapest."""
    t = _table(ctx, rows)
    scale = np.ones(len(t))
    mask = _candidates(ctx, t, scale)
    overall = _pick_cheapest(t, mask, t.cost)
    out = []
    for gpu in ctx.spec.accelerators:
        mine = t.acc == gpu
        cand = mask & mine
        best = _pick_cheapest(t, cand, t.cost)
        fastest = _pick_fastest(t, cand, t.cost)
        entry: dict[str, Any] = {
            "accelerator": gpu,
            "usd_per_gpu_hour": ctx.prices.get(gpu),
            "stored": int(mine.sum()),
            "candidates": int(cand.sum()),
            "best": None if best is None else _describe(ctx, t, best),
            "fastest": None if fastest is None else _summary(ctx, t, fastest),
            "why_none": "" if best is not None else _common_reason(t, np.flatnonzero(mine)),
            "price_change_to_be_cheapest_pct": None,
        }
        if best is not None and overall is not None and t.acc[overall] != gpu:
            entry["price_change_to_be_cheapest_pct"] = (t.cost[overall] / t.cost[best] - 1.0) * 100.0
        elif best is not None and overall is not None:
            entry["price_change_to_be_cheapest_pct"] = 0.0
        out.append(entry)
    return out


def _tco(ctx: SweepContext, gpu: Accelerator, purchase: float) -> float:
    return float(tco_usd_per_gpu_hour(np.array([purchase]), np.array([gpu.tdp_w]), ctx.terms)[0])


def rent_vs_own(ctx: SweepContext, recs: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Monthly and 3-year cost of each recommendation rented (catalog on-demand $/GPU-hour) and
    owned (TCO: amortized purchase + power x PUE + hosting), and the break-even utilization:
    owning costs its TCO every hour, renting only the hours used, so owning is cheaper above
    utilization = owned $/h / cloud $/h (over the amortization period; `_3y` assumes the
    hardware is written off in three years instead)."""
    out = []
    years_h = YEARS_COMPARED * HOURS_PER_YEAR
    for kind in KINDS:
        rec = recs.get(kind)
        if rec is None:
            continue
        gpu = ctx.catalog[rec["accelerator"]]
        n = float(rec["total_gpus"] or 0)
        priced = ctx.prices.get(gpu.id) or math.nan
        cloud_rate = gpu.usd_per_gpu_hour
        row: dict[str, Any] = {
            "kind": kind,
            "label": rec["label"],
            "accelerator": gpu.id,
            "total_gpus": n,
            "cloud_usd_per_gpu_hour": cloud_rate,
            "cloud_price_source": gpu.sources.get("usd_per_gpu_hour", ""),
            "cloud_usd_per_hour": n * cloud_rate,
            "cloud_usd_per_month": n * cloud_rate * HOURS_PER_MONTH,
            "cloud_usd_3y": n * cloud_rate * years_h,
            "cloud_usd_per_million_output_tokens": _num((rec[COST] or math.nan) * cloud_rate / priced),
            "purchase_usd_per_gpu": gpu.purchase_usd,
            "purchase_source": gpu.sources.get("purchase_usd", ""),
        }
        if gpu.purchase_usd is None:
            row.update(
                owned_usd_per_gpu_hour=None,
                owned_usd_per_hour=None,
                owned_usd_per_month=None,
                owned_usd_3y=None,
                purchase_usd_total=None,
                owned_cash_usd_3y=None,
                owned_usd_per_million_output_tokens=None,
                break_even_utilization=None,
                break_even_utilization_3y=None,
                note=f"the catalog has no purchase price for {gpu.id}: owned cost unknown",
            )
        else:
            owned_rate = _tco(ctx, gpu, gpu.purchase_usd)
            running = _tco(ctx, gpu, 0.0)  # power x PUE + hosting, no amortization
            cash_3y = n * (gpu.purchase_usd + running * years_h)
            row.update(
                owned_usd_per_gpu_hour=owned_rate,
                owned_usd_per_hour=n * owned_rate,
                owned_usd_per_month=n * owned_rate * HOURS_PER_MONTH,
                owned_usd_3y=n * owned_rate * years_h,
                purchase_usd_total=n * gpu.purchase_usd,
                owned_cash_usd_3y=cash_3y,
                owned_usd_per_million_output_tokens=_num((rec[COST] or math.nan) * owned_rate / priced),
                break_even_utilization=owned_rate / cloud_rate,
                break_even_utilization_3y=cash_3y / (n * cloud_rate * years_h) if n else None,
                note="",
            )
        out.append(row)
    return out


def pricing_assumptions(ctx: SweepContext) -> dict[str, Any]:
    """The pricing basis, each GPU's price with its source, and the ownership terms with theirs."""
    defaults = load_pricing_defaults()
    p = ctx.spec.pricing
    terms = []
    for key in ("years", "usd_per_kwh", "pue", "hosting_usd_per_kw_month"):
        override = getattr(p, key)
        entry = defaults.get(key, {})
        terms.append(
            {
                "term": key,
                "value": getattr(ctx.terms, key),
                "source": "set in the sweep spec" if override is not None else entry.get("source", ""),
                "date": "" if override is not None else str(entry.get("date", "")),
            }
        )
    gpus = []
    for g in ctx.spec.accelerators:
        acc = ctx.catalog[g]
        gpus.append(
            {
                "accelerator": g,
                "usd_per_gpu_hour": ctx.prices.get(g),
                "cloud_usd_per_gpu_hour": acc.usd_per_gpu_hour,
                "cloud_source": acc.sources.get("usd_per_gpu_hour", ""),
                "purchase_usd": acc.purchase_usd,
                "purchase_source": acc.sources.get("purchase_usd", ""),
                "tdp_w": acc.tdp_w,
            }
        )
    return {"basis": ctx.basis, "price_file": p.price_file, "gpus": gpus, "ownership_terms": terms}


def efficiency_bases(ctx: SweepContext) -> list[dict[str, Any]]:
    """Per GPU and compute dtype used by the sweep's quantizations: where its efficiencies come
    from (`objectives.efficiency ... for_gpu(...).basis`: a probe calibration, measured
    microbenchmarks, or vendor defaults)."""
    eff = default_efficiency()
    out = []
    for g in ctx.spec.accelerators:
        acc = ctx.catalog[g]
        dtypes = sorted({compute_dtype(ctx, g, w) for w in ctx.spec.space.weights})
        bases = {d: eff.for_gpu(acc.id, acc.vendor, d).basis for d in dtypes}
        calibrated = any(b.startswith("calibration") for b in bases.values())
        out.append({"accelerator": g, "bases": bases, "calibrated": calibrated})
    return out


def analyze(ctx: SweepContext, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything: recommendations (with what would change them), price sensitivity, rent vs
    own, the best per accelerator, and the candidates' front (row ids, fastest first)."""
    sensitivity = price_sensitivity(ctx, rows)
    recs = recommendations(ctx, rows, sensitivity)
    t = _table(ctx, rows)
    mask = _candidates(ctx, t, np.ones(len(t)))
    front = _front(t, mask, t.cost)
    return {
        "sweep": ctx.name,
        "latency_metric": ctx.latency_metric,
        "knee_definition": (
            "front point farthest from the line joining the front's fastest and cheapest points, "
            "each objective log-transformed and min-max normalized over the front"
        ),
        "stored_rows": len(t),
        "candidates": int(mask.sum()),
        "recommendations": recs,
        "rent_vs_own": rent_vs_own(ctx, recs),
        "price_sensitivity": sensitivity,
        "per_accelerator": per_accelerator_best(ctx, rows),
        "front_ids": [int(t.ids[i]) for i in front],
    }


def for_store(store: Any, name: str) -> dict[str, Any]:
    """`analyze` of a stored sweep: its evaluations merged with its final front."""
    record = store.get_sweep(name)
    if record is None:
        raise ValueError(f"no sweep named {name!r} in {store.url}")
    front = store.latest_front(name, kind="final") or {}
    rows = rows_from(store.get_evaluations(name), front.get("points") or [])
    return analyze(sweep_context(record), rows)
