"""Measured kernel surfaces: achieved time of each kernel class as a function of its shape.

A `KernelRecord` summarizes the collected latencies of one kernel class on one GPU under one
engine release (e.g. fp8 GEMMs on H200 with TensorRT-LLM 1.3.0rc20) as a small grid: the
logarithm of the time is tabulated over the logarithm of a few shape axes and evaluated by
multilinear interpolation in that log space (np.interp generalized to several axes; above the
last grid point the last segment's slope is extended, below the first the edge value is held).
Time is a product of power laws of the shape in each regime (latency floor, bandwidth-bound,
compute-bound), so it is close to piecewise linear in log space and a coarse grid fits it.

Surface shapes (axes, in this order; every axis is a count, bytes or elements):

    gemm                  m, n, k                    (C[m, n] = A[m, k] @ B[k, n])
    context_attention     batch_heads, isl, gqa_ratio, head_dim
                          batch_heads = batch * query heads; gqa_ratio = query / KV heads
    generation_attention  batch_kv_heads, context, gqa_ratio, head_dim
                          one query token per sequence attending `context` cached tokens
    moe                   tokens_per_gpu, experts_per_gpu, expert_params
                          routed token copies per GPU (tokens * top-k / EP), local experts
                          (experts / EP) and elements of one expert's up (gate) or down
                          matrix on this GPU (hidden * intermediate / moe TP); gated MLP,
                          balanced routing
    allreduce             num_gpus, message_bytes    (also nccl_allreduce, nccl_alltoall, ...)

Each record carries where its rows came from (`source`: package, version, engine, engine
version, GPU, table, filters), the collection metadata shipped with them, and how well the grid
reproduces those rows (`fit`: rows, median / p90 / max |predicted / measured - 1|, and a small
`sample` of the rows verbatim, [axis values..., measured time_s], so the committed grid can be
checked without the database).

Records live as JSON under objectives/data/kernels/ (one file per GPU and engine; written by
`servesweep kernels import`). This module is numpy only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

OP_AXES: dict[str, tuple[str, ...]] = {
    "gemm": ("m", "n", "k"),
    "context_attention": ("batch_heads", "isl", "gqa_ratio", "head_dim"),
    "generation_attention": ("batch_kv_heads", "context", "gqa_ratio", "head_dim"),
    "moe": ("tokens_per_gpu", "experts_per_gpu", "expert_params"),
    "allreduce": ("num_gpus", "message_bytes"),
    "nccl_allreduce": ("num_gpus", "message_bytes"),
    "nccl_allgather": ("num_gpus", "message_bytes"),
    "nccl_reducescatter": ("num_gpus", "message_bytes"),
    "nccl_alltoall": ("num_gpus", "message_bytes"),
}
FORMAT_VERSION = 1


class KernelRecordError(ValueError):
    """A kernel record file or lookup that cannot be used."""


def _sig(x: float, digits: int = 4) -> float:
    """`x` rounded to `digits` significant digits (what the JSON files store)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{digits}g}")


def interp_log_grid(
    log_axes: Sequence[np.ndarray], log_values: np.ndarray, log_points: Sequence[np.ndarray]
) -> np.ndarray:
    """Multilinear interpolation of `log_values` (shape = axis lengths) at `log_points` (one
    array per axis, broadcast together). Below an axis' first knot the edge value is held;
    above its last knot the last segment is extended (linear extrapolation in log space)."""
    pts = np.broadcast_arrays(*[np.asarray(p, dtype=np.float64) for p in log_points])
    shape = pts[0].shape
    idx_w: list[tuple[np.ndarray, np.ndarray, int]] = []
    flat = log_values.ravel()
    strides = [int(np.prod(log_values.shape[i + 1 :])) for i in range(len(log_axes))]
    for axis, x, stride in zip(log_axes, pts, strides, strict=True):
        if axis.size == 1:
            idx_w.append((np.zeros(shape, dtype=np.int64), np.zeros(shape), 0))
            continue
        i = np.clip(np.searchsorted(axis, x, side="right") - 1, 0, axis.size - 2)
        lo = axis[i]
        w = np.maximum((x - lo) / (axis[i + 1] - lo), 0.0)
        idx_w.append((i * stride, w, stride))
    out = np.zeros(shape)
    n = len(idx_w)
    for corner in range(1 << n):
        offset = np.zeros(shape, dtype=np.int64)
        weight = np.ones(shape)
        for d, (base, w, stride) in enumerate(idx_w):
            if (corner >> d) & 1:
                if stride == 0:
                    weight = weight * 0.0
                    continue
                offset = offset + base + stride
                weight = weight * w
            else:
                offset = offset + base
                weight = weight * (1.0 - w)
        out = out + weight * flat[offset]
    return out


@dataclass(frozen=True)
class KernelRecord:
    """One measured surface: time_s of kernel class `op` in `dtype` on `gpu` under `engine`."""

    name: str
    gpu: str  # catalog accelerator id (objectives/data/accelerators.yaml)
    engine: str  # trtllm | vllm | sglang | nccl | probe
    engine_version: str
    op: str
    dtype: str
    axes: tuple[str, ...]
    grid: tuple[np.ndarray, ...]  # knot values per axis (natural units)
    time_s: np.ndarray  # time at the knots, shape = tuple(len(g) for g in grid)
    source: dict[str, Any] = field(default_factory=dict)
    collection: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self) -> None:
        expected = OP_AXES.get(self.op)
        if expected is not None and tuple(self.axes) != expected:
            raise KernelRecordError(f"{self.name}: op {self.op} has axes {expected}, record has {tuple(self.axes)}")
        shape = tuple(len(g) for g in self.grid)
        if self.time_s.shape != shape:
            raise KernelRecordError(f"{self.name}: values of shape {self.time_s.shape}, grid {shape}")
        for a, g in zip(self.axes, self.grid, strict=True):
            if np.any(g <= 0) or np.any(np.diff(g) <= 0):
                raise KernelRecordError(f"{self.name}: axis {a} must be positive and increasing")
        if np.any(~np.isfinite(self.time_s)) or np.any(self.time_s <= 0):
            raise KernelRecordError(f"{self.name}: times must be positive and finite")
        object.__setattr__(self, "_log_grid", tuple(np.log(g) for g in self.grid))
        object.__setattr__(self, "_log_time", np.log(self.time_s))

    @property
    def basis(self) -> str:
        """How an estimate names this record: `kernel-db <engine> <version>` (or probe ...)."""
        if self.engine == "probe":
            return f"probe {self.name}"
        if self.source.get("scaled_from_gpu"):  # objectives.kernel_timing.scaled_record
            return f"scaled from {self.source['scaled_from_gpu']} (kernel-db {self.engine} {self.engine_version})"
        return f"kernel-db {self.engine} {self.engine_version}"

    def time_at(self, *coords: np.ndarray | float) -> np.ndarray:
        """Interpolated time (s) at the shape `coords`, one array per axis (broadcast)."""
        if len(coords) != len(self.axes):
            raise KernelRecordError(f"{self.name}: expects {len(self.axes)} coordinates {self.axes}")
        logs = [np.log(np.maximum(np.asarray(c, dtype=np.float64), 1e-30)) for c in coords]
        return np.exp(interp_log_grid(self._log_grid, self._log_time, logs))  # type: ignore[attr-defined]

    def time_for(self, **coords: np.ndarray | float) -> np.ndarray:
        """`time_at` with the coordinates by axis name."""
        missing = [a for a in self.axes if a not in coords]
        if missing:
            raise KernelRecordError(f"{self.name}: missing coordinates {', '.join(missing)}")
        return self.time_at(*(coords[a] for a in self.axes))

    def sample_errors(self) -> np.ndarray:
        """|predicted / measured - 1| on the rows kept in `fit["sample"]` (empty if none)."""
        sample = np.asarray(self.fit.get("sample", []), dtype=np.float64)
        if sample.size == 0:
            return np.zeros(0)
        pred = self.time_at(*(sample[:, j] for j in range(len(self.axes))))
        return np.abs(pred / sample[:, -1] - 1.0)

    def scaled(self, factor: float, gpu: str, basis_note: str) -> KernelRecord:
        """The same surface with every time multiplied by `factor`, for another GPU."""
        return KernelRecord(
            name=f"{gpu}/{basis_note}/{self.op}/{self.dtype}",
            gpu=gpu,
            engine=self.engine,
            engine_version=self.engine_version,
            op=self.op,
            dtype=self.dtype,
            axes=self.axes,
            grid=self.grid,
            time_s=self.time_s * factor,
            source={**self.source, "scaled_from": self.name, "scale": factor},
            collection=self.collection,
            fit=self.fit,
            note=f"{basis_note}: {self.name} times x{factor:.4g}",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "gpu": self.gpu,
            "engine": self.engine,
            "engine_version": self.engine_version,
            "op": self.op,
            "dtype": self.dtype,
            "axes": list(self.axes),
            "grid": [[_sig(float(v), 6) for v in g] for g in self.grid],
            "time_s": [_sig(float(v)) for v in self.time_s.ravel()],
            "source": self.source,
            "collection": self.collection,
            "fit": self.fit,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KernelRecord:
        try:
            grid = tuple(np.asarray(g, dtype=np.float64) for g in d["grid"])
            shape = tuple(len(g) for g in grid)
            values = np.asarray(d["time_s"], dtype=np.float64)
            if values.size != int(np.prod(shape)):
                raise KernelRecordError(f"{d.get('name')}: {values.size} values for a grid of {shape}")
            return cls(
                name=str(d["name"]),
                gpu=str(d["gpu"]),
                engine=str(d["engine"]),
                engine_version=str(d["engine_version"]),
                op=str(d["op"]),
                dtype=str(d["dtype"]),
                axes=tuple(d["axes"]),
                grid=grid,
                time_s=values.reshape(shape),
                source=dict(d.get("source", {})),
                collection=dict(d.get("collection", {})),
                fit=dict(d.get("fit", {})),
                note=str(d.get("note", "")),
            )
        except KeyError as exc:
            raise KernelRecordError(f"kernel record {d.get('name', '?')} lacks field {exc.args[0]}") from exc


def fit_errors(predicted_s: np.ndarray, measured_s: np.ndarray) -> dict[str, float]:
    """{"rows", "median_abs_error", "p90_abs_error", "max_abs_error"} of predicted / measured - 1
    (fractions, 4 significant digits)."""
    err = np.abs(np.asarray(predicted_s) / np.asarray(measured_s) - 1.0)
    if err.size == 0:
        return {"rows": 0, "median_abs_error": 0.0, "p90_abs_error": 0.0, "max_abs_error": 0.0}
    return {
        "rows": int(err.size),
        "median_abs_error": _sig(float(np.median(err))),
        "p90_abs_error": _sig(float(np.percentile(err, 90))),
        "max_abs_error": _sig(float(np.max(err))),
    }


# --- files ------------------------------------------------------------------------------


def write_records(records: Iterable[KernelRecord], path: Path, header: Mapping[str, Any] | None = None) -> None:
    """Write records to one JSON file (compact: one record per line)."""
    recs = list(records)
    head = json.dumps({"format": FORMAT_VERSION, **(header or {})}, sort_keys=True)
    body = ",\n".join(json.dumps(r.to_dict(), separators=(",", ":")) for r in recs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"header": ' + head + ',\n"records": [\n' + body + "\n]}\n")


def read_records(path: Path | str) -> list[KernelRecord]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise KernelRecordError(f"{path}: cannot read kernel records ({exc})") from exc
    return [KernelRecord.from_dict(r) for r in data.get("records", [])]


def default_kernel_dir() -> Path:
    return Path(str(resources.files("objectives").joinpath("data/kernels")))


class KernelLibrary:
    """Records indexed by (gpu, engine, op, dtype); newest-imported wins on duplicates."""

    def __init__(self, records: Iterable[KernelRecord] = ()) -> None:
        self.records: list[KernelRecord] = []
        self._index: dict[tuple[str, str, str, str], KernelRecord] = {}
        for r in records:
            self.add(r)

    def add(self, record: KernelRecord) -> None:
        self.records.append(record)
        self._index[(record.gpu, record.engine, record.op, record.dtype)] = record

    @classmethod
    def from_dir(cls, directory: Path | str | None = None) -> KernelLibrary:
        directory = Path(directory) if directory is not None else default_kernel_dir()
        records: list[KernelRecord] = []
        if directory.is_dir():
            for path in sorted(directory.glob("*.json")):
                records.extend(read_records(path))
        return cls(records)

    def by_name(self, name: str) -> KernelRecord:
        for r in self.records:
            if r.name == name:
                return r
        raise KernelRecordError(f"no kernel record named {name!r}")

    def get(self, gpu: str, engine: str, op: str, dtype: str) -> KernelRecord | None:
        return self._index.get((gpu, engine, op, dtype))

    def gpus(self) -> list[str]:
        return sorted({r.gpu for r in self.records})

    def engines(self, gpu: str) -> list[str]:
        return sorted({r.engine for r in self.records if r.gpu == gpu})


_DEFAULT_LIBRARY: KernelLibrary | None = None


def default_library() -> KernelLibrary:
    """The committed records (cached)."""
    global _DEFAULT_LIBRARY
    if _DEFAULT_LIBRARY is None:
        _DEFAULT_LIBRARY = KernelLibrary.from_dir()
    return _DEFAULT_LIBRARY


# --- physics helpers over the surfaces -----------------------------------------------------


def gemm_time_s(record: KernelRecord, m: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Time of one (m x k) @ (k x n) GEMM."""
    return record.time_at(m, n, k)


def gemm_efficiency(record: KernelRecord, m: np.ndarray, n: np.ndarray, k: np.ndarray, peak_flops: float) -> np.ndarray:
    """Achieved fraction of `peak_flops` of that GEMM: 2 m n k / (t * peak)."""
    flops = 2.0 * np.asarray(m, dtype=np.float64) * n * k
    return flops / (gemm_time_s(record, m, n, k) * peak_flops)


def context_attention_time_s(
    record: KernelRecord,
    batch: np.ndarray,
    isl: np.ndarray,
    num_heads: np.ndarray,
    num_kv_heads: np.ndarray,
    head_dim: np.ndarray,
) -> np.ndarray:
    """Prefill attention of `batch` prompts of `isl` tokens (one layer, causal)."""
    b = np.asarray(batch, dtype=np.float64)
    h = np.asarray(num_heads, dtype=np.float64)
    return record.time_at(b * h, isl, h / np.maximum(num_kv_heads, 1e-9), head_dim)


def generation_attention_time_s(
    record: KernelRecord,
    batch: np.ndarray,
    context: np.ndarray,
    num_heads: np.ndarray,
    num_kv_heads: np.ndarray,
    head_dim: np.ndarray,
) -> np.ndarray:
    """One decode step's attention for `batch` sequences at `context` cached tokens (one layer)."""
    kv = np.asarray(num_kv_heads, dtype=np.float64)
    return record.time_at(np.asarray(batch, dtype=np.float64) * kv, context, num_heads / np.maximum(kv, 1e-9), head_dim)


def moe_time_s(
    record: KernelRecord,
    tokens: np.ndarray,
    top_k: np.ndarray,
    n_experts: np.ndarray,
    hidden: np.ndarray,
    intermediate: np.ndarray,
    moe_tp: np.ndarray,
    moe_ep: np.ndarray,
) -> np.ndarray:
    """One MoE layer's grouped expert GEMMs (gated MLP, balanced routing) on one GPU."""
    ep = np.maximum(np.asarray(moe_ep, dtype=np.float64), 1.0)
    return record.time_at(
        np.asarray(tokens, dtype=np.float64) * top_k / ep,
        np.asarray(n_experts, dtype=np.float64) / ep,
        np.asarray(hidden, dtype=np.float64) * intermediate / np.maximum(moe_tp, 1.0),
    )


def allreduce_time_s(record: KernelRecord, message_bytes: np.ndarray, n_gpus: np.ndarray) -> np.ndarray:
    """One all-reduce of `message_bytes` over `n_gpus` (0 where n_gpus <= 1)."""
    n = np.asarray(n_gpus, dtype=np.float64)
    t = record.time_at(np.maximum(n, 2.0), np.maximum(message_bytes, 1.0))
    return np.where(n > 1, t, 0.0)
