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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from objectives.batch import ConfigBatch
from objectives.communication import pp_handoff_time_s, tp_communication_time_s
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
from objectives.memory import layers_per_gpu


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
    layer probe does not measure)."""
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
) -> StepTime:
    """One step of one pipeline stage that decodes `decode_seqs` sequences at mean context
    `decode_context` and prefills `prefill_tokens` prompt tokens (of `prefill_seqs` prompts)
    at mean causal context `prefill_context`."""
    decode_seqs = np.asarray(decode_seqs, dtype=np.float64)
    prefill_tokens = np.asarray(prefill_tokens, dtype=np.float64)
    tokens = decode_seqs + prefill_tokens
    logit_tokens = decode_seqs + prefill_seqs
    bw = b.hbm_bw_bytes_per_s * b.eff_bw
    q = b.roofline_sharpness

    dense_mem = dense_weight_bytes(b) / bw
    dense_math = (dense_gemm_flops(b, tokens) + lm_head_flops(b, logit_tokens)) / (
        b.peak_flops * gemm_efficiency(b, tokens)
    )
    touched = expected_experts_touched(b.n_experts, b.experts_per_token, tokens)
    expert_mem = expert_weight_bytes(b, touched) / bw
    expert_math = expert_gemm_flops(b, tokens) / (
        b.peak_flops * gemm_efficiency(b, tokens_per_expert(b, tokens, touched))
    )
    gemm = roofline_time_s(dense_mem, dense_math, q) + roofline_time_s(expert_mem, expert_math, q)

    kv_mem = kv_read_bytes(b, decode_seqs, decode_context) / (b.hbm_bw_bytes_per_s * b.eff_kv_bw)
    attn_flops = attention_flops(b, decode_seqs, decode_context) + attention_flops(b, prefill_tokens, prefill_context)
    attn_math = attn_flops / (b.attn_peak_flops * b.eff_attention)
    attention = roofline_time_s(kv_mem, attn_math, q)

    comm = tp_communication_time_s(b, tokens)
    overhead = (
        b.layer_overhead_s * layers_per_gpu(b) + b.step_overhead_s + b.seq_overhead_s * (decode_seqs + prefill_seqs)
    )
    total = gemm + attention + comm + overhead
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


def decode_step_time_s(b: ConfigBatch, batch: np.ndarray, context: np.ndarray) -> StepTime:
    """Time for every one of `batch` sequences (mean context `context`) to advance one token.

    With PP stages the batch is split into PP micro-batches kept in flight, so each stage runs
    PP micro-steps of batch / PP per token round: t = PP * (t_stage(batch / PP) + hand-off).
    """
    micro = np.maximum(np.asarray(batch, dtype=np.float64) / b.pp, 1e-9)
    stage = forward_time_s(b, micro, context)
    handoff = pp_handoff_time_s(b, micro)
    out = stage.scaled(b.pp)
    return StepTime(
        **{
            **out.__dict__,
            "communication_s": out.communication_s + b.pp * handoff,
            "total_s": out.total_s + b.pp * handoff,
        }
    )


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
