"""The report's "How accurate is this?" section: the validation behind the prediction intervals
(objectives/data/intervals.yaml, per region: rows, the 80 % band, held-out coverage) and each
pick's evidence and extrapolation flag."""

from __future__ import annotations

import math
from typing import Any

from objectives.uncertainty import LEVEL_NAMES
from search.outputs.candidates import KINDS, SweepContext
from search.outputs.intervals import evidence_line, table
from search.outputs.report_html import _e, _table


def _band(entry: dict[str, Any]) -> str:
    if "radius" in entry:
        lo, hi = -entry["radius"], entry["radius"]
    else:
        lo, hi = entry["lo"], entry["hi"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "too few rows"
    return f"×{math.exp(lo):.2f} – ×{math.exp(hi):.2f}"


def interval_cell(rec: dict[str, Any], column: str, fmt: Any) -> str:
    """'p10 – p90' of a pick's column, or '-'."""
    iv = (rec.get("intervals") or {}).get(column)
    return "-" if not iv else f"{fmt(iv['p10'])} – {fmt(iv['p90'])}"


def accuracy_section(ctx: SweepContext, recs: dict[str, Any]) -> str:
    t = table()
    src = t.source
    held = src.get("held_out_coverage") or {}
    by_region = held.get("by_region") or {}
    files = ", ".join(f"{f['file']} ({f['residuals']} rows)" for f in src.get("files") or [])
    rows = []
    for key, entry in t.regions.items():
        if "*" in key.rsplit("/", 1)[0]:
            continue
        cov = by_region.get(key)
        rows.append(
            [
                _e(key),
                _e(entry["n"]),
                _e(_band(entry)),
                _e("-" if cov is None else f"{cov['coverage']:.0%} of {cov['n']}"),
                _e("no" if entry["n"] >= t.min_rows else "yes"),
            ]
        )
    validation = _table(
        [
            "region (GPU family / model class / weights / engine / metric)",
            "rows",
            "80 % band",
            "held-out coverage",
            "extrapolated",
        ],
        rows,
        numeric={1},
        attrs=' id="validation-table"',
    )
    picks = []
    for kind in KINDS:
        r = recs.get(kind)
        if r is None:
            continue
        flag = "extrapolated: " + ", ".join(r.get("extrapolated_metrics") or []) if r.get("extrapolated") else "no"
        picks.append(
            (
                f' data-kind="{kind}" data-extrapolated="{str(bool(r.get("extrapolated"))).lower()}"',
                [_e(kind), _e(r["label"]), _e(flag), _e(evidence_line(r.get("evidence") or {}))],
            )
        )
    pick_table = _table(["pick", "configuration", "extrapolated", "evidence"], picks, attrs=' id="pick-evidence"')
    within = [
        f"<li>{_e(kind)} and {_e(w['kind'])}: within the model's error — measure both: "
        + "; ".join(f"<code>{_e(p)}</code>" for p in w["probes"])
        + "</li>"
        for kind in KINDS
        for w in ((recs.get(kind) or {}).get("within_error") or [])
        if KINDS.index(w["kind"]) > KINDS.index(kind)
    ]
    within_html = (
        "<p id=within-error><b>Picks within the model's error of each other</b> (their 80 % intervals overlap in "
        f"both {_e(ctx.latency_metric.upper())} and {_e(ctx.cost_words)}):</p><ul>" + "".join(within) + "</ul>"
        if within
        else "<p id=within-error class=note>No two picks' 80 % intervals overlap in both latency and cost.</p>"
    )
    levels = "; ".join(f"{i}: {name}" for i, name in enumerate(LEVEL_NAMES))
    return (
        "<h2 id=accuracy>How accurate is this?</h2>"
        "<p>Every predicted number carries an 80 % interval (p10 – p90) from the cost model's residuals "
        "log(measured / predicted) on published measurements, per region: GPU family × model class × weights × "
        f"engine × metric. Fitted on {_e(files)}; {_e(src.get('date', ''))}, code {_e(src.get('code_version', ''))}. "
        "Held out one model family at a time, the intervals covered "
        f"{held.get('public_file', float('nan')):.0%} of the public file's rows "
        f"({held.get('overall', float('nan')):.0%} of all files'); the aim is 80 %.</p>"
        f"<p class=note>A region with fewer than {t.min_rows} rows is <b>extrapolated</b>: its interval comes from "
        f"the first parent region with enough rows (levels {_e(levels)}), its half-width × (1 + "
        f"{t.widen_per_level:g} × levels up). Throughput's interval sets the cost's (cost ∝ 1 / throughput); "
        "latencies under load carry the steady-state residuals of their metric.</p>"
        + pick_table
        + within_html
        + validation
    )
