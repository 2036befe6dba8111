"""Evaluate a large ConfigBatch chunk by chunk and reduce the results to running summaries.

`evaluate_in_chunks` slices a batch (views, no copies) and yields the metrics of each slice, so
only one chunk's intermediate arrays are alive at a time. `SweepSummary` / `summarize_chunks`
fold that stream into a few scalars (counts, the cheapest and the highest-throughput feasible
configuration) without keeping any per-configuration metrics: memory stays bounded by the chunk
size however many configurations are evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from objectives.batch import ConfigBatch
from objectives.serving import REASONS, ServingMetrics, evaluate


def evaluate_in_chunks(batch: ConfigBatch, chunk: int = 16384, **kwargs: Any) -> Iterator[tuple[slice, ServingMetrics]]:
    """Yield (rows, metrics) for consecutive slices of at most `chunk` rows of `batch`.

    `rows` indexes `batch`; `kwargs` are passed to `objectives.serving.evaluate`. Slicing makes
    views, so the peak extra memory is that of evaluating one chunk (about a few kB per row).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n = len(batch)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        yield rows, evaluate(batch.take(rows), **kwargs)


@dataclass
class SweepSummary:
    """Running summary of a sweep; O(1) memory in the number of configurations.

    Row indices are global: the position of the configuration in the whole stream.
    """

    evaluated: int = 0  # configurations seen
    feasible: int = 0  # configurations with reason code 0
    reason_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(REASONS), dtype=np.int64))
    min_usd_per_million_tokens: float = float("inf")  # USD per million output tokens
    min_usd_row: int = -1
    max_tokens_per_s_per_gpu: float = 0.0  # output tokens/s per GPU
    max_tokens_row: int = -1

    def update(self, metrics: ServingMetrics, start: int = 0) -> None:
        """Fold in the metrics of one chunk whose first row has global index `start`."""
        n = int(metrics.feasible.shape[0])
        self.evaluated += n
        self.feasible += int(np.count_nonzero(metrics.feasible))
        self.reason_counts += np.bincount(metrics.reason_code, minlength=len(REASONS))[: len(REASONS)]
        if n == 0:
            return
        # infeasible rows are NaN: replace by +inf / -inf so they never win
        cost = np.where(
            np.isfinite(metrics.usd_per_million_output_tokens), metrics.usd_per_million_output_tokens, np.inf
        )
        i = int(np.argmin(cost))
        if cost[i] < self.min_usd_per_million_tokens:
            self.min_usd_per_million_tokens = float(cost[i])
            self.min_usd_row = start + i
        tps = np.where(np.isfinite(metrics.output_tokens_per_s_per_gpu), metrics.output_tokens_per_s_per_gpu, -np.inf)
        j = int(np.argmax(tps))
        if tps[j] > self.max_tokens_per_s_per_gpu:
            self.max_tokens_per_s_per_gpu = float(tps[j])
            self.max_tokens_row = start + j

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python view (JSON-serialisable); reasons keyed by their text."""
        return {
            "evaluated": self.evaluated,
            "feasible": self.feasible,
            "reasons": {REASONS[k] or "feasible": int(c) for k, c in enumerate(self.reason_counts) if c},
            "min_usd_per_million_tokens": self.min_usd_per_million_tokens,
            "min_usd_row": self.min_usd_row,
            "max_tokens_per_s_per_gpu": self.max_tokens_per_s_per_gpu,
            "max_tokens_row": self.max_tokens_row,
        }


def summarize_chunks(
    stream: Iterable[tuple[slice, ServingMetrics]],
    summary: SweepSummary | None = None,
    offset: int = 0,
) -> SweepSummary:
    """Reduce a stream of (rows, metrics) chunks into `summary` (a new one if None).

    `offset` is added to each slice's start to give global row indices (for streams over
    several batches). Each chunk's metrics are dropped once folded in.
    """
    out = SweepSummary() if summary is None else summary
    for rows, metrics in stream:
        out.update(metrics, offset + (rows.start or 0))
    return out
