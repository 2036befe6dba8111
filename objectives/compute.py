"""FLOPs and bytes moved by one forward step on one GPU.

A forward step processes `tokens` query tokens (decode: one per running sequence; prefill: the
prompt tokens of a chunk). Linear layers cost 2 FLOPs per weight per token (multiply + add);
attention costs 2 * (d_qk + d_v) FLOPs per query token per attended context token per query head
(scores Q K^T and the weighted sum P V). For MoE layers a step touches, in expectation,

    E_touched = E * (1 - (1 - k / E) ** T)

distinct experts of the E routed experts when T tokens each choose k uniformly — that sets
the expert bytes read; the FLOPs follow the k experts each token uses.
"""

from __future__ import annotations

import numpy as np

from objectives.batch import ConfigBatch
from objectives.memory import (
    dense_linear_params_per_gpu,
    expert_params_per_gpu,
    kv_bytes_per_sequence_per_gpu,
    layers_per_gpu,
)


def expected_experts_touched(n_experts: np.ndarray, top_k: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """E (1 - (1 - k/E)^T): expected distinct experts hit by T tokens routing top-k of E."""
    e = np.maximum(n_experts, 1.0)
    frac = np.clip(top_k / e, 0.0, 1.0)
    t = np.maximum(tokens, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # (1 - f)^T as exp(T log1p(-f)): one transcendental pair instead of an array power
        powered = np.exp(t * np.log1p(-np.minimum(frac, 1.0 - 1e-16)))
        untouched = np.where(t <= 0.0, 1.0, np.where(frac < 1.0, powered, 0.0))
    return np.where(n_experts > 0, e * (1.0 - untouched), 0.0)


def tokens_per_expert(b: ConfigBatch, tokens: np.ndarray, touched: np.ndarray) -> np.ndarray:
    """Mean tokens each touched expert processes in a step (the M of its GEMM), given
    `touched` = expected_experts_touched(...) for the step."""
    return np.where(b.n_experts > 0, tokens * b.experts_per_token / np.maximum(touched, 1e-9), 0.0)


def active_expert_params_per_gpu_per_token(b: ConfigBatch) -> np.ndarray:
    """Routed-expert weights one token multiplies on one GPU (k of E experts)."""
    share = np.where(b.n_experts > 0, b.experts_per_token / np.maximum(b.n_experts, 1.0), 0.0)
    return expert_params_per_gpu(b) * share


def dense_gemm_flops(b: ConfigBatch, tokens: np.ndarray) -> np.ndarray:
    """FLOPs of attention projections, dense MLPs, shared experts and routers for `tokens`."""
    return 2.0 * tokens * dense_linear_params_per_gpu(b)


def expert_gemm_flops(b: ConfigBatch, tokens: np.ndarray) -> np.ndarray:
    return 2.0 * tokens * active_expert_params_per_gpu_per_token(b)


def lm_head_flops(b: ConfigBatch, logit_tokens: np.ndarray) -> np.ndarray:
    """LM-head FLOPs for the tokens that need logits (vocab-split by TP, last stage)."""
    return 2.0 * logit_tokens * b.lm_head_params / b.tp


def lm_head_bytes(b: ConfigBatch) -> np.ndarray:
    """Bytes of the LM head on one GPU (vocab-split by TP, stored like the embedding)."""
    return b.lm_head_params / b.tp * b.embedding_bytes_per_param


def dense_weight_bytes(b: ConfigBatch) -> np.ndarray:
    """Bytes of always-used weights read once per step (LM head included)."""
    return dense_linear_params_per_gpu(b) * b.weight_bytes_per_param + lm_head_bytes(b)


def expert_weight_bytes(b: ConfigBatch, touched: np.ndarray) -> np.ndarray:
    """Bytes of routed-expert weights read by a step that touches `touched` experts of each
    MoE layer (expected_experts_touched)."""
    share = np.where(b.n_experts > 0, touched / np.maximum(b.n_experts, 1.0), 0.0)
    return expert_params_per_gpu(b) * share * b.weight_bytes_per_param


def attention_flops(b: ConfigBatch, query_tokens: np.ndarray, mean_context: np.ndarray) -> np.ndarray:
    """Attention FLOPs on one GPU: 2 (d_qk + d_v) per query head per (query, key) pair.

    A prefill of L tokens has L queries with mean causal context L/2 (quadratic in L);
    a decode step has one query per sequence with context c. Sliding-window layers cap the
    context at the window.
    """
    heads = b.n_heads / b.tp
    n_layers = layers_per_gpu(b)
    sliding = b.n_sliding_layers / b.n_layers * n_layers
    ctx = np.asarray(mean_context, dtype=np.float64)
    window_ctx = np.where(b.sliding_window > 0, np.minimum(ctx, b.sliding_window), ctx)
    pairs = query_tokens * ((n_layers - sliding) * ctx + sliding * window_ctx)
    return 2.0 * pairs * heads * (b.head_dim + b.v_head_dim)


def kv_read_bytes(b: ConfigBatch, sequences: np.ndarray, context: np.ndarray) -> np.ndarray:
    """KV-cache bytes a decode step reads: every running sequence's whole cache on this GPU."""
    return sequences * kv_bytes_per_sequence_per_gpu(b, context)
