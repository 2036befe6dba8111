"""Prediction intervals beside every predicted number (objectives.uncertainty, fitted by
`scripts/validate.py --intervals --write`): estimates, front rows, recommendations, the report.

Nested form (estimates, recommendations): `intervals: {column: {p10, p90}}`, `evidence:
{metric: {region, region_rows, used, used_rows, level, ...}}`, `extrapolated` and
`extrapolated_metrics`. Front rows are flat (they go to CSV and parquet too): `column_p10`,
`column_p90`, `extrapolated` and a one-line `evidence`.

The engine of a prediction is the one its efficiencies came from: the kernel model's engine, or
TensorRT-LLM for the default factors (fitted to TensorRT-LLM's published tables).
"""

from __future__ import annotations

import functools
from typing import Any

from objectives.models import load_model
from objectives.uncertainty import (
    DEFAULT_ENGINE,
    FOLLOWS,
    IntervalTable,
    gpu_family,
    metric_intervals,
    model_class,
    pessimistic_factors,
)

__all__ = ["DEFAULT_ENGINE", "class_of", "engine_of", "evidence_line", "flat", "nested", "overlap", "risk_factors"]

# the columns whose intervals every output carries (more where the values are there)
REQUIRED = ("output_tokens_per_s_per_gpu", "ttft_s", "tpot_s", "usd_per_million_output_tokens")


@functools.lru_cache(maxsize=64)
def class_of(model: str) -> str:
    """dense / moe / mla of a model id or config path ('dense' if it cannot be read)."""
    try:
        spec = load_model(model)
    except (ValueError, OSError):
        return "dense"
    return model_class(spec.n_experts, spec.is_mla)


def engine_of(efficiency: Any = None) -> str:
    return getattr(efficiency, "kernel_engine", None) or DEFAULT_ENGINE


def table() -> IntervalTable:
    return IntervalTable.load()


def nested(values: dict[str, Any], *, model: str, gpu: str, weights: str, engine: str = DEFAULT_ENGINE) -> dict:
    """{"intervals", "evidence", "extrapolated", "extrapolated_metrics"} of one prediction."""
    return metric_intervals(
        table(), values, gpu_family=gpu_family(gpu), model_class=class_of(model), weights=weights, engine=engine
    )


def evidence_line(evidence: dict[str, dict[str, Any]]) -> str:
    """'throughput: hopper/dense/fp8/trtllm 203 rows; ttft: 6 rows, from */*/*/*/* (extrapolated)'."""
    parts = []
    for metric, e in evidence.items():
        own = e["region"].rsplit("/", 1)[0]
        text = f"{metric}: {own} {e['region_rows']} rows"
        if e["extrapolated"]:
            text += f", from {e['used'].rsplit('/', 1)[0]} ({e['used_rows']} rows, x{e['widen']:g} wider; extrapolated)"
        parts.append(text)
    return "; ".join(parts)


def flat(row: dict[str, Any], *, model: str, engine: str = DEFAULT_ENGINE) -> dict[str, Any]:
    """Flat interval columns of one stored row (its `accelerator`, `weights` and metrics)."""
    if not row.get("accelerator") or not row.get("weights"):
        return {}
    got = nested(row, model=model, gpu=row["accelerator"], weights=row["weights"], engine=engine)
    out: dict[str, Any] = {}
    for column in FOLLOWS:
        if column in got["intervals"]:
            out[f"{column}_p10"] = got["intervals"][column]["p10"]
            out[f"{column}_p90"] = got["intervals"][column]["p90"]
    out["extrapolated"] = got["extrapolated"]
    out["evidence"] = evidence_line(got["evidence"])
    return out


def risk_factors(*, model: str, gpu: str, weights: str, engine: str = DEFAULT_ENGINE) -> dict[str, float]:
    """{column: factor} to the pessimistic bound (`risk: p90`)."""
    return pessimistic_factors(
        table(), gpu_family=gpu_family(gpu), model_class=class_of(model), weights=weights, engine=engine
    )


def overlap(a: dict[str, Any], b: dict[str, Any], columns: tuple[str, ...]) -> list[str]:
    """The columns on which two predictions' 80 % intervals overlap (both must have one)."""
    out = []
    for c in columns:
        x, y = (a.get("intervals") or {}).get(c), (b.get("intervals") or {}).get(c)
        if x and y and x["p10"] <= y["p90"] and y["p10"] <= x["p90"]:
            out.append(c)
    return out
