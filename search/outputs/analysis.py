"""A stored sweep's whole analysis in one dict (`for_store`): recommendations, price sensitivity,
rent vs own, the best point per GPU type and the assumptions — what the report renders and
`front --format json` / `GET /sweeps/NAME/front` return."""

from __future__ import annotations

from typing import Any

import numpy as np

from search.outputs.candidates import SweepContext, _candidates, _front, _table, rows_from, sweep_context
from search.outputs.disaggregation import disaggregation_comparison
from search.outputs.fidelity import stage_counts, verified_rows
from search.outputs.procurement import per_accelerator_best, price_sensitivity, rent_vs_own
from search.outputs.recommend import recommendations


def analyze(ctx: SweepContext, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything: recommendations (with what would change them), price sensitivity, rent vs
    own, the best per accelerator, and the candidates' front (row ids, fastest first). Where
    the sweep simulated any rows, only simulated and measured rows are considered
    (search.outputs.fidelity)."""
    stages = stage_counts(rows)
    rows = verified_rows(rows)
    sensitivity = price_sensitivity(ctx, rows)
    recs = recommendations(ctx, rows, sensitivity)
    t = _table(ctx, rows)
    mask = _candidates(ctx, t, np.ones(len(t)))
    front = _front(t, mask, t.cost)
    return {
        "sweep": ctx.name,
        "latency_metric": ctx.latency_metric,
        "cost_metric": ctx.cost_metric,
        "fastest_tolerance": ctx.fastest_tolerance,
        "fastest_definition": (
            f"within the hourly budget, the cheapest candidate within {ctx.fastest_tolerance * 100:g}% of the "
            "fastest candidate's latency (report.fastest_tolerance)"
        ),
        "knee_definition": (
            "front point farthest from the line joining the front's fastest and cheapest points, "
            "each objective log-transformed and min-max normalized over the front"
        ),
        "stored_rows": len(t),
        "stages": stages,
        "candidates": int(mask.sum()),
        "recommendations": recs,
        "rent_vs_own": rent_vs_own(ctx, recs),
        "price_sensitivity": sensitivity,
        "per_accelerator": per_accelerator_best(ctx, rows),
        "front_ids": [int(t.ids[i]) for i in front],
        **({"disaggregation": d} if (d := disaggregation_comparison(ctx, rows)) else {}),
    }


def for_store(store: Any, name: str) -> dict[str, Any]:
    """`analyze` of a stored sweep: its evaluations merged with its final front."""
    record = store.get_sweep(name)
    if record is None:
        raise ValueError(f"no sweep named {name!r} in {store.url}")
    front = store.latest_front(name, kind="final") or {}
    rows = rows_from(store.get_evaluations(name), front.get("points") or [])
    return analyze(sweep_context(record), rows)
