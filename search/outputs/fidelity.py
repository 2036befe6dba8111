"""Which stage produced each point's latencies, and what a headline may claim from it.

A multi-fidelity sweep (`sampler: auto`) stores rows of three stages (search.sweeps.staged):
analytic (the cost model), simulated (the serving simulator, percentiles under load) and
measured (a probe on a real GPU). A recommendation says it "meets every SLO" only for a point
simulated or measured to meet it; a point only the analytic model vouches for is "modelled to
meet" it. Where a sweep has simulated rows, recommendations are made among the simulated and
measured rows alone (`verified_rows`), so the headline rests on them.
"""

from __future__ import annotations

from typing import Any

from search.outputs.candidates import TITLES
from search.sweeps import stage_of

VERIFIED_STAGES = ("simulated", "measured")
MODELLED_TITLES = {
    "cheapest": "Cheapest modelled to meet every SLO",
    "fastest": "Fastest within the budget, modelled to meet every SLO",
    "knee": "Knee of the modelled front",
}


def row_stage(row: dict[str, Any]) -> str:
    """The stage of a flat row (search.outputs.candidates.rows_from) or of a metrics dict."""
    return stage_of(row)


def verified_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The simulated and measured rows where the sweep simulated any, else every row (an
    analytic-only or probe sweep: its measured rows stand beside the modelled ones)."""
    if not any(row_stage(r) == "simulated" for r in rows):
        return rows
    return [r for r in rows if row_stage(r) in VERIFIED_STAGES]


def headline(kind: str, row: dict[str, Any]) -> str:
    """The title of a recommendation of `kind` picked at `row`: what its stage lets it claim."""
    return TITLES[kind] if row_stage(row) in VERIFIED_STAGES else MODELLED_TITLES[kind]


def stage_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """{stage: rows of that stage}."""
    out: dict[str, int] = {}
    for r in rows:
        s = row_stage(r)
        out[s] = out.get(s, 0) + 1
    return out
