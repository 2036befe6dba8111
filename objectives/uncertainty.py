"""Prediction intervals from validation residuals: how wrong might a number be?

A residual is r = log(measured / predicted) of one validated row (scripts/validate.py
--intervals). Residuals are grouped by *region*:

    GPU family x model class (dense / moe / mla) x weights dtype x engine x metric

with metric one of `METRICS` (output tokens/s per GPU, TTFT, TPOT). Each region keeps the
split-conformal quantiles of its residuals (`conformal_quantiles`): with n residuals the lower
bound is the floor((n + 1) * 0.1)-th smallest and the upper the ceil((n + 1) * 0.9)-th, so a new
row exchangeable with them falls below / above each bound with probability at most 10 %. Rows of
one model family are not exchangeable with another family's (each family has its own offset),
so the shipped table is fitted family-exchangeable (`IntervalTable.fit` with `groups`): each
region's within-family spread plus the offsets seen between families. The 80 % interval of a
prediction v is

    (p10, p90) = (v * exp(q_lo), v * exp(q_hi)).

For a latency (TTFT, TPOT) the interval is of the latency; throughput's interval also sets the
interval of every cost per token or per request (cost is proportional to 1 / throughput at a
fixed fleet), and TPOT's sets tokens/s per user (1 / TPOT) and end-to-end latency.

Fallback hierarchy (`Region.keys`): when a region has fewer than `MIN_ROWS` residuals the
prediction is *extrapolated* and uses the first parent with at least `MIN_ROWS` — engine
dropped, then weights dtype, then model class, then GPU family (level 1 ... 4: the metric over
everything) — and finally level 5, every metric pooled, where the interval is symmetric:
+-the conformal 80 % quantile of |r|. The stated widening rule: an interval taken `k` levels up
has its half-width (in log space, about its centre) multiplied by 1 + `WIDEN_PER_LEVEL` * k
(0.1: chosen on the leave-one-model-family-out folds of scripts/validate.py --intervals among
0, 0.1, 0.25 with MIN_ROWS 10, 15, 20 — 83 % on the public file, the nearest to 80 %), so the
further the evidence is from the prediction the wider the interval.

Everything here is numpy on plain data; the fitted table lives in data/intervals.yaml.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

COVERAGE = 0.8  # the central interval: p10 .. p90
MIN_ROWS = 10  # a region with fewer residuals is extrapolated (finite 80 % bounds need >= 9)
WIDEN_PER_LEVEL = 0.1  # half-width x (1 + 0.1 k) for an interval taken k levels up
METRICS = ("throughput", "ttft", "tpot")
# what each output column's interval follows, and whether it moves inversely (1 / metric)
FOLLOWS: dict[str, tuple[str, bool]] = {
    "output_tokens_per_s_per_gpu": ("throughput", False),
    "output_tokens_per_s": ("throughput", False),
    "usd_per_million_output_tokens": ("throughput", True),
    "usd_per_request": ("throughput", True),
    "usd_per_million_total_tokens": ("throughput", True),
    "energy_j_per_output_token": ("throughput", True),
    "ttft_s": ("ttft", False),
    "tpot_s": ("tpot", False),
    "e2e_s": ("tpot", False),
    "output_tokens_per_s_per_user": ("tpot", True),
}
# the engine the default efficiency factors were fitted to (TensorRT-LLM's published tables)
DEFAULT_ENGINE = "trtllm"
LEVEL_NAMES = (
    "gpu family, model class, weights, engine",
    "gpu family, model class, weights",
    "gpu family, model class",
    "gpu family",
    "all rows of the metric",
    "all metrics pooled (symmetric)",
)
_FAMILIES = {
    "A100": "ampere",
    "A10G": "ampere",
    "A10": "ampere",
    "H100": "hopper",
    "H200": "hopper",
    "GH200": "hopper",
    "H20": "hopper",
    "B200": "blackwell",
    "GB200": "blackwell",
    "B300": "blackwell",
    "GB300": "blackwell",
    "L40S": "ada",
    "L40": "ada",
    "L4": "ada",
    "MI300X": "cdna3",
    "MI325X": "cdna3",
    "MI355X": "cdna4",
}
_ENGINES = {"tensorrt": "trtllm", "trt": "trtllm", "nim": "trtllm", "vllm": "vllm", "sglang": "sglang"}


def gpu_family(gpu_id: str) -> str:
    """Architecture family of an accelerator id ('H100-SXM' -> 'hopper'; unknown: 'other')."""
    head = str(gpu_id).upper().split("-")[0]
    return _FAMILIES.get(head, "other")


def model_class(n_experts: int, is_mla: bool) -> str:
    """'mla' (multi-head latent attention, DeepSeek-style), 'moe' or 'dense'."""
    if is_mla:
        return "mla"
    return "moe" if n_experts > 0 else "dense"


def weights_class(weights: str) -> str:
    """Weights dtype of a region: fp4 for NVFP4 / MXFP4, fp16 counts as bf16."""
    w = str(weights).lower()
    if "fp4" in w:
        return "fp4"
    if w in ("fp16", "bfloat16", "float16"):
        return "bf16"
    return w.split()[0]


def engine_class(framework: str | None) -> str:
    """Engine of a measurement's framework text ('TensorRT-LLM v0.20' -> 'trtllm')."""
    text = str(framework or "").lower()
    for needle, engine in _ENGINES.items():
        if needle in text:
            return engine
    return "other"


@dataclass(frozen=True)
class Region:
    gpu_family: str
    model_class: str
    weights: str
    engine: str
    metric: str

    def key(self, level: int = 0) -> str:
        """'hopper/dense/fp8/trtllm/throughput' at level 0; levels 1-4 replace the last
        1-4 of the first four parts by '*'; level 5 is '*/*/*/*/*'."""
        parts = [self.gpu_family, self.model_class, self.weights, self.engine]
        kept = max(0, 4 - level)
        parts = parts[:kept] + ["*"] * (4 - kept)
        return "/".join([*parts, "*" if level >= 5 else self.metric])

    def keys(self) -> list[str]:
        return [self.key(level) for level in range(len(LEVEL_NAMES))]

    @classmethod
    def parse(cls, key: str) -> Region:
        return cls(*key.split("/"))


def conformal_quantiles(residuals: Sequence[float] | np.ndarray, coverage: float = COVERAGE) -> tuple[float, float]:
    """Split-conformal (lower, upper) bounds of an equal-tailed `coverage` interval: the
    floor((n+1)a)-th and ceil((n+1)(1-a))-th order statistics, a = (1 - coverage) / 2. With
    too few residuals for a finite bound, (-inf, inf)."""
    r = np.sort(np.asarray(residuals, dtype=np.float64))
    n = r.size
    a = round((1.0 - coverage) / 2.0, 9)  # 0.1, not 0.09999999999999998
    lo_k = math.floor((n + 1) * a + 1e-9)
    hi_k = math.ceil((n + 1) * (1.0 - a) - 1e-9)
    if n == 0 or lo_k < 1 or hi_k > n:
        return -math.inf, math.inf
    return float(r[lo_k - 1]), float(r[hi_k - 1])


def conformal_radius(residuals: Sequence[float] | np.ndarray, coverage: float = COVERAGE) -> float:
    """The ceil((n+1) coverage)-th smallest |r|: a symmetric interval +-radius (inf if too few)."""
    r = np.sort(np.abs(np.asarray(residuals, dtype=np.float64)))
    k = math.ceil((r.size + 1) * coverage - 1e-9)
    return float(r[k - 1]) if 1 <= k <= r.size else math.inf


@dataclass(frozen=True)
class Interval:
    """The log-space bounds one prediction gets, and the evidence behind them."""

    lo: float  # log(p10 / value)
    hi: float  # log(p90 / value)
    region: str  # the prediction's own region (level 0)
    region_rows: int  # residuals in it
    used: str  # the region whose quantiles were used
    used_rows: int
    level: int
    extrapolated: bool
    widen: float  # the half-width factor applied

    def bounds(self, value: float, inverse: bool = False) -> tuple[float | None, float | None]:
        """(p10, p90) of `value` (None where it is not finite); `inverse`: a quantity
        proportional to 1 / the metric, so the bounds swap."""
        if value is None or not np.isfinite(value):
            return None, None
        if inverse:
            return float(value * math.exp(-self.hi)), float(value * math.exp(-self.lo))
        return float(value * math.exp(self.lo)), float(value * math.exp(self.hi))

    def evidence(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "region_rows": self.region_rows,
            "used": self.used,
            "used_rows": self.used_rows,
            "level": self.level,
            "level_name": LEVEL_NAMES[self.level],
            "widen": round(self.widen, 3),
            "extrapolated": self.extrapolated,
        }


@dataclass
class IntervalTable:
    """Fitted quantiles per region key ({key: {"n", "lo", "hi"}}; level-5 keys hold "radius")."""

    regions: dict[str, dict[str, float]]
    source: dict[str, Any] = field(default_factory=dict)
    min_rows: int = MIN_ROWS
    widen_per_level: float = WIDEN_PER_LEVEL
    coverage: float = COVERAGE

    @classmethod
    def fit(
        cls,
        regions: Sequence[Region],
        residuals: Sequence[float],
        groups: Sequence[str] | None = None,
        *,
        source: Mapping[str, Any] | None = None,
        min_rows: int = MIN_ROWS,
        widen_per_level: float = WIDEN_PER_LEVEL,
        coverage: float = COVERAGE,
    ) -> IntervalTable:
        """Quantiles of every region key at every level that has residuals.

        `groups` (the model family of each residual) makes the intervals family-exchangeable:
        a new model family brings its own offset, which rows of other families cannot show. Each
        region's scores are then r - (its family's median in the region) + (the region's centre,
        the median of its family medians) + d, for every d in the pool of family offsets (family
        median - centre, over all level-0 regions with two families or more), and the conformal
        order statistics are taken over that set at the ranks of its n rows. Without `groups`
        the scores are the residuals themselves (plain split conformal)."""
        regions, r = list(regions), np.asarray(residuals, dtype=np.float64)
        fam = list(groups) if groups is not None else ["-"] * len(regions)
        keep = np.isfinite(r)
        members: dict[str, list[int]] = {}
        for i, region in enumerate(regions):
            if keep[i]:
                for key in region.keys():
                    members.setdefault(key, []).append(i)
        offsets = _family_offsets(members, r, fam) if groups is not None else np.zeros(1)
        out: dict[str, dict[str, float]] = {}
        for key, rows in sorted(members.items()):
            scores = _scores(r[rows], [fam[i] for i in rows], offsets)
            n = len(rows)
            if key.endswith("/*"):
                out[key] = {"n": n, "radius": _order_stat(np.abs(scores), n, math.ceil((n + 1) * coverage - 1e-9))}
            else:
                a = round((1.0 - coverage) / 2.0, 9)  # 0.1, not 0.09999999999999998
                lo = _order_stat(scores, n, math.floor((n + 1) * a + 1e-9))
                hi = _order_stat(scores, n, math.ceil((n + 1) * (1.0 - a) - 1e-9))
                lo = -math.inf if math.isinf(lo) or math.isinf(hi) else lo
                hi = math.inf if math.isinf(lo) else hi
                out[key] = {"n": n, "lo": lo, "hi": hi, "median": float(np.median(r[rows]))}
        return cls(out, dict(source or {}), min_rows, widen_per_level, coverage)

    def lookup(self, region: Region) -> Interval:
        """The interval of a prediction in `region` through the fallback hierarchy."""
        keys = region.keys()
        own = int(self.regions.get(keys[0], {}).get("n", 0))
        for level, key in enumerate(keys):
            entry = self.regions.get(key)
            if entry is None or entry["n"] < self.min_rows:
                continue
            if "radius" in entry:
                lo, hi = -float(entry["radius"]), float(entry["radius"])
            else:
                lo, hi = float(entry["lo"]), float(entry["hi"])
            if not (math.isfinite(lo) and math.isfinite(hi)):
                continue
            widen = 1.0 + self.widen_per_level * level
            centre, half = (lo + hi) / 2.0, (hi - lo) / 2.0
            return Interval(
                lo=centre - half * widen,
                hi=centre + half * widen,
                region=keys[0],
                region_rows=own,
                used=key,
                used_rows=int(entry["n"]),
                level=level,
                extrapolated=own < self.min_rows,
                widen=widen,
            )
        # no evidence at all: a factor-of-two band, flagged
        return Interval(-math.log(2.0), math.log(2.0), keys[0], own, "none", 0, len(keys) - 1, True, 1.0)

    def interval(self, value: float, region: Region) -> tuple[float | None, float | None]:
        """(p10, p90) of a prediction `value` of `region.metric`."""
        return self.lookup(region).bounds(value)

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return round(float(v), 5) if math.isfinite(v) else None

        return {
            "source": self.source,
            "coverage": self.coverage,
            "min_rows": self.min_rows,
            "widen_per_level": self.widen_per_level,
            "regions": {
                k: {f: (int(v) if f == "n" else clean(v)) for f, v in e.items()} for k, e in self.regions.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IntervalTable:
        def num(v: Any) -> float:
            return math.inf if v is None else float(v)

        regions = {}
        for key, entry in (data.get("regions") or {}).items():
            e = {f: (int(v) if f == "n" else num(v)) for f, v in entry.items()}
            if "lo" in e and entry.get("lo") is None:
                e["lo"] = -math.inf
            regions[str(key)] = e
        return cls(
            regions,
            dict(data.get("source") or {}),
            int(data.get("min_rows", MIN_ROWS)),
            float(data.get("widen_per_level", WIDEN_PER_LEVEL)),
            float(data.get("coverage", COVERAGE)),
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> IntervalTable:
        """The table in `path`, or the shipped data/intervals.yaml (cached)."""
        if path is not None:
            return cls.from_dict(yaml.safe_load(Path(path).read_text()))
        global _SHIPPED
        if _SHIPPED is None:
            text = resources.files("objectives").joinpath("data/intervals.yaml").read_text()
            _SHIPPED = cls.from_dict(yaml.safe_load(text))
        return _SHIPPED

    def write(self, path: str | Path, header: str = "") -> None:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, width=120)
        Path(path).write_text(header + text)


_SHIPPED: IntervalTable | None = None


def _family_offsets(members: Mapping[str, list[int]], r: np.ndarray, fam: Sequence[str]) -> np.ndarray:
    """Family median - region centre, pooled over level-0 regions with two families or more."""
    out: list[float] = []
    for key, rows in members.items():
        if "*" in key:
            continue
        by: dict[str, list[float]] = {}
        for i in rows:
            by.setdefault(fam[i], []).append(float(r[i]))
        if len(by) < 2:
            continue
        medians = np.array([np.median(v) for v in by.values()])
        out += list(medians - np.median(medians))
    return np.asarray(out) if out else np.zeros(1)


def _scores(r: np.ndarray, fam: Sequence[str], offsets: np.ndarray) -> np.ndarray:
    """The nonconformity scores of one region (see `IntervalTable.fit`)."""
    if offsets.size == 1 and offsets[0] == 0.0 and len(set(fam)) <= 1:
        return r
    by: dict[str, list[float]] = {}
    for value, f in zip(r, fam, strict=True):
        by.setdefault(f, []).append(float(value))
    medians = {f: float(np.median(v)) for f, v in by.items()}
    centre = float(np.median(list(medians.values())))
    within = r - np.array([medians[f] for f in fam])
    return (centre + within[:, None] + offsets[None, :]).ravel()


def _order_stat(scores: np.ndarray, n: int, k: int) -> float:
    """The k-th of n order statistics of `scores` (n rows, each possibly expanded into several
    scores: the (k-1)/(n-1) quantile then); inf outside 1..n."""
    if n == 0 or k < 1 or k > n:
        return math.inf if k > n else -math.inf
    if scores.size == n:
        return float(np.sort(scores)[k - 1])
    return float(np.quantile(scores, (k - 1) / (n - 1) if n > 1 else 0.5))


def metric_intervals(
    table: IntervalTable,
    values: Mapping[str, Any],
    *,
    gpu_family: str,
    model_class: str,
    weights: str,
    engine: str = DEFAULT_ENGINE,
    columns: Iterable[str] | None = None,
) -> dict[str, Any]:
    """{"intervals": {column: {"p10", "p90"}}, "evidence": {metric: ...}, "extrapolated": bool,
    "extrapolated_metrics": [...]} for the columns of `values` that `FOLLOWS` knows (all of
    them, or `columns`). A column whose value is missing gets no interval."""
    looks = {m: table.lookup(Region(gpu_family, model_class, weights_class(weights), engine, m)) for m in METRICS}
    out: dict[str, dict[str, float | None]] = {}
    for column in columns if columns is not None else FOLLOWS:
        if column not in FOLLOWS or column not in values:
            continue
        metric, inverse = FOLLOWS[column]
        v = values[column]
        if v is None:
            continue
        p10, p90 = looks[metric].bounds(float(v), inverse)
        if p10 is not None:
            out[column] = {"p10": p10, "p90": p90}
    flagged = [m for m, iv in looks.items() if iv.extrapolated]
    return {
        "intervals": out,
        "evidence": {m: iv.evidence() for m, iv in looks.items()},
        "extrapolated": bool(flagged),
        "extrapolated_metrics": flagged,
    }


HIGHER_IS_BETTER = frozenset({"output_tokens_per_s_per_gpu", "output_tokens_per_s", "output_tokens_per_s_per_user"})


def pessimistic_factors(
    table: IntervalTable, *, gpu_family: str, model_class: str, weights: str, engine: str = DEFAULT_ENGINE
) -> dict[str, float]:
    """{column: factor} taking a point value to its pessimistic bound (`risk: p90`): the p90
    bound of a latency or cost (factor >= 1), the p10 of a throughput (factor <= 1). A bound on
    the optimistic side of the point (a model that under-predicts throughput) is clipped to the
    point, so the pessimistic value is never better than the point value."""
    looks = {m: table.lookup(Region(gpu_family, model_class, weights_class(weights), engine, m)) for m in METRICS}
    out = {}
    for column, (metric, inverse) in FOLLOWS.items():
        p10, p90 = looks[metric].bounds(1.0, inverse)
        if column in HIGHER_IS_BETTER:
            out[column] = min(1.0, float(p10))  # type: ignore[arg-type]
        else:
            out[column] = max(1.0, float(p90))  # type: ignore[arg-type]
    return out
