"""Whether disaggregated prefill/decode wins: the best disaggregated candidate beside the best
aggregated one, on the cost axis and on the latency axis (a sweep with `space.disaggregation`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from search.outputs.candidates import SweepContext, _candidates, _table, label


def disaggregation_comparison(ctx: SweepContext, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """{"cheapest": {...}, "fastest": {...}, "sentence": str} comparing the best candidate
    (meeting every constraint and SLO) of each mode; None when the sweep has no
    disaggregated rows. Each axis: the aggregated and disaggregated best (label, value) and the
    disaggregated one's gain (fraction: positive when it is cheaper / faster)."""
    if not any(r.get("disaggregated") for r in rows):
        return None
    t = _table(ctx, rows)
    mask = _candidates(ctx, t, np.ones(len(t)))
    dis = np.array([bool(r.get("disaggregated")) for r in rows])
    out: dict[str, Any] = {}
    for axis, values in (("cheapest", t.cost), ("fastest", t.latency)):
        best: dict[str, Any] = {}
        for mode, sel in (("aggregated", mask & ~dis), ("disaggregated", mask & dis)):
            v = np.where(sel & np.isfinite(values), values, np.inf)
            i = int(np.argmin(v)) if np.isfinite(v).any() else None
            best[mode] = None if i is None else {"id": int(t.ids[i]), "label": label(rows[i]), "value": float(v[i])}
        a, d = best["aggregated"], best["disaggregated"]
        best["gain"] = None if a is None or d is None else 1.0 - d["value"] / a["value"]
        out[axis] = best
    out["sentence"] = _sentence(ctx, out)
    return out


def _sentence(ctx: SweepContext, c: dict[str, Any]) -> str:
    cheap, fast = c["cheapest"], c["fastest"]
    if cheap["disaggregated"] is None:
        return "No disaggregated prefill/decode configuration meets every constraint and SLO."
    if cheap["aggregated"] is None:
        return "Only disaggregated prefill/decode configurations meet every constraint and SLO."
    g, f = cheap["gain"], fast["gain"]
    cost = (
        f"the best disaggregated layout ({cheap['disaggregated']['label']}) is {g * 100:.1f}% cheaper in "
        f"{ctx.cost_words} than the best aggregated one ({cheap['aggregated']['label']})"
        if g > 0
        else f"the best aggregated layout ({cheap['aggregated']['label']}) stays {(-g) * 100:.1f}% cheaper in "
        f"{ctx.cost_words} than the best disaggregated one ({cheap['disaggregated']['label']})"
    )
    lat = ctx.latency_metric.upper()
    speed = (
        f"the fastest disaggregated candidate is {f * 100:.1f}% faster in {lat}"
        if f is not None and f > 0
        else f"the fastest aggregated candidate is {(-(f or 0.0)) * 100:.1f}% faster in {lat}"
    )
    verdict = "Disaggregation wins on cost" if g > 0 else "Disaggregation does not win on cost"
    return f"{verdict}: {cost}; {speed}."
