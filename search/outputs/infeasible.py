"""Why nothing qualifies: a sweep's stored reasons, counted and explained (weights that need
more GPUs than the space allows say how many), for `run`, `front` and the report."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

WEIGHTS_REASON = "weights do not fit in GPU memory"


def nothing_fits_reasons(
    rows: list[dict[str, Any]], hbm_bytes: dict[str, float], summary_reasons: dict[str, int] | None = None
) -> list[str]:
    """One line per reason the stored configurations do not fit, most frequent first. Rows are
    flat (config fields, `feasible`, `reason`, metrics); `summary_reasons` (a sweep summary's
    counts) stand in when the rows are not all stored."""
    infeasible = [r for r in rows if not r.get("feasible")]
    counts = Counter(r.get("reason") or "does not fit" for r in infeasible)
    if summary_reasons and sum(summary_reasons.values()) > sum(counts.values()):
        counts = Counter({k: int(v) for k, v in summary_reasons.items() if k})
    total = sum(counts.values())
    lines = []
    for reason, n in counts.most_common():
        line = f"{reason} ({n:,} of {total:,})"
        if reason == WEIGHTS_REASON:
            line += _weights_need(infeasible, hbm_bytes)
        lines.append(line)
    return lines


def _weights_need(rows: list[dict[str, Any]], hbm_bytes: dict[str, float]) -> str:
    """': weights need ≥ N GPUs of this type (GPU, scheme); the space allows at most M' per
    accelerator and weight scheme: the weights alone over one GPU's HBM (KV cache, activations
    and the runtime's reserve need more)."""
    need: dict[tuple[str, str], int] = {}
    allowed: dict[str, int] = {}
    for r in rows:
        gpu, w_gpu, gpus = r.get("accelerator"), r.get("weight_bytes_per_gpu"), r.get("gpus")
        if gpu not in hbm_bytes or not w_gpu or not gpus:
            continue
        allowed[gpu] = max(allowed.get(gpu, 0), int(gpus))
        if r.get("reason") == WEIGHTS_REASON:
            n = math.ceil(float(w_gpu) * float(gpus) / hbm_bytes[gpu])
            key = (gpu, str(r.get("weights")))
            need[key] = min(need.get(key, n), n)
    parts = [
        f"{scheme} weights need ≥ {n} GPUs of this type ({gpu}, {hbm_bytes[gpu] / 1e9:.0f} GB each); "
        f"the space allows at most {allowed[gpu]} per replica"
        for (gpu, scheme), n in sorted(need.items())
    ]
    return (": " + "; ".join(parts)) if parts else ""


def why_nothing_fits(store: Any, name: str) -> list[str]:
    """`nothing_fits_reasons` of a stored sweep (its evaluations and summary)."""
    from objectives.accelerators import load_accelerators
    from search.outputs.candidates import rows_from

    record = store.get_sweep(name) or {}
    spec = record.get("spec") or {}
    catalog = load_accelerators((spec.get("pricing") or {}).get("price_file"))
    hbm = {g.id: g.hbm_bytes for g in catalog.values()}
    rows = rows_from(store.get_evaluations(name), [])
    return nothing_fits_reasons(rows, hbm, (record.get("summary") or {}).get("reasons"))
