"""Step times from measured kernel surfaces (objectives.kernels): the kernel model.

When an efficiency model names an engine (`kernels: {engine: trtllm}` in its data), `build_batch`
fills per-configuration tables of log time over fixed log-spaced knots, read off the kernel
records of that GPU and engine (or scaled from a sibling GPU), and `objectives.timing` evaluates
GEMM, attention and tensor-parallel all-reduce time by linear interpolation in those tables —
no per-configuration Python, a handful of gathers per term:

    gemm         dense step GEMMs (attention projections of every layer, dense MLPs, shared
                 experts) at M = tokens; LM head at M = logit tokens; one touched expert of one
                 MoE layer at M = tokens per expert (times touched experts / EP and MoE layers)
    attention    generation surface per layer at (batch x KV heads, context) for decode; context
                 surface at (prompts x query heads, prompt length) for prefill, per layer
    all-reduce   engine all-reduce over TP GPUs by message bytes (two per layer)

A layer's linear layers are represented by two GEMMs with K = hidden (attention projections,
MLP) whose N carries that layer's weights on this GPU: same bytes and FLOPs as the real shapes.
Weight-only schemes use the bf16 surface with the weight read scaled by the byte ratio r:
t(M) = max(r t_bf16(M), t_bf16(M) - (1 - r) t_bf16(1)).

GPUs without kernel data use the surfaces of a sibling GPU scaled, shape by shape, by the ratio
of microbenchmark rooflines (HBM copy bandwidth, best GEMM FLOP/s, FlashAttention FLOP/s,
all-reduce bus bandwidth of objectives/data/efficiency.yaml); each term's `basis` says so.

Kernel-model parameters (objectives/data/kernel_serving.yaml, fitted on end-to-end rows):
`kernel_time_scale` (measured kernels of the collection release vs the release being
predicted), and the host overheads of objectives.timing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from objectives.kernels import KernelLibrary, KernelRecord, default_library

# log2-spaced knots of the per-configuration tables
M_LOG2 = np.arange(0.0, 17.5, 1.0)  # GEMM rows M: 1 .. 131072
MSG_LOG2 = np.arange(8.0, 33.0, 1.0)  # all-reduce message: 256 B .. 4 GiB
ATT_B_LOG2 = np.arange(0.0, 19.0, 2.0)  # batch x heads: 1 .. 262144
ATT_C_LOG2 = np.arange(2.0, 18.5, 1.5)  # context / prompt tokens: 4 .. 185k
SIBLINGS = {
    "H100-PCIe": "H100-SXM",
    "GH200-96GB": "H200-SXM",
    "A100-PCIe-80GB": "A100-SXM-80GB",
    "L4": "L40S",
    "A10G": "L40S",
    "MI300X": "H200-SXM",
    "MI325X": "H200-SXM",
    "MI355X": "B200",
}
GEMM_DTYPES = {"bf16": ("bf16",), "fp8": ("fp8", "fp8_block"), "fp4": ("nvfp4",), "int8": ("sq", "fp8")}
NATIVE_WEIGHT_BYTES = {"bf16": 2.0, "fp8": 1.0, "fp8_block": 1.0, "nvfp4": 0.5625, "sq": 1.0}
KERNEL_PARAMS = ("kernel_time_scale", "allreduce_overhead_s", "layer_overhead_s", "step_overhead_s", "seq_overhead_s")


@dataclass(frozen=True)
class Fractions:
    """Microbenchmark fractions of peak of one GPU (raw, without serving factors)."""

    bw: float
    gemm: float
    attention: float
    link: float
    alpha_s: float


@dataclass(frozen=True)
class GpuPeaks:
    hbm_bw: float
    flops: float  # of the compute dtype
    bf16_flops: float
    link_bw: float
    frac: Fractions

    def gemm_roof_s(self, m: np.ndarray, n: np.ndarray, k: np.ndarray, in_bytes: float) -> np.ndarray:
        byts = (m * k + k * n) * in_bytes + 2.0 * m * n
        return np.maximum(byts / (self.hbm_bw * self.frac.bw), 2.0 * m * n * k / (self.flops * self.frac.gemm))


def _log_knots(log2: np.ndarray) -> np.ndarray:
    return np.exp2(log2)


def _pick(lib: KernelLibrary, gpu: str, engine: str, op: str, dtypes: tuple[str, ...]) -> KernelRecord | None:
    for eng in (engine, "trtllm", "vllm", "sglang"):
        for d in dtypes:
            rec = lib.get(gpu, eng, op, d)
            if rec is not None:
                return rec
    return None


def find_record(
    lib: KernelLibrary, gpu: str, engine: str, op: str, dtypes: tuple[str, ...]
) -> tuple[KernelRecord | None, str | None]:
    """(record, sibling GPU it comes from or None). Own GPU first, then its sibling."""
    rec = _pick(lib, gpu, engine, op, dtypes)
    if rec is not None:
        return rec, None
    sib = SIBLINGS.get(gpu)
    if sib is not None:
        rec = _pick(lib, sib, engine, op, dtypes)
        if rec is not None:
            return rec, sib
    return None, None


def _basis(rec: KernelRecord | None, sibling: str | None, note: str = "") -> str:
    if rec is None:
        return "microbenchmark"
    b = rec.basis + (f" {rec.dtype}" if rec.dtype else "")
    if sibling is not None:
        b = f"scaled from {sibling} ({b})"
    elif rec.engine != "" and note:
        b = f"{b}; {note}"
    return b


@dataclass(frozen=True)
class KernelTables:
    """Per-configuration tables (rows = configurations) and the basis of each term."""

    gemm_dense: np.ndarray  # (n, len(M_LOG2)) log s
    gemm_lm: np.ndarray
    gemm_expert: np.ndarray
    allreduce: np.ndarray  # (n, len(MSG_LOG2)) log s; -inf-free, rows with tp == 1 unused
    decode_attn: np.ndarray  # (n, len(ATT_B_LOG2), len(ATT_C_LOG2)) log s
    prefill_attn: np.ndarray
    basis: dict[str, str]


@functools.lru_cache(maxsize=4096)
def _cached_tables(key: tuple, engine: str) -> KernelTables:
    return _build(*key, engine=engine)


def build_tables(
    *,
    model: Any,
    gpu: Any,
    compute_dtype: str,
    weight_bytes: float,
    weight_only: bool,
    kv_bytes: float,
    tp: np.ndarray,
    pp: np.ndarray,
    ep: np.ndarray,
    engine: str,
    fractions: Mapping[str, Fractions],
) -> KernelTables:
    """Tables for every row of one (model, GPU, scheme) group (rows differ by tp / pp / ep)."""
    combos, inverse = np.unique(np.stack([tp, pp, ep], axis=1), axis=0, return_inverse=True)
    parts = []
    for t, p, e in combos:
        key = (
            model,
            gpu,
            compute_dtype,
            weight_bytes,
            weight_only,
            kv_bytes,
            float(t),
            float(p),
            float(e),
            tuple(sorted(fractions.items())),
        )
        parts.append(_cached_tables(key, engine))
    inv = inverse.ravel()
    return KernelTables(
        **{
            f: np.stack([getattr(x, f)[0] for x in parts]).astype(np.float32)[inv]
            for f in ("gemm_dense", "gemm_lm", "gemm_expert", "allreduce", "decode_attn", "prefill_attn")
        },
        basis=parts[0].basis,
    )


def _gemm_table(
    lib: KernelLibrary,
    gpu: Any,
    peaks: dict[str, GpuPeaks],
    compute_dtype: str,
    engine: str,
    m: np.ndarray,
    n: float,
    k: float,
    weight_bytes: float,
    weight_only: bool,
) -> tuple[np.ndarray, str]:
    """Time (s) of a GEMM (m x k) @ (k x n) at the rows `m`, and its basis."""
    dtypes = ("bf16",) if weight_only else GEMM_DTYPES.get(compute_dtype, ("bf16",))
    rec, sib = find_record(lib, gpu.id, engine, "gemm", dtypes)
    if rec is None and not weight_only and compute_dtype != "bf16":
        rec, sib = find_record(lib, gpu.id, engine, "gemm", ("bf16",))
    target = peaks[gpu.id]
    native = NATIVE_WEIGHT_BYTES.get(rec.dtype, 2.0) if rec is not None else weight_bytes
    if rec is None:  # microbenchmark roofline
        t = target.gemm_roof_s(m, n, k, weight_bytes) + 4e-6
        return t, "microbenchmark"
    t = rec.time_at(m, n, k)
    note = ""
    if sib is not None:
        src = peaks[sib]
        t = t * target.gemm_roof_s(m, n, k, native) / src.gemm_roof_s(m, n, k, native)
    r = weight_bytes / native
    if abs(r - 1.0) > 1e-6:  # weight bytes differ from the surface's: correct the weight read
        t1 = t[0]  # m[0] == 1: the weight-read (memory-bound) time
        t = np.maximum(min(r, 1.0) * t, t + (r - 1.0) * t1)
        note = f"weight bytes x{r:.3g}"
    return t, _basis(rec, sib, note)


def _build(
    model: Any,
    gpu: Any,
    compute_dtype: str,
    weight_bytes: float,
    weight_only: bool,
    kv_bytes: float,
    tp: float,
    pp: float,
    ep: float,
    frac_items: tuple,
    *,
    engine: str,
) -> KernelTables:
    from objectives.accelerators import get_accelerator

    lib = default_library()
    fractions = dict(frac_items)
    ids = {gpu.id, *(s for g, s in SIBLINGS.items() if g == gpu.id)}
    peaks: dict[str, GpuPeaks] = {}
    for gid in ids:
        acc = gpu if gid == gpu.id else get_accelerator(gid)
        dtype = compute_dtype if acc.supports(compute_dtype) else "bf16"
        peaks[gid] = GpuPeaks(
            acc.hbm_bw_bytes_per_s,
            acc.peak_flops[dtype],
            acc.peak_flops["bf16"],
            acc.scaleup_bw_bytes_per_s,
            fractions[gid],
        )
    m = _log_knots(M_LOG2)
    hidden = float(model.hidden_size)
    layers = float(np.ceil(model.n_layers / pp))
    dense_layers = model.n_dense_layers / model.n_layers * layers
    moe_layers = model.n_moe_layers / model.n_layers * layers
    kv_share = 1.0 if model.is_mla else max(model.n_kv_heads / tp, 1.0) / model.n_kv_heads
    attn_params = (model.attn_params_per_layer - model.kv_proj_params_per_layer) / tp + (
        model.kv_proj_params_per_layer * kv_share
    )
    basis: dict[str, str] = {}
    t_attn, basis["gemm"] = _gemm_table(
        lib, gpu, peaks, compute_dtype, engine, m, attn_params / hidden, hidden, weight_bytes, weight_only
    )
    dense = layers * t_attn
    if model.dense_mlp_params_per_layer > 0 and dense_layers > 0:
        t_mlp, _ = _gemm_table(
            lib,
            gpu,
            peaks,
            compute_dtype,
            engine,
            m,
            model.dense_mlp_params_per_layer / tp / hidden,
            hidden,
            weight_bytes,
            weight_only,
        )
        dense = dense + dense_layers * t_mlp
    shared = model.shared_expert_params_per_layer / tp + model.router_params_per_layer
    if shared > 0 and moe_layers > 0:
        t_sh, _ = _gemm_table(
            lib, gpu, peaks, compute_dtype, engine, m, shared / hidden, hidden, weight_bytes, weight_only
        )
        dense = dense + moe_layers * t_sh
    t_lm, _ = _gemm_table(lib, gpu, peaks, "bf16", engine, m, model.lm_head_params / tp / hidden, hidden, 2.0, False)
    if model.n_experts > 0 and moe_layers > 0:
        per_expert_n = model.params_per_expert * ep / tp / hidden
        t_e, _ = _gemm_table(lib, gpu, peaks, compute_dtype, engine, m, per_expert_n, hidden, weight_bytes, weight_only)
        expert = moe_layers * t_e
    else:
        expert = np.full_like(m, 1e-30)
    # all-reduce over tp GPUs
    msg = _log_knots(MSG_LOG2)
    rec, sib = find_record(lib, gpu.id, engine, "allreduce", ("bf16",))
    if rec is None:
        rec, sib = find_record(lib, gpu.id, "nccl", "nccl_allreduce", ("fp16", "bf16"))
    n_gpu = max(tp, 2.0)
    if rec is not None:
        ar = rec.time_at(n_gpu, msg)
        if sib is not None:
            t_, s_ = peaks[gpu.id], peaks[sib]
            bw_ratio = (s_.link_bw * s_.frac.link) / (t_.link_bw * t_.frac.link)
            lat_ratio = t_.frac.alpha_s / s_.frac.alpha_s
            small = rec.time_at(n_gpu, msg[:1])[0]
            ar = small * lat_ratio + np.maximum(ar - small, 0.0) * bw_ratio
        basis["communication"] = _basis(rec, sib)
    else:
        f = peaks[gpu.id].frac
        ar = f.alpha_s + 2.0 * (n_gpu - 1.0) / n_gpu * msg / (peaks[gpu.id].link_bw * f.link)
        basis["communication"] = "microbenchmark"
    # attention
    bk = _log_knots(ATT_B_LOG2)[:, None]
    ctx = _log_knots(ATT_C_LOG2)[None, :]
    heads = model.n_heads / tp
    if model.is_mla:
        kvh, ratio, hd = 1.0, float(heads), float(model.kv_lora_rank + model.head_dim - model.v_head_dim)
        hd = max(hd, 64.0)
    else:
        kvh = max(model.n_kv_heads / tp, 1.0)
        ratio, hd = heads / kvh, float(model.head_dim)
    kvfp8 = kv_bytes < 2.0
    rec, sib = find_record(lib, gpu.id, engine, "generation_attention", ("bf16-kvfp8", "bf16") if kvfp8 else ("bf16",))
    t_ = peaks[gpu.id]
    if rec is not None:
        dec = rec.time_at(bk, ctx, ratio, hd)
        if sib is not None:
            s_ = peaks[sib]
            dec = dec * (s_.hbm_bw * s_.frac.bw) / (t_.hbm_bw * t_.frac.bw)
        basis["attention"] = _basis(rec, sib)
    else:
        dec = bk * ctx * hd * 2.0 * kv_bytes / (t_.hbm_bw * t_.frac.bw) + 4e-6
        basis["attention"] = "microbenchmark"
    ctx_dtypes = ("fp8", "bf16-kvfp8", "bf16") if kvfp8 else ("bf16",)
    rec, sib = find_record(lib, gpu.id, engine, "context_attention", ctx_dtypes)
    if rec is not None:
        pre = rec.time_at(bk, ctx, ratio, hd)
        if sib is not None:
            s_ = peaks[sib]
            pre = pre * (s_.bf16_flops * s_.frac.attention) / (t_.bf16_flops * t_.frac.attention)
        basis["attention"] += "; prefill " + _basis(rec, sib)
    else:
        pre = 2.0 * bk * ctx * ctx * hd * 2.0 / 2.0 / (t_.bf16_flops * t_.frac.attention) + 4e-6
        basis["attention"] += "; prefill microbenchmark"
    basis["moe"] = basis["gemm"] if model.n_experts > 0 else ""
    return KernelTables(
        gemm_dense=np.log(dense)[None, :],
        gemm_lm=np.log(t_lm)[None, :],
        gemm_expert=np.log(expert)[None, :],
        allreduce=np.log(ar)[None, :],
        decode_attn=np.log(np.broadcast_to(dec, (bk.size, ctx.size)))[None, :, :],
        prefill_attn=np.log(np.broadcast_to(pre, (bk.size, ctx.size)))[None, :, :],
        basis=basis,
    )


# --- evaluation over per-row tables ---------------------------------------------------------------


def _lerp_index(log2_knots: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(segment index, weight) on uniform log2 knots; held below, extended above."""
    x0, dx, k = log2_knots[0], log2_knots[1] - log2_knots[0], log2_knots.size
    u = (np.log2(np.maximum(x, 1e-30)) - x0) / dx
    i = np.clip(np.floor(u), 0, k - 2).astype(np.intp)
    w = np.maximum(u - i, 0.0)
    return i, w


def interp_rows(table: np.ndarray, log2_knots: np.ndarray, x: np.ndarray) -> np.ndarray:
    """exp of row-wise linear interpolation of `table` (n x k, log s) at `x` (n,)."""
    n, k = table.shape
    i, w = _lerp_index(log2_knots, x)
    flat = table.ravel()
    base = np.arange(n) * k + i
    lo = flat[base]
    return np.exp(lo + (flat[base + 1] - lo) * w)


def interp_rows_2d(
    table: np.ndarray, b_knots: np.ndarray, c_knots: np.ndarray, xb: np.ndarray, xc: np.ndarray
) -> np.ndarray:
    n, kb, kc = table.shape
    i, wi = _lerp_index(b_knots, xb)
    j, wj = _lerp_index(c_knots, xc)
    flat = table.ravel()
    base = np.arange(n) * (kb * kc) + i * kc + j
    a, b_, c, d = flat[base], flat[base + 1], flat[base + kc], flat[base + kc + 1]
    top = a + (b_ - a) * wj
    bot = c + (d - c) * wj
    return np.exp(top + (bot - top) * wi)


def term_basis(
    eff_model: Any, model: Any, gpu: Any, weights: str, kv_cache: str, tp: int = 1, engine: str | None = None
) -> dict[str, str]:
    """Where each term of an estimate comes from with the kernel model: {"gemm", "attention",
    "moe", "communication", "overhead"} -> `kernel-db <engine> <version> <dtype>`,
    `scaled from <gpu> (...)` or `microbenchmark`. `engine` (kernel records) overrides the
    efficiency model's."""
    from objectives.quantization import get_scheme, kv_cache_bytes_per_element, resolve_compute_dtype

    scheme = get_scheme(weights)
    compute = resolve_compute_dtype(scheme, frozenset(d for d in gpu.peak_flops if gpu.supports(d)))
    frac = {gpu.id: eff_model.fractions(gpu.id, gpu.vendor, compute)}
    sib = SIBLINGS.get(gpu.id)
    if sib is not None:
        from objectives.accelerators import get_accelerator

        acc = get_accelerator(sib)
        frac[sib] = eff_model.fractions(sib, acc.vendor, compute if acc.supports(compute) else "bf16")
    weight_only = compute != scheme.compute_dtype or scheme.weight_only
    key = (
        model,
        gpu,
        compute,
        float(scheme.bytes_per_weight),
        bool(weight_only),
        float(kv_cache_bytes_per_element(kv_cache)),
        float(tp),
        1.0,
        1.0,
        tuple(sorted(frac.items())),
    )
    basis = dict(_cached_tables(key, engine or eff_model.kernel_engine).basis)
    params = eff_model.kernel_params
    basis["overhead"] = "fitted end to end (kernel_serving.yaml)" if params else "efficiency.yaml"
    return basis


# --- surfaces of GPUs without kernel data -----------------------------------------------------

_COLLECTIVES = ("allreduce", "nccl_allreduce", "nccl_allgather", "nccl_reducescatter", "nccl_alltoall")


def _peaks_of(gpu: Any, eff_model: Any, dtype: str) -> GpuPeaks:
    d = dtype if gpu.supports(dtype) else "bf16"
    return GpuPeaks(
        gpu.hbm_bw_bytes_per_s,
        gpu.peak_flops[d],
        gpu.peak_flops["bf16"],
        gpu.scaleup_bw_bytes_per_s,
        eff_model.fractions(gpu.id, gpu.vendor, d),
    )


def _record_dtype(rec: KernelRecord) -> str:
    """The compute dtype whose peak a record's kernels run at."""
    head = rec.dtype.split("-")[0]
    return {"nvfp4": "fp4", "fp8_block": "fp8", "sq": "int8", "fp16": "bf16"}.get(head, head)


def _scale_factors(rec: KernelRecord, t: GpuPeaks, s: GpuPeaks) -> tuple[np.ndarray, str]:
    """Per-knot time ratio target / source of `rec`'s surface, and how it was formed."""
    mesh = np.meshgrid(*rec.grid, indexing="ij")
    bw = (s.hbm_bw * s.frac.bw) / (t.hbm_bw * t.frac.bw)
    if rec.op == "gemm":
        native = NATIVE_WEIGHT_BYTES.get(rec.dtype, 2.0)
        m, n, k = mesh
        return t.gemm_roof_s(m, n, k, native) / s.gemm_roof_s(m, n, k, native), (
            "per shape: GEMM roofline (HBM bandwidth x copy fraction, peak x GEMM fraction) ratio"
        )
    if rec.op == "generation_attention":
        return np.full(rec.time_s.shape, bw), f"HBM bandwidth x copy-fraction ratio {bw:.3g}"
    if rec.op == "context_attention":
        fl = (s.bf16_flops * s.frac.attention) / (t.bf16_flops * t.frac.attention)
        return np.full(rec.time_s.shape, fl), f"bf16 peak x attention-fraction ratio {fl:.3g}"
    if rec.op == "moe":
        tokens, experts, params = mesh
        native = NATIVE_WEIGHT_BYTES.get(rec.dtype, 2.0)
        byts = np.minimum(experts, tokens) * params * 3.0 * native
        flops = 2.0 * tokens * params * 3.0

        def roof(p: GpuPeaks) -> np.ndarray:
            return np.maximum(byts / (p.hbm_bw * p.frac.bw), flops / (p.flops * p.frac.gemm))

        return roof(t) / roof(s), "per shape: grouped-GEMM roofline ratio"
    if rec.op in _COLLECTIVES:
        lat = t.frac.alpha_s / s.frac.alpha_s
        link = (s.link_bw * s.frac.link) / (t.link_bw * t.frac.link)
        small = rec.time_s[:, :1]  # the smallest message: latency-bound
        new = small * lat + np.maximum(rec.time_s - small, 0.0) * link
        return new / rec.time_s, f"latency ratio {lat:.3g} at the smallest message, link bandwidth ratio {link:.3g}"
    raise ValueError(f"no scaling rule for op {rec.op}")


def scaled_record(record: KernelRecord, gpu: Any, eff_model: Any) -> KernelRecord:
    """`record` (measured on a sibling GPU) scaled onto `gpu`, which has no kernel data: the
    sibling's surface times (this GPU's peak or bandwidth / the sibling's) times (its
    microbenchmark fraction / the sibling's, objectives/data/efficiency.yaml). Its `basis` is
    `scaled from <sibling> (kernel-db <engine> <version> <dtype>)`; `note` says how."""
    from objectives.accelerators import get_accelerator

    sib = get_accelerator(record.gpu)
    dtype = _record_dtype(record)
    t, s = _peaks_of(gpu, eff_model, dtype), _peaks_of(sib, eff_model, dtype)
    factor, how = _scale_factors(record, t, s)
    measured = {}
    for g in (gpu, sib):
        bases = {
            eff_model._lookup(g.id, g.vendor, f, None)[1]
            for f in ("hbm_copy_fraction", "attention_fraction", "allreduce_busbw_fraction")
        }
        bases.add(eff_model._lookup(g.id, g.vendor, "gemm_fraction", dtype if g.supports(dtype) else "bf16")[1])
        measured[g.id] = ", ".join(sorted(bases))
    note = (
        f"scaled from {sib.id} ({record.basis} {record.dtype}): {how}; microbenchmark fractions "
        f"{gpu.id}: {measured[gpu.id]}, {sib.id}: {measured[sib.id]}"
    )
    return KernelRecord(
        name=f"{gpu.id}/scaled-from-{sib.id}/{record.engine}/{record.op}/{record.dtype}",
        gpu=gpu.id,
        engine=record.engine,
        engine_version=record.engine_version,
        op=record.op,
        dtype=record.dtype,
        axes=record.axes,
        grid=record.grid,
        time_s=record.time_s * factor,
        source={
            **record.source,
            "scaled_from": record.name,
            "scaled_from_gpu": sib.id,
            "fractions": {gpu.id: measured[gpu.id], sib.id: measured[sib.id]},
        },
        collection=record.collection,
        # no rows of this GPU to fit: the sibling's fit, kept apart
        fit={"rows": 0, "sibling_fit": {k: v for k, v in record.fit.items() if k != "sample"}},
        note=note,
    )


def scaled_records(gpu: Any, eff_model: Any, engine: str | None = None) -> list[KernelRecord]:
    """Every surface of `gpu`'s sibling (objectives.kernel_timing.SIBLINGS) scaled onto `gpu`
    (empty when `gpu` has records of its own or no sibling); `engine` keeps that engine's only."""
    lib = default_library()
    sib = SIBLINGS.get(gpu.id)
    if sib is None or lib.engines(gpu.id):
        return []
    return [
        scaled_record(r, gpu, eff_model)
        for r in lib.records
        if r.gpu == sib and (engine is None or r.engine in (engine, "nccl"))
    ]
