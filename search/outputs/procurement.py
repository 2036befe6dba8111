"""What procurement asks next to the recommendations: how the picks move when one GPU's price
moves ±30% (re-ranking the stored rows, including those only the hourly budget excluded), rent
vs own (the catalog's on-demand price against `objectives.cost.tco_usd_per_gpu_hour` with the
sweep's ownership terms and the catalog's `purchase_usd`), the best point per GPU type, and the
pricing and efficiency assumptions with their sources.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from objectives.accelerators import Accelerator
from objectives.cost import HOURS_PER_YEAR, load_pricing_defaults, tco_usd_per_gpu_hour
from objectives.efficiency import default_efficiency
from search.outputs.candidates import (
    COST,
    HOURS_PER_MONTH,
    KINDS,
    SENSITIVITY_FACTORS,
    YEARS_COMPARED,
    SweepContext,
    _candidates,
    _num,
    _pick_cheapest,
    _pick_fastest,
    _picks,
    _scale,
    _Table,
    _table,
    compute_dtype,
)
from search.outputs.recommend import _describe, _summary
from search.sweeps import basis_note, excluded_note

#: Marks a GPU priced from another basis than the rest of the comparison.
MARK = "†"


def price_mark(ctx: SweepContext, gpu: str) -> str:
    """`MARK` when `gpu` is priced from another basis than the comparison's, else ''."""
    return MARK if gpu in (ctx.price_table.get("mixed") or ()) else ""


def cloud_price(ctx: SweepContext, gpu: Accelerator) -> tuple[float, str]:
    """(cloud $/GPU-hour, its source) of `gpu` on the sweep's price basis: the provider's list
    price where it lists the GPU, else the GPU's default."""
    rate = (ctx.price_table.get("cloud_usd_per_gpu_hour") or {}).get(gpu.id)
    provider = (ctx.price_table.get("provider_of") or {}).get(gpu.id, gpu.price_provider)
    if rate is None:
        rate, provider = gpu.usd_per_gpu_hour, gpu.price_provider
    return float(rate), gpu.price_sources.get(provider) or gpu.sources.get("usd_per_gpu_hour", "")


def price_sensitivity(
    ctx: SweepContext, rows: list[dict[str, Any]], factors: tuple[float, ...] = SENSITIVITY_FACTORS
) -> list[dict[str, Any]]:
    """For each accelerator of the sweep and each factor, the three recommendations after
    scaling that GPU's $/GPU-hour by the factor ($/h and $/Mtok scale linearly; rows the hourly
    budget excluded may come back), with `changed` flags against the unscaled answer."""
    t = _table(ctx, rows)
    base = _picks(ctx, t, np.ones(len(t)))
    out = []
    for gpu in ctx.spec.accelerators:
        if not np.any(t.acc == gpu):
            continue
        for f in factors:
            scale = _scale(t, {gpu: f})
            picks = _picks(ctx, t, scale)
            entry: dict[str, Any] = {
                "accelerator": gpu,
                "factor": f,
                "change_pct": (f - 1.0) * 100.0,
                "usd_per_gpu_hour": ctx.prices.get(gpu, math.nan) * f,
            }
            for kind in KINDS:
                i = picks[kind]
                entry[kind] = None if i is None else _summary(ctx, t, i, scale)
            entry["changed"] = {k: picks[k] != base[k] for k in KINDS}
            out.append(entry)
    return out


def _common_reason(t: _Table, idx: np.ndarray) -> str:
    reasons = Counter()
    for i in idx:
        r = t.rows[i]
        reasons[r.get("reason") or ("misses an SLO" if not t.slo_ok[i] else "over the hourly budget")] += 1
    if not reasons:
        return ""
    text, n = reasons.most_common(1)[0]
    return f"{text} ({n} of {idx.size})"


def per_accelerator_best(ctx: SweepContext, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per GPU type of the sweep: how many stored rows, how many candidates, the cheapest
    candidate and its fastest one, and the price move that would make it the overall cheapest."""
    t = _table(ctx, rows)
    scale = np.ones(len(t))
    mask = _candidates(ctx, t, scale)
    overall = _pick_cheapest(t, mask, t.cost)
    out = []
    for gpu in ctx.spec.accelerators:
        mine = t.acc == gpu
        cand = mask & mine
        best = _pick_cheapest(t, cand, t.cost)
        fastest = _pick_fastest(t, cand, t.cost, ctx.fastest_tolerance)
        entry: dict[str, Any] = {
            "accelerator": gpu,
            "usd_per_gpu_hour": ctx.prices.get(gpu),
            "stored": int(mine.sum()),
            "candidates": int(cand.sum()),
            "best": None if best is None else _describe(ctx, t, best),
            "fastest": None if fastest is None else _summary(ctx, t, fastest),
            "why_none": "" if best is not None else _common_reason(t, np.flatnonzero(mine)),
            "price_change_to_be_cheapest_pct": None,
        }
        if best is not None and overall is not None and t.acc[overall] != gpu:
            entry["price_change_to_be_cheapest_pct"] = (t.cost[overall] / t.cost[best] - 1.0) * 100.0
        elif best is not None and overall is not None:
            entry["price_change_to_be_cheapest_pct"] = 0.0
        out.append(entry)
    return out


def _tco(ctx: SweepContext, gpu: Accelerator, purchase: float) -> float:
    return float(tco_usd_per_gpu_hour(np.array([purchase]), np.array([gpu.tdp_w]), ctx.terms)[0])


def rent_vs_own(ctx: SweepContext, recs: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Monthly and 3-year cost of each recommendation rented (catalog on-demand $/GPU-hour) and
    owned (TCO: amortized purchase + power x PUE + hosting), and the break-even utilization:
    owning costs its TCO every hour, renting only the hours used, so owning is cheaper above
    utilization = owned $/h / cloud $/h (over the amortization period; `_3y` assumes the
    hardware is written off in three years instead)."""
    out = []
    years_h = YEARS_COMPARED * HOURS_PER_YEAR
    for kind in KINDS:
        rec = recs.get(kind)
        if rec is None:
            continue
        gpu = ctx.catalog[rec["accelerator"]]
        n = float(rec["total_gpus"] or 0)
        priced = ctx.prices.get(gpu.id) or math.nan
        cloud_rate, cloud_source = cloud_price(ctx, gpu)
        row: dict[str, Any] = {
            "kind": kind,
            "label": rec["label"],
            "accelerator": gpu.id,
            "total_gpus": n,
            "cloud_usd_per_gpu_hour": cloud_rate,
            "cloud_price_source": cloud_source,
            "price_mark": price_mark(ctx, gpu.id),
            "purchase_scope": gpu.purchase_scope,
            "cloud_usd_per_hour": n * cloud_rate,
            "cloud_usd_per_month": n * cloud_rate * HOURS_PER_MONTH,
            "cloud_usd_3y": n * cloud_rate * years_h,
            "cloud_usd_per_million_output_tokens": _num((rec[COST] or math.nan) * cloud_rate / priced),
            "purchase_usd_per_gpu": gpu.purchase_usd,
            "purchase_source": gpu.sources.get("purchase_usd", ""),
        }
        if gpu.purchase_usd is None:
            row.update(
                owned_usd_per_gpu_hour=None,
                owned_usd_per_hour=None,
                owned_usd_per_month=None,
                owned_usd_3y=None,
                purchase_usd_total=None,
                owned_cash_usd_3y=None,
                owned_usd_per_million_output_tokens=None,
                break_even_utilization=None,
                break_even_utilization_3y=None,
                note=f"the catalog has no purchase price for {gpu.id}: owned cost unknown",
            )
        else:
            owned_rate = _tco(ctx, gpu, gpu.purchase_usd)
            running = _tco(ctx, gpu, 0.0)  # power x PUE + hosting, no amortization
            cash_3y = n * (gpu.purchase_usd + running * years_h)
            row.update(
                owned_usd_per_gpu_hour=owned_rate,
                owned_usd_per_hour=n * owned_rate,
                owned_usd_per_month=n * owned_rate * HOURS_PER_MONTH,
                owned_usd_3y=n * owned_rate * years_h,
                purchase_usd_total=n * gpu.purchase_usd,
                owned_cash_usd_3y=cash_3y,
                owned_usd_per_million_output_tokens=_num((rec[COST] or math.nan) * owned_rate / priced),
                break_even_utilization=owned_rate / cloud_rate,
                break_even_utilization_3y=cash_3y / (n * cloud_rate * years_h) if n else None,
                note="",
            )
        out.append(row)
    return out


def pricing_assumptions(ctx: SweepContext) -> dict[str, Any]:
    """The pricing basis, each GPU's price with its source, and the ownership terms with theirs."""
    defaults = load_pricing_defaults()
    p = ctx.spec.pricing
    terms = []
    for key in ("years", "usd_per_kwh", "pue", "hosting_usd_per_kw_month"):
        override = getattr(p, key)
        entry = defaults.get(key, {})
        terms.append(
            {
                "term": key,
                "value": getattr(ctx.terms, key),
                "source": "set in the sweep spec" if override is not None else entry.get("source", ""),
                "date": "" if override is not None else str(entry.get("date", "")),
            }
        )
    gpus = []
    table = ctx.price_table
    for g in ctx.spec.accelerators:
        acc = ctx.catalog[g]
        rate, source = cloud_price(ctx, acc)
        gpus.append(
            {
                "accelerator": g,
                "usd_per_gpu_hour": ctx.prices.get(g),
                "cloud_usd_per_gpu_hour": rate,
                "cloud_source": source,
                "provider": (table.get("provider_of") or {}).get(g, acc.price_provider),
                "price_list": (table.get("list_of") or {}).get(g, ""),
                "providers": sorted(acc.prices),
                "mark": price_mark(ctx, g),
                "purchase_usd": acc.purchase_usd,
                "purchase_source": acc.sources.get("purchase_usd", ""),
                "purchase_scope": acc.purchase_scope,
                "tdp_w": acc.tdp_w,
            }
        )
    return {
        "basis": ctx.basis,
        "price_file": p.price_file,
        "provider": table.get("provider"),
        "price_list": table.get("list"),
        "provider_auto": table.get("provider_auto"),
        "mixed": list(table.get("mixed") or []),
        "mixed_note": basis_note(table),
        "excluded": dict(table.get("excluded") or {}),
        "excluded_note": excluded_note(table),
        "gpus": gpus,
        "ownership_terms": terms,
    }


def efficiency_bases(ctx: SweepContext) -> list[dict[str, Any]]:
    """Per GPU and compute dtype used by the sweep's quantizations: where its efficiencies come
    from (`objectives.efficiency ... for_gpu(...).basis`: a probe calibration, measured
    microbenchmarks, or vendor defaults)."""
    eff = default_efficiency()
    out = []
    for g in ctx.spec.accelerators:
        acc = ctx.catalog[g]
        dtypes = sorted({compute_dtype(ctx, g, w) for w in ctx.spec.space.weights})
        bases = {d: eff.for_gpu(acc.id, acc.vendor, d).basis for d in dtypes}
        calibrated = any(b.startswith("calibration") for b in bases.values())
        out.append({"accelerator": g, "bases": bases, "calibrated": calibrated})
    return out
