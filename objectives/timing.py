"""Step times: prefill and decode on one GPU, from bytes, FLOPs, messages and overheads.

Kernels of a step run one after another, so a step's time is the sum of its kernel classes —
linear layers (GEMMs), attention, communication — plus fixed overheads. Inside a kernel, memory
traffic and math overlap; a hard roofline max(t_mem, t_math) over-promises near the ridge, so
the two are combined with a smooth maximum

    t = (t_mem^q + t_math^q)^(1/q)        (q = roofline_sharpness; q -> inf is the roofline)

GEMM efficiency ramps with the rows M a GEMM sees (tokens, or tokens per expert for MoE):

    eff_gemm(M) = eff_gemm * M / (M + gemm_half_tokens)

Per step, the runtime adds `layer_overhead_s` per layer (kernel launches, norms, rotary),
`step_overhead_s` (scheduling, sampling launch) and `seq_overhead_s` per sequence (sampling,
detokenization, bookkeeping on the host) — the per-step CPU work that dominates MoE models with
few active parameters at thousands of sequences.

With the kernel model (`b.uses_kernels`, objectives.kernel_timing) GEMM, attention and the TP
all-reduce come from measured kernel surfaces instead (times `kernel_time_scale`); the byte and
FLOP components of StepTime stay the analytic ones at microbenchmark rates, for the bound.

Attention DP (`b.attention_dp` > 1, objectives.modes): `forward_time_s` takes the load of the
busiest attention rank (its sequences, prompt tokens) and `moe_tokens`, the tokens of all ranks
that the MoE layers route (default: every rank as loaded as that one); attention, dense GEMMs,
the LM head and the per-sequence host work see the rank, the expert GEMMs see all routed tokens
spread over the EP ranks times `moe_imbalance`, communication is `dep_communication_time_s`
(prefill steps dispatch by node: node-limited routing sends min(top-k, M) copies over the NIC).
With two-batch overlap (`b.two_batch_overlap`, SGLang TBO / vLLM DBO) a DEP step takes
max(compute, communication) + f * min(...) + overheads (objectives.modes.two_batch_overlap_time_s;
f from the engine's measured TBO gain, prefill and decode apart) instead of the sum.
Speculative decoding (`b.mtp_tokens` = k > 0): a decode step verifies k + 1 positions per
sequence (GEMM rows, attention queries and logits x (k + 1), the KV cache read once) and runs the
draft module k times; `decode_step_time_s` returns that step divided by the expected tokens per
step, (1 - a^(k+1)) / (1 - a), the time per output token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from objectives.batch import ConfigBatch
from objectives.communication import (
    alltoall_time_s,
    dep_communication_time_s,
    dep_moe_alltoall_time_s,
    pp_handoff_time_s,
    tp_communication_time_s,
)
from objectives.compute import (
    attention_flops,
    dense_gemm_flops,
    dense_weight_bytes,
    expected_experts_touched,
    expert_gemm_flops,
    expert_weight_bytes,
    kv_read_bytes,
    lm_head_bytes,
    lm_head_flops,
    tokens_per_expert,
)
from objectives.kernel_timing import ATT_B_LOG2, ATT_C_LOG2, M_LOG2, MSG_LOG2, interp_rows, interp_rows_2d
from objectives.memory import kv_heads_per_gpu, layers_per_gpu
from objectives.modes import expected_tokens_per_step, tbo_exposed_fractions, two_batch_overlap_time_s


@dataclass(frozen=True)
class StepTime:
    """Time of one forward step of one pipeline stage, by component (seconds, arrays)."""

    weights_memory_s: np.ndarray  # reading weights at achieved bandwidth
    gemm_compute_s: np.ndarray  # linear-layer math at achieved FLOP/s
    gemm_s: np.ndarray  # the two combined
    kv_memory_s: np.ndarray
    attention_compute_s: np.ndarray
    attention_s: np.ndarray
    communication_s: np.ndarray
    overhead_s: np.ndarray
    total_s: np.ndarray

    def scaled(self, factor: np.ndarray | float) -> StepTime:
        return StepTime(**{k: v * factor for k, v in self.__dict__.items()})


def roofline_time_s(memory_s: np.ndarray, compute_s: np.ndarray, sharpness: np.ndarray) -> np.ndarray:
    """Smooth maximum (t_mem^q + t_math^q)^(1/q) = hi * (1 + (lo/hi)^q)^(1/q), computed stably."""
    q = np.asarray(sharpness)
    if q.ndim and q.size and np.all(q == q.flat[0]):
        q = float(q.flat[0])  # a scalar exponent is several times faster in numpy
    hi = np.maximum(np.maximum(memory_s, compute_s), 1e-30)
    lo = np.minimum(memory_s, compute_s)
    return hi * (1.0 + (lo / hi) ** q) ** (1.0 / q)


def gemm_efficiency(b: ConfigBatch, rows: np.ndarray) -> np.ndarray:
    """Achieved fraction of peak FLOP/s of a GEMM with `rows` rows (M)."""
    m = np.maximum(rows, 1e-9)
    return b.eff_gemm * m / (m + b.gemm_half_tokens)


def lm_head_time_s(b: ConfigBatch, logit_tokens: np.ndarray) -> np.ndarray:
    """The LM head alone for `logit_tokens` logits: roofline of its bytes against its FLOPs at
    the GEMM efficiency of that many rows (the part of `forward_time_s`'s dense GEMM a
    layer probe does not measure); the kernel surface with the kernel model."""
    if b.uses_kernels:
        m = np.broadcast_to(np.asarray(logit_tokens, dtype=np.float64), (len(b),))
        return interp_rows(b.kt_gemm_lm, M_LOG2, np.maximum(m, 1.0)) * (m > 0) * b.kernel_time_scale
    mem = lm_head_bytes(b) / (b.hbm_bw_bytes_per_s * b.eff_bw)
    math = lm_head_flops(b, logit_tokens) / (b.peak_flops * gemm_efficiency(b, logit_tokens))
    return roofline_time_s(mem, math, b.roofline_sharpness)


def forward_time_s(
    b: ConfigBatch,
    decode_seqs: np.ndarray,
    decode_context: np.ndarray,
    prefill_tokens: np.ndarray | float = 0.0,
    prefill_context: np.ndarray | float = 0.0,
    prefill_seqs: np.ndarray | float = 0.0,
    *,
    moe_tokens: np.ndarray | None = None,
    tokens_per_seq: np.ndarray | float = 1.0,
    prefill_phase: bool = False,
) -> StepTime:
    """One step of one pipeline stage that decodes `decode_seqs` sequences at mean context
    `decode_context` and prefills `prefill_tokens` prompt tokens (of `prefill_seqs` prompts)
    at mean causal context `prefill_context`. Each decoding sequence feeds `tokens_per_seq`
    query tokens (k + 1 when verifying k draft tokens). Under attention DP the arguments are
    those of the busiest attention rank and `moe_tokens` the stage's routed tokens (module
    docstring); `prefill_phase`: a prefill step (DEP dispatch by node, the prefill TBO
    fraction)."""
    decode_seqs = np.asarray(decode_seqs, dtype=np.float64)
    prefill_tokens = np.asarray(prefill_tokens, dtype=np.float64)
    queries = decode_seqs if np.ndim(tokens_per_seq) == 0 and tokens_per_seq == 1.0 else decode_seqs * tokens_per_seq
    tokens = queries + prefill_tokens
    logit_tokens = queries + prefill_seqs
    bw = b.hbm_bw_bytes_per_s * b.eff_bw
    q = b.roofline_sharpness
    dep = b.has_attention_dp
    routed = tokens
    if dep:
        routed = tokens * b.attention_dp if moe_tokens is None else np.asarray(moe_tokens, dtype=np.float64)
        imbalance = np.where(b.attention_dp > 1, b.moe_imbalance, 1.0)

    touched = expected_experts_touched(b.n_experts, b.experts_per_token, routed)
    kv_mem = kv_read_bytes(b, decode_seqs, decode_context) / (b.hbm_bw_bytes_per_s * b.eff_kv_bw)
    attn_flops = attention_flops(b, queries, decode_context) + attention_flops(b, prefill_tokens, prefill_context)
    attn_math = attn_flops / (b.attn_peak_flops * b.eff_attention)
    dense_mem = dense_weight_bytes(b) / bw
    expert_mem = expert_weight_bytes(b, touched) / bw
    if b.uses_kernels:
        dense_math = (dense_gemm_flops(b, tokens) + lm_head_flops(b, logit_tokens)) / (b.peak_flops * b.eff_gemm)
        expert_math = expert_gemm_flops(b, routed) / (b.peak_flops * b.eff_gemm)
        if dep:
            expert_math = expert_math * imbalance
        gemm, attention, comm = _kernel_terms(
            b,
            decode_seqs,
            decode_context,
            prefill_tokens,
            prefill_context,
            tokens,
            logit_tokens,
            touched,
            routed=routed,
            queries_per_seq=tokens_per_seq,
            node_dedup=prefill_phase,
        )
    else:
        dense_math = (dense_gemm_flops(b, tokens) + lm_head_flops(b, logit_tokens)) / (
            b.peak_flops * gemm_efficiency(b, tokens)
        )
        expert_math = expert_gemm_flops(b, routed) / (
            b.peak_flops * gemm_efficiency(b, tokens_per_expert(b, routed, touched))
        )
        if dep:
            expert_math = expert_math * imbalance
        gemm = roofline_time_s(dense_mem, dense_math, q) + roofline_time_s(expert_mem, expert_math, q)
        attention = roofline_time_s(kv_mem, attn_math, q)
        comm = tp_communication_time_s(b, tokens)
        if dep:
            comm = np.where(b.attention_dp > 1, dep_communication_time_s(b, tokens, node_dedup=prefill_phase), comm)
    overhead = (
        b.layer_overhead_s * layers_per_gpu(b) + b.step_overhead_s + b.seq_overhead_s * (decode_seqs + prefill_seqs)
    )
    total = gemm + attention + comm + overhead
    if dep and np.any(b.two_batch_overlap > 0):
        # two-batch overlap: one micro-batch's all-to-alls under the other's compute
        f = tbo_exposed_fractions()[0 if prefill_phase else 1]
        overlapped = two_batch_overlap_time_s(gemm + attention, comm, f) + overhead
        total = np.where((b.attention_dp > 1) & (b.two_batch_overlap > 0), overlapped, total)
    return StepTime(
        weights_memory_s=dense_mem + expert_mem,
        gemm_compute_s=dense_math + expert_math,
        gemm_s=gemm,
        kv_memory_s=kv_mem,
        attention_compute_s=attn_math,
        attention_s=attention,
        communication_s=comm,
        overhead_s=overhead,
        total_s=total,
    )


def _kernel_terms(
    b: ConfigBatch,
    decode_seqs: np.ndarray,
    decode_context: np.ndarray | float,
    prefill_tokens: np.ndarray,
    prefill_context: np.ndarray | float,
    tokens: np.ndarray,
    logit_tokens: np.ndarray | float,
    touched: np.ndarray,
    *,
    routed: np.ndarray | None = None,
    queries_per_seq: np.ndarray | float = 1.0,
    node_dedup: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gemm, attention, communication) seconds of one stage step from the kernel tables
    (`routed`: the tokens the MoE layers route, attention DP; `queries_per_seq`: the query
    tokens each decoding sequence verifies, MTP)."""
    n = len(b)
    scale = b.kernel_time_scale
    tokens = np.broadcast_to(tokens, (n,))
    logits = np.broadcast_to(np.asarray(logit_tokens, dtype=np.float64), (n,))
    gemm = interp_rows(b.kt_gemm_dense, M_LOG2, np.maximum(tokens, 1.0)) * (tokens > 0)
    gemm = gemm + interp_rows(b.kt_gemm_lm, M_LOG2, np.maximum(logits, 1.0)) * (logits > 0)
    if np.any(b.n_experts > 0):
        moe_in = tokens if routed is None else np.broadcast_to(routed, (n,))
        m_e = tokens_per_expert(b, moe_in, touched)
        per_expert = interp_rows(b.kt_gemm_expert, M_LOG2, np.maximum(m_e, 1.0))
        expert = np.where((b.n_experts > 0) & (tokens > 0), per_expert * touched / b.ep, 0.0)
        if b.has_attention_dp:
            expert = expert * np.where(b.attention_dp > 1, b.moe_imbalance, 1.0)
        gemm = gemm + expert

    n_layers = layers_per_gpu(b)
    sliding = b.n_sliding_layers / b.n_layers * n_layers
    has_window = b.sliding_window > 0
    attention = np.zeros(n)
    decode_seqs = np.broadcast_to(decode_seqs, (n,))
    if np.any(decode_seqs > 0):
        ctx = np.broadcast_to(np.asarray(decode_context, dtype=np.float64), (n,))
        kvh = np.where(b.is_mla > 0, 1.0, kv_heads_per_gpu(b))
        bk = np.maximum(decode_seqs * kvh * queries_per_seq, 1.0)
        full = interp_rows_2d(b.kt_decode_attn, ATT_B_LOG2, ATT_C_LOG2, bk, ctx)
        layer_t = (n_layers - sliding) * full
        if np.any(has_window):
            win = interp_rows_2d(b.kt_decode_attn, ATT_B_LOG2, ATT_C_LOG2, bk, np.minimum(ctx, b.sliding_window))
            layer_t = layer_t + sliding * np.where(has_window, win, full)
        else:
            layer_t = layer_t + sliding * full
        attention = attention + np.where(decode_seqs > 0, layer_t, 0.0)
    prefill_tokens = np.broadcast_to(prefill_tokens, (n,))
    if np.any(prefill_tokens > 0):
        isl = np.maximum(2.0 * np.broadcast_to(np.asarray(prefill_context, dtype=np.float64), (n,)), 1.0)
        prompts = prefill_tokens / isl  # prompts' worth of tokens in this step (a chunk: < 1)
        heads = b.n_heads / b.tp
        bh = np.maximum(prompts, 1.0) * heads
        full = interp_rows_2d(b.kt_prefill_attn, ATT_B_LOG2, ATT_C_LOG2, bh, isl)
        if np.any(has_window):
            win = interp_rows_2d(b.kt_prefill_attn, ATT_B_LOG2, ATT_C_LOG2, bh, np.minimum(isl, b.sliding_window))
            win = np.where(has_window, win, full)
        else:
            win = full
        layer_t = ((n_layers - sliding) * full + sliding * win) * np.minimum(prompts, 1.0)
        attention = attention + np.where(prefill_tokens > 0, layer_t, 0.0)

    msg = tokens * b.hidden * 2.0
    ar_kernel = interp_rows(b.kt_allreduce, MSG_LOG2, np.maximum(msg, 1.0)) * scale
    ar = np.where((b.tp > 1) & (tokens > 0), ar_kernel + b.allreduce_overhead_s, 0.0)
    moe_layers = b.n_moe_layers / b.n_layers * n_layers
    use_a2a = (b.ep > 1) & (b.n_experts > 0)
    if np.any(use_a2a):
        a2a = alltoall_time_s(
            msg * b.experts_per_token, b.ep, b.link_bw_bytes_per_s, b.eff_link, b.allreduce_latency_s
        ) + np.where(b.ep > 1, b.allreduce_overhead_s, 0.0)
        mlp = (n_layers - moe_layers) * ar + moe_layers * np.where(use_a2a, 2.0 * a2a, ar)
    else:
        mlp = n_layers * ar
    comm = n_layers * ar + mlp
    if b.has_attention_dp:
        dep_a2a = dep_moe_alltoall_time_s(b, tokens, node_dedup) + b.allreduce_overhead_s
        dep = n_layers * ar + (n_layers - moe_layers) * ar + moe_layers * np.where(b.n_experts > 0, dep_a2a, ar)
        comm = np.where(b.attention_dp > 1, dep, comm)
    return gemm * scale, attention * scale, comm


def decode_step_time_s(b: ConfigBatch, batch: np.ndarray, context: np.ndarray) -> StepTime:
    """Time for every one of `batch` sequences (mean context `context`) to advance one token.

    With PP stages the batch is split into PP micro-batches kept in flight, so each stage runs
    PP micro-steps of batch / PP per token round: t = PP * (t_stage(batch / PP) + hand-off).
    """
    micro = np.maximum(np.asarray(batch, dtype=np.float64) / b.pp, 1e-9)
    rank = micro / b.attention_dp if b.has_attention_dp else micro  # each attention rank's share
    if b.has_mtp:
        return _speculative_decode_step(b, micro, rank, context)
    stage = forward_time_s(b, rank, context)
    handoff = pp_handoff_time_s(b, micro)
    out = stage.scaled(b.pp)
    return StepTime(
        **{
            **out.__dict__,
            "communication_s": out.communication_s + b.pp * handoff,
            "total_s": out.total_s + b.pp * handoff,
        }
    )


def draft_time_s(b: ConfigBatch, rank_seqs: np.ndarray, context: np.ndarray | float) -> StepTime:
    """The draft module's k passes of one verification step: each pass runs `draft_layers`
    layers (a share draft_layers / layers of a one-token step's GEMM, attention and
    communication) and the LM head for every sequence of the rank; 0 where mtp = 0."""
    one = forward_time_s(b, rank_seqs, context)
    head = lm_head_time_s(b, rank_seqs)
    share = b.draft_layers / np.maximum(layers_per_gpu(b), 1.0)
    body = {k: v * share for k, v in one.__dict__.items() if k not in ("overhead_s", "total_s")}
    body["gemm_s"] = np.maximum(one.gemm_s - head, 0.0) * share + head
    body["overhead_s"] = b.layer_overhead_s * b.draft_layers
    body["total_s"] = body["gemm_s"] + body["attention_s"] + body["communication_s"] + body["overhead_s"]
    return StepTime(**body).scaled(b.mtp_tokens)


def _speculative_decode_step(
    b: ConfigBatch, micro: np.ndarray, rank: np.ndarray, context: np.ndarray | float
) -> StepTime:
    """Verification of k + 1 positions per sequence plus the k draft passes, per PP micro-step,
    divided by the expected tokens per step: the time per output token."""
    k = b.mtp_tokens
    verify = forward_time_s(b, rank, context, tokens_per_seq=k + 1.0)
    draft = draft_time_s(b, rank, context)
    handoff = pp_handoff_time_s(b, micro * (k + 1.0))
    per_token = b.pp / expected_tokens_per_step(b.mtp_acceptance, k)
    parts = {key: (getattr(verify, key) + np.where(k > 0, getattr(draft, key), 0.0)) for key in verify.__dict__}
    parts["communication_s"] = parts["communication_s"] + handoff
    parts["total_s"] = parts["total_s"] + handoff
    return StepTime(**{key: v * per_token for key, v in parts.items()})


def prefill_time_s(
    b: ConfigBatch,
    prompt_tokens: np.ndarray,
    sequences: np.ndarray | float = 1.0,
    running_seqs: np.ndarray | float = 0.0,
    running_context: np.ndarray | float = 0.0,
) -> StepTime:
    """Time to prefill `sequences` prompts of `prompt_tokens` tokens each, in chunks of at most
    `max_num_tokens` tokens, while `running_seqs` other sequences (mean context
    `running_context`) keep decoding in the same steps (chunked prefill / in-flight batching).
    The chunks pipeline through the PP stages: (chunks + PP - 1) stage steps."""
    prompt = np.asarray(prompt_tokens, dtype=np.float64)
    if b.has_attention_dp or b.has_mtp:
        return _prefill_modes(b, prompt, sequences, running_seqs, running_context)
    total = prompt * sequences
    chunks = np.maximum(np.ceil(total / b.max_num_tokens), 1.0)
    stage = forward_time_s(
        b,
        np.asarray(running_seqs, dtype=np.float64) / b.pp + np.zeros_like(total),
        running_context,
        prefill_tokens=total / chunks,
        prefill_context=prompt / 2.0,
        prefill_seqs=sequences / chunks,
    )
    passes = chunks + b.pp - 1.0
    handoff = pp_handoff_time_s(b, total / chunks) * (b.pp - 1.0)
    out = stage.scaled(passes)
    return StepTime(
        **{**out.__dict__, "communication_s": out.communication_s + handoff, "total_s": out.total_s + handoff}
    )


def _prefill_modes(
    b: ConfigBatch,
    prompt: np.ndarray,
    sequences: np.ndarray | float,
    running_seqs: np.ndarray | float,
    running_context: np.ndarray | float,
) -> StepTime:
    """`prefill_time_s` under attention DP and / or MTP. The prompts spread over the attention
    ranks (a prompt stays on one rank: the busiest has max(sequences / dp, min(sequences, 1)));
    its chunks are of at most max_num_tokens per rank, and every chunk step routes the chunk
    tokens of all ranks plus their decodes through the MoE layers. The running sequences verify
    k + 1 positions each under MTP."""
    dp = b.attention_dp
    seqs = np.asarray(sequences, dtype=np.float64)
    rank_seqs = np.maximum(seqs / dp, np.minimum(seqs, 1.0))
    total = prompt * rank_seqs
    chunks = np.maximum(np.ceil(total / b.max_num_tokens), 1.0)
    running = np.asarray(running_seqs, dtype=np.float64) / b.pp + np.zeros_like(total)
    q = b.mtp_tokens + 1.0
    moe = prompt * seqs / chunks + running * q
    stage = forward_time_s(
        b,
        running / dp,
        running_context,
        prefill_tokens=total / chunks,
        prefill_context=prompt / 2.0,
        prefill_seqs=rank_seqs / chunks,
        moe_tokens=moe,
        tokens_per_seq=q,
        prefill_phase=True,
    )
    passes = chunks + b.pp - 1.0
    handoff = pp_handoff_time_s(b, total / chunks) * (b.pp - 1.0)
    out = stage.scaled(passes)
    return StepTime(
        **{**out.__dict__, "communication_s": out.communication_s + handoff, "total_s": out.total_s + handoff}
    )
