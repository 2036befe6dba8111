"""The procurement report: one self-contained HTML page that explains the recommendation.

`servesweep report NAME -o report.html` writes it. Everything is inline — plotly.js is embedded
once (the first figure, `include_plotlyjs=True`; the others reuse it), the CSS is a short
`<style>` block, and nothing refers to a URL — so the file opens on a machine without network.

Sections (search.outputs.report_sections): the question (model, workload, SLOs, accelerators,
pricing with sources and dates, and where each GPU's efficiencies come from), the Pareto chart,
the three recommendations with reasons and what would change them, rent vs own, price
sensitivity, a roofline per recommended GPU (search.outputs.report_figures), the best point per
GPU type, launch commands and the method. The numbers come from `search.outputs.analysis`; the
roofline from the physics in `objectives` — nothing is re-derived here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from search.outputs.analysis import analyze
from search.outputs.candidates import KINDS, SweepContext, rows_from, sweep_context
from search.outputs.infeasible import nothing_fits_reasons
from search.outputs.report_accuracy import accuracy_section
from search.outputs.report_figures import PLOT_CONFIG, _pareto_figure, _roofline_figure, roofline_data
from search.outputs.report_html import CSS, _e, _table
from search.outputs.report_sections import (
    _launch_section,
    _method_section,
    _per_accelerator_section,
    _question,
    _rec_card,
    _rent_own_section,
    _sensitivity_section,
    _summary_table,
)

# ------------------------------------------------------------------------------ report


def build_report(store: Any, name: str) -> str:
    """The report of a stored sweep as one HTML string."""
    record = store.get_sweep(name)
    if record is None:
        raise ValueError(f"no sweep named {name!r} in {store.url}")
    front = store.latest_front(name, kind="final") or {}
    rows = rows_from(store.get_evaluations(name), front.get("points") or [])
    if not rows:
        raise ValueError(f"sweep {name!r} has no stored evaluations (status {record.get('status')}); run it first")
    ctx = sweep_context(record)
    analysis = analyze(ctx, rows)
    return render(record, ctx, rows, analysis)


def render(record: dict[str, Any], ctx: SweepContext, rows: list[dict[str, Any]], analysis: dict[str, Any]) -> str:
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

    nothing_fits = not any(r.get("feasible") for r in rows)
    why_html = ""
    if nothing_fits:
        hbm = {g: a.hbm_bytes for g, a in ctx.catalog.items()}
        reasons = nothing_fits_reasons(rows, hbm, (record.get("summary") or {}).get("reasons"))
        why_html = (
            "<div class=warn id=nothing-fits><p><b>No configuration of this sweep fits</b>, so there is nothing to "
            "recommend, chart or launch. The stored reasons:</p><ul>"
            + "".join(f"<li>{_e(line)}</li>" for line in reasons)
            + "</ul><p>Widen the space (more GPUs per replica: larger TP or PP), quantize the weights, or add "
            "accelerators with more memory.</p></div>"
        )
    pareto, shown = _pareto_figure(ctx, rows, analysis)
    pareto_html = (
        "<p class=note>No chart: no stored configuration has a latency and a cost.</p>"
        if nothing_fits
        else embed(pareto, "pareto-chart")
    )
    caption = (
        f"Showing {shown['candidates']:,} of {shown['candidates_total']:,} qualifying and "
        f"{shown['infeasible']:,} of {shown['infeasible_total']:,} non-qualifying stored configurations with a "
        "latency and a cost (faint ×: misses an SLO or a limit; configurations that do not fit have no latency and "
        "are not drawn). Hover for the "
        "configuration; click a legend entry to hide a GPU."
    )
    by_gpu: dict[str, list[tuple[str, dict, dict]]] = {}
    roofs: dict[str, dict] = {}
    for kind in KINDS:
        r = recs.get(kind)
        if r is not None:
            roofs[kind] = roofline_data(ctx, r)
            by_gpu.setdefault(r["accelerator"], []).append((kind, r, roofs[kind]))
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
    cards = "".join(_rec_card(ctx, k, recs.get(k), roofs.get(k)) for k in KINDS)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = " · ".join(
        f"<a href=#{a}>{t}</a>"
        for a, t in (
            ("question", "question"),
            ("pareto", "Pareto chart"),
            ("recommendations-detail", "recommendations"),
            ("accuracy", "how accurate"),
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
        why_html,
        _summary_table(ctx, recs),
        _question(ctx, record, analysis),
        f"<h2 id=pareto>Pareto chart</h2>{pareto_html}<p class=note>{_e(caption)}</p>",
        f"<h2 id=recommendations-detail>Recommendations and why</h2><div class=cards>{cards}</div>",
        (
            "<p id=disaggregation><b>Disaggregated prefill/decode.</b> "
            f"{_e(analysis['disaggregation']['sentence'])}</p>"
            if analysis.get("disaggregation")
            else ""
        ),
        "" if nothing_fits else accuracy_section(ctx, recs),
        _rent_own_section(analysis["rent_vs_own"], ctx),
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
