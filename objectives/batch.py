"""ConfigBatch: a struct of arrays describing many deployment configurations at once.

Every field is a 1-D numpy array of the same length (one entry per configuration), so the
physics functions in `memory`, `compute`, `communication`, `timing` and `serving` evaluate a
million configurations in one call. Fields carry their units in their names. `build_batch`
turns catalog objects (a ModelSpec, an Accelerator, a QuantScheme) and parallelism / load
choices into arrays; `concat` and `take` combine and slice batches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from objectives.accelerators import Accelerator
from objectives.efficiency import EfficiencyModel, default_efficiency
from objectives.models import ModelSpec
from objectives.modes import default_moe_imbalance, routing_max_nodes, speculative_defaults
from objectives.quantization import (
    EMBEDDING_BYTES_PER_PARAM,
    activation_bytes,
    get_scheme,
    kv_cache_bytes_per_element,
    resolve_compute_dtype,
)

# Model fields copied from ModelSpec (name in the batch <- attribute of ModelSpec).
_MODEL_FIELDS = {
    "n_layers": "n_layers",
    "hidden": "hidden_size",
    "vocab": "vocab_size",
    "n_heads": "n_heads",
    "n_kv_heads": "n_kv_heads",
    "head_dim": "head_dim",
    "v_head_dim": "v_head_dim",
    "is_mla": "is_mla",
    "kv_lora_rank": "kv_lora_rank",
    "kv_elems_per_token_per_layer": "kv_cache_elems_per_token_per_layer",
    "attn_params_per_layer": "attn_params_per_layer",
    "kv_proj_params_per_layer": "kv_proj_params_per_layer",
    "n_dense_layers": "n_dense_layers",
    "dense_mlp_params_per_layer": "dense_mlp_params_per_layer",
    "n_moe_layers": "n_moe_layers",
    "n_experts": "n_experts",
    "experts_per_token": "experts_per_token",
    "params_per_expert": "params_per_expert",
    "shared_expert_params_per_layer": "shared_expert_params_per_layer",
    "router_params_per_layer": "router_params_per_layer",
    "embedding_params": "embedding_params",
    "lm_head_params": "lm_head_params",
    "tie_word_embeddings": "tie_word_embeddings",
    "sliding_window": "sliding_window",
    "n_sliding_layers": "n_sliding_layers",
}


@dataclass(frozen=True)
class ConfigBatch:
    """N deployment configurations as parallel arrays (all float64, length N)."""

    # model architecture
    n_layers: np.ndarray
    hidden: np.ndarray
    vocab: np.ndarray
    n_heads: np.ndarray
    n_kv_heads: np.ndarray
    head_dim: np.ndarray
    v_head_dim: np.ndarray
    is_mla: np.ndarray
    kv_lora_rank: np.ndarray
    kv_elems_per_token_per_layer: np.ndarray
    attn_params_per_layer: np.ndarray
    kv_proj_params_per_layer: np.ndarray
    n_dense_layers: np.ndarray
    dense_mlp_params_per_layer: np.ndarray
    n_moe_layers: np.ndarray
    n_experts: np.ndarray
    experts_per_token: np.ndarray
    params_per_expert: np.ndarray
    shared_expert_params_per_layer: np.ndarray
    router_params_per_layer: np.ndarray
    embedding_params: np.ndarray
    lm_head_params: np.ndarray
    tie_word_embeddings: np.ndarray
    sliding_window: np.ndarray
    n_sliding_layers: np.ndarray
    # accelerator (the dtype-specific peak is already picked for the compute dtype)
    peak_flops: np.ndarray
    hbm_bytes: np.ndarray
    hbm_bw_bytes_per_s: np.ndarray
    link_bw_bytes_per_s: np.ndarray  # per direction, of the fabric the TP group uses
    tdp_w: np.ndarray
    usd_per_gpu_hour: np.ndarray
    attn_peak_flops: np.ndarray  # bf16 peak: attention math runs in bf16
    # achieved fractions of peak and overheads (objectives.efficiency)
    eff_bw: np.ndarray
    eff_kv_bw: np.ndarray
    eff_gemm: np.ndarray
    eff_attention: np.ndarray
    eff_link: np.ndarray
    allreduce_latency_s: np.ndarray
    gemm_half_tokens: np.ndarray
    roofline_sharpness: np.ndarray
    layer_overhead_s: np.ndarray
    step_overhead_s: np.ndarray
    seq_overhead_s: np.ndarray
    runtime_reserve_bytes: np.ndarray
    kv_memory_fraction: np.ndarray
    max_num_tokens: np.ndarray
    max_batch_size: np.ndarray
    # engine memory policy (objectives.engines): share of HBM the engine may use, and whether the
    # activation workspace and runtime reserve come out of it (1) or out of the rest (0)
    hbm_usable_fraction: np.ndarray
    workspace_in_budget: np.ndarray
    # deployment
    tp: np.ndarray
    pp: np.ndarray
    ep: np.ndarray
    weight_bytes_per_param: np.ndarray
    embedding_bytes_per_param: np.ndarray
    activation_bytes: np.ndarray
    kv_bytes_per_elem: np.ndarray
    # kernel model (objectives.kernel_timing): per-row tables of log time over fixed knots, or
    # zero-width (n x 0) when the efficiency model names no engine (the analytic factors apply)
    kt_gemm_dense: np.ndarray  # (n, len(M_LOG2))
    kt_gemm_lm: np.ndarray
    kt_gemm_expert: np.ndarray
    kt_allreduce: np.ndarray  # (n, len(MSG_LOG2))
    kt_decode_attn: np.ndarray  # (n, len(ATT_B_LOG2), len(ATT_C_LOG2))
    kt_prefill_attn: np.ndarray
    kernel_time_scale: np.ndarray
    allreduce_overhead_s: np.ndarray  # per collective of the kernel model (sync, launch), tp > 1
    # frontier modes (objectives.modes; each term vanishes at its default: attention_dp 1, mtp 0)
    attention_dp: np.ndarray  # attention data-parallel ranks of tp GPUs each (1: none)
    mtp_tokens: np.ndarray  # draft tokens k per verification step (0: no speculative decoding)
    mtp_acceptance: np.ndarray  # acceptance rate alpha of each draft token (NaN: none published)
    draft_layers: np.ndarray  # transformer layers of the draft (MTP) module
    moe_imbalance: np.ndarray  # busiest / mean routed tokens of an EP rank under attention DP
    scaleup_bw_bytes_per_s: np.ndarray  # per direction, the NVLink / XGMI domain
    scaleout_bw_bytes_per_s: np.ndarray  # per GPU per direction, the NIC (NaN: not in the catalog)
    scaleup_domain: np.ndarray  # GPUs in one scale-up domain (72 on GB200 NVL72)
    two_batch_overlap: np.ndarray  # 1: DEP steps run as two overlapped micro-batches (TBO / DBO)
    routing_max_nodes: np.ndarray  # most nodes a token's experts span (node-limited routing; inf: none)
    # load
    batch: np.ndarray  # concurrent sequences per replica
    isl: np.ndarray  # input tokens per request
    osl: np.ndarray  # output tokens per request

    def __len__(self) -> int:
        return int(self.tp.shape[0])

    @property
    def uses_kernels(self) -> bool:
        """True when step times come from kernel surfaces (objectives.kernel_timing)."""
        return self.kt_gemm_dense.shape[1] > 0

    @functools.cached_property
    def _memo(self) -> dict[str, np.ndarray]:
        return {}

    def memo(self, key: str, compute: Callable[[ConfigBatch], np.ndarray]) -> np.ndarray:
        """compute(self), computed once per batch (batches are immutable). Lets the physics
        functions that depend only on the batch share their result within one evaluation."""
        cache = self._memo
        if key not in cache:
            cache[key] = compute(self)
        return cache[key]

    @functools.cached_property
    def layers_per_stage(self) -> np.ndarray:
        """Transformer layers held by one pipeline stage: ceil(n_layers / PP) (cached)."""
        return np.ceil(self.n_layers / self.pp)

    @property
    def gpus(self) -> np.ndarray:
        """GPUs per replica: TP x attention DP x PP. Without attention DP expert parallelism
        lives inside the TP group; with it, EP spans the tp x attention_dp GPUs of a stage."""
        return self.tp * self.attention_dp * self.pp

    @property
    def has_attention_dp(self) -> bool:
        """True when some row runs attention data-parallel (the DEP terms apply)."""
        return bool(np.any(self.attention_dp > 1))

    @property
    def has_mtp(self) -> bool:
        """True when some row drafts tokens (speculative decoding / MTP)."""
        return bool(np.any(self.mtp_tokens > 0))

    def take(self, index: np.ndarray | slice) -> ConfigBatch:
        """Rows `index` of every field."""
        return ConfigBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def replace(self, **arrays: np.ndarray | float) -> ConfigBatch:
        """A copy with some fields replaced (scalars are broadcast)."""
        n = len(self)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in arrays.items():
            if key not in values:
                raise KeyError(f"ConfigBatch has no field {key!r}")
            values[key] = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()
        return ConfigBatch(**values)


def per_batch(fn: Callable[[ConfigBatch], np.ndarray]) -> Callable[[ConfigBatch], np.ndarray]:
    """Decorator: `fn(batch)` is computed once per batch and reused (batches are immutable),
    so the many physics functions that need, say, the weights per GPU share one array."""

    @functools.wraps(fn)
    def cached(b: ConfigBatch) -> np.ndarray:
        return b.memo(fn.__name__, fn)

    return cached


def concat(batches: Sequence[ConfigBatch]) -> ConfigBatch:
    """One batch holding the rows of `batches` in order."""
    if len({b.uses_kernels for b in batches}) > 1:
        raise ValueError("cannot concatenate batches of the kernel model with batches of the analytic model")
    return ConfigBatch(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(ConfigBatch)})


def build_batch(
    model: ModelSpec,
    gpu: Accelerator,
    *,
    weights: str = "bf16",
    kv_cache: str = "bf16",
    tp: np.ndarray | int = 1,
    pp: np.ndarray | int = 1,
    ep: np.ndarray | int = 1,
    batch: np.ndarray | int = 1,
    isl: np.ndarray | int = 1024,
    osl: np.ndarray | int = 256,
    efficiency: EfficiencyModel | None = None,
    attention_dp: np.ndarray | int = 1,
    mtp: np.ndarray | int = 0,
    mtp_acceptance: float | None = None,
    moe_imbalance: float | None = None,
    engine: str | None = None,
    two_batch_overlap: bool | np.ndarray = False,
) -> ConfigBatch:
    """Configurations of one model on one GPU type and one quantization; the numeric
    arguments broadcast against each other to give N rows.

    `attention_dp` ranks of `tp` GPUs each run attention data-parallel (a replica has
    tp x attention_dp x pp GPUs; with attention_dp > 1, `ep` must be tp x attention_dp), `mtp`
    draft tokens are verified per step at acceptance `mtp_acceptance` (default: the model's
    published rate in objectives/data/modes.yaml, NaN where none is), and `moe_imbalance` is the
    DEP load-imbalance factor (default from the same file); `two_batch_overlap` runs DEP steps
    as two overlapped micro-batches (SGLang TBO, vLLM DBO; no effect at attention_dp 1); see
    objectives.modes. `engine`
    (trtllm, vllm, sglang) applies that engine's runtime profile (objectives.engines: memory
    fraction, sequence and token caps, host overheads where it has them, and its kernel records
    under the kernel model); None keeps the efficiency model's serving values (the default
    engine's)."""
    scheme = get_scheme(weights)
    supported = frozenset(d for d in gpu.peak_flops if gpu.supports(d))
    compute_dtype = resolve_compute_dtype(scheme, supported)
    if not gpu.supports(compute_dtype):
        raise ValueError(f"{gpu.id} has no {compute_dtype} tensor cores in the catalog")
    tp_a, pp_a, ep_a, b_a, i_a, o_a, dp_a, k_a = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (tp, pp, ep, batch, isl, osl, attention_dp, mtp))
    )
    n = tp_a.size
    tp_a, pp_a, ep_a, b_a, i_a, o_a, dp_a, k_a = (
        x.reshape(n).copy() for x in (tp_a, pp_a, ep_a, b_a, i_a, o_a, dp_a, k_a)
    )

    def full(value: float) -> np.ndarray:
        return np.full(n, float(value))

    values: dict[str, np.ndarray] = {name: full(getattr(model, attr)) for name, attr in _MODEL_FIELDS.items()}
    spec = speculative_defaults(model.id)
    # TP traffic stays on the scale-up fabric while the TP group fits in its domain.
    # Without a known scale-out bandwidth a larger group gets NaN: infeasible, with the reason.
    scaleout = gpu.scaleout_bw_bytes_per_s if gpu.scaleout_bw_bytes_per_s else np.nan
    link = np.where(tp_a * dp_a * pp_a <= gpu.scaleup_domain, gpu.scaleup_bw_bytes_per_s, scaleout)
    eff_model = efficiency or default_efficiency()
    eff = eff_model.for_gpu(gpu.id, gpu.vendor, compute_dtype)
    batch_fields = {f.name for f in fields(ConfigBatch)}
    values.update({k: full(v) for k, v in eff_model.serving.items() if k in batch_fields})
    values.update(
        eff_bw=full(eff.bw),
        eff_kv_bw=full(eff.kv_bw),
        eff_gemm=full(eff.gemm),
        eff_attention=full(eff.attention),
        eff_link=full(eff.link),
        allreduce_latency_s=full(eff.allreduce_latency_s),
        attn_peak_flops=full(gpu.peak_flops["bf16"]),
        peak_flops=full(gpu.peak_flops[compute_dtype]),
        hbm_bytes=full(gpu.hbm_bytes),
        hbm_bw_bytes_per_s=full(gpu.hbm_bw_bytes_per_s),
        link_bw_bytes_per_s=link.astype(np.float64),
        tdp_w=full(gpu.tdp_w),
        usd_per_gpu_hour=full(gpu.usd_per_gpu_hour),
        tp=tp_a,
        pp=pp_a,
        ep=ep_a,
        weight_bytes_per_param=full(scheme.bytes_per_weight),
        embedding_bytes_per_param=full(EMBEDDING_BYTES_PER_PARAM),
        activation_bytes=full(activation_bytes(scheme, compute_dtype)),
        kv_bytes_per_elem=full(kv_cache_bytes_per_element(kv_cache)),
        attention_dp=dp_a,
        mtp_tokens=k_a,
        mtp_acceptance=full(spec.acceptance if mtp_acceptance is None else mtp_acceptance),
        draft_layers=full(spec.draft_layers),
        moe_imbalance=full(default_moe_imbalance() if moe_imbalance is None else moe_imbalance),
        scaleup_bw_bytes_per_s=full(gpu.scaleup_bw_bytes_per_s),
        scaleout_bw_bytes_per_s=full(scaleout),
        scaleup_domain=full(gpu.scaleup_domain),
        two_batch_overlap=np.broadcast_to(np.asarray(two_batch_overlap, dtype=np.float64), (n,)).copy(),
        routing_max_nodes=full(routing_max_nodes(model.id)),
        batch=b_a,
        isl=i_a,
        osl=o_a,
        hbm_usable_fraction=full(1.0),
        workspace_in_budget=full(1.0),
    )
    profile = None
    if engine is not None:
        from objectives.engines import get_profile

        profile = get_profile(engine)
        values.update(profile.batch_values(gpu.id, gpu.hbm_bytes, tp_a, pp_a))
    kernel_engine = profile.kernels if profile is not None and eff_model.kernel_engine else None
    # the expert GEMM tables take EP relative to the attention TP group: ep / attention_dp
    values.update(
        _kernel_fields(eff_model, model, gpu, scheme, compute_dtype, kv_cache, tp_a, pp_a, ep_a / dp_a, kernel_engine)
    )
    return ConfigBatch(**values)


def _kernel_fields(
    eff_model: EfficiencyModel,
    model: ModelSpec,
    gpu: Accelerator,
    scheme: object,
    compute_dtype: str,
    kv_cache: str,
    tp: np.ndarray,
    pp: np.ndarray,
    ep: np.ndarray,
    kernel_engine: str | None = None,
) -> dict[str, np.ndarray]:
    """Kernel-model fields: tables from the kernel records (or zero-width without an engine).
    In the kernel model the fractions are the raw microbenchmark ones (no serving factors) and
    the overheads are the kernel model's own. `kernel_engine` (an engine profile's `kernels`)
    overrides the efficiency model's engine."""
    n = tp.size
    engine = kernel_engine or eff_model.kernel_engine
    if engine is None:
        return {
            "kt_gemm_dense": np.zeros((n, 0)),
            "kt_gemm_lm": np.zeros((n, 0)),
            "kt_gemm_expert": np.zeros((n, 0)),
            "kt_allreduce": np.zeros((n, 0)),
            "kt_decode_attn": np.zeros((n, 0, 0)),
            "kt_prefill_attn": np.zeros((n, 0, 0)),
            "kernel_time_scale": np.ones(n),
            "allreduce_overhead_s": np.zeros(n),
        }
    from objectives.accelerators import get_accelerator
    from objectives.kernel_timing import SIBLINGS, build_tables

    fractions = {gpu.id: eff_model.fractions(gpu.id, gpu.vendor, compute_dtype)}
    sib = SIBLINGS.get(gpu.id)
    if sib is not None:
        acc = get_accelerator(sib)
        fractions[sib] = eff_model.fractions(sib, acc.vendor, compute_dtype if acc.supports(compute_dtype) else "bf16")
    tables = build_tables(
        model=model,
        gpu=gpu,
        compute_dtype=compute_dtype,
        weight_bytes=float(scheme.bytes_per_weight),  # type: ignore[attr-defined]
        weight_only=compute_dtype != scheme.compute_dtype or bool(scheme.weight_only),  # type: ignore[attr-defined]
        kv_bytes=float(kv_cache_bytes_per_element(kv_cache)),
        tp=tp,
        pp=pp,
        ep=ep,
        engine=engine,
        fractions=fractions,
    )
    params = eff_model.kernel_params
    f = fractions[gpu.id]
    out = {
        "kt_gemm_dense": tables.gemm_dense,
        "kt_gemm_lm": tables.gemm_lm,
        "kt_gemm_expert": tables.gemm_expert,
        "kt_allreduce": tables.allreduce,
        "kt_decode_attn": tables.decode_attn,
        "kt_prefill_attn": tables.prefill_attn,
        "kernel_time_scale": np.full(n, params.get("kernel_time_scale", 1.0)),
        "allreduce_overhead_s": np.full(n, params.get("allreduce_overhead_s", 0.0)),
        "eff_bw": np.full(n, f.bw),
        "eff_kv_bw": np.full(n, f.bw),
        "eff_gemm": np.full(n, f.gemm),
        "eff_attention": np.full(n, f.attention),
        "eff_link": np.full(n, f.link),
        "allreduce_latency_s": np.full(n, f.alpha_s),
    }
    overheads = (
        "layer_overhead_s",
        "step_overhead_s",
        "seq_overhead_s",
        "runtime_reserve_bytes",
        "allreduce_overhead_s",
    )
    for key in overheads:
        if key in params:
            out[key] = np.full(n, params[key])
    return out
