"""A workload: request lengths, arrival rate and latency targets (SLOs).

Lengths are fixed or drawn from a distribution (lognormal by mean and coefficient of
variation, uniform, or an empirical list); the analytic model uses their means, the simulator
samples them. Arrival rate is requests per second (None = offline: all requests queued).
Each SLO bounds one latency metric at a percentile.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

LatencyMetric = Literal["ttft", "tpot", "e2e"]


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
