"""The catalogs and one-deployment estimates as plain JSON-able data, shared by the
`catalog` / `estimate` commands and the HTTP service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from objectives.accelerators import UnknownAcceleratorError, get_accelerator, load_accelerators, price_list_name
from objectives.batch import build_batch
from objectives.cost import OwnershipTerms, tco_usd_per_gpu_hour
from objectives.efficiency import EfficiencyModel
from objectives.engines import UnknownEngineError, default_engine, get_profile, vendor_label
from objectives.models import UnknownModelError, list_models, load_model
from objectives.quantization import fallback_note, get_scheme, resolve_compute_dtype
from objectives.serving import evaluate, offline_max_throughput
from search.outputs.intervals import engine_of, nested

GB = 1e9


class EstimateError(ValueError):
    """An estimate that cannot be made (unknown model / GPU / scheme, bad combination)."""


PHASE_PARTS = {
    "bandwidth": ("weights_memory_s", "kv_memory_s"),
    "compute": ("gemm_compute_s", "attention_compute_s"),
    "interconnect": ("communication_s",),
    "overhead": ("overhead_s",),
}


def phase_bound(step: dict[str, float]) -> str:
    """What bounds one step (a decode step or the prefill): the largest of HBM traffic (weights
    and KV cache), tensor-core math (GEMMs and attention), communication and overhead — the
    same split as the whole cycle's `bound`, for one phase."""
    return max(PHASE_PARTS, key=lambda k: sum(float(step.get(p) or 0.0) for p in PHASE_PARTS[k]))


def gpu_catalog(gpu_file: str | Path | None = None) -> list[dict[str, Any]]:
    """Every accelerator with its specs, prices (the default, `price_provider`'s, and every
    provider's in `prices`, sources in `price_sources`) and sources (`catalog gpus --json`)."""
    return [
        {
            "id": g.id,
            "vendor": g.vendor,
            "aliases": list(g.aliases),
            "peak_tflops": {d: v / 1e12 for d, v in g.peak_flops.items()},
            "hbm_gb": g.hbm_bytes / GB,
            "hbm_tb_per_s": g.hbm_bw_bytes_per_s / 1e12,
            "scaleup_gb_per_s_per_direction": g.scaleup_bw_bytes_per_s / GB,
            "scaleup_domain": g.scaleup_domain,
            "scaleout_gb_per_s": g.scaleout_bw_bytes_per_s / GB if g.scaleout_bw_bytes_per_s else None,
            "gpus_per_node": g.gpus_per_node,
            "tdp_w": g.tdp_w,
            "usd_per_gpu_hour": g.usd_per_gpu_hour,
            "price_provider": g.price_provider,
            "prices": dict(g.prices),
            "price_sources": dict(g.price_sources),
            "price_lists": {p: price_list_name(g, p) for p in g.prices},
            "purchase_usd": g.purchase_usd,
            "purchase_scope": g.purchase_scope,
            "sources": dict(g.sources),
        }
        for g in load_accelerators(gpu_file).values()
    ]


def model_catalog() -> list[dict[str, Any]]:
    """Every shipped model with its architecture and parameter counts (`catalog models --json`)."""
    models = []
    for entry in list_models():
        spec = load_model(entry.id)
        models.append(
            {
                "id": entry.id,
                "aliases": list(entry.aliases),
                "architecture": spec.architecture,
                "total_params_b": spec.total_params / 1e9,
                "active_params_b": spec.active_params / 1e9,
                "published_total_params_b": entry.published_total_params / 1e9,
                "layers": spec.n_layers,
                "hidden": spec.hidden_size,
                "heads": spec.n_heads,
                "kv_heads": spec.n_kv_heads,
                "experts": spec.n_experts,
                "experts_per_token": spec.experts_per_token,
                "mla": spec.is_mla,
                "params_source": entry.params_source,
            }
        )
    return models


def estimate(
    *,
    model: str,
    gpu: str,
    calibration: Callable[[str], tuple[EfficiencyModel, str]],
    tp: int = 1,
    pp: int = 1,
    ep: int = 1,
    weights: str = "bf16",
    kv_cache: str | None = None,
    isl: int = 1024,
    osl: int = 256,
    batch: int | None = None,
    rate: float | None = None,
    percentile: float = 99.0,
    target_utilization: float | None = None,
    pricing: str = "cloud",
    gpu_file: str | Path | None = None,
    engine: str | None = None,
) -> dict[str, Any]:
    """Memory, latency, throughput and cost of one deployment (`estimate --json`) on `engine`
    (trtllm, vllm, sglang: its runtime profile, objectives/data/engines.yaml; None: the default
    engine with the efficiency model's serving values); with no
    `batch`, the batch giving the most tokens/s per GPU; `calibration(gpu_id)` gives the
    efficiency model and its label for the catalog GPU (called once the names are known good).
    With an arrival `rate`, latencies are at `percentile` under that load (objectives.queueing;
    fixed lengths isl / osl, Poisson arrivals) and the replicas are sized so each runs at
    `target_utilization` of its capacity at most (default 0.8); `batch` is then the scheduler's
    cap. EstimateError for bad input."""
    if rate is not None and not rate > 0:
        raise EstimateError(f"the arrival rate must be above 0 requests/s, got {rate}")
    if not 0.0 < percentile < 100.0:
        raise EstimateError(f"the latency percentile must be above 0 and below 100, got {percentile}")
    if target_utilization is not None and not 0.0 < target_utilization <= 1.0:
        raise EstimateError(f"the target utilization must be above 0 and at most 1, got {target_utilization}")
    try:
        catalog_gpus = load_accelerators(gpu_file)
        accel = get_accelerator(gpu, catalog_gpus)
        spec = load_model(model)
        scheme = get_scheme(weights)
    except (UnknownAcceleratorError, UnknownModelError, ValueError, FileNotFoundError) as exc:
        raise EstimateError(str(exc)) from None
    kv = kv_cache or ("fp8" if scheme.compute_dtype in ("fp8", "fp4") else "bf16")
    try:
        profile = get_profile(engine) if engine is not None else None
    except UnknownEngineError as exc:
        raise EstimateError(str(exc)) from None
    if profile is not None and not profile.supports(accel.vendor):
        where = f"{vendor_label(accel.vendor)} GPUs ({accel.id})"
        raise EstimateError(f"{profile.name} does not run on {where}; try vllm or sglang")
    engine_name = profile.id if profile is not None else default_engine()
    try:
        efficiency, calibration_label = calibration(accel.id)
    except ValueError as exc:
        raise EstimateError(str(exc)) from None
    try:
        b = build_batch(
            spec,
            accel,
            weights=scheme.name,
            kv_cache=kv,
            tp=tp,
            pp=pp,
            ep=ep,
            batch=batch or 1,
            isl=isl,
            osl=osl,
            efficiency=efficiency,
            engine=engine_name if profile is not None else None,
        )
    except ValueError as exc:
        raise EstimateError(str(exc)) from None
    price = None
    if pricing == "owned":
        if accel.purchase_usd is None:
            raise EstimateError(f"{accel.id} has no purchase price in the catalog; add one with --gpu-file")
        terms = OwnershipTerms.default()
        price = tco_usd_per_gpu_hour(np.array([accel.purchase_usd]), np.array([accel.tdp_w]), terms)
    elif pricing != "cloud":
        raise EstimateError(f"pricing must be cloud or owned, not {pricing!r}")
    kwargs = {
        "arrival_rate_per_s": rate,
        "max_position_embeddings": spec.max_position_embeddings,
        "usd_per_gpu_hour": price,
    }
    if rate is not None:
        kwargs.update(latency_percentile=float(percentile), target_utilization=target_utilization)
    if batch is None:
        m = offline_max_throughput(b, **kwargs)
    else:
        m = evaluate(b, **kwargs)
    row = m.row(0)
    compute_dtype = resolve_compute_dtype(scheme, frozenset(d for d in accel.peak_flops if accel.supports(d)))
    eff = efficiency.for_gpu(accel.id, accel.vendor, compute_dtype)
    notes = [n for n in (fallback_note(scheme, compute_dtype),) if n]
    if row["feasible"] and batch is not None and row["batch"] < batch:
        notes.append(f"batch {batch} does not fit; clipped to {row['batch']:.0f} (KV cache capacity)")
    if tp > accel.scaleup_domain:
        notes.append(f"TP {tp} exceeds the {accel.scaleup_domain}-GPU scale-up domain: TP traffic uses scale-out links")
    result = {
        "model": spec.id,
        "gpu": accel.id,
        "engine": engine_name,
        "tp": tp,
        "pp": pp,
        "ep": ep,
        "gpus": tp * pp,
        "weights": scheme.name,
        "compute_dtype": compute_dtype,
        "kv_cache": kv,
        "isl": isl,
        "osl": osl,
        "feasible": row["feasible"],
        "reason": row["reason"] or None,
        "batch": int(row["batch"]),
        "max_batch": int(row["max_batch"]),
        # with a rate: at `latency_percentile` under that load; without: the steady state at the batch
        "latency_percentile": float(percentile) if rate is not None else None,
        "rate_per_s": rate,
        "utilization": row["utilization"] if rate is not None else None,
        "load_batch": row["load_batch"] if rate is not None else None,
        "ttft_s": row["ttft_s"],
        "tpot_s": row["tpot_s"],
        "e2e_s": row["e2e_s"],
        "output_tokens_per_s": row["output_tokens_per_s"],
        "output_tokens_per_s_per_gpu": row["output_tokens_per_s_per_gpu"],
        "output_tokens_per_s_per_user": row["output_tokens_per_s_per_user"],
        "replicas": int(row["replicas"]),
        "usd_per_hour": row["usd_per_hour"],
        "usd_per_million_output_tokens": row["usd_per_million_output_tokens"],
        "usd_per_request": row["usd_per_request"],
        "usd_per_million_total_tokens": row["usd_per_million_total_tokens"],
        "energy_j_per_output_token": row["energy_j_per_output_token"],
        "pricing": pricing,
        "memory_per_gpu_gb": row["memory_per_gpu_bytes"] / GB,
        "weights_per_gpu_gb": row["weight_bytes_per_gpu"] / GB,
        "kv_budget_per_gpu_gb": row["kv_budget_bytes"] / GB,
        "hbm_gb": accel.hbm_bytes / GB,
        "bound": row["bound"],  # of the whole cycle: osl decode steps plus the prefill
        "decode_bound": phase_bound(row["decode"]),
        "prefill_bound": phase_bound(row["prefill"]),
        "decode_step_s": row["decode"],
        "ttft_breakdown_s": row["prefill"],
        "calibration": calibration_label,
        "efficiency": {
            "bw": eff.bw,
            "gemm": eff.gemm,
            "attention": eff.attention,
            "link": eff.link,
            "allreduce_latency_s": eff.allreduce_latency_s,
            # the alpha is a measured latency times the fitted global allreduce_latency_scale
            "allreduce_latency_scale": efficiency.serving["allreduce_latency_scale"],
            "allreduce_latency_measured_s": eff.allreduce_latency_s / efficiency.serving["allreduce_latency_scale"],
            "basis": eff.basis,
        },
        # where each term's efficiency comes from: kernel-db <engine> <version>, microbenchmark,
        # probe <record> / calibration <name>, or scaled from <gpu>
        "basis": term_bases(efficiency, spec, accel, scheme.name, kv, tp, engine_name),
        "engine_profile": get_profile(engine_name).describe(accel.id, accel.hbm_bytes, tp, pp),
        "notes": notes,
    }
    if profile is None:
        result["engine_profile"]["applied"] = False  # the efficiency model's serving values
        result["engine_profile"]["note"] = "no --engine: the efficiency model's serving values (the default engine's)"
        if not get_profile(engine_name).supports(accel.vendor):
            notes.append(
                f"{get_profile(engine_name).name} does not run on {vendor_label(accel.vendor)} GPUs: these numbers use "
                "the "
                "efficiency model's serving values; give --engine vllm or sglang for a runtime that does"
            )
    result = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in result.items()}
    # p10 / p90 beside each predicted number, from the validation residuals of its region
    region_engine = engine_of(efficiency) if profile is None else engine_name
    result.update(nested(result, model=spec.id, gpu=accel.id, weights=scheme.name, engine=region_engine))
    return result


def _fraction_basis(efficiency: EfficiencyModel, gpu: Any, field: str, dtype: str | None) -> str:
    """The analytic model's basis of one microbenchmark fraction of `gpu`."""
    _, how = efficiency._lookup(gpu.id, gpu.vendor, field, dtype)
    name = efficiency.calibration_name
    if how.startswith("calibration"):
        return f"probe {name}" if name and name.startswith("probe") else how
    if how.startswith("measured on "):
        return f"scaled from {how.removeprefix('measured on ')} (microbenchmark)"
    if how == "measured":
        return "microbenchmark"
    return f"microbenchmark ({how})"  # vendor default / PCIe default: no record of this GPU


def term_bases(
    efficiency: EfficiencyModel, model: Any, gpu: Any, weights: str, kv_cache: str, tp: int, engine: str
) -> dict[str, str]:
    """{gemm, attention, moe, communication, overhead} -> where that term's efficiency comes
    from. The kernel model: the kernel records of the engine (objectives.kernel_timing.term_basis:
    `kernel-db <engine> <version> <dtype>`, `scaled from <gpu> (...)`, `microbenchmark`). The
    analytic model: the microbenchmark fractions of efficiency.yaml (or a calibration / probe
    record) times its fitted serving factors."""
    if efficiency.kernel_engine:
        from objectives.kernel_timing import term_basis

        basis = term_basis(efficiency, model, gpu, weights, kv_cache, tp=tp, engine=get_profile(engine).kernels)
        if not model.n_experts:
            basis["moe"] = "n/a (dense model)"
        return basis
    compute = resolve_compute_dtype(get_scheme(weights), frozenset(d for d in gpu.peak_flops if gpu.supports(d)))
    gemm = _fraction_basis(efficiency, gpu, "gemm_fraction", compute)
    overheads = get_profile(engine).overhead_values()
    return {
        "gemm": gemm,
        "attention": _fraction_basis(efficiency, gpu, "attention_fraction", None),
        "moe": gemm if model.n_experts else "n/a (dense model)",
        "communication": _fraction_basis(efficiency, gpu, "allreduce_busbw_fraction", None),
        "overhead": f"engine profile {engine} (engines.yaml)"
        if overheads
        else "fitted end to end (efficiency.yaml, TensorRT-LLM v0.14.0 rows)",
    }
