"""The three recommendations of a sweep (cheapest, fastest, knee), each with its reasons: what
bounds it, which constraint binds, the runner-up on another GPU, its front neighbours, and where
its latencies come from (measured, simulated or modelled). Results are plain JSON-able dicts,
shared by `servesweep front --format json`, the API and the HTML report. The picks themselves
are made in `search.outputs.candidates`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from objectives.disaggregation import LINK_NAMES
from objectives.engines import default_engine
from objectives.quantization import get_scheme
from objectives.serving import BOUNDS
from objectives.uncertainty import FOLLOWS
from search.outputs.candidates import (
    BUDGET_CONSTRAINT,
    CONFIG_FIELDS,
    COST,
    COST_METRICS,
    GB,
    KINDS,
    SENSITIVITY_FACTORS,
    SweepContext,
    _budget_ok,
    _candidates,
    _front,
    _gb,
    _num,
    _pick_cheapest,
    _pick_fastest,
    _picks,
    _Table,
    _table,
    compute_dtype,
    label,
)
from search.outputs.fidelity import headline, row_stage
from search.outputs.intervals import engine_of, nested, overlap
from search.outputs.launch import launch_commands
from search.sweeps import LATENCY_METRICS, PROBE_MEASURED

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


def _summary(ctx: SweepContext, t: _Table, i: int, scale: np.ndarray | None = None) -> dict[str, Any]:
    r = t.rows[i]
    s = 1.0 if scale is None else float(scale[i])
    return {
        "id": int(r["id"]),
        "label": label(r),
        "accelerator": r["accelerator"],
        "total_gpus": _num(r.get("total_gpus")),
        ctx.latency_column: _num(r.get(ctx.latency_column)),
        # every cost scales linearly with the GPU price
        **{k: _num(None if r.get(k) is None else float(r[k]) * s) for k in COST_METRICS},
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
        # the engine the numbers were modelled for (space.engine; else the default engine's serving values)
        "engine": r.get("engine") or default_engine(),
        "gpus_per_replica": _num(r.get("gpus")),
        "replicas": _num(r.get("replicas")),
        "total_gpus": _num(r.get("total_gpus")),
        "parallelism": {
            "tp": r["tp"],
            "pp": r["pp"],
            "ep": r["ep"],
            **{k: r[k] for k in ("attention_dp", "mtp") if k in r},
        },
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
        "usd_per_request": _num(r.get("usd_per_request")),
        "usd_per_million_total_tokens": _num(r.get("usd_per_million_total_tokens")),
        "cost_metric": ctx.cost_metric,
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
        "stage": row_stage(r),
        **_intervals(ctx, r),
        **_disaggregation(r),
    }


def _disaggregation(r: dict[str, Any]) -> dict[str, Any]:
    """{"disaggregation": pools, "mode_note": one sentence} for a disaggregated pick, else {}."""
    if not r.get("disaggregated"):
        return {}
    x, y = int(r.get("prefill_replicas") or 1), int(r.get("decode_replicas") or 1)
    kv = r.get("kv_transfer_s")
    code = r.get("kv_link_code")
    link = {"nvlink": "NVLink", "infiniband": "RDMA (the scale-out NIC)", "ethernet": "TCP"}.get(
        LINK_NAMES[int(code)] if code is not None else "", "the network"
    )
    pools = {
        "prefill_replicas": x,
        "decode_replicas": y,
        "prefill_accelerator": r["accelerator"],
        "prefill_tp": r["tp"],
        "decode_accelerator": r["decode_accelerator"],
        "decode_tp": r["decode_tp"],
        "kv_transfer_s": _num(kv),
        "kv_link": link,
    }
    note = (
        f"Disaggregated prefill/decode: {x} prefill replica{'s' if x > 1 else ''} ({r['accelerator']} TP{r['tp']}) "
        f"only prefill prompts and hand each prompt's KV cache over {link}"
        + (f" (~{float(kv) * 1e3:.1f} ms for a mean prompt)" if kv is not None else "")
        + f" to {y} decode replica{'s' if y > 1 else ''} ({r['decode_accelerator']} TP{r['decode_tp']}) that only "
        "decode, so prompts never stall the token stream and each pool is sized for its own phase."
    )
    return {"disaggregation": pools, "mode_note": note}


def _intervals(ctx: SweepContext, r: dict[str, Any]) -> dict[str, Any]:
    """p10 / p90 of the pick's predicted numbers, the evidence and the extrapolated flag."""
    values = {k: _num(r.get(k)) for k in FOLLOWS}
    values["output_tokens_per_s"] = _num(r.get("output_tokens_per_s"))
    return nested(
        values,
        model=ctx.spec.model,
        gpu=r["accelerator"],
        weights=r["weights"],
        engine=engine_of(ctx.evaluator.efficiency),
    )


def _basis(ctx: SweepContext, r: dict[str, Any]) -> str:
    """Where a configuration's latencies come from: the cost model, the serving simulator, or
    a probe of its decoder layer on a GPU of its type (probe sweeps)."""
    if r.get("probe_status") == PROBE_MEASURED:
        return "measured: one decoder layer timed on the GPU, the rest of the model around it"
    if ctx.spec.evaluator == "simulator" or row_stage(r) == "simulated":
        return "simulated: continuous batching replayed under the workload's arrivals"
    return "modelled: the analytic cost model"


def _pct(a: float, b: float) -> str:
    """a relative to b as a signed percentage."""
    return f"{(a / b - 1.0) * 100:+.0f}%"


def _fmt_latency(ctx: SweepContext, v: float) -> str:
    ms = v * 1e3  # in ms past a second too, like the report's tables (report_html._lat)
    return f"{ms:,.1f} ms" if ms < 100 else f"{ms:,.0f} ms"


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


def _binding(
    ctx: SweepContext, t: _Table, best: int, objective: np.ndarray, what: str, below: float | None = None
) -> list[str]:
    """Constraints that, relaxed alone, would admit a row better in `objective` than `best`
    (than `below`, when given: for the fastest pick, a latency that moves its tolerance window)."""
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
        limit = objective[best] if below is None else below
        better = np.flatnonzero(only & finite & (objective < limit))
        if better.size == 0:
            continue
        j = int(better[np.argmin(objective[better])])
        r = t.rows[j]
        gain = _pct(objective[j], objective[best])
        value = (
            ctx.fmt_cost(float(t.cost[j]))
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
            f"The best on another GPU is {label(t.rows[j])} at {ctx.fmt_cost(float(t.cost[j]))} "
            f"({_pct(t.cost[j], t.cost[best])}); "
            f"it would win if {t.acc[j]}'s price fell {drop * 100:.0f}% or {t.acc[best]}'s rose {rise * 100:.0f}%."
        )
    j = _pick_fastest(t, others, t.cost, ctx.fastest_tolerance)
    if j is None:
        return None
    rule = f" (the cheapest within {_tol(ctx)} of its fastest)" if ctx.fastest_tolerance > 0 else ""
    return (
        f"The fastest on another GPU{rule} is {label(t.rows[j])}: "
        f"{_fmt_latency(ctx, float(t.latency[j]))} {ctx.latency_metric.upper()} "
        f"({_pct(t.latency[j], t.latency[best])}) "
        f"at {ctx.fmt_cost(float(t.cost[j]))}."
    )


def _tol(ctx: SweepContext) -> str:
    """The fastest pick's latency tolerance in percent ('5%')."""
    return f"{ctx.fastest_tolerance * 100:g}%"


def _knee_neighbours(ctx: SweepContext, t: _Table, front: np.ndarray, best: int) -> list[str]:
    pos = int(np.flatnonzero(front == best)[0])
    out = []
    lat = ctx.latency_metric.upper()
    per = "per request" if ctx.cost_metric == "usd_per_request" else "per token"
    if pos + 1 < front.size:
        j = int(front[pos + 1])
        out.append(
            f"One step cheaper on the front, {label(t.rows[j])} costs {_pct(t.cost[j], t.cost[best])} "
            f"{per} for {_pct(t.latency[j], t.latency[best])} {lat}."
        )
    if pos > 0:
        j = int(front[pos - 1])
        out.append(
            f"One step faster, {label(t.rows[j])} cuts {lat} {_pct(t.latency[j], t.latency[best])} "
            f"for {_pct(t.cost[j], t.cost[best])} {per}."
        )
    return out


def _reason(
    ctx: SweepContext, t: _Table, kind: str, i: int, n_candidates: int, front_size: int, quickest: int | None = None
) -> str:
    """Why row `i` is the `kind` pick; `quickest`: the lowest-latency candidate (for "fastest")."""
    lat = ctx.latency_metric.upper()
    slos = ", ".join(f"{s.metric.upper()} ≤ {_fmt_latency(ctx, s.max_s)}" for s in ctx.workload.slos)
    meets = f"meet every SLO ({slos})" if slos else "pass every constraint (the workload has no SLOs)"
    if kind == "cheapest":
        return (
            f"Lowest {ctx.cost_words} of the {n_candidates} stored configurations that {meets}: "
            f"{ctx.fmt_cost(float(t.cost[i]))} at {_fmt_latency(ctx, float(t.latency[i]))} {lat}."
        )
    if kind == "fastest":
        budget = (
            f"within the ${ctx.budget_usd_per_hour:,.0f}/h budget"
            if ctx.budget_usd_per_hour is not None
            else "with no budget limit (the spec sets no constraints.max_usd_per_hour)"
        )
        here = f"{_fmt_latency(ctx, float(t.latency[i]))} at ${t.usd_h[i]:,.2f}/h ({ctx.fmt_cost(float(t.cost[i]))})"
        if ctx.fastest_tolerance == 0 or quickest is None:
            return f"Lowest {lat} among the configurations that {meets}, {budget}: {here}."
        text = (
            f"Within {_tol(ctx)} of the fastest {lat} ({_fmt_latency(ctx, float(t.latency[quickest]))}) among the "
            f"configurations that {meets}, {budget}, the cheapest: {here}."
        )
        if quickest != i:
            text += (
                f" The fastest, {label(t.rows[quickest])}, is {_pct(t.latency[quickest], t.latency[i])} in {lat} "
                f"at {t.usd_h[quickest] / t.usd_h[i]:.3g}× the $/hour "
                f"({ctx.fmt_cost(float(t.cost[quickest]))}; report.fastest_tolerance sets the {_tol(ctx)})."
            )
        return text
    return (
        f"The best trade-off on the {front_size}-point front of {lat} against {ctx.cost_words}: "
        f"farthest from the line "
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
        rec = {"kind": kind, "title": headline(kind, t.rows[i]), **_describe(ctx, t, i)}
        quickest = _pick_fastest(t, mask, t.cost) if kind == "fastest" else None
        rec["reason"] = _reason(ctx, t, kind, i, int(mask.sum()), int(front.size), quickest)
        changes: list[str] = []
        if kind == "cheapest":
            changes += _binding(ctx, t, i, t.cost, "cost")
            other = _runner_up_other_gpu(ctx, t, mask, i, kind)
            changes += [other] if other else []
        elif kind == "fastest":
            # a row below latency / (1 + t) would move the window past the pick
            changes += _binding(ctx, t, i, t.latency, "latency", t.latency[i] / (1.0 + ctx.fastest_tolerance))
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
                    f"({ctx.fmt_cost(new[ctx.cost_column])}, {_fmt_latency(ctx, new[ctx.latency_column])} "
                    f"{ctx.latency_metric.upper()})."
                )
        if sensitivity is not None and not any(s[kind] and s[kind]["id"] != rec["id"] for s in sensitivity):
            moves = ", ".join(f"{(f - 1) * 100:+.0f}%" for f in SENSITIVITY_FACTORS)
            mixed = ctx.price_table.get("mixed") or []
            if mixed:  # a steady answer across price lists says nothing about any one list
                what = (
                    f"purchase prices of different scope ({', '.join(mixed)}: card only, no server, network or "
                    "rack share)"
                    if ctx.basis == "owned"
                    else f"prices from different providers ({', '.join(mixed)} priced from another list than the rest)"
                )
                changes.append(
                    f"No single GPU's price moving {moves} changes it, but this compares {what}, so it does not "
                    "show the answer holds on one like-for-like price basis."
                )
            else:
                changes.append(f"Robust to price: no single GPU's price moving {moves} changes it.")
        rec["what_would_change"] = changes
        gpu = ctx.catalog.get(rec["accelerator"])
        rec["launch"] = launch_commands(
            ctx.spec.model,
            rec["config"],
            vendor=rec["vendor"],
            replicas=rec["replicas"],
            compute_dtype=rec["compute_dtype"],
            pools=rec.get("disaggregation"),
            gpus_per_node=_gpus_per_node(ctx, rec["accelerator"]),
            engine=rec["engine"] if rec["config"].get("engine") else None,
            hbm_bytes=gpu.hbm_bytes if gpu else None,
            gpu_id=rec["accelerator"],
        )
        out[kind] = rec
    _within_error(ctx, out)
    return out


def probe_command(ctx: SweepContext, rec: dict[str, Any]) -> str:
    """The `servesweep probe` that measures a pick's GPU with its model's shapes (its GPUs per
    replica for the all-reduce)."""
    gpus = int(rec.get("gpus_per_replica") or 1)
    ray_type = str(rec["accelerator"]).split("-")[0]
    cmd = f"servesweep probe --accelerator-type {ray_type} --model {ctx.spec.model}"
    if gpus > 1:
        cmd += f" --gpus {gpus}"
    return cmd + f" -o calibrations/probe-{str(rec['accelerator']).lower()}.json"


def _within_error(ctx: SweepContext, recs: dict[str, dict[str, Any] | None]) -> None:
    """Picks whose 80 % intervals overlap on both the latency and the cost axis are within the
    model's error of each other: each says so, with the probes that would settle it."""
    axes = (ctx.latency_column, ctx.cost_column)
    for kind, rec in recs.items():
        if rec is None:
            continue
        rec["within_error"] = []
        for other_kind, other in recs.items():
            if other is None or other_kind == kind or other["id"] == rec["id"]:
                continue
            if len(overlap(rec, other, axes)) < len(axes):
                continue
            probes = list(dict.fromkeys([probe_command(ctx, rec), probe_command(ctx, other)]))
            rec["within_error"].append(
                {"kind": other_kind, "id": other["id"], "label": other["label"], "probes": probes}
            )
            rec["what_would_change"].append(
                f"Within the model's error of the {other_kind} pick ({other['label']}): their 80 % intervals overlap "
                f"in {ctx.latency_metric.upper()} and {ctx.cost_words} — measure both: " + "; ".join(probes) + "."
            )


def _gpus_per_node(ctx: SweepContext, gpu_id: str) -> int | None:
    """GPUs per node of the catalog entry (None where unknown): a replica beyond it spans nodes."""
    gpu = ctx.catalog.get(gpu_id)
    return int(gpu.gpus_per_node) if gpu is not None and getattr(gpu, "gpus_per_node", None) else None
