"""A workload: request lengths, arrival rate and latency targets (SLOs).

Lengths are fixed or drawn from a distribution (lognormal by mean and coefficient of
variation, uniform, or an empirical list); the steady-state analytic model uses their means, the
queueing model (`objectives.queueing`) their quantiles and tail (`quantile`, `nodes`), the
simulator samples them. Arrival rate is requests per second (None = offline: all requests queued).
Each SLO bounds one latency metric at a percentile.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

LatencyMetric = Literal["ttft", "tpot", "e2e"]

# Probability bins of `LengthDistribution.nodes`: equal bins of 0.1 up to the 90th percentile,
# 0.01 up to the 99th, then 0.003 up to the 99.9th and two bins in the last 0.1% — the tail
# that sets p99 latencies gets as many nodes as the body.
_NODE_EDGES = np.concatenate(
    [np.linspace(0.0, 0.9, 10), np.linspace(0.9, 0.99, 10)[1:], np.linspace(0.99, 0.999, 4)[1:], [0.9995, 1.0]]
)


def _norm_ppf(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9),
    for 0 < p < 1."""
    p = np.asarray(p, dtype=np.float64)
    a = (
        -39.69683028665376,
        220.9460984245205,
        -275.9285104469687,
        138.3577518672690,
        -30.66479806614716,
        2.506628277459239,
    )
    bb = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572)
    c = (
        -7.784894002430293e-03,
        -0.3223964580411365,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    )
    d = (7.784695709041462e-03, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    lo = 0.02425
    q = np.sqrt(-2.0 * np.log(np.where(p < 0.5, p, 1.0 - p).clip(1e-300)))
    tail = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
        (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0
    )
    tail = np.where(p < 0.5, tail, -tail)
    r = p - 0.5
    r2 = r * r
    mid = (
        (((((a[0] * r2 + a[1]) * r2 + a[2]) * r2 + a[3]) * r2 + a[4]) * r2 + a[5])
        * r
        / (((((bb[0] * r2 + bb[1]) * r2 + bb[2]) * r2 + bb[3]) * r2 + bb[4]) * r2 + 1.0)
    )
    return np.where((p > lo) & (p < 1.0 - lo), mid, tail)


class LengthDistribution(BaseModel):
    """Tokens per request: `fixed` (= mean), `lognormal` (mean, cv), `uniform` (low, high)
    or `empirical` (values)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["fixed", "lognormal", "uniform", "empirical"] = "fixed"
    mean: float | None = Field(default=None, gt=0)
    cv: float = Field(default=0.0, ge=0)
    low: int | None = Field(default=None, ge=1)
    high: int | None = Field(default=None, ge=1)
    values: list[int] | None = None

    @model_validator(mode="after")
    def _check(self) -> LengthDistribution:
        if self.kind in ("fixed", "lognormal") and self.mean is None:
            raise ValueError(f"a {self.kind} length needs `mean`")
        if self.kind == "uniform" and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError("a uniform length needs `low` <= `high`")
        if self.kind == "empirical" and not self.values:
            raise ValueError("an empirical length needs a non-empty `values` list")
        if self.kind == "empirical" and self.values and min(self.values) < 1:
            raise ValueError("empirical lengths must be >= 1 token")
        return self

    @classmethod
    def fixed(cls, tokens: int) -> LengthDistribution:
        return cls(kind="fixed", mean=float(tokens))

    def expected(self) -> float:
        """Mean length in tokens."""
        if self.kind == "uniform":
            return (float(self.low) + float(self.high)) / 2.0  # type: ignore[arg-type]
        if self.kind == "empirical":
            return float(np.mean(self.values))
        return float(self.mean)  # type: ignore[arg-type]

    def quantile(self, q: np.ndarray | float) -> np.ndarray:
        """Tokens at probability `q` (0..1; an array or a float), as a float array. Lognormal
        lengths use the exact lognormal quantile (not rounded to integers); uniform and
        empirical lengths are the discrete distributions `sample` draws from."""
        q = np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0)
        if self.kind == "fixed" or (self.kind == "lognormal" and self.cv == 0):
            return np.full(q.shape, self.expected())
        if self.kind == "lognormal":
            sigma = np.sqrt(np.log1p(self.cv**2))
            mu = np.log(self.expected()) - sigma**2 / 2.0
            z = _norm_ppf(np.clip(q, 1e-12, 1.0 - 1e-12))
            return np.maximum(np.exp(mu + sigma * z), 1.0)
        if self.kind == "uniform":
            low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
            return np.minimum(low + np.floor(q * (high - low + 1.0)), high)
        return np.quantile(np.asarray(self.values, dtype=np.float64), q, method="inverted_cdf")

    def nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """A quadrature of the distribution: (tokens, probabilities summing to 1), the tokens at
        the probability midpoints of bins that are finer in the upper tail (`_NODE_EDGES`); one
        node for a fixed length. Expectations over lengths are sums over these nodes."""
        if self.kind == "fixed" or (self.kind == "lognormal" and self.cv == 0):
            return np.array([self.expected()]), np.array([1.0])
        mid = 0.5 * (_NODE_EDGES[1:] + _NODE_EDGES[:-1])
        return self.quantile(mid), np.diff(_NODE_EDGES)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` lengths (integers >= 1)."""
        if self.kind == "fixed" or (self.kind == "lognormal" and self.cv == 0):
            out = np.full(n, self.expected())
        elif self.kind == "lognormal":
            sigma2 = np.log1p(self.cv**2)
            mu = np.log(self.expected()) - sigma2 / 2.0
            out = rng.lognormal(mu, np.sqrt(sigma2), n)
        elif self.kind == "uniform":
            out = rng.integers(self.low, self.high + 1, n)  # type: ignore[operator]
        else:
            out = rng.choice(np.asarray(self.values), n)
        return np.maximum(np.rint(out), 1).astype(np.int64)


class SLO(BaseModel):
    """`metric` at `percentile` must stay at or below `max_s` seconds."""

    model_config = ConfigDict(extra="forbid")

    metric: LatencyMetric
    max_s: float = Field(gt=0)
    percentile: float = Field(default=50.0, gt=0, le=100)


class Workload(BaseModel):
    """Traffic shape and targets of a serving deployment."""

    model_config = ConfigDict(extra="forbid")

    name: str = "custom"
    input_tokens: LengthDistribution
    output_tokens: LengthDistribution
    arrival_rate_per_s: float | None = Field(default=None, gt=0)
    slos: list[SLO] = Field(default_factory=list)
    description: str = ""

    @property
    def isl(self) -> float:
        return self.input_tokens.expected()

    @property
    def osl(self) -> float:
        return self.output_tokens.expected()

    @property
    def offline(self) -> bool:
        return self.arrival_rate_per_s is None

    def slo(self, metric: LatencyMetric) -> SLO | None:
        """The SLO on `metric`, if any."""
        return next((s for s in self.slos if s.metric == metric), None)
