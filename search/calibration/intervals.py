"""Residuals of the cost model on every measurement file, the interval table fitted to them
(objectives.uncertainty), and its coverage on leave-one-model-family-out folds.

Each file's rows become (region, predicted, measured) residuals of one metric:

- measurements.public.jsonl (and any file in its format): offline max throughput -> throughput
  (`validation.predict`); batch-1 TTFT rows -> ttft;
- measurements.amd_vllm.jsonl: the max-load rows (`tokens_per_s_per_gpu`, engine vllm; the page
  does not say whether input tokens are counted) -> throughput; the fixed-batch latency rows
  (`e2e_ms` of a batch of 1-4 at 128 / 2048) -> tpot, as e2e against the predicted e2e (a 2048
  token decode dominates it);
- measurements.nim_concurrency.jsonl: TTFT -> ttft, ITL -> tpot at the stated concurrency (the
  model evaluated at that batch; a concurrency above the batch that fits is skipped: those
  requests queue and TTFT measures the queue); engine trtllm (NIM runs TensorRT-LLM);
- measurements.frontier_headlines.jsonl: the batch-1 DeepSeek-R1 fp4 row without MTP
  (tokens/s/user -> tpot) and the attention-DP max-throughput row (throughput); the rest
  (disaggregated pools, speculative decoding) is compared by search/calibration/frontier.py
  (scripts/validate_frontier.py), not fitted into the intervals.

A model family is the architecture and size (`family`): Llama-3.1-70B and Llama-3.3-70B are one
family, so a fold never holds out half of one architecture.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from objectives.accelerators import load_accelerators
from objectives.efficiency import EfficiencyModel, default_efficiency
from objectives.serving import evaluate
from objectives.uncertainty import (
    DEFAULT_ENGINE,
    IntervalTable,
    Region,
    engine_class,
    gpu_family,
    model_class,
    weights_class,
)
from search.calibration.validation import _model, _row_batch, load_measurements, predict

REFERENCE_FILES = (
    "measurements.public.jsonl",
    "measurements.amd_vllm.jsonl",
    "measurements.nim_concurrency.jsonl",
    "measurements.frontier_headlines.jsonl",
)


@dataclass(frozen=True)
class Residual:
    id: str
    file: str
    family: str
    region: Region
    predicted: float
    measured: float

    @property
    def r(self) -> float:
        """log(measured / predicted)."""
        return math.log(self.measured / self.predicted)


def family(model: str) -> str:
    """Architecture and size of a model id ('LlamaForCausalLM-70B')."""
    spec = _model(model)
    return f"{spec.architecture}-{spec.total_params / 1e9:.0f}B"


def _region(row: dict, metric: str, engine: str | None = None) -> Region:
    spec = _model(row["model"])
    return Region(
        gpu_family(row["gpu"]),
        model_class(spec.n_experts, spec.is_mla),
        weights_class(row["weights"]),
        engine or engine_class(row.get("framework")),
        metric,
    )


def _at_batch(row: dict, batch: float, efficiency: EfficiencyModel) -> dict:
    """Steady-state metrics of a row's deployment at a fixed concurrency."""
    b = _row_batch(row, load_accelerators(), efficiency).replace(batch=float(batch))
    return evaluate(b).row(0)


def residuals(
    paths: Iterable[str | Path], efficiency: EfficiencyModel | None = None
) -> tuple[list[Residual], list[tuple[str, str, str]]]:
    """(residuals of every usable row of the files, skipped (file, id, reason))."""
    efficiency = efficiency or default_efficiency()
    out: list[Residual] = []
    skipped: list[tuple[str, str, str]] = []
    for path in paths:
        path = Path(path)
        rows = load_measurements(path)
        name = path.name
        public, special = [], []
        for row in rows:
            (public if "metric" in row and "value" in row else special).append(row)
        if public:
            preds, skip = predict(public, efficiency)
            for p in preds:
                metric = "throughput" if p.row["scenario"] == "offline_max_throughput" else "ttft"
                out.append(
                    Residual(
                        str(p.row.get("id")),
                        name,
                        family(p.row["model"]),
                        _region(p.row, metric),
                        p.predicted,
                        p.measured,
                    )
                )
            skipped += [(name, str(r.get("id")), why) for r, why in skip]
        for row in special:
            try:
                got = _special(row, efficiency)
            except (KeyError, ValueError, TypeError) as exc:
                skipped.append((name, str(row.get("id")), f"not predicted ({exc})"))
                continue
            if isinstance(got, str):
                skipped.append((name, str(row.get("id")), got))
                continue
            for norm, metric, pred, meas in got:
                if not (np.isfinite(pred) and pred > 0 and meas and meas > 0):
                    skipped.append((name, str(row.get("id")), "infeasible in the model"))
                    continue
                out.append(Residual(str(row.get("id")), name, family(norm["model"]), _region(norm, metric), pred, meas))
    return out, skipped


def _special(row: dict, efficiency: EfficiencyModel) -> str | list[tuple[dict, str, float, float]]:
    """Residuals of a third-party row, or the reason it is skipped."""
    scenario = str(row.get("scenario"))
    model = row.get("base_model") or row.get("model")
    if str(model).startswith("nvidia/DeepSeek-R1"):
        model = "deepseek-ai/DeepSeek-R1"
    norm = {
        "model": model,
        "gpu": row["gpu"],
        "tp": int(row.get("tp") or 1),
        "pp": int(row.get("pp") or 1),
        "ep": int(row["ep"]) if isinstance(row.get("ep"), int) else 1,
        "attention_dp": int(row.get("attention_dp") or 1),
        "weights": weights_class(str(row["weights"])),
        "isl": int(row["isl"]),
        "osl": int(row["osl"]),
        "framework": row.get("framework"),
        "scenario": "offline_max_throughput",
        "id": row.get("id"),
    }
    if scenario == "offline_max_throughput" and row.get("tokens_per_s_per_gpu"):
        preds, skip = predict([{**norm, "value": row["tokens_per_s_per_gpu"]}], efficiency)
        if not preds:
            return skip[0][1] if skip else "not predicted"
        return [(norm, "throughput", preds[0].predicted, preds[0].measured)]
    if scenario == "offline_latency_fixed_batch" and row.get("e2e_ms"):
        m = _at_batch(norm, float(row["batch"]), efficiency)
        return [(norm, "tpot", m["e2e_s"] * 1e3, float(row["e2e_ms"]))]
    if scenario == "fixed_concurrency" and row.get("concurrency"):
        m = _at_batch(norm, float(row["concurrency"]), efficiency)
        if m["batch"] < float(row["concurrency"]):
            return "concurrency above the batch that fits in the model: requests queue, TTFT measures the queue"
        got = []
        if row.get("ttft_ms_mean_or_unspecified"):
            got.append((norm, "ttft", m["ttft_s"] * 1e3, float(row["ttft_ms_mean_or_unspecified"])))
        if row.get("itl_ms"):
            got.append((norm, "tpot", m["tpot_s"] * 1e3, float(row["itl_ms"])))
        return got
    if scenario.startswith("min_latency") and str(row.get("spec_decoding")) == "no-MTP":
        m = _at_batch({**norm, "ep": 2}, 1.0, efficiency)
        return [(norm, "tpot", m["tpot_s"] * 1e3, 1e3 / float(row["tokens_per_s_per_user"]))]
    return f"scenario {scenario!r} not modelled"


def fit_table(res: Sequence[Residual], source: dict | None = None, **kwargs: object) -> IntervalTable:
    """The interval table of residuals, family-exchangeable (`IntervalTable.fit` with groups)."""
    return IntervalTable.fit(
        [x.region for x in res],
        [x.r for x in res],
        [x.family for x in res],
        source=source,
        **kwargs,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Fold:
    family: str
    residual: Residual
    p10: float
    p90: float
    used: str
    extrapolated: bool

    @property
    def covered(self) -> bool:
        return self.p10 <= self.residual.measured <= self.p90


def leave_one_family_out(res: Sequence[Residual], **kwargs: object) -> list[Fold]:
    """Each model family held out in turn: the table fitted on the other families, each
    held-out row's 80 % interval from it, and whether the measurement fell inside."""
    out = []
    for fam in sorted({x.family for x in res}):
        table = fit_table([x for x in res if x.family != fam], **kwargs)
        for x in res:
            if x.family != fam:
                continue
            iv = table.lookup(x.region)
            p10, p90 = iv.bounds(x.predicted)
            out.append(Fold(fam, x, float(p10), float(p90), iv.used, iv.extrapolated))  # type: ignore[arg-type]
    return out


def coverage_by(folds: Sequence[Fold], key: str = "region") -> dict[str, dict[str, float]]:
    """{group: {"n", "coverage" (share of rows inside their interval), "extrapolated"}} by
    `key`: region (level 0), family, file or metric."""
    groups: dict[str, list[Fold]] = defaultdict(list)
    for f in folds:
        name = {
            "region": f.residual.region.key(),
            "family": f.family,
            "file": f.residual.file,
            "metric": f.residual.region.metric,
        }[key]
        groups[name].append(f)
    return {
        k: {
            "n": len(v),
            "coverage": float(np.mean([f.covered for f in v])),
            "extrapolated": float(np.mean([f.extrapolated for f in v])),
            "median_width": float(np.median([math.log(f.p90 / f.p10) for f in v])),
        }
        for k, v in sorted(groups.items())
    }


def source_block(paths: Sequence[Path], res: Sequence[Residual], code_version: str) -> dict:
    """Where a fitted table comes from: files and their residual counts, code version, date."""
    counts: dict[str, int] = defaultdict(int)
    for x in res:
        counts[x.file] += 1
    return {
        "files": [{"file": p.name, "residuals": counts.get(p.name, 0)} for p in paths],
        "residuals": len(res),
        "model": "default efficiency (objectives/data/efficiency.yaml), steady state",
        "engine_default": DEFAULT_ENGINE,
        "code_version": code_version,
        "date": _dt.date.today().isoformat(),
    }
