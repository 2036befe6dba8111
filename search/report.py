"""The procurement report: one self-contained HTML page that explains the recommendation.

`servesweep report NAME -o report.html` writes it. Everything is inline — plotly.js is embedded
once (the first figure, `include_plotlyjs=True`; the others reuse it), the CSS is a short
`<style>` block, and nothing refers to a URL — so the file opens on a machine without network.

Sections: the question (model, workload, SLOs, accelerators, pricing with sources and dates,
and where each GPU's efficiencies come from), the Pareto chart, the three recommendations with
reasons and what would change them, rent vs own, price sensitivity, a roofline per recommended
GPU with the configuration's decode step and prefill chunk placed on it, the best point per
GPU type, launch commands and the method. The numbers come from `search.recommend`; the
roofline from the physics in `objectives` (FLOPs and bytes from `objectives.compute`, step
times from `objectives.timing`) — nothing is re-derived here.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

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
from search import recommend as rec_mod
from search.launch import launch_commands
from search.spec import LATENCY_METRICS

__all__ = ["build_report", "roofline_data", "write_report"]

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

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2733;
background:#f6f7f9;line-height:1.45;font-size:15px}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:4px 0 4px}h2{font-size:20px;margin:34px 0 10px;border-bottom:2px solid #e3e6ea;
padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
.sub{color:#5b6773;font-size:13px}table{border-collapse:collapse;width:100%;margin:8px 0 12px;font-size:13.5px}
th,td{border-bottom:1px solid #e3e6ea;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:14px}
.card{border:1px solid #dfe3e8;border-radius:8px;padding:12px 14px;background:#fcfdfe}
.card h3{margin-top:0}.kind{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#5b6773}
.big{font-size:17px;font-weight:600}ul{margin:6px 0 6px 18px;padding:0}li{margin:3px 0}
pre{background:#1f2630;color:#e8edf2;padding:10px 12px;border-radius:6px;overflow-x:auto;font-size:12.5px}
.note{color:#5b6773;font-size:13px}.warn{color:#9a3b00}.changed{background:#fff4d6}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}.src{font-size:12px;color:#5b6773}
.kv td:first-child{width:34%;color:#39434e}
"""


# ------------------------------------------------------------------------------ formatting


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _usd(v: float | None, digits: int = 2) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    if abs(v) >= 1000:
        return f"${v:,.0f}"
    return f"${v:,.{digits}f}"


def _mtok(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"${v:.3g}" if v < 100 else f"${v:,.0f}"


def _lat(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"


def _pct(v: float | None, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:+.0f}%" if signed else f"{v:.0f}%"


def _num(v: float | None, fmt: str = "{:,.0f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return fmt.format(v)


def _table(headers: list[str], rows: list[Any], *, numeric: set[int] | None = None, attrs: str = "") -> str:
    """An HTML table from already-escaped cell strings; a row is a list of cells or a tuple
    (row attributes, cells); `numeric` column indices align right."""
    numeric = numeric or set()
    head = "".join(f"<th{' class=n' if i in numeric else ''}>{h}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        row_attrs, r = row if isinstance(row, tuple) else ("", row)
        cells = "".join(f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr{row_attrs}>{cells}</tr>")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _par(c: dict[str, Any]) -> str:
    s = f"TP {c['tp']}"
    if int(c.get("pp") or 1) > 1:
        s += f" × PP {c['pp']}"
    if int(c.get("ep") or 1) > 1:
        s += f", EP {c['ep']}"
    return s


# ------------------------------------------------------------------------------ roofline


def roofline_data(ctx: rec_mod.SweepContext, rec: dict[str, Any]) -> dict[str, Any]:
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
    return fig


# ------------------------------------------------------------------------------ Pareto chart


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
                rec_mod.label(r),
                _lat(r.get("ttft_s")),
                _lat(r.get("tpot_s")),
                _usd(r.get("usd_per_hour")),
                int(r.get("replicas") or 0),
                r.get("reason") or "meets every constraint",
            ]
        )
    return out


HOVER = (
    "<b>%{customdata[0]}</b><br>TTFT %{customdata[1]}, TPOT %{customdata[2]}<br>"
    "%{customdata[3]}/h · %{customdata[4]} replicas · $%{y:.3g}/Mtok<br>%{customdata[5]}<extra>%{fullData.name}</extra>"
)


def _pareto_figure(
    ctx: rec_mod.SweepContext, rows: list[dict[str, Any]], analysis: dict[str, Any]
) -> tuple[go.Figure, dict]:
    lat_col = ctx.latency_column
    latency = np.array([np.nan if r.get(lat_col) is None else float(r[lat_col]) for r in rows])
    cost = np.array([np.nan if r.get(rec_mod.COST) is None else float(r[rec_mod.COST]) for r in rows])
    cand = rec_mod.candidate_mask(ctx, rows)
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
        fig.add_trace(
            go.Scatter(
                x=latency[bad] * 1e3,
                y=cost[bad],
                mode="markers",
                name=f"{gpu} (infeasible)",
                legendgroup=gpu,
                showlegend=bool(bad.size),
                marker={
                    "color": color,
                    "opacity": 0.3,
                    "size": 6,
                    "symbol": "x-thin",
                    "line": {"width": 1, "color": color},
                },
                customdata=_hover_data(rows, bad),
                hovertemplate=HOVER,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=latency[good_s] * 1e3,
                y=cost[good_s],
                mode="markers",
                name=gpu,
                legendgroup=gpu,
                marker={"color": color, "opacity": 0.85, "size": 8, "line": {"width": 0.5, "color": "white"}},
                customdata=_hover_data(rows, good_s),
                hovertemplate=HOVER,
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
                hovertemplate=HOVER,
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
        title=f"{metric} against $ per million output tokens (each point a stored configuration)",
        xaxis={"type": "log", "title": f"{metric} (ms, modelled mean)"},
        yaxis={"type": "log", "title": "$ per million output tokens"},
        height=560,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        legend={"orientation": "v", "x": 1.01, "y": 1},
        hoverlabel={"align": "left"},
    )
    return fig, shown


# ------------------------------------------------------------------------------ sections


def _question(ctx: rec_mod.SweepContext, record: dict[str, Any], analysis: dict[str, Any]) -> str:
    spec, w = ctx.spec, ctx.workload
    model = ctx.evaluator.model
    total = getattr(model, "total_params", None)
    active = getattr(model, "active_params", None)
    size = f"{total / 1e9:.1f} B parameters" if total else ""
    if model.is_moe and active:
        size += f" ({active / 1e9:.1f} B active per token, {model.n_experts} experts, top-{model.experts_per_token})"
    slos = ", ".join(f"p{s.percentile:g} {s.metric.upper()} ≤ {_lat(s.max_s)}" for s in w.slos) or "none"
    rate = f"{w.arrival_rate_per_s:g} requests/s" if w.arrival_rate_per_s else "offline (all requests queued)"
    cons = spec.constraints
    limits = [f"SLOs as constraints: {'yes' if cons.slos else 'no (checked for the recommendations anyway)'}"]
    limits.append(f"max GPUs: {cons.max_gpus if cons.max_gpus is not None else 'none'}")
    limits.append(f"budget: {_usd(cons.max_usd_per_hour, 0) + '/h' if cons.max_usd_per_hour is not None else 'none'}")
    objectives = ", ".join(
        f"{o.metric}" + (f" (p{o.percentile:g})" if o.metric in LATENCY_METRICS else "") for o in spec.objectives
    )
    summary = record.get("summary") or {}
    space = spec.space
    kv = [
        ("Model", f"{_e(spec.model)} <span class=sub>{_e(size)}</span>"),
        (
            "Workload",
            f"{_e(w.name)} — {_e(w.description)}<br><span class=sub>mean prompt {w.isl:,.0f} tokens, "
            f"mean output {w.osl:,.0f} tokens, {_e(rate)}</span>",
        ),
        ("SLOs", _e(slos)),
        ("Objectives", _e(objectives)),
        ("Constraints", _e("; ".join(limits))),
        (
            "Search space",
            _e(
                f"TP {space.tp}, PP {space.pp}, EP {space.ep}, weights {space.weights}, KV cache {space.kv_cache}, "
                f"batch limit {space.max_batch}, prefill chunk {space.chunked_prefill}, replicas {space.replicas}"
            ),
        ),
        (
            "Search",
            _e(
                f"{spec.sampler} sampler, {summary.get('space_size', '?'):,} configurations in the space, "
                f"{analysis['stored_rows']:,} stored, {analysis['candidates']:,} meet every constraint and SLO"
                if isinstance(summary.get("space_size"), int)
                else f"{spec.sampler} sampler, {analysis['stored_rows']:,} stored configurations"
            ),
        ),
        ("Pricing basis", _e(_basis_words(ctx))),
        (
            "Sweep",
            _e(f"{record['name']} · status {record.get('status')} · finished {record.get('finished_at') or '–'}"),
        ),
    ]
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in kv)
    out = [f"<h2 id=question>The question</h2><table class=kv><tbody>{rows}</tbody></table>"]
    # accelerators
    pricing = rec_mod.pricing_assumptions(ctx)
    bases = {b["accelerator"]: b for b in rec_mod.efficiency_bases(ctx)}
    acc_rows = []
    for g in pricing["gpus"]:
        acc = ctx.catalog[g["accelerator"]]
        b = bases[g["accelerator"]]
        basis = "; ".join(f"{d}: {v}" for d, v in b["bases"].items())
        origin = "probe calibration" if b["calibrated"] else "defaults (no probe calibration)"
        acc_rows.append(
            [
                f"<b>{_e(acc.id)}</b><br><span class=src>{_e(acc.vendor)}</span>",
                _e(f"{acc.hbm_bytes / 1e9:.0f} GB · {acc.hbm_bw_bytes_per_s / 1e12:.2f} TB/s"),
                _e(
                    f"{acc.peak_flops['bf16'] / 1e12:,.0f}"
                    + (f" / {acc.peak_flops['fp8'] / 1e12:,.0f}" if "fp8" in acc.peak_flops else " / –")
                ),
                _usd(g["usd_per_gpu_hour"]),
                f"<span class=src>{_e(g['cloud_source'])}</span>",
                _usd(g["purchase_usd"], 0)
                + (f"<br><span class=src>{_e(g['purchase_source'])}</span>" if g["purchase_source"] else ""),
                f"{_e(origin)}<br><span class=src>{_e(basis)}</span>",
            ]
        )
    out.append("<h3>Accelerators considered</h3>")
    out.append(
        _table(
            [
                "GPU",
                "HBM",
                "dense TFLOP/s bf16 / fp8",
                f"$/GPU-hour ({_e(ctx.basis)})",
                "price source (date)",
                "purchase price (source)",
                "efficiencies from",
            ],
            acc_rows,
            numeric={3},
        )
    )
    # ownership terms
    term_rows = [
        [_e(t["term"]), _e(f"{t['value']:g}"), f"<span class=src>{_e(t['source'])}</span>", _e(t["date"])]
        for t in pricing["ownership_terms"]
    ]
    out.append("<h3>Ownership terms (owned TCO)</h3>")
    out.append(
        "<p class=note>Owned $/GPU-hour = purchase / (years × 8766 h) + TDP × PUE × $/kWh + TDP × PUE × hosting "
        "$/kW-month × 12 / 8766 (objectives.cost.tco_usd_per_gpu_hour; power at TDP, an upper bound).</p>"
    )
    out.append(_table(["term", "value", "source", "date"], term_rows, numeric={1}))
    return "\n".join(out)


def _basis_words(ctx: rec_mod.SweepContext) -> str:
    p = ctx.spec.pricing
    if ctx.basis == "cloud":
        s = "cloud on-demand list prices per GPU-hour from the accelerator catalog"
    else:
        s = "owned total cost of ownership per GPU-hour (terms below)"
    if p.price_file:
        s += f", with overrides from {p.price_file}"
    return s


def _summary_table(ctx: rec_mod.SweepContext, recs: dict[str, Any]) -> str:
    rows = []
    for kind in rec_mod.KINDS:
        r = recs.get(kind)
        if r is None:
            rows.append((f' data-kind="{kind}"', [_e(rec_mod.TITLES[kind]), "no configuration qualifies", *[""] * 8]))
            continue
        rows.append(
            (
                f' data-kind="{kind}" data-config-id="{r["id"]}"',
                [
                    f"<b>{_e(r['title'])}</b>",
                    _e(r["accelerator"]),
                    _e(f"{r['total_gpus']:.0f} ({r['replicas']:.0f} × {r['gpus_per_replica']:.0f})"),
                    _e(_par(r["parallelism"])),
                    _e(f"{r['weights']} / KV {r['kv_cache']}"),
                    _e(r["max_batch"]),
                    _usd(r["usd_per_hour"]),
                    _mtok(r[rec_mod.COST]),
                    _lat(r["ttft_s"]),
                    _lat(r["tpot_s"]),
                ],
            )
        )
    return _table(
        [
            "recommendation",
            "GPU",
            "GPUs (replicas × per replica)",
            "parallelism",
            "weights / KV",
            "batch limit",
            "$/hour",
            "$/Mtok",
            "TTFT",
            "TPOT",
        ],
        rows,
        numeric={6, 7, 8, 9},
        attrs=' id="recommendations"',
    )


def _rec_card(ctx: rec_mod.SweepContext, kind: str, r: dict[str, Any] | None) -> str:
    if r is None:
        return (
            f'<div class=card data-kind="{kind}"><div class=kind>{_e(rec_mod.TITLES[kind])}</div>'
            "<p class=warn>No stored configuration meets every constraint and SLO.</p></div>"
        )
    kv = [
        ("GPU type and count", f"{r['accelerator']} × {r['total_gpus']:.0f}"),
        ("replicas for the target rate", f"{r['replicas']:.0f} of {r['gpus_per_replica']:.0f} GPU(s)"),
        ("parallelism", _par(r["parallelism"])),
        ("quantization", f"{r['weights']} weights, {r['kv_cache']} KV cache — {r['quantization']}"),
        (
            "batch limit (running at)",
            f"{r['max_batch']} ({r['batch']:.0f} sequences in flight; {r['batch_that_fits']:.0f} fit)",
        ),
        ("prefill chunk", f"{r['chunked_prefill']} tokens"),
        ("$/hour", _usd(r["usd_per_hour"])),
        ("$ per million output tokens", _mtok(r[rec_mod.COST])),
        ("TTFT / TPOT", f"{_lat(r['ttft_s'])} / {_lat(r['tpot_s'])}"),
        (
            "output tokens/s per user / per GPU",
            f"{_num(r['output_tokens_per_s_per_user'], '{:,.1f}')} / "
            f"{_num(r['output_tokens_per_s_per_gpu'], '{:,.0f}')}",
        ),
        (
            "memory per GPU",
            f"{r['memory_per_gpu_gb']:.1f} GB of {r['hbm_per_gpu_gb']:.0f} GB "
            f"(weights {r['weights_per_gpu_gb']:.1f} GB)",
        ),
        ("bound", r["bound"] or "–"),
        ("latencies", r.get("basis") or "–"),
    ]
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in kv)
    changes = "".join(f"<li>{_e(c)}</li>" for c in r["what_would_change"])
    return (
        f'<div class=card data-kind="{kind}"><div class=kind>{_e(r["title"])}</div>'
        f"<h3 class=big>{_e(r['label'])}</h3><p>{_e(r['reason'])}</p>"
        f"<table class=kv><tbody>{rows}</tbody></table>"
        f"<b>What would change the answer</b><ul>{changes}</ul></div>"
    )


def _launch_section(ctx: rec_mod.SweepContext, recs: dict[str, Any]) -> str:
    out = ["<h2 id=launch>Launch commands</h2>"]
    out.append(
        "<p class=note>One command starts one replica; run the recommended number of replicas behind a load "
        "balancer. Flags: vLLM <code>--tensor-parallel-size --pipeline-parallel-size --enable-expert-parallel "
        "--quantization --kv-cache-dtype --max-num-seqs --max-num-batched-tokens</code>; SGLang <code>--tp-size "
        "--pp-size --ep-size --quantization --kv-cache-dtype --max-running-requests --chunked-prefill-size</code>; "
        "trtllm-serve <code>--tp_size --pp_size --ep_size --max_batch_size --max_num_tokens</code> (its "
        "quantization comes from the checkpoint).</p>"
    )
    names = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM (trtllm-serve)"}
    for kind in rec_mod.KINDS:
        r = recs.get(kind)
        if r is None:
            continue
        cmds = r.get("launch") or launch_commands(
            ctx.spec.model, r["config"], vendor=r["vendor"], replicas=r["replicas"], compute_dtype=r["compute_dtype"]
        )
        out.append(f'<details open data-kind="{kind}"><summary>{_e(r["title"])}: {_e(r["label"])}</summary>')
        for runtime, c in cmds.items():
            if not c["available"]:
                why = next((n for n in c["notes"] if "only" in n), "not available on this GPU")
                out.append(f"<h3>{_e(names[runtime])}</h3><p class=warn>{_e(why)}</p>")
                continue
            notes = "".join(f"<li>{_e(n)}</li>" for n in c["notes"])
            extra = ""
            if c.get("extra_file"):
                extra = f"<pre># {_e(c['extra_file']['name'])}\n{_e(c['extra_file']['content'])}</pre>"
            out.append(
                f'<h3>{_e(names[runtime])}</h3><pre data-runtime="{runtime}">{_e(c["command"])}</pre>{extra}'
                + (f"<ul class=note>{notes}</ul>" if notes else "")
            )
        out.append("</details>")
    return "\n".join(out)


def _rent_own_section(rows: list[dict[str, Any]]) -> str:
    table_rows = []
    for r in rows:
        table_rows.append(
            [
                f"<b>{_e(r['kind'])}</b><br><span class=src>{_e(r['label'])}</span>",
                _usd(r["cloud_usd_per_hour"]),
                _usd(r["cloud_usd_per_month"], 0),
                _usd(r["cloud_usd_3y"], 0),
                _usd(r["owned_usd_per_hour"]),
                _usd(r["owned_usd_per_month"], 0),
                _usd(r["owned_usd_3y"], 0),
                _usd(r["purchase_usd_total"], 0),
                _usd(r["owned_cash_usd_3y"], 0),
                _pct(None if r["break_even_utilization"] is None else r["break_even_utilization"] * 100),
                _pct(None if r["break_even_utilization_3y"] is None else r["break_even_utilization_3y"] * 100),
            ]
        )
        if r["note"]:
            table_rows[-1][4] = f"<span class=warn>{_e(r['note'])}</span>"
    return (
        "<h2 id=rent-own>Rent vs own</h2>"
        "<p class=note>Cloud: the catalog's on-demand $/GPU-hour, billed every hour the fleet runs. Owned: the "
        "TCO rate (amortized purchase + power + hosting) every hour, used or not. Owning is cheaper when the fleet "
        "is busy more than the break-even utilization = owned $/h ÷ cloud $/h. The 3-year amortized figure spreads "
        "the purchase over the amortization period; the 3-year cash figure pays the whole purchase up front plus "
        "three years of power and hosting (and its break-even assumes the hardware is worth nothing after three "
        "years).</p>"
        + _table(
            [
                "recommendation",
                "cloud $/h",
                "cloud $/month",
                "cloud 3 years",
                "owned $/h",
                "owned $/month",
                "owned 3 years (amortized)",
                "purchase",
                "owned 3 years (cash)",
                "break-even utilization",
                "break-even, 3-year write-off",
            ],
            table_rows,
            numeric=set(range(1, 11)),
            attrs=' id="rent-vs-own"',
        )
    )


def _sensitivity_section(ctx: rec_mod.SweepContext, sens: list[dict[str, Any]], recs: dict[str, Any]) -> str:
    rows = []
    for s in sens:
        cells = [
            f"<b>{_e(s['accelerator'])}</b>",
            _e(f"{s['change_pct']:+.0f}%"),
            _usd(s["usd_per_gpu_hour"]),
        ]
        for kind in rec_mod.KINDS:
            new = s[kind]
            if new is None:
                cells.append("–")
                continue
            text = (
                f"{_e(new['label'])}<br><span class=src>{_mtok(new[rec_mod.COST])}/Mtok, "
                f"{_lat(new[ctx.latency_column])}</span>"
            )
            cells.append(f"<span class=changed>{text}</span>" if s["changed"][kind] else "unchanged")
        rows.append(cells)
    changed = sum(1 for s in sens for k in rec_mod.KINDS if s["changed"][k])
    return (
        "<h2 id=sensitivity>Price sensitivity</h2>"
        f"<p class=note>Each row moves one accelerator's $/GPU-hour by the given amount and re-ranks the stored "
        f"configurations ($/h and $/Mtok scale linearly with the GPU price; replicas do not change). Highlighted cells "
        f"are a different answer; {changed} of {len(sens) * 3} answers change.</p>"
        + _table(
            ["accelerator", "price move", "new $/GPU-h", "cheapest", "fastest", "knee"],
            rows,
            numeric={1, 2},
            attrs=' id="sensitivity-table"',
        )
    )


def _per_accelerator_section(ctx: rec_mod.SweepContext, per: list[dict[str, Any]]) -> str:
    rows = []
    for p in per:
        b = p["best"]
        if b is None:
            rows.append(
                [
                    f"<b>{_e(p['accelerator'])}</b>",
                    _e(f"{p['candidates']} / {p['stored']}"),
                    f"<span class=warn>none qualifies: {_e(p['why_none'])}</span>",
                    *["–"] * 6,
                ]
            )
            continue
        move = p["price_change_to_be_cheapest_pct"]
        rows.append(
            [
                f"<b>{_e(p['accelerator'])}</b>",
                _e(f"{p['candidates']} / {p['stored']}"),
                _e(b["label"]),
                _mtok(b[rec_mod.COST]),
                _usd(b["usd_per_hour"]),
                _lat(b["ttft_s"]),
                _lat(b["tpot_s"]),
                _e(b["bound"]),
                "cheapest overall" if move == 0 else _pct(move, signed=True),
            ]
        )
    return (
        "<h2 id=per-accelerator>Best point per accelerator</h2>"
        "<p class=note>The cheapest configuration of each GPU type that meets every constraint and SLO, and the price "
        "move that GPU would need to become the cheapest overall.</p>"
        + _table(
            [
                "accelerator",
                "qualifying / stored",
                "cheapest qualifying configuration",
                "$/Mtok",
                "$/hour",
                "TTFT",
                "TPOT",
                "bound",
                "price move to be cheapest",
            ],
            rows,
            numeric={3, 4, 5, 6, 8},
            attrs=' id="per-accelerator-table"',
        )
    )


def _method_section(ctx: rec_mod.SweepContext) -> str:
    return (
        "<h2 id=method>Method and caveats</h2><ul class=note>"
        "<li>Metrics come from servesweep's analytic model (objectives/): bytes out of HBM, tensor-core FLOP/s, "
        "GPU-to-GPU messages and runtime overheads at achieved efficiencies, for continuous batching at the "
        "workload's mean lengths. Latencies are means compared with the SLO targets; tails need the simulator or a "
        "measurement.</li>"
        "<li>Qualifying: fits in memory, within the GPU limit and the hourly budget, serves the arrival rate, and "
        "meets every SLO of the workload.</li>"
        "<li>Knee: the point of the qualifying (latency, $/Mtok) Pareto front farthest from the straight line "
        "joining the front's fastest and cheapest points, after log-transforming and min-max normalizing each "
        "objective over the front, so distances compare percentage changes.</li>"
        "<li>Fastest within the budget: the lowest-latency qualifying point with $/hour within "
        "constraints.max_usd_per_hour (no limit when the spec sets none).</li>"
        "<li>Roofline: per GPU, FLOPs and HBM bytes of one decode step (the running batch split into PP "
        "micro-batches at mean context) and of one prefill chunk of a prompt, over the modelled step time "
        "(including communication and overheads, so points sit below the roof).</li>"
        "<li>Guided sweeps store the configurations their sampler tried, not the whole space; the recommendations "
        "rank what was stored.</li></ul>"
    )


# ------------------------------------------------------------------------------ report


def build_report(store: Any, name: str) -> str:
    """The report of a stored sweep as one HTML string."""
    record = store.get_sweep(name)
    if record is None:
        raise ValueError(f"no sweep named {name!r} in {store.url}")
    front = store.latest_front(name, kind="final") or {}
    rows = rec_mod.rows_from(store.get_evaluations(name), front.get("points") or [])
    if not rows:
        raise ValueError(f"sweep {name!r} has no stored evaluations (status {record.get('status')}); run it first")
    ctx = rec_mod.sweep_context(record)
    analysis = rec_mod.analyze(ctx, rows)
    return render(record, ctx, rows, analysis)


def render(
    record: dict[str, Any], ctx: rec_mod.SweepContext, rows: list[dict[str, Any]], analysis: dict[str, Any]
) -> str:
    recs = analysis["recommendations"]
    figures: list[str] = []

    def embed(fig: go.Figure, div_id: str) -> str:
        out = pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=not figures,
            include_mathjax=False,
            config=PLOT_CONFIG,
            div_id=div_id,
        )
        figures.append(div_id)
        return out

    pareto, shown = _pareto_figure(ctx, rows, analysis)
    pareto_html = embed(pareto, "pareto-chart")
    caption = (
        f"Showing {shown['candidates']:,} of {shown['candidates_total']:,} qualifying and "
        f"{shown['infeasible']:,} of {shown['infeasible_total']:,} non-qualifying stored configurations with a "
        "latency and a cost (faint ×: misses an SLO or a limit; configurations that do not fit have no latency and "
        "are not drawn). Hover for the "
        "configuration; click a legend entry to hide a GPU."
    )
    by_gpu: dict[str, list[tuple[str, dict, dict]]] = {}
    for kind in rec_mod.KINDS:
        r = recs.get(kind)
        if r is not None:
            by_gpu.setdefault(r["accelerator"], []).append((kind, r, roofline_data(ctx, r)))
    roof_html = []
    for gpu, items in by_gpu.items():
        first = items[0][2]
        roof_html.append(embed(_roofline_figure(gpu, items), f"roofline-{gpu}"))
        rows_r = []
        for kind, _rec, d in items:
            for step in ("decode", "prefill"):
                s = d[step]
                rows_r.append(
                    [
                        _e(f"{kind}: {step}"),
                        _e(f"{s['tokens']:.0f}"),
                        _e(f"{s['flops'] / 1e12:.3g}"),
                        _e(f"{s['bytes'] / 1e9:.3g}"),
                        _e(f"{s['intensity']:.3g}"),
                        _e(f"{s['time_s'] * 1e3:.3g}"),
                        _e(f"{s['achieved_flops'] / 1e12:.3g}"),
                        _e("memory" if s["intensity"] < first["ridge_flop_per_byte"] else "compute"),
                    ]
                )
        roof_html.append(
            f"<p class=note>{_e(gpu)}: compute roof {first['peak_flops'] / 1e12:,.0f} TFLOP/s dense "
            f"{_e(first['compute_dtype'])} and HBM slope {first['hbm_bw_bytes_per_s'] / 1e12:.2f} TB/s "
            "from the catalog "
            f"(ridge at {first['ridge_flop_per_byte']:.0f} FLOP/B); the dashed roof applies the efficiency model "
            f"({_e(first['efficiency_basis'])}). Sources: {_e(first['peak_source'])}; {_e(first['bw_source'])}.</p>"
            + _table(
                [
                    "step",
                    "tokens",
                    "TFLOP per GPU",
                    "GB per GPU",
                    "FLOP/B",
                    "ms",
                    "achieved TFLOP/s",
                    "side of the ridge",
                ],
                rows_r,
                numeric={1, 2, 3, 4, 5, 6},
            )
        )
    cards = "".join(_rec_card(ctx, k, recs.get(k)) for k in rec_mod.KINDS)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = " · ".join(
        f"<a href=#{a}>{t}</a>"
        for a, t in (
            ("question", "question"),
            ("pareto", "Pareto chart"),
            ("recommendations-detail", "recommendations"),
            ("rent-own", "rent vs own"),
            ("sensitivity", "price sensitivity"),
            ("roofline", "roofline"),
            ("per-accelerator", "per accelerator"),
            ("launch", "launch commands"),
            ("method", "method"),
        )
    )
    body = [
        f"<h1>Serving {_e(ctx.spec.model)}: procurement report</h1>",
        f"<div class=sub>sweep <b>{_e(record['name'])}</b> · generated {generated} by servesweep "
        f"{_e(record.get('code_version') or '')} · {nav}</div>",
        "<h2 id=summary>Recommendation</h2>",
        _summary_table(ctx, recs),
        _question(ctx, record, analysis),
        f"<h2 id=pareto>Pareto chart</h2>{pareto_html}<p class=note>{_e(caption)}</p>",
        f"<h2 id=recommendations-detail>Recommendations and why</h2><div class=cards>{cards}</div>",
        _rent_own_section(analysis["rent_vs_own"]),
        _sensitivity_section(ctx, analysis["price_sensitivity"], recs),
        "<h2 id=roofline>Why, as a picture: roofline</h2>"
        "<p class=note>Attainable FLOP/s = min(compute roof, intensity × HBM bandwidth). A step left of the ridge is "
        "limited by memory bandwidth, right of it by tensor-core throughput.</p>" + "".join(roof_html),
        _per_accelerator_section(ctx, analysis["per_accelerator"]),
        _launch_section(ctx, recs),
        _method_section(ctx),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>servesweep report: {_e(record['name'])}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def write_report(store: Any, name: str, path: str | Path) -> Path:
    """Write the report of sweep `name` to `path`; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(store, name), encoding="utf-8")
    return out
