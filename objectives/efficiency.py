"""Achieved fractions of peak, in one place.

An `EfficiencyModel` answers, for one accelerator and compute dtype, which fraction of the
datasheet peak a serving kernel reaches:

    bw          = hbm_copy_fraction(gpu) * bw_factor                 (weight reads by GEMMs)
    kv_bw       = hbm_copy_fraction(gpu) * kv_bw_factor              (paged KV reads by attention)
    gemm        = gemm_fraction(gpu, dtype) * gemm_factor            (linear layers, large M)
    attention   = min(0.95, attention_fraction(gpu) * attention_factor)
    link        = allreduce_busbw_fraction(gpu) * link_factor        (all-reduce bus bandwidth)
    alpha       = allreduce_latency_s(gpu) * allreduce_latency_scale

The per-GPU fractions come from microbenchmarks (data/efficiency.yaml, each with its record);
the `serving` factors and overheads are global — the same for every model and GPU — and are
fitted to end-to-end measurements by `objectives.calibration`. A calibration record
(same layout as the data file) overrides any of them; `basis` says where each GPU's numbers
came from. The shape of the curves (GEMM ramp with tokens, roofline sharpness) is applied in
`objectives.timing`.

The kernel model (`EfficiencyModel.kernel_default(engine)`, data/kernel_serving.yaml) adds a
`kernels` section naming an engine: GEMM, attention and all-reduce times then come from the
measured kernel records of that engine (objectives.kernel_timing), the microbenchmark fractions
are used raw (only to scale surfaces onto GPUs without records and for the bound), and the
serving factors above are not used; its own five end-to-end parameters replace them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from objectives.kernel_timing import Fractions

SERVING_PARAMS = (
    "bw_factor",
    "kv_bw_factor",
    "link_factor",
    "gemm_factor",
    "attention_factor",
    "gemm_half_tokens",
    "roofline_sharpness",
    "allreduce_latency_scale",
    "layer_overhead_s",
    "step_overhead_s",
    "seq_overhead_s",
    "runtime_reserve_bytes",
    "kv_memory_fraction",
    "max_num_tokens",
    "max_batch_size",
)


@dataclass(frozen=True)
class GpuEfficiency:
    """Efficiencies resolved for one GPU and compute dtype (fractions of peak)."""

    bw: float
    kv_bw: float
    gemm: float
    attention: float
    link: float
    allreduce_latency_s: float
    basis: str  # "measured", "vendor default", "calibration <name>" (per field, summarized)


def _value(entry: Any) -> float:
    return float(entry["value"] if isinstance(entry, Mapping) else entry)


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and "value" not in value and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class EfficiencyModel:
    """Microbenchmark fractions per GPU plus global serving parameters."""

    def __init__(self, data: Mapping[str, Any], calibration_name: str | None = None) -> None:
        self._data = dict(data)
        self.calibration_name = calibration_name
        missing = [p for p in SERVING_PARAMS if p not in self._data.get("serving", {})]
        if missing:
            raise ValueError(f"efficiency data lacks serving parameters: {', '.join(missing)}")
        self.serving: dict[str, float] = {k: _value(v) for k, v in self._data["serving"].items() if k in SERVING_PARAMS}

    @classmethod
    def default(cls) -> EfficiencyModel:
        return cls(_load_default())

    @classmethod
    def kernel_default(cls, engine: str | None = None) -> EfficiencyModel:
        """The kernel model: kernel surfaces (objectives.kernel_timing) for GEMM, attention and
        all-reduce, with the parameters of data/kernel_serving.yaml (`engine` overrides its engine)."""
        data = _load_default()
        text = resources.files("objectives").joinpath("data/kernel_serving.yaml").read_text()
        data["kernels"] = yaml.safe_load(text)["kernels"]
        if engine is not None:
            data["kernels"]["engine"] = engine
        return cls(data)

    @property
    def kernel_engine(self) -> str | None:
        """The engine whose kernel records set kernel times, or None (the analytic factors)."""
        section = self._data.get("kernels")
        return str(section["engine"]) if section else None

    @property
    def kernel_params(self) -> dict[str, float]:
        section = self._data.get("kernels") or {}
        return {k: _value(v) for k, v in (section.get("params") or {}).items()}

    def fractions(self, gpu_id: str, vendor: str, dtype: str) -> Fractions:
        """Raw microbenchmark fractions of `gpu_id` (no serving factors)."""
        from objectives.kernel_timing import Fractions

        return Fractions(
            bw=self._lookup(gpu_id, vendor, "hbm_copy_fraction", None)[0],
            gemm=self._lookup(gpu_id, vendor, "gemm_fraction", dtype)[0],
            attention=self._lookup(gpu_id, vendor, "attention_fraction", None)[0],
            link=self._lookup(gpu_id, vendor, "allreduce_busbw_fraction", None)[0],
            alpha_s=self._lookup(gpu_id, vendor, "allreduce_latency_s", None)[0],
        )

    @property
    def data(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def with_calibration(self, record: Mapping[str, Any], name: str = "calibration") -> EfficiencyModel:
        """A model whose GPU fractions and serving parameters are overridden by `record`
        (a mapping with optional `gpus` and `serving` sections in this file's layout)."""
        unknown = set(record) - {"gpus", "serving", "defaults", "aliases", "pcie_gpus", "fit", "name", "kernels"}
        if unknown:
            raise ValueError(f"calibration record has unknown sections: {', '.join(sorted(unknown))}")
        bad = set(record.get("serving", {})) - set(SERVING_PARAMS)
        if bad:
            raise ValueError(f"calibration sets unknown serving parameters: {', '.join(sorted(bad))}")
        merged = _merge(self._data, {k: v for k, v in record.items() if k != "name"})
        return EfficiencyModel(merged, calibration_name=str(record.get("name", name)))

    def _lookup(self, gpu_id: str, vendor: str, field: str, dtype: str | None) -> tuple[float, str]:
        gpus = self._data.get("gpus", {})
        alias = self._data.get("aliases", {}).get(gpu_id)
        for source_id, basis in ((gpu_id, "measured"), (alias, f"measured on {alias}")):
            entry = gpus.get(source_id, {}).get(field) if source_id else None
            if entry is not None and dtype is not None:
                entry = entry.get(dtype) if isinstance(entry, Mapping) else None
            if entry is not None:
                if self.calibration_name and isinstance(entry, Mapping) and entry.get("calibrated"):
                    basis = f"calibration {self.calibration_name}"
                return _value(entry), basis
        defaults = self._data.get("defaults", {})
        default = defaults.get(vendor.lower()) or defaults["nvidia"]
        entry = default.get(field)
        pcie = defaults.get(f"{vendor.lower()}-pcie", {})
        if gpu_id in self._data.get("pcie_gpus", []) and field in pcie:
            return _value(pcie[field]), "PCIe default"
        if dtype is not None:
            entry = entry.get(dtype) if entry is not None else None
            if entry is None:  # e.g. int8 on a vendor without a record: fall back to bf16
                entry = default[field]["bf16"]
        return _value(entry), "vendor default"

    def for_gpu(self, gpu_id: str, vendor: str, dtype: str) -> GpuEfficiency:
        """Efficiencies of `gpu_id` computing in `dtype`."""
        s = self.serving
        bw, b1 = self._lookup(gpu_id, vendor, "hbm_copy_fraction", None)
        gemm, b2 = self._lookup(gpu_id, vendor, "gemm_fraction", dtype)
        att, b3 = self._lookup(gpu_id, vendor, "attention_fraction", None)
        link, b4 = self._lookup(gpu_id, vendor, "allreduce_busbw_fraction", None)
        alpha, b5 = self._lookup(gpu_id, vendor, "allreduce_latency_s", None)
        bases = sorted({b1, b2, b3, b4, b5})
        basis = bases[0] if len(bases) == 1 else "; ".join(bases)
        if self.calibration_name:
            basis = f"calibration {self.calibration_name} over {basis}"
        return GpuEfficiency(
            bw=min(0.98, bw * s["bw_factor"]),
            kv_bw=min(0.98, bw * s["kv_bw_factor"]),
            gemm=min(0.98, gemm * s["gemm_factor"]),
            attention=min(0.95, att * s["attention_factor"]),
            link=link * s["link_factor"],
            allreduce_latency_s=alpha * s["allreduce_latency_scale"],
            basis=basis,
        )


def _load_default() -> dict[str, Any]:
    text = resources.files("objectives").joinpath("data/efficiency.yaml").read_text()
    return yaml.safe_load(text)


_DEFAULT: EfficiencyModel | None = None


def default_efficiency() -> EfficiencyModel:
    """The shipped efficiency model (cached)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = EfficiencyModel.default()
    return _DEFAULT
