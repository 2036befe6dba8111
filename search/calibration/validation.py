"""Predict published (or a user's) end-to-end measurements and score the error.

Rows follow shared/reference/measurements.public.jsonl: model, gpu, tp/pp/ep, weights, isl,
osl, scenario (`offline_max_throughput` -> output tokens/s per GPU at the best batch that fits;
`batch1_ttft` -> time to first token at batch 1, ms) and the measured value. fp8 and fp4 rows
are predicted with an fp8 KV cache (the pairing of NVIDIA's ModelOpt checkpoints used in those
tables), bf16 rows with a bf16 KV cache, unless the row names `kv_cache`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from objectives.accelerators import UnknownAcceleratorError, get_accelerator, load_accelerators
from objectives.batch import ConfigBatch, build_batch, concat
from objectives.efficiency import EfficiencyModel, default_efficiency
from objectives.models import ModelSpec, UnknownModelError, load_model
from objectives.serving import evaluate, offline_max_throughput

SCENARIOS = {
    "offline_max_throughput": "output_tokens_per_s_per_gpu",
    "batch1_ttft": "ttft_ms",
}


@dataclass(frozen=True)
class Prediction:
    row: dict
    predicted: float
    measured: float
    batch: float

    @property
    def ape(self) -> float:
        """Absolute percentage error, in percent."""
        return abs(self.predicted - self.measured) / self.measured * 100.0


def load_measurements(path: str | Path) -> list[dict]:
    """Rows of a JSON-lines measurement file; a malformed line raises ValueError with its number."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
    return rows


@functools.lru_cache(maxsize=256)
def _model(name: str) -> ModelSpec:
    """Catalog models are frozen dataclasses, so one instance can be shared."""
    return load_model(name)


def _row_batch(row: dict, catalog: dict, efficiency: EfficiencyModel) -> ConfigBatch:
    weights = str(row["weights"])
    kv = row.get("kv_cache") or ("fp8" if weights in ("fp8", "fp4", "nvfp4", "mxfp4") else "bf16")
    return build_batch(
        _model(row["model"]),
        get_accelerator(row["gpu"], catalog),
        weights=weights,
        kv_cache=kv,
        tp=int(row.get("tp", 1)),
        pp=int(row.get("pp", 1)),
        ep=int(row.get("ep", 1)),
        attention_dp=int(row.get("attention_dp") or 1),
        mtp=int(row.get("mtp") or 0),
        batch=1,
        isl=int(row["isl"]),
        osl=int(row["osl"]),
        efficiency=efficiency,
    )


def build_rows(
    rows: Iterable[dict], efficiency: EfficiencyModel | None = None, catalog: dict | None = None
) -> tuple[list[dict], ConfigBatch | None, list[tuple[dict, str]]]:
    """(usable rows, their ConfigBatch, skipped rows with the reason)."""
    efficiency = efficiency or default_efficiency()
    catalog = catalog or load_accelerators()
    used, batches, skipped = [], [], []
    for row in rows:
        scenario = row.get("scenario")
        if scenario not in SCENARIOS:
            skipped.append((row, f"scenario {scenario!r} not predicted"))
            continue
        if row.get("metric") not in (None, SCENARIOS[scenario]):
            skipped.append((row, f"metric {row.get('metric')!r} not predicted for {scenario}"))
            continue
        try:
            batches.append(_row_batch(row, catalog, efficiency))
        except (UnknownModelError, UnknownAcceleratorError, ValueError, KeyError) as exc:
            skipped.append((row, str(exc)))
            continue
        used.append(row)
    return used, (concat(batches) if batches else None), skipped


def predict_batch(rows: Sequence[dict], batch: ConfigBatch) -> tuple[np.ndarray, np.ndarray]:
    """(predicted values in each row's metric units, batch used) for prepared rows."""
    scenario = np.array([r["scenario"] for r in rows])
    thr = offline_max_throughput(batch)
    pred = thr.output_tokens_per_s_per_gpu.copy()
    used_batch = thr.batch.copy()
    ttft_rows = scenario == "batch1_ttft"
    if ttft_rows.any():
        one = evaluate(batch.replace(batch=1.0).take(ttft_rows))
        pred[ttft_rows] = one.ttft_s * 1e3
        used_batch[ttft_rows] = 1.0
    return pred, used_batch


def predict(
    rows: Iterable[dict], efficiency: EfficiencyModel | None = None
) -> tuple[list[Prediction], list[tuple[dict, str]]]:
    """Predictions for every usable row, and the skipped rows with reasons."""
    used, batch, skipped = build_rows(rows, efficiency)
    if batch is None:
        return [], skipped
    pred, used_batch = predict_batch(used, batch)
    out = []
    for row, p, bt in zip(used, pred, used_batch, strict=True):
        if not np.isfinite(p):
            skipped.append((row, "configuration infeasible in the model (does not fit)"))
            continue
        out.append(Prediction(row=row, predicted=float(p), measured=float(row["value"]), batch=float(bt)))
    return out, skipped


def summarize(predictions: Sequence[Prediction], skipped: Sequence[tuple[dict, str]] = ()) -> dict:
    """{"n", "skipped", "median_ape", "p90_ape", "within_20pct"} (percentages as numbers)."""
    ape = np.array([p.ape for p in predictions])
    if ape.size == 0:
        return {"n": 0, "skipped": len(skipped), "median_ape": None, "p90_ape": None, "within_20pct": None}
    return {
        "n": int(ape.size),
        "skipped": len(skipped),
        "median_ape": round(float(np.median(ape)), 2),
        "p90_ape": round(float(np.percentile(ape, 90)), 2),
        "within_20pct": round(float(np.mean(ape <= 20.0) * 100.0), 2),
    }
