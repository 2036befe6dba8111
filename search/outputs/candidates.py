"""Which stored rows of a sweep are candidates, and the picks among them.

Everything here is a function of the sweep record (`Store.get_sweep`) and its stored rows
(`Store.get_evaluations`, optionally merged with `Store.latest_front` points), held as a column
table (`_Table`) of the spec's latency, cost and constraints.

A stored row is a candidate when it passes every constraint of the spec (fits, max_gpus, the
rate it must serve, the hourly budget `constraints.max_usd_per_hour`) and meets every SLO of the
workload (checked on its metrics, so also when the spec turned SLO constraints off), with a
finite latency and cost. Latency is the spec's first latency objective (TPOT by default); cost is
the spec's first cost objective among `COST_METRICS` — $ per million output tokens by default,
or $ per request, or $ per million input + output tokens — written $/Mtok below.

The picks:

* cheapest — the candidate with the lowest $/Mtok (ties: lower latency);
* fastest — within the hourly budget, the cheapest candidate whose latency is at most
  (1 + t) x the fastest candidate's, t = the spec's `report.fastest_tolerance` (default 0.05;
  ties: lower latency, then id), so a 2% faster point does not win on a 15x larger fleet; with
  t = 0 it is the lowest-latency candidate (ties: lower $/Mtok). Without `max_usd_per_hour`
  the budget is unbounded;
* knee — the point of the candidates' (latency, $/Mtok) Pareto front farthest from the straight
  line joining the front's two extremes (its fastest and its cheapest point), after each
  objective is log-transformed and min-max normalized over the front. In those coordinates the
  extremes are (0, 1) and (1, 0) and the distance of a point (x, y) on the utopia side is
  (1 - x - y) / sqrt(2). Logs make equal distances equal *percentage* changes, so the knee is
  where a further percentage cut in latency starts to cost a larger percentage in dollars,
  whatever the units; fronts spanning a 50x cost range would otherwise put every linear knee
  at the cheap end.

$/hour and $/Mtok of a row scale linearly with its GPU's $/GPU-hour (replicas do not depend on
price), so `_scale` re-prices rows without evaluating anything again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from objectives.accelerators import Accelerator
from objectives.cost import HOURS_PER_YEAR, OwnershipTerms
from objectives.quantization import get_scheme, resolve_compute_dtype
from search.sweeps import LATENCY_METRICS, AnalyticEvaluator, SweepSpec, pareto_mask, stored_price_table
from workloads import Workload

KINDS = ("cheapest", "fastest", "knee")
TITLES = {
    "cheapest": "Cheapest that meets every SLO",
    "fastest": "Fastest within the budget",
    "knee": "Knee of the front",
}
CONFIG_FIELDS = (
    "accelerator",
    "tp",
    "pp",
    "ep",
    "weights",
    "kv_cache",
    "max_batch",
    "chunked_prefill",
    "replicas",
    # space.disaggregation (search.sweeps.disaggregated); absent from other spaces
    "disaggregated",
    "decode_accelerator",
    "decode_tp",
    "attention_dp",
    "mtp",
    "engine",  # only in sweeps with space.engine
)
COST = "usd_per_million_output_tokens"  # the default cost axis
# Cost objectives that can be the report's cost axis: (short unit, words)
COST_METRICS = {
    "usd_per_million_output_tokens": ("/Mtok", "$ per million output tokens"),
    "usd_per_request": ("/request", "$ per request"),
    "usd_per_million_total_tokens": ("/Mtok in+out", "$ per million input + output tokens"),
}
SENSITIVITY_FACTORS = (0.7, 1.3)
HOURS_PER_MONTH = HOURS_PER_YEAR / 12.0
YEARS_COMPARED = 3.0
GB = 1e9
BUDGET_CONSTRAINT = "max_usd_per_hour"


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
    cost_metric: str = COST  # a key of COST_METRICS: the cost axis of the picks
    fastest_tolerance: float = 0.05  # spec.report.fastest_tolerance
    # the stored price table with its basis: provider, provider_of, list_of, mixed (search.sweeps.pricing)
    price_table: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def latency_column(self) -> str:
        return LATENCY_METRICS[self.latency_metric]

    @property
    def cost_column(self) -> str:
        return self.cost_metric

    @property
    def cost_unit(self) -> str:
        """'/Mtok', '/request' or '/Mtok in+out' (after a dollar amount)."""
        return COST_METRICS[self.cost_metric][0]

    @property
    def cost_words(self) -> str:
        return COST_METRICS[self.cost_metric][1]

    def fmt_cost(self, value: float) -> str:
        """A value of the cost axis with its unit: '$0.123/Mtok', '$0.00456/request'."""
        return f"${value:.3g}{self.cost_unit}"


def sweep_context(record: dict[str, Any]) -> SweepContext:
    """The context of a stored sweep record (`Store.get_sweep`)."""
    try:
        spec = SweepSpec.model_validate({k: v for k, v in record["spec"].items() if not k.startswith("_")})
        ev = AnalyticEvaluator(spec)
    except (ValidationError, ValueError) as exc:  # e.g. a price_file that is gone
        raise ValueError(f"cannot rebuild the spec of sweep {record.get('name')!r}: {exc}") from None
    latency = next((o.metric for o in spec.objectives if o.metric in LATENCY_METRICS), "tpot")
    cost = next((o.metric for o in spec.objectives if o.metric in COST_METRICS), COST)
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
        cost_metric=cost,
        fastest_tolerance=spec.report.fastest_tolerance,
        price_table=stored_price_table(record.get("price_table"), ev.catalog, spec.accelerators, spec.pricing.basis),
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


def _slo_constraint(rows: list[dict[str, Any]], name: str) -> np.ndarray:
    """Each row's stored constraint value `name` (NaN where it has none)."""
    out = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        value = (r.get("constraints") or {}).get(name)
        if value is not None:
            out[i] = float(value)
    return out


def _table(ctx: SweepContext, rows: list[dict[str, Any]]) -> _Table:
    latency = _col(rows, ctx.latency_column)
    cost = _col(rows, ctx.cost_column)
    slo_ok = np.ones(len(rows), dtype=bool)
    violations: list[set[str]] = [set() for _ in rows]
    for s in ctx.workload.slos:
        # the stored SLO constraint (the latency at the SLO's own percentile minus its target)
        # where the evaluator checked it, else the metric's column
        stored = _slo_constraint(rows, _slo_name(s.metric, s.percentile))
        value = np.where(np.isnan(stored), _col(rows, LATENCY_METRICS[s.metric]), stored + s.max_s)
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


def _near_fastest(t: _Table, mask: np.ndarray, tolerance: float) -> np.ndarray:
    """Row indices of the candidates in `mask` whose latency is at most (1 + tolerance) x the
    lowest latency among them."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return idx
    return idx[t.latency[idx] <= (1.0 + tolerance) * t.latency[idx].min()]


def _pick_fastest(t: _Table, mask: np.ndarray, cost: np.ndarray, tolerance: float = 0.0) -> int | None:
    """The cheapest candidate within `tolerance` of the fastest candidate's latency (ties: lower
    latency, then id); tolerance 0: the fastest (ties: cheaper, then id)."""
    near = _near_fastest(t, mask, tolerance)
    if near.size == 0:
        return None
    return int(near[np.lexsort((t.ids[near], t.latency[near], cost[near]))[0]])


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
        "fastest": _pick_fastest(t, mask, cost, ctx.fastest_tolerance),
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
    if int(row.get("attention_dp") or 1) > 1:
        par += f" ADP{row['attention_dp']}"
    if int(row.get("mtp") or 0) > 0:
        par += f" MTP{row['mtp']}"
    total = row.get("total_gpus")
    count = f"{int(total)}× " if total is not None else ""
    if row.get("disaggregated"):
        x, y = row.get("prefill_replicas"), row.get("decode_replicas")
        pools = f"{int(x)}×" if x is not None else ""
        poold = f"{int(y)}×" if y is not None else ""
        return (
            f"disaggregated · prefill {pools} {row['accelerator']} {par} + decode {poold} "
            f"{row['decode_accelerator']} TP{row['decode_tp']} · {row['weights']} weights, {row['kv_cache']} KV · "
            f"decode batch ≤ {row['max_batch']}"
        )
    engine = f" · {row['engine']}" if row.get("engine") else ""
    return (
        f"{count}{row['accelerator']} · {par} · {row['weights']} weights, {row['kv_cache']} KV · "
        f"batch ≤ {row['max_batch']}{engine}"
    )
