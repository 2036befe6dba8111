"""Disaggregated configurations in a sweep (`space.disaggregation`; objectives.disaggregation).

The space gains three dimensions — `disaggregated`, `decode_accelerator`, `decode_tp` — so
configuration ids stay a mixed-radix index. A row with disaggregated = false is the aggregated
configuration of the other dimensions (evaluated as before); one with the decode dimensions
away from their first value repeats it and is marked infeasible with that reason (its twin is
evaluated). A disaggregated row runs prefill replicas on `accelerator` / `tp` and decode
replicas on `decode_accelerator` / `decode_tp` with `max_batch` as the decode batch limit (pp,
ep, weights, KV dtype, engine and `attention_dp` shared; `chunked_prefill` is the prefill chunk,
per attention rank; `mtp` drafts on the decode pool only). Under attention DP both pools are DEP
pools, EP over each pool's tp x attention_dp GPUs (the decode pool's EP follows `decode_tp`);
the pools are sized for the rate by `objectives.disaggregation.evaluate_disaggregated`.

Metrics: the usual columns (replicas = prefill + decode replicas, gpus = GPUs per replica on
average, total_gpus exact, $/hour of both pools) plus `disaggregated` (0 / 1),
`prefill_replicas`, `decode_replicas`, `prefill_gpus`, `decode_gpus` (per replica),
`kv_transfer_s` (of the mean prompt) and `kv_link_code` (index into
objectives.disaggregation.LINK_NAMES); NaN on aggregated rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from objectives.batch import ConfigBatch, build_batch
from objectives.disaggregation import (
    LINK_NAMES,
    DisaggregatedMetrics,
    evaluate_disaggregated,
    kv_link_for,
    link_arrays,
)
from search.sweeps.evaluation import METRIC_COLUMNS, EvalResult
from search.sweeps.spec import LATENCY_METRICS

DISAGG_COLUMNS = (
    "disaggregated",
    "prefill_replicas",
    "decode_replicas",
    "prefill_gpus",
    "decode_gpus",
    "kv_transfer_s",
    "kv_link_code",
)
REPEAT_REASON = "repeats an aggregated configuration (decode_accelerator / decode_tp apply when disaggregated)"
FILTER_REASON = "prefill pool outside space.disaggregation.prefill"


def evaluate_mixed(ev: Any, ids: np.ndarray) -> EvalResult:
    """EvalResult of `ids` in a space with a disaggregation section (`ev`: the AnalyticEvaluator)."""
    idx = ev.space.decode(ids)
    dims = {d.name: d for d in ev.space.dimensions}
    dis = np.asarray(dims["disaggregated"].values, dtype=bool)[idx["disaggregated"]]
    repeat = ~dis & ((idx["decode_accelerator"] != 0) | (idx["decode_tp"] != 0))
    pre = ev.spec.space.disaggregation.prefill
    outside = np.zeros(ids.size, dtype=bool)
    if pre.accelerators is not None:
        acc = np.asarray(dims["accelerator"].values, dtype=object)[idx["accelerator"]]
        outside |= ~np.isin(acc, pre.accelerators)
    if pre.tp is not None:
        tp = np.asarray(dims["tp"].values)[idx["tp"]]
        outside |= ~np.isin(tp, pre.tp)
    outside &= dis
    agg = ~dis & ~repeat
    run = dis & ~outside
    n = ids.size
    k = len(ev.spec.objectives)
    m = len(ev.constraint_names)
    keys = [*METRIC_COLUMNS, "total_gpus", *DISAGG_COLUMNS]
    metrics = {key: np.full(n, np.nan) for key in keys}
    metrics["disaggregated"] = dis.astype(np.float64)
    objectives = np.full((n, k), np.nan)
    constraints = np.full((n, m), 1e30)
    feasible = np.zeros(n, dtype=bool)
    reason = [""] * n
    for i in np.flatnonzero(repeat):
        reason[i] = REPEAT_REASON
    for i in np.flatnonzero(outside):
        reason[i] = FILTER_REASON
    parts = []
    if agg.any():
        parts.append((np.flatnonzero(agg), ev._evaluate_aggregated(ids[agg])))
    if run.any():
        parts.append((np.flatnonzero(run), _evaluate_disaggregated(ev, ids[run])))
    for rows, r in parts:
        feasible[rows] = r.feasible
        objectives[rows] = r.objectives
        constraints[rows] = r.constraints
        for j, i in enumerate(rows):
            reason[i] = r.reason[j]
        for key, values in r.metrics.items():
            if key in metrics:
                metrics[key][rows] = values
    return EvalResult(
        ids=ids,
        feasible=feasible,
        reason=reason,
        objectives=objectives,
        constraints=constraints,
        constraint_names=ev.constraint_names,
        metrics=metrics,
    )


def pool_batches(ev: Any, idx: dict[str, np.ndarray], rows: np.ndarray) -> tuple[ConfigBatch, ConfigBatch]:
    """The prefill and decode ConfigBatch of rows `rows` of decoded `idx` (one group: a prefill
    accelerator, decode accelerator, weights and KV dtype)."""
    dims = {d.name: d for d in ev.space.dimensions}

    def value(name: str) -> Any:
        return dims[name].values[int(idx[name][rows[0]])]

    def values(name: str) -> np.ndarray:
        return np.asarray(dims[name].values, dtype=np.float64)[idx[name][rows]]

    common = {
        "weights": value("weights"),
        "kv_cache": value("kv_cache"),
        "pp": values("pp"),
        "isl": ev.workload.isl,
        "osl": ev.workload.osl,
        "efficiency": ev.efficiency,
    }
    if "engine" in dims:
        common["engine"] = value("engine")
    ep = values("ep")
    dp = values("attention_dp") if "attention_dp" in dims else np.ones(rows.size)
    mtp = values("mtp") if "mtp" in dims else np.zeros(rows.size)
    tp_p, tp_d = values("tp"), values("decode_tp")
    # DEP pools (attention_dp > 1): EP spans the pool's tp x attention_dp GPUs (the only EP the
    # mode allows), so the decode pool's EP follows its own TP; attention_dp 1 keeps the space's ep
    dep = dp > 1
    ep_d = np.where(dep, tp_d * dp, ep)
    bp = build_batch(
        ev.model, ev.catalog[value("accelerator")], tp=tp_p, ep=ep, attention_dp=dp, batch=1, **common
    )  # a prefill pool emits one token per request: no draft (MTP) steps
    bp = bp.replace(max_num_tokens=values("chunked_prefill"))
    bd = build_batch(
        ev.model,
        ev.catalog[value("decode_accelerator")],
        tp=tp_d,
        ep=ep_d,
        attention_dp=dp,
        mtp=mtp,
        batch=values("max_batch"),
        **common,
    )
    return bp, bd


def links_for(ev: Any, prefill_gpu: str, decode_gpu: str, n: int) -> dict[str, Any]:
    """Link arrays (objectives.disaggregation.link_arrays) of the spec's kv_link between two GPUs."""
    d = ev.spec.space.disaggregation
    gp, gd = ev.catalog[prefill_gpu], ev.catalog[decode_gpu]
    override = d.kv_link_gbps * 1e9 / 8.0 if d.kv_link_gbps else None
    out_kind = "ethernet" if d.kv_link == "ethernet" else "infiniband"
    out = kv_link_for(gp, gd, out_kind, one_domain=False, override_bytes_per_s=override)
    nv = None
    if d.kv_link in ("auto", "nvlink") and gp.id == gd.id:
        nv = kv_link_for(gp, gd, "nvlink", one_domain=True)
    return link_arrays([out, nv], n)


def disaggregated_metrics(ev: Any, ids: np.ndarray) -> tuple[DisaggregatedMetrics, np.ndarray, dict[str, np.ndarray]]:
    """(metrics in the order of `ids`, $/GPU-hour of the prefill pool per row, decoded idx)."""
    idx = ev.space.decode(ids)
    group = ((idx["accelerator"] * 1000 + idx["decode_accelerator"]) * 1000 + idx["weights"]) * 1000 + idx["kv_cache"]
    if "engine" in idx:  # one build_batch per engine too (its profile)
        group = group * 16 + idx["engine"]
    dims = {d.name: d for d in ev.space.dimensions}
    load = dict(ev.under_load)
    kwargs: dict[str, Any] = {
        "arrival_rate_per_s": ev._rate(),
        "max_position_embeddings": ev.model.max_position_embeddings,
    }
    if load:
        kwargs.update(
            percentiles=load["latency_percentile"],
            slos=load["slos"],
            target_utilization=load["target_utilization"],
            input_lengths=load["input_lengths"],
            output_lengths=load["output_lengths"],
            arrival_cv=load["arrival_cv"],
            dispatch=load["dispatch"],
            dispatch_group=load["dispatch_group"],
        )
    elif ev.workload.slos and ev.spec.constraints.slos:
        kwargs["slos"] = list(ev.workload.slos)
    out: dict[str, np.ndarray | dict] = {}
    price_p = np.full(ids.size, np.nan)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        pacc = dims["accelerator"].values[int(idx["accelerator"][rows[0]])]
        dacc = dims["decode_accelerator"].values[int(idx["decode_accelerator"][rows[0]])]
        bp, bd = pool_batches(ev, idx, rows)
        pp_price, dd_price = ev.price_per_gpu_hour(pacc), ev.price_per_gpu_hour(dacc)
        r = evaluate_disaggregated(
            bp,
            bd,
            prefill_usd_per_gpu_hour=np.full(rows.size, pp_price),
            decode_usd_per_gpu_hour=np.full(rows.size, dd_price),
            links=links_for(ev, pacc, dacc, rows.size),
            scaleup_domain=float(ev.catalog[pacc].scaleup_domain),
            **kwargs,
        )
        price_p[rows] = pp_price + dd_price  # NaN when either pool has no (owned) price
        for key, value in r.__dict__.items():
            if isinstance(value, dict):
                slot = out.setdefault(key, {})
                for p, v in value.items():
                    slot.setdefault(p, np.full(ids.size, np.nan))[rows] = v  # type: ignore[index]
            else:
                arr = out.setdefault(key, np.zeros(ids.size, dtype=np.asarray(value).dtype))
                arr[rows] = value  # type: ignore[index]
    return DisaggregatedMetrics(**out), price_p, idx  # type: ignore[arg-type]


def _evaluate_disaggregated(ev: Any, ids: np.ndarray) -> EvalResult:
    m, price, idx = disaggregated_metrics(ev, ids)
    pct = ev.latency_percentile
    metrics: dict[str, np.ndarray] = {col: m.at(metric, pct[metric]) for metric, col in LATENCY_METRICS.items()}
    for key in (
        "output_tokens_per_s_per_gpu",
        "output_tokens_per_s_per_user",
        "output_tokens_per_s",
        "batch",
        "max_batch",
        "total_gpus",
        "usd_per_hour",
        "usd_per_million_output_tokens",
        "energy_j_per_output_token",
        "memory_per_gpu_bytes",
        "weight_bytes_per_gpu",
        "bound_code",
        "utilization",
        "load_batch",
        "usd_per_request",
        "usd_per_million_total_tokens",
        "prefill_replicas",
        "decode_replicas",
        "prefill_gpus",
        "decode_gpus",
        "kv_transfer_s",
    ):
        metrics[key] = np.asarray(getattr(m, key), dtype=np.float64)
    metrics["replicas"] = m.prefill_replicas + m.decode_replicas
    metrics["gpus"] = m.total_gpus / metrics["replicas"]
    metrics["kv_link_code"] = m.link_code
    metrics["disaggregated"] = np.ones(ids.size)
    slo_latency = {}
    slos = ev.workload.slos if ev.spec.constraints.slos else []
    for s in slos:
        slo_latency[f"{s.metric}@{s.percentile:g}"] = m.at(s.metric, s.percentile)
    reason = [m.reason(i) for i in range(ids.size)]
    return ev.scored(ids, idx, metrics, reason, np.asarray(m.feasible, dtype=bool), price, slo_latency)


def link_name(code: float | None) -> str:
    """The KV link a stored `kv_link_code` names."""
    return "" if code is None or not np.isfinite(code) else LINK_NAMES[int(code)]


def simulate_two_pools(ev: Any, config_id: int) -> tuple[Any, int]:
    """(SimResult, replicas simulated) of a disaggregated configuration: the analytic pools'
    replicas (scaled down together, with the rate, when either exceeds
    `simulation.max_replicas`) replayed by `objectives.simulator.simulate_disaggregated`."""
    from objectives.disaggregation import kv_transfer_time_s
    from objectives.simulator import simulate_disaggregated

    ids = np.array([config_id], dtype=np.int64)
    m, _, idx = disaggregated_metrics(ev, ids)
    bp, bd = pool_batches(ev, idx, np.array([0]))
    x, y = float(m.prefill_replicas[0]), float(m.decode_replicas[0])
    group = float(ev.spec.simulation.max_replicas)
    scale = max(x / group, y / group, 1.0)
    xs, ys = max(1, round(x / scale)), max(1, round(y / scale))
    reqs = ev.requests
    arrival = reqs.arrival_s * scale if scale > 1.0 else reqs.arrival_s
    dims = {d.name: d for d in ev.space.dimensions}
    pacc = dims["accelerator"].values[int(idx["accelerator"][0])]
    dacc = dims["decode_accelerator"].values[int(idx["decode_accelerator"][0])]
    lk = links_for(ev, pacc, dacc, 1)
    use_nv = lk["nvlink"] is not None and m.link_code[0] == float(LINK_NAMES.index("nvlink"))
    bw, eff, lat, _ = lk["nvlink"] if use_nv else lk["out"]
    transfer = kv_transfer_time_s(bp, bd, reqs.input_tokens.astype(np.float64), bw[0], eff[0], lat[0])
    result = simulate_disaggregated(
        bp,
        bd,
        arrival,
        reqs.input_tokens,
        reqs.output_tokens,
        transfer_s=transfer,
        prefill_replicas=xs,
        decode_replicas=ys,
        dispatch=ev.spec.simulation.dispatch,
        block_size=ev.spec.simulation.block_size,
    )
    return result, xs + ys
