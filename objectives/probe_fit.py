"""Fitting achieved fractions of peak from probe samples (pure numpy).

Probes (search/probes.py) time micro-benchmarks on one device and return samples; this module
turns them into the per-GPU fractions of objectives/data/efficiency.yaml:

    hbm_copy_fraction        = best of (device copy, read-only reduction) bytes/s / peak HBM bandwidth
    gemm_fraction[dtype]     = eff_max of the ramp  eff(M) = eff_max * M / (M + h)   (h = gemm_half_tokens)
    attention_fraction       = best prefill attention FLOP/s / peak bf16 FLOP/s (FlashAttention-like)
    attention_bw_fraction    = best decode-attention KV bytes/s / peak HBM bandwidth (recorded only)
    allreduce_busbw_fraction = 1 / slope of t(bytes) = alpha + bytes / busbw, over the link peak
    allreduce_latency_s      = alpha

The GEMM ramp is fitted by least squares in log space: for a fixed h, log(eff_max) is the mean
of log(eff) - log(M) + log(M + h) (closed form), and h is found by a grid search refined around
the best point.

Sample layout (dicts): {"kind": "gemm", "dtype", "m", "n", "k", "seconds", "flops_per_s"},
{"kind": "copy" | "reduce", "bytes", "seconds", "bytes_per_s"}, {"kind": "decode_attention",
"batch", "context", "seconds", "bytes_per_s"}, {"kind": "prefill_attention", "tokens",
"seconds", "flops_per_s"}, {"kind": "allreduce", "bytes", "seconds", "gpus"}.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def _log_residual(m: np.ndarray, eff: np.ndarray, h: float) -> tuple[float, float]:
    """(sum of squared log residuals, log eff_max) of the ramp with half-point `h`."""
    base = np.log(eff) - np.log(m) + np.log(m + h)
    log_emax = float(np.mean(base))
    return float(np.sum((base - log_emax) ** 2)), log_emax


def fit_gemm_ramp(m: Sequence[float], eff: Sequence[float]) -> tuple[float, float]:
    """(eff_max, h) minimizing sum (log eff - log(eff_max * M / (M + h)))^2 over the samples.

    `m` are GEMM rows (tokens), `eff` achieved fractions of peak (> 0)."""
    m_a = np.asarray(m, dtype=np.float64)
    e_a = np.asarray(eff, dtype=np.float64)
    keep = (m_a > 0) & (e_a > 0) & np.isfinite(e_a)
    m_a, e_a = m_a[keep], e_a[keep]
    if m_a.size < 2:
        raise ValueError("the GEMM ramp needs at least two samples with M > 0")
    if np.unique(m_a).size < 2:
        return float(np.exp(np.mean(np.log(e_a)))), 0.0
    grid = np.geomspace(1e-3, 1e6, 601)
    losses = np.array([_log_residual(m_a, e_a, h)[0] for h in grid])
    i = int(np.argmin(losses))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    for _ in range(60):  # golden-section refinement in log h
        a, b = np.log(lo), np.log(hi)
        c1, c2 = b - 0.618 * (b - a), a + 0.618 * (b - a)
        if _log_residual(m_a, e_a, np.exp(c1))[0] < _log_residual(m_a, e_a, np.exp(c2))[0]:
            hi = np.exp(c2)
        else:
            lo = np.exp(c1)
    h = float(np.sqrt(lo * hi))
    return float(np.exp(_log_residual(m_a, e_a, h)[1])), h


def fit_alpha_beta(nbytes: Sequence[float], seconds: Sequence[float]) -> tuple[float, float]:
    """(alpha seconds, bytes per second) of t = alpha + bytes / bw, by least squares."""
    x = np.asarray(nbytes, dtype=np.float64)
    t = np.asarray(seconds, dtype=np.float64)
    if x.size < 2 or np.unique(x).size < 2:
        raise ValueError("the all-reduce fit needs at least two message sizes")
    slope, alpha = np.polyfit(x, t, 1)
    if slope <= 0:
        raise ValueError("all-reduce times do not grow with message size")
    return float(max(alpha, 0.0)), float(1.0 / slope)


def _of(samples: Iterable[Mapping[str, Any]], *kinds: str) -> list[Mapping[str, Any]]:
    return [s for s in samples if s.get("kind") in kinds]


def fit_fractions(samples: Sequence[Mapping[str, Any]], peaks: Mapping[str, Any]) -> dict[str, Any]:
    """Fitted fractions from `samples` against `peaks` ({"hbm_bw_bytes_per_s", "flops":
    {dtype: FLOP/s}, "link_bw_bytes_per_s"}); absent kinds are left out. Values are plain
    floats; `gemm` holds {dtype: {"fraction", "half_tokens", "samples"}}."""
    out: dict[str, Any] = {}
    hbm = peaks.get("hbm_bw_bytes_per_s")
    bw = _of(samples, "copy", "reduce")
    if bw and hbm:
        best = max(bw, key=lambda s: s["bytes_per_s"])
        out["hbm_copy_fraction"] = best["bytes_per_s"] / hbm
        out["hbm_best"] = {"kind": best["kind"], "bytes_per_s": best["bytes_per_s"]}
    gemm: dict[str, Any] = {}
    for dtype in sorted({s["dtype"] for s in _of(samples, "gemm")}):
        peak = peaks.get("flops", {}).get(dtype)
        rows = [s for s in _of(samples, "gemm") if s["dtype"] == dtype]
        if not peak or len(rows) < 2:
            continue
        eff_max, h = fit_gemm_ramp([s["m"] for s in rows], [s["flops_per_s"] / peak for s in rows])
        gemm[dtype] = {"fraction": eff_max, "half_tokens": h, "samples": len(rows)}
    if gemm:
        out["gemm"] = gemm
    bf16 = peaks.get("flops", {}).get("bf16")
    pre = _of(samples, "prefill_attention")
    if pre and bf16:
        out["attention_fraction"] = max(s["flops_per_s"] for s in pre) / bf16
    dec = _of(samples, "decode_attention")
    if dec and hbm:
        out["attention_bw_fraction"] = max(s["bytes_per_s"] for s in dec) / hbm
    ar = _of(samples, "allreduce")
    link = peaks.get("link_bw_bytes_per_s")
    if len(ar) >= 2 and link:
        # bus bytes of a ring all-reduce: 2 (n - 1) / n of the message
        n = float(ar[0].get("gpus", 2))
        alpha, busbw = fit_alpha_beta([s["bytes"] * 2 * (n - 1) / n for s in ar], [s["seconds"] for s in ar])
        out["allreduce_busbw_fraction"] = busbw / link
        out["allreduce_latency_s"] = alpha
    return out


def efficiency_sections(
    fitted: Mapping[str, Any], gpu_id: str, source: str, *, is_gpu: bool
) -> dict[str, dict[str, Any]]:
    """The `gpus` (and, for a GPU, `serving`) sections of a calibration record in the layout of
    objectives/data/efficiency.yaml. The GEMM ramp half-point is global (`serving`), so only a
    GPU record sets it (from bf16, else the first dtype)."""

    def entry(value: float) -> dict[str, Any]:
        return {"value": float(value), "source": source, "calibrated": True}

    gpu: dict[str, Any] = {}
    for key in ("hbm_copy_fraction", "attention_fraction", "attention_bw_fraction"):
        if key in fitted:
            gpu[key] = entry(fitted[key])
    for key in ("allreduce_busbw_fraction", "allreduce_latency_s"):
        if key in fitted:
            gpu[key] = entry(fitted[key])
    if fitted.get("gemm"):
        gpu["gemm_fraction"] = {d: entry(g["fraction"]) for d, g in fitted["gemm"].items()}
    out: dict[str, dict[str, Any]] = {"gpus": {gpu_id: gpu}}
    if is_gpu and fitted.get("gemm"):
        ramp = fitted["gemm"].get("bf16") or next(iter(fitted["gemm"].values()))
        if ramp["half_tokens"] > 0:
            out["serving"] = {"gemm_half_tokens": entry(ramp["half_tokens"])}
    return out
