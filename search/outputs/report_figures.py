"""The report's Plotly figures: the Pareto chart (candidates per accelerator, the infeasible points
faint, the front and the recommendations marked) and a roofline per recommended GPU with the
configuration's decode step and prefill chunk placed on it. FLOPs and bytes come from
`objectives.compute`, step times from `objectives.timing`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go

from objectives.batch import build_batch
from objectives.compute import (
    attention_flops,
    dense_gemm_flops,
    dense_weight_bytes,
    expected_experts_touched,
    expert_gemm_flops,
    expert_weight_bytes,
    kv_read_bytes,
    lm_head_flops,
)
from objectives.timing import forward_time_s
from search.outputs.candidates import SweepContext, candidate_mask, label
from search.outputs.report_html import _lat, _usd
from search.sweeps import stage_of

MAX_POINTS_PER_TRACE = 3000  # candidates shown per accelerator (front and recommendations always)
MAX_FAINT_PER_TRACE = 1500  # infeasible points shown per accelerator
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#393b79",
    "#637939",
    "#843c39",
    "#7b4173",
)
KIND_SYMBOL = {"cheapest": "star", "fastest": "diamond", "knee": "square"}
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png"}}


# ------------------------------------------------------------------------------ roofline


def roofline_data(ctx: SweepContext, rec: dict[str, Any]) -> dict[str, Any]:
    """Roofs of a recommendation's GPU (catalog peak FLOP/s in its compute dtype and HBM
    bandwidth, and the achievable ones after the efficiency model's fractions) and the
    arithmetic intensity / achieved FLOP/s of its decode step (the running batch, split into
    PP micro-batches, at the mean context isl + osl/2) and of one prefill chunk (a prompt of
    isl tokens in chunks of at most `chunked_prefill`, nothing else running), per GPU."""
    ev = ctx.evaluator
    c = rec["config"]
    gpu = ctx.catalog[c["accelerator"]]
    w = ctx.workload
    b = build_batch(
        ev.model,
        gpu,
        weights=c["weights"],
        kv_cache=c["kv_cache"],
        tp=c["tp"],
        pp=c["pp"],
        ep=c["ep"],
        batch=rec["batch"] or 1,
        isl=w.isl,
        osl=w.osl,
        efficiency=ev.efficiency,
    ).replace(max_num_tokens=float(c.get("chunked_prefill") or 8192))

    def one(v: np.ndarray) -> float:
        return float(np.asarray(v).reshape(-1)[0])

    # decode: one micro-step of one pipeline stage
    seqs = b.batch / b.pp
    context = b.isl + b.osl / 2.0
    touched = expected_experts_touched(b.n_experts, b.experts_per_token, seqs)
    d_flops = (
        dense_gemm_flops(b, seqs)
        + lm_head_flops(b, seqs)
        + expert_gemm_flops(b, seqs)
        + attention_flops(b, seqs, context)
    )
    d_bytes = dense_weight_bytes(b) + expert_weight_bytes(b, touched) + kv_read_bytes(b, seqs, context)
    d_time = forward_time_s(b, seqs, context).total_s
    # prefill: one chunk of one prompt
    chunks = np.maximum(np.ceil(b.isl / b.max_num_tokens), 1.0)
    tokens = b.isl / chunks
    touched_p = expected_experts_touched(b.n_experts, b.experts_per_token, tokens)
    p_flops = (
        dense_gemm_flops(b, tokens)
        + lm_head_flops(b, 1.0 / chunks)
        + expert_gemm_flops(b, tokens)
        + attention_flops(b, tokens, b.isl / 2.0)
    )
    p_bytes = dense_weight_bytes(b) + expert_weight_bytes(b, touched_p)
    p_time = forward_time_s(
        b, np.zeros(1), np.zeros(1), prefill_tokens=tokens, prefill_context=b.isl / 2.0, prefill_seqs=1.0 / chunks
    ).total_s
    peak = one(b.peak_flops)
    bw = gpu.hbm_bw_bytes_per_s
    eff = ev.efficiency.for_gpu(gpu.id, gpu.vendor, rec["compute_dtype"] or "bf16")
    return {
        "accelerator": gpu.id,
        "compute_dtype": rec["compute_dtype"],
        "peak_flops": peak,
        "hbm_bw_bytes_per_s": bw,
        "ridge_flop_per_byte": peak / bw,
        "achievable_peak_flops": peak * one(b.eff_gemm),
        "achievable_bw_bytes_per_s": bw * one(b.eff_bw),
        "efficiency_basis": eff.basis,
        "peak_source": gpu.sources.get(f"{rec['compute_dtype']}_flops") or gpu.sources.get("int8_ops", ""),
        "bw_source": gpu.sources.get("hbm_bw_bytes_per_s", ""),
        "decode": {
            "tokens": one(seqs),
            "flops": one(d_flops),
            "bytes": one(d_bytes),
            "time_s": one(d_time),
            "intensity": one(d_flops / d_bytes),
            "achieved_flops": one(d_flops / d_time),
        },
        "prefill": {
            "tokens": one(tokens),
            "flops": one(p_flops),
            "bytes": one(p_bytes),
            "time_s": one(p_time),
            "intensity": one(p_flops / p_bytes),
            "achieved_flops": one(p_flops / p_time),
        },
    }


def _roofline_figure(gpu: str, items: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> go.Figure:
    first = items[0][2]
    peak, bw = first["peak_flops"], first["hbm_bw_bytes_per_s"]
    a_peak, a_bw = first["achievable_peak_flops"], first["achievable_bw_bytes_per_s"]
    xs_all = [r[k]["intensity"] for _, _, r in items for k in ("decode", "prefill")]
    lo = min(0.5, min(xs_all) / 3)
    hi = max(peak / bw * 20, max(xs_all) * 3)
    x = np.geomspace(lo, hi, 200)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=np.minimum(peak, x * bw) / 1e12,
            mode="lines",
            name=f"catalog roof ({first['compute_dtype']})",
            line={"color": "#1d2733", "width": 2},
            hovertemplate="intensity %{x:.3g} FLOP/B<br>roof %{y:.4g} TFLOP/s<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=np.minimum(a_peak, x * a_bw) / 1e12,
            mode="lines",
            name="achievable roof (efficiency model)",
            line={"color": "#7f8c99", "width": 2, "dash": "dash"},
            hovertemplate="intensity %{x:.3g} FLOP/B<br>achievable %{y:.4g} TFLOP/s<extra></extra>",
        )
    )
    colors = {"cheapest": "#2ca02c", "fastest": "#d62728", "knee": "#1f77b4"}
    positions = {"cheapest": "top center", "fastest": "bottom center", "knee": "bottom center"}
    for kind, rec, r in items:
        for step, symbol in (("decode", "circle"), ("prefill", "triangle-up")):
            s = r[step]
            what = (
                f"decode step, {s['tokens']:.0f} sequences"
                if step == "decode"
                else f"prefill chunk, {s['tokens']:.0f} tokens"
            )
            fig.add_trace(
                go.Scatter(
                    x=[s["intensity"]],
                    y=[s["achieved_flops"] / 1e12],
                    mode="markers+text",
                    text=[f"{kind}: {step}"],
                    textposition=positions.get(kind, "top center"),
                    marker={"size": 13, "symbol": symbol, "color": colors.get(kind, "#444")},
                    name=f"{kind} · {step}",
                    customdata=[[what, s["flops"] / 1e12, s["bytes"] / 1e9, s["time_s"] * 1e3, rec["label"]]],
                    hovertemplate=(
                        "%{customdata[4]}<br>%{customdata[0]}<br>%{customdata[1]:.3g} TFLOP, %{customdata[2]:.3g} GB"
                        "<br>%{customdata[3]:.3g} ms per GPU → %{y:.4g} TFLOP/s"
                        "<br>intensity %{x:.3g} FLOP/B<extra></extra>"
                    ),
                )
            )
    fig.update_layout(
        template="plotly_white",
        title=f"{gpu}: roofline per GPU",
        xaxis={"type": "log", "title": "arithmetic intensity (FLOP per byte of HBM traffic)"},
        yaxis={"type": "log", "title": "FLOP/s (TFLOP/s)"},
        height=430,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "v", "x": 1.01, "y": 1},
    )
    _apply_log_ticks(fig)
    return fig


# ------------------------------------------------------------------------------ Pareto chart


def _log_ticks(lo: float, hi: float) -> dict[str, Any]:
    """Ticks of a log axis over [lo, hi] at 1-2-5 steps, labelled in full ("1,000", "0.2"), so
    plotly's own minor labels ("2", "5", "1000 2") never show."""
    if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
        return {}
    lo, hi = min(lo, hi), max(lo, hi)
    vals = [
        m * 10.0**e
        for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
        for m in (1, 2, 5)
        if lo <= m * 10.0**e <= hi
    ]
    if len(vals) > 9:  # a wide range: powers of ten only
        vals = [v for v in vals if math.isclose(10 ** round(math.log10(v)), v)]
    if len(vals) < 2:  # a narrow range: its ends
        vals = sorted({float(f"{lo:.2g}"), float(f"{hi:.2g}")})
    text = [f"{v:,.0f}" if v >= 100 or v == int(v) else f"{v:g}" for v in vals]
    return {"tickmode": "array", "tickvals": vals, "ticktext": text}


def _apply_log_ticks(fig: go.Figure) -> None:
    """Full-number ticks on both log axes of a figure, over the range of its data in data coordinates."""
    for axis in ("x", "y"):
        values = [
            float(v)
            for t in fig.data
            if getattr(t, "xaxis", "x") in (None, "x")
            for v in (() if getattr(t, axis) is None else getattr(t, axis))
            if v is not None and np.isfinite(float(v)) and float(v) > 0
        ]
        if values:
            fig.update_layout({f"{axis}axis": _log_ticks(min(values), max(values))})


def _thin(idx: np.ndarray, limit: int) -> np.ndarray:
    if idx.size <= limit:
        return idx
    return idx[np.linspace(0, idx.size - 1, limit).round().astype(int)]


def _hover_data(rows: list[dict[str, Any]], idx: np.ndarray) -> list[list[Any]]:
    out = []
    for i in idx:
        r = rows[i]
        out.append(
            [
                label(r),
                _lat(r.get("ttft_s")),
                _lat(r.get("tpot_s")),
                _usd(r.get("usd_per_hour")),
                int(r.get("replicas") or 0),
                r.get("reason") or "meets every constraint",
                stage_of(r),
            ]
        )
    return out


HOVER = (
    "<b>%{customdata[0]}</b><br>TTFT %{customdata[1]}, TPOT %{customdata[2]}<br>"
    "%{customdata[3]}/h · %{customdata[4]} replicas · $%{y:.3g}/Mtok<br>%{customdata[5]}<br>"
    "latencies: %{customdata[6]}<extra>%{fullData.name}</extra>"
)


def _pareto_figure(ctx: SweepContext, rows: list[dict[str, Any]], analysis: dict[str, Any]) -> tuple[go.Figure, dict]:
    lat_col = ctx.latency_column
    latency = np.array([np.nan if r.get(lat_col) is None else float(r[lat_col]) for r in rows])
    cost_col = ctx.cost_column  # the picks' cost axis: $/Mtok output unless the spec's objective is another cost
    cost = np.array([np.nan if r.get(cost_col) is None else float(r[cost_col]) for r in rows])
    hover = HOVER.replace("/Mtok<br>", f"{ctx.cost_unit}<br>")
    cand = candidate_mask(ctx, rows)
    finite = np.isfinite(latency) & np.isfinite(cost) & (latency > 0) & (cost > 0)
    acc = np.array([r["accelerator"] for r in rows], dtype=object)
    fig = go.Figure()
    shown = {"candidates": 0, "infeasible": 0, "candidates_total": int(cand.sum()), "infeasible_total": 0}
    for k, gpu in enumerate(ctx.spec.accelerators):
        color = PALETTE[k % len(PALETTE)]
        good = np.flatnonzero(cand & finite & (acc == gpu))
        bad_all = np.flatnonzero(~cand & finite & (acc == gpu))
        shown["infeasible_total"] += int(bad_all.size)
        good_s, bad = _thin(good, MAX_POINTS_PER_TRACE), _thin(bad_all, MAX_FAINT_PER_TRACE)
        shown["candidates"] += int(good_s.size)
        shown["infeasible"] += int(bad.size)
        if bad.size:  # an empty trace draws nothing (and Plotly gives it no element)
            fig.add_trace(_faint_trace(gpu, color, latency[bad] * 1e3, cost[bad], _hover_data(rows, bad), hover))
        fig.add_trace(
            go.Scatter(
                x=latency[good_s] * 1e3,
                y=cost[good_s],
                mode="markers",
                name=gpu,
                legendgroup=gpu,
                marker={"color": color, "opacity": 0.85, "size": 8, "line": {"width": 0.5, "color": "white"}},
                customdata=_hover_data(rows, good_s),
                hovertemplate=hover,
            )
        )
    by_id = {int(r["id"]): i for i, r in enumerate(rows)}
    front = np.array([by_id[i] for i in analysis["front_ids"] if i in by_id], dtype=int)
    if front.size:
        fig.add_trace(
            go.Scatter(
                x=latency[front] * 1e3,
                y=cost[front],
                mode="lines",
                name="Pareto front",
                line={"color": "#1d2733", "width": 1.5, "shape": "hv"},
                hoverinfo="skip",
            )
        )
    for kind, rec in analysis["recommendations"].items():
        if rec is None:
            continue
        i = by_id[rec["id"]]
        fig.add_trace(
            go.Scatter(
                x=[latency[i] * 1e3],
                y=[cost[i]],
                mode="markers+text",
                name=f"recommended: {kind}",
                text=[kind],
                textposition="middle right",
                marker={
                    "size": 17,
                    "symbol": KIND_SYMBOL[kind],
                    "color": "rgba(0,0,0,0)",
                    "line": {"width": 2.5, "color": "#1d2733"},
                },
                customdata=_hover_data(rows, np.array([i])),
                hovertemplate=hover,
                **_error_bars(rec, lat_col, cost_col, latency[i], cost[i]),
            )
        )
    for s in ctx.workload.slos:
        if s.metric == ctx.latency_metric:
            # on a log axis a shape takes data coordinates, an annotation log10 ones
            fig.add_shape(
                type="line",
                xref="x",
                yref="paper",
                x0=s.max_s * 1e3,
                x1=s.max_s * 1e3,
                y0=0,
                y1=1,
                line={"color": "#9a3b00", "dash": "dot", "width": 1.5},
            )
            fig.add_annotation(
                x=math.log10(s.max_s * 1e3),
                y=1,
                xref="x",
                yref="paper",
                text=f"{s.metric.upper()} SLO {_lat(s.max_s)}",
                showarrow=False,
                xanchor="right",
                yanchor="top",
                font={"color": "#9a3b00"},
            )
    metric = ctx.latency_metric.upper()
    fig.update_layout(
        template="plotly_white",
        title=f"{metric} against {ctx.cost_words} (each point a stored configuration)",
        xaxis={"type": "log", "title": f"{metric} (ms, {_latency_kind(ctx)}; each point's stage in its hover)"},
        yaxis={"type": "log", "title": ctx.cost_words},
        height=560,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "v", "x": 1.01, "y": 1},
        hoverlabel={"align": "left"},
    )
    _apply_log_ticks(fig)
    return fig, shown


def _error_bars(rec: dict[str, Any], lat_col: str, cost_col: str, lat: float, cost: float) -> dict[str, Any]:
    """Plotly error_x / error_y of a pick: its 80 % intervals (p10 - p90) of latency (ms) and cost."""
    out: dict[str, Any] = {}
    ivs = rec.get("intervals") or {}
    style = {"type": "data", "symmetric": False, "color": "#1d2733", "thickness": 1.5, "width": 6}
    if lat_col in ivs and np.isfinite(lat):
        iv = ivs[lat_col]
        out["error_x"] = {
            **style,
            "array": [max(0.0, iv["p90"] - lat) * 1e3],
            "arrayminus": [max(0.0, lat - iv["p10"]) * 1e3],
        }
    if cost_col in ivs and np.isfinite(cost):
        iv = ivs[cost_col]
        out["error_y"] = {**style, "array": [max(0.0, iv["p90"] - cost)], "arrayminus": [max(0.0, cost - iv["p10"])]}
    return out


def _latency_kind(ctx: SweepContext) -> str:
    """What the latency axis holds: the objective's percentile under load, or the offline mean."""
    if ctx.workload.offline:
        return "steady-state mean, offline"
    pct = next((o.percentile for o in ctx.spec.objectives if o.metric == ctx.latency_metric), None)
    if pct is None:
        slo = ctx.workload.slo(ctx.latency_metric)  # type: ignore[arg-type]
        pct = slo.percentile if slo is not None else 50.0
    return f"p{pct:g} under load"


def _faint_trace(gpu: str, color: str, x_ms: np.ndarray, y: np.ndarray, customdata: Any, hover: str) -> go.Scatter:
    """The infeasible points of one accelerator, drawn faint in its colour."""
    return go.Scatter(
        x=x_ms,
        y=y,
        mode="markers",
        name=f"{gpu} (infeasible)",
        legendgroup=gpu,
        marker={"color": color, "opacity": 0.3, "size": 6, "symbol": "x-thin", "line": {"width": 1, "color": color}},
        customdata=customdata,
        hovertemplate=hover,
    )
