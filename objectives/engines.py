"""Serving engines as an input: the runtime profile of TensorRT-LLM, vLLM and SGLang.

An `EngineProfile` (objectives/data/engines.yaml, each value with its source and date) says what
an engine does with a GPU's memory and how it batches, and `batch_values` turns it into the
ConfigBatch fields it sets for rows on one GPU:

    memory basis free    KV = (HBM - weights - workspace - reserve) x fraction      (TensorRT-LLM)
                 total   KV = HBM x fraction - weights - workspace - reserve         (vLLM)
                 static  KV = HBM x fraction - weights; activations and CUDA graphs
                         live in the (1 - fraction) left over                        (SGLang)

as `kv_memory_fraction`, `hbm_usable_fraction` and `workspace_in_budget`
(objectives.memory.kv_budget_bytes), plus `max_batch_size` / `max_num_tokens` (the engine's
default sequence and token caps on that GPU) and any host overheads the profile has. `kernels`
names the kernel records the engine runs (objectives/data/kernels/, used by the kernel model).

Pure: numpy and YAML only.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import yaml

GIB = float(2**30)
MEMORY_BASES = ("free", "total", "static")
OVERHEAD_FIELDS = ("layer_overhead_s", "step_overhead_s", "seq_overhead_s")


class UnknownEngineError(ValueError):
    """An engine name that has no profile."""


def _tiered(spec: Any, hbm_gib: float, gpu_id: str, what: str) -> float:
    """A number, or the first tier [{below: GiB, value, not_on: [gpu ids]}] that applies."""
    if not isinstance(spec, list):
        return float(spec)
    for tier in spec:
        if "below" in tier and not hbm_gib < float(tier["below"]):
            continue
        if gpu_id in tier.get("not_on", ()):
            continue
        return float(tier["value"])
    raise ValueError(f"engine profile: no {what} tier for a {hbm_gib:.0f} GiB GPU")


@dataclass(frozen=True)
class EngineProfile:
    """One engine's runtime defaults (see the module docstring)."""

    id: str
    name: str
    command: str
    version: str
    vendors: tuple[str, ...]
    kernels: str
    memory: dict[str, Any]
    max_batch_size: dict[str, Any]
    max_num_tokens: dict[str, Any]
    chunked_prefill: dict[str, Any]
    overheads: dict[str, Any] = field(default_factory=dict)

    def supports(self, vendor: str) -> bool:
        """Whether the engine runs on GPUs of `vendor` (TensorRT-LLM: NVIDIA only)."""
        return vendor.lower() in self.vendors

    @property
    def memory_basis(self) -> str:
        return str(self.memory["basis"])

    def memory_fraction(self, hbm_bytes: float, gpus: np.ndarray | float = 1.0) -> np.ndarray:
        """The engine's memory fraction on a GPU of `hbm_bytes` with `gpus` (tp x pp) per replica."""
        spec = self.memory["fraction"]
        g = np.asarray(gpus, dtype=np.float64)
        if isinstance(spec, Mapping):
            m = hbm_bytes / GIB
            tier = next(t for t in spec["reserved_gib"] if "below" not in t or m < float(t["below"]))
            reserved = float(tier["base"]) + float(tier["per_gpu"]) * g
            return np.round((m - reserved) / m, 3)
        return np.full(g.shape, float(spec))

    def max_batch(self, hbm_bytes: float, gpu_id: str = "") -> float:
        return _tiered(self.max_batch_size["value"], hbm_bytes / GIB, gpu_id, "max_batch_size")

    def max_tokens(self, hbm_bytes: float, gpu_id: str = "") -> float:
        return _tiered(self.max_num_tokens["value"], hbm_bytes / GIB, gpu_id, "max_num_tokens")

    def overhead_values(self) -> dict[str, float]:
        """Host overheads the profile sets ({} where it inherits the efficiency model's)."""
        out = {}
        for key in OVERHEAD_FIELDS:
            entry = self.overheads.get(key)
            if entry is not None:
                out[key] = float(entry["value"] if isinstance(entry, Mapping) else entry)
        return out

    def batch_values(self, gpu_id: str, hbm_bytes: float, tp: np.ndarray, pp: np.ndarray) -> dict[str, np.ndarray]:
        """ConfigBatch fields this engine sets for rows on one GPU (arrays of len(tp))."""
        tp = np.asarray(tp, dtype=np.float64)
        n = tp.size
        frac = np.broadcast_to(self.memory_fraction(hbm_bytes, tp * np.asarray(pp, dtype=np.float64)), (n,))
        basis = self.memory_basis
        one = np.ones(n)
        out = {
            "kv_memory_fraction": frac.copy() if basis == "free" else one.copy(),
            "hbm_usable_fraction": one.copy() if basis == "free" else frac.copy(),
            "workspace_in_budget": np.zeros(n) if basis == "static" else one.copy(),
            "max_batch_size": np.full(n, self.max_batch(hbm_bytes, gpu_id)),
            "max_num_tokens": np.full(n, self.max_tokens(hbm_bytes, gpu_id)),
        }
        out.update({k: np.full(n, v) for k, v in self.overhead_values().items()})
        return out

    def launch_settings(self, gpu_id: str, hbm_bytes: float, tp: int, pp: int) -> dict[str, Any]:
        """What the launch line sets so the deployment matches the model: the memory flag and its
        value, and whether chunked prefill has to be turned on."""
        frac = float(self.memory_fraction(hbm_bytes, float(tp * pp)).reshape(-1)[0])
        return {
            "memory_flag": str(self.memory["flag"]),
            "memory_fraction": frac,
            "enable_chunked_prefill": not bool(self.chunked_prefill.get("default", True)),
        }

    def describe(self, gpu_id: str, hbm_bytes: float, tp: int = 1, pp: int = 1) -> dict[str, Any]:
        """The profile resolved for one GPU, with its sources (estimate --json `engine_profile`)."""
        return {
            "engine": self.id,
            "name": self.name,
            "version": self.version,
            "kernels": self.kernels,
            "memory_basis": self.memory_basis,
            "memory_fraction": float(self.memory_fraction(hbm_bytes, float(tp * pp)).reshape(-1)[0]),
            "memory_flag": self.memory["flag"],
            "max_batch_size": self.max_batch(hbm_bytes, gpu_id),
            "max_num_tokens": self.max_tokens(hbm_bytes, gpu_id),
            "chunked_prefill": bool(self.chunked_prefill.get("default", True)),
            "overheads": self.overhead_values() or "inherited from the efficiency model",
            "sources": self.sources(),
        }

    def sources(self) -> dict[str, str]:
        """{setting: "source (date)"} of every sourced value."""
        out = {}
        for key in ("memory", "max_batch_size", "max_num_tokens", "chunked_prefill"):
            entry = getattr(self, key)
            out[key] = f"{entry['source']} ({entry['date']})"
        for key in OVERHEAD_FIELDS:
            entry = self.overheads.get(key)
            if isinstance(entry, Mapping):
                out[key] = f"{entry['source']} ({entry.get('date', '')})"
        if "note" in self.overheads:
            out["overheads"] = str(self.overheads["note"])
        return out


def vendor_label(vendor: str) -> str:
    """A vendor as written in messages: AMD, NVIDIA (others as given)."""
    return {"amd": "AMD", "nvidia": "NVIDIA"}.get(vendor.lower(), vendor)


def _profile(key: str, d: Mapping[str, Any]) -> EngineProfile:
    try:
        prof = EngineProfile(
            id=key,
            name=str(d["name"]),
            command=str(d["command"]),
            version=str(d["version"]),
            vendors=tuple(v.lower() for v in d["vendors"]),
            kernels=str(d["kernels"]),
            memory=dict(d["memory"]),
            max_batch_size=dict(d["max_batch_size"]),
            max_num_tokens=dict(d["max_num_tokens"]),
            chunked_prefill=dict(d["chunked_prefill"]),
            overheads=dict(d.get("overheads") or {}),
        )
    except KeyError as exc:
        raise ValueError(f"engine profile {key} lacks {exc.args[0]}") from None
    if prof.memory_basis not in MEMORY_BASES:
        raise ValueError(f"engine profile {key}: memory.basis must be one of {', '.join(MEMORY_BASES)}")
    for section in ("memory", "max_batch_size", "max_num_tokens", "chunked_prefill"):
        entry = getattr(prof, section)
        if not entry.get("source") or not entry.get("date"):
            raise ValueError(f"engine profile {key}: {section} needs a source and a date")
    return prof


@functools.cache
def _load() -> tuple[str, dict[str, EngineProfile]]:
    data = yaml.safe_load(resources.files("objectives").joinpath("data/engines.yaml").read_text())
    profiles = {k: _profile(k, v) for k, v in data["engines"].items()}
    return str(data["default"]), profiles


def engine_profiles() -> dict[str, EngineProfile]:
    """Every shipped profile by engine id (trtllm, vllm, sglang)."""
    return dict(_load()[1])


def default_engine() -> str:
    """The engine a configuration that names none runs (the one the default model is fitted on)."""
    return _load()[0]


ENGINES: tuple[str, ...] = ("trtllm", "vllm", "sglang")
_ALIASES = {"tensorrt-llm": "trtllm", "tensorrt_llm": "trtllm", "trt-llm": "trtllm", "trtllm-serve": "trtllm"}


def engine_id(name: str) -> str:
    """The engine id of `name` (case-insensitive; tensorrt-llm is trtllm); UnknownEngineError."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _load()[1]:
        raise UnknownEngineError(f"unknown engine {name!r}; allowed: {', '.join(_load()[1])}")
    return key


def get_profile(name: str) -> EngineProfile:
    return _load()[1][engine_id(name)]
