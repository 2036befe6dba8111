"""Fit the cost model's global efficiency parameters to end-to-end measurements.

Only the `serving` parameters of objectives/data/efficiency.yaml are fitted — the same numbers
for every model and GPU — never per-model or per-row terms. The loss is the mean absolute log
error |log(predicted / measured)| over the rows (robust, symmetric in over- and
under-prediction). Parameters are searched in log space between bounds with Nelder-Mead
(numpy only), restarted once from the best point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from objectives.efficiency import EfficiencyModel
from search.calibration.validation import build_rows, predict_batch

# Parameter -> (lower, upper) bounds of the search.
BOUNDS: dict[str, tuple[float, float]] = {
    "bw_factor": (0.3, 1.15),
    "kv_bw_factor": (0.2, 1.15),
    "link_factor": (0.1, 1.5),
    "gemm_factor": (0.3, 1.2),
    "attention_factor": (0.3, 3.0),
    "gemm_half_tokens": (1.0, 2048.0),
    "roofline_sharpness": (1.0, 12.0),
    "allreduce_latency_scale": (0.05, 4.0),
    "layer_overhead_s": (1e-7, 2e-4),
    "step_overhead_s": (1e-5, 2e-2),
    "seq_overhead_s": (1e-8, 2e-5),
    "runtime_reserve_bytes": (0.5e9, 12e9),
}


def nelder_mead(
    f: Callable[[np.ndarray], float], x0: np.ndarray, step: float = 0.3, max_evals: int = 600, tol: float = 1e-6
) -> tuple[np.ndarray, float]:
    """Minimize f from x0 (standard reflection / expansion / contraction / shrink)."""
    n = x0.size
    simplex = np.vstack([x0] + [x0 + step * np.eye(n)[i] for i in range(n)])
    values = np.array([f(x) for x in simplex])
    evals = n + 1
    while evals < max_evals:
        order = np.argsort(values)
        simplex, values = simplex[order], values[order]
        if abs(values[-1] - values[0]) < tol:
            break
        centroid = simplex[:-1].mean(axis=0)
        xr = centroid + (centroid - simplex[-1])
        fr = f(xr)
        evals += 1
        if fr < values[0]:
            xe = centroid + 2.0 * (centroid - simplex[-1])
            fe = f(xe)
            evals += 1
            simplex[-1], values[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = xr, fr
        else:
            xc = centroid + 0.5 * (simplex[-1] - centroid)
            fc = f(xc)
            evals += 1
            if fc < values[-1]:
                simplex[-1], values[-1] = xc, fc
            else:
                simplex[1:] = simplex[0] + 0.5 * (simplex[1:] - simplex[0])
                values[1:] = [f(x) for x in simplex[1:]]
                evals += n
    best = int(np.argmin(values))
    return simplex[best], float(values[best])


@dataclass(frozen=True)
class FitResult:
    params: dict[str, float]
    loss_before: float
    loss_after: float
    evaluations: int


def log_error(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Mean |log(predicted / measured)|; rows the model cannot run count as a large error."""
    ratio = np.where(np.isfinite(predicted) & (predicted > 0), predicted / measured, np.e**2)
    return float(np.mean(np.abs(np.log(ratio))))


Progress = Callable[[int, int], None]  # (loss evaluations done, at most this many)


def fit_serving_params(
    rows: Sequence[dict],
    base: EfficiencyModel,
    names: Sequence[str] = tuple(BOUNDS),
    max_evals: int = 800,
    progress: Progress | None = None,
) -> tuple[EfficiencyModel, FitResult]:
    """Fit `names` of the serving parameters of `base` to `rows`; returns the fitted model.
    `progress(done, total)` is called after each loss evaluation, and with done == total at the end."""
    unknown = set(names) - set(BOUNDS)
    if unknown:
        raise ValueError(f"cannot fit {', '.join(sorted(unknown))}; fittable: {', '.join(BOUNDS)}")
    used, _, _ = build_rows(rows, base)
    if not used:
        raise ValueError("no usable rows to fit")
    measured = np.array([float(r["value"]) for r in used])
    lo = np.log([BOUNDS[n][0] for n in names])
    hi = np.log([BOUNDS[n][1] for n in names])
    count = {"evals": 0}
    total = 1 + 2 * (max_evals // 2)

    def model_for(x: np.ndarray) -> EfficiencyModel:
        values = np.exp(np.clip(x, lo, hi))
        return with_serving(base, dict(zip(names, values.tolist(), strict=True)))

    def loss(x: np.ndarray) -> float:
        count["evals"] += 1
        if progress is not None:
            progress(min(count["evals"], total), total)
        penalty = float(np.sum(np.maximum(x - hi, 0) + np.maximum(lo - x, 0)))
        _, batch, _ = build_rows(used, model_for(x))
        pred, _ = predict_batch(used, batch)  # type: ignore[arg-type]
        return log_error(pred, measured) + penalty

    x0 = np.log([base.serving[n] for n in names])
    before = loss(x0)
    x, fx = nelder_mead(loss, x0, max_evals=max_evals // 2)
    x, fx = nelder_mead(loss, x, step=0.1, max_evals=max_evals // 2)
    fitted = model_for(x)
    if progress is not None:
        progress(total, total)  # the simplex may converge before the budget
    params = {n: fitted.serving[n] for n in names}
    return fitted, FitResult(params=params, loss_before=before, loss_after=fx, evaluations=count["evals"])


def with_serving(base: EfficiencyModel, values: Mapping[str, float]) -> EfficiencyModel:
    """`base` with some serving parameters replaced (keeps the calibration name)."""
    data = base.data
    for key, value in values.items():
        data["serving"][key] = {"value": float(value), "source": "fitted"}
    return EfficiencyModel(data, calibration_name=base.calibration_name)
