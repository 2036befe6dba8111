"""The frontier headline rows (shared/reference/measurements.frontier_headlines.jsonl) against the
model's predictions for the same deployment modes, each row's caveats respected.

Each row is predicted with the quantity it reports, or skipped with the reason:

- prefill-only rows of a DEP prefill pool (SGLang EP32 on 4x8 H100; "decode assumed
  unlimited"): input tokens/s per GPU of the pool alone — every attention rank prefilling a full
  chunk of 16,384 tokens (the blog's tokens per device) of prompts of the row's length, no decode
  in the steps;
- decode-only rows of a DEP decode pool (SGLang EP72 on 9x8 H100; "prefill assumed unlimited"):
  output tokens/s per GPU of decode steps at the row's batch per device and KV length (the
  simulated-MTP row with one draft token at its stated 60% acceptance);
- batch-1 min-latency rows (TensorRT-LLM DeepSeek-R1 fp4 on 8xB200, TP8 with MoE EP2, with and
  without MTP): tokens/s per user = 1 / TPOT at one sequence; an MTP row at the row's own
  measured acceptance (its `mtp_acceptance_rate` is the mean accepted length, converted to the
  per-token rate alpha that gives it), beside the catalog default in a second column;
- max-throughput rows (TensorRT-LLM DEP8 on 8xB200): `offline_max_throughput`.

Skipped: the end-to-end prefill/decode-disaggregated rows (the disaggregation model is another
branch's work), rows whose GPU is not in the catalog (H800), rows whose layout or batch is not
stated (GB200 part 2, the vLLM wide-EP summaries) and the relaxed-acceptance MTP row (it trades
accuracy and states no acceptance length).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from objectives.accelerators import get_accelerator
from objectives.batch import build_batch
from objectives.efficiency import EfficiencyModel, default_efficiency
from objectives.models import load_model
from objectives.modes import expected_tokens_per_step, speculative_defaults
from objectives.serving import evaluate, offline_max_throughput
from objectives.timing import decode_step_time_s, prefill_time_s

PREFILL_TOKENS_PER_RANK = 16384  # SGLang blog: "16,384 tokens per device" in its prefill runs


@dataclass(frozen=True)
class FrontierRow:
    id: str
    quantity: str
    measured: float | None
    predicted: float | None
    note: str
    predicted_default: float | None = None  # MTP rows: at the catalog's default acceptance

    @property
    def error(self) -> float | None:
        if self.measured is None or self.predicted is None or not np.isfinite(self.predicted):
            return None
        return self.predicted / self.measured - 1.0


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def alpha_from_length(length: float, k: int) -> float:
    """The per-token acceptance alpha whose (1 - a^(k+1)) / (1 - a) is `length` (bisection)."""
    if k <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(expected_tokens_per_step(mid, k)) < length:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _weights(row: dict[str, Any]) -> str:
    w = str(row.get("weights", "fp8")).lower()
    return "fp4" if ("fp4" in w) else ("fp8" if "fp8" in w else "bf16")


def _model(row: dict[str, Any]) -> str:
    m = str(row.get("base_model") or row.get("model"))
    return "deepseek-ai/DeepSeek-R1" if m.startswith("nvidia/DeepSeek-R1") else m.split(" ")[0]


def _skip_reason(row: dict[str, Any]) -> str | None:
    scenario = str(row.get("scenario", ""))
    if "e2e" in scenario or row.get("id", "").startswith("vllm-"):
        return "prefill/decode-disaggregated end to end (the disaggregation model, issue 14.3, is another branch)"
    if str(row.get("gpu")) == "H800":
        return "H800 is not in the accelerator catalog"
    if "only" not in scenario and scenario.startswith("disaggregated"):
        return "GPUs, EP and batch of the pool not stated in the row"
    if "relaxed" in str(row.get("spec_decoding", "")):
        return "relaxed acceptance (changes accuracy) and no acceptance length stated"
    return None


def predict_row(row: dict[str, Any], efficiency: EfficiencyModel | None = None) -> FrontierRow:
    eff = efficiency or default_efficiency()
    rid = str(row["id"])
    why = _skip_reason(row)
    if why is not None:
        return FrontierRow(rid, "-", None, None, f"skipped: {why}")
    model = load_model(_model(row))
    gpu = get_accelerator(str(row["gpu"]))
    weights = _weights(row)
    kv = row.get("kv_cache") or ("fp8" if weights in ("fp8", "fp4") else "bf16")
    dp = int(row.get("attention_dp") or 1)
    tp = int(row.get("tp") or 1)
    scenario = str(row["scenario"])
    common = dict(weights=weights, kv_cache=kv, efficiency=eff)
    if "prefill_only" in scenario:
        isl = int(row["isl"])
        b = build_batch(model, gpu, tp=tp, ep=int(row["ep"]), attention_dp=dp, isl=isl, osl=1, **common)
        b = b.replace(max_num_tokens=float(PREFILL_TOKENS_PER_RANK))
        prompts = dp * max(PREFILL_TOKENS_PER_RANK // isl, 1)
        t = prefill_time_s(b, float(isl), float(prompts)).total_s[0]
        pred = prompts * isl / t / float(b.gpus[0])
        note = f"DEP{dp} prefill pool, {PREFILL_TOKENS_PER_RANK} tokens per rank per step, no decode"
        return FrontierRow(rid, "input tok/s/GPU", float(row["input_tokens_per_s_per_gpu"]), pred, note)
    if "decode_only" in scenario:
        per_dev = float(str(row["batch"]).split()[0])
        ctx = float(row["isl"])
        k, alpha = (1, 0.6) if "MTP" in scenario else (0, None)
        b = build_batch(
            model,
            gpu,
            tp=tp,
            ep=int(row["ep"]),
            attention_dp=dp,
            mtp=k,
            mtp_acceptance=alpha,
            isl=int(ctx),
            osl=1,
            batch=per_dev * dp,
            **common,
        )
        step = decode_step_time_s(b, b.batch, ctx).total_s[0]  # per output token (MTP included)
        pred = per_dev * dp / step / float(b.gpus[0])
        note = f"DEP{dp} decode pool, {per_dev:.0f} sequences per GPU at KV length {ctx:.0f}"
        if k:
            note += ", MTP 1 at the stated 60% acceptance"
        return FrontierRow(rid, "output tok/s/GPU", float(row["output_tokens_per_s_per_gpu"]), pred, note)
    if scenario.startswith("min_latency"):
        spec = str(row.get("spec_decoding", "no-MTP"))
        k = 0 if spec == "no-MTP" else int(spec.removeprefix("MTP"))
        length = float(row.get("mtp_acceptance_rate") or 1.0)
        alpha = alpha_from_length(length, k) if k else None

        def at(acceptance: float | None) -> float:
            b = build_batch(
                model,
                gpu,
                tp=tp,
                ep=2,
                mtp=k,
                mtp_acceptance=acceptance,
                batch=1,
                isl=int(row["isl"]),
                osl=int(row["osl"]),
                **common,
            )
            return float(1.0 / evaluate(b).tpot_s[0])

        pred = at(alpha)
        default = at(None) if k else None
        note = "TP8 (MoE EP2), batch 1" + (
            f", MTP {k} at the measured acceptance length {length:.2f} (alpha {alpha:.2f}); "
            f"default alpha {speculative_defaults(model.id).acceptance:.2f} beside"
            if k
            else ""
        )
        return FrontierRow(rid, "tok/s/user", float(row["tokens_per_s_per_user"]), pred, note, default)
    if scenario == "max_throughput":
        b = build_batch(
            model,
            gpu,
            tp=tp,
            ep=int(row["ep"]),
            attention_dp=dp,
            isl=int(row["isl"]),
            osl=int(row["osl"]),
            **common,
        )
        m = offline_max_throughput(b)
        pred = float(m.output_tokens_per_s_per_gpu[0])
        note = f"DEP{dp} offline max throughput (batch {m.batch[0]:.0f}), no MTP"
        return FrontierRow(rid, "output tok/s/GPU", float(row["tokens_per_s_per_gpu"]), pred, note)
    return FrontierRow(rid, "-", None, None, f"skipped: scenario {scenario!r} not predicted")


def predict_all(path: str | Path, efficiency: EfficiencyModel | None = None) -> list[FrontierRow]:
    return [predict_row(r, efficiency) for r in load_rows(path)]
