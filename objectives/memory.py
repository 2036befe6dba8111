"""Memory per GPU: weights, KV cache, activation workspace, runtime reserve; what fits.

Layout assumed (Megatron-style tensor parallelism, as vLLM / SGLang / TensorRT-LLM shard):
- attention Q/O projections split by TP; K/V projections split by KV head, each GPU keeping at
  least one KV head, so KV heads are replicated when TP > KV heads. MLA keeps its compressed
  latent whole on every TP rank (its KV projection and cache are replicated).
- dense MLP and every expert split by TP; expert parallelism EP (dividing TP) places
  n_experts / EP whole experts on a group of TP / EP GPUs, which leaves the expert weights per
  GPU at n_experts * params_per_expert / TP either way. Routers are replicated.
- attention data parallelism (attention_dp > 1, objectives.modes): attention, dense MLPs, shared
  experts, routers and embeddings are copied on every attention rank (TP'd by tp inside it),
  the routed experts sharded over all tp x attention_dp GPUs (ceil(n_experts / ep) slots per
  GPU); each rank holds the KV cache of its own batch / attention_dp sequences.
- speculative decoding (mtp > 0): the draft module's draft_layers layers (a layer of the model's
  own kind plus the 2h x h projection of the MTP module; embedding and LM head shared), sharded
  like the main layers.
- pipeline parallelism PP gives each stage ceil(n_layers / PP) layers; the embedding sits on the
  first stage and the LM head on the last, vocabulary-split by TP.
All functions take a ConfigBatch and return arrays (bytes, or params per GPU).
"""

from __future__ import annotations

import numpy as np

from objectives.batch import ConfigBatch, per_batch

LOGITS_BYTES_PER_ELEM = 4.0  # fp32 logits buffer


def layers_per_gpu(b: ConfigBatch) -> np.ndarray:
    """Transformer layers held by one pipeline stage."""
    return b.layers_per_stage


@per_batch
def kv_heads_per_gpu(b: ConfigBatch) -> np.ndarray:
    """KV heads per GPU: n_kv / TP, at least one (replication when TP > n_kv); MLA: all."""
    return np.where(b.is_mla > 0, b.n_kv_heads, np.maximum(b.n_kv_heads / b.tp, 1.0))


@per_batch
def _kv_share(b: ConfigBatch) -> np.ndarray:
    """Fraction of the K/V projection and cache one GPU holds."""
    return np.where(b.is_mla > 0, 1.0, kv_heads_per_gpu(b) / b.n_kv_heads)


def _stage_fraction(b: ConfigBatch, n: np.ndarray) -> np.ndarray:
    """Layers of a kind (dense or MoE) on the busiest stage, assuming they spread evenly."""
    return n / b.n_layers * layers_per_gpu(b)


@per_batch
def attention_params_per_gpu_per_layer(b: ConfigBatch) -> np.ndarray:
    other = (b.attn_params_per_layer - b.kv_proj_params_per_layer) / b.tp
    return other + b.kv_proj_params_per_layer * _kv_share(b)


@per_batch
def dense_linear_params_per_gpu(b: ConfigBatch) -> np.ndarray:
    """Weights every token uses on one GPU: attention, dense MLPs, shared experts, routers."""
    attn = attention_params_per_gpu_per_layer(b) * layers_per_gpu(b)
    mlp = b.dense_mlp_params_per_layer / b.tp * _stage_fraction(b, b.n_dense_layers)
    moe_common = (b.shared_expert_params_per_layer / b.tp + b.router_params_per_layer) * _stage_fraction(
        b, b.n_moe_layers
    )
    return attn + mlp + moe_common


@per_batch
def expert_params_per_gpu(b: ConfigBatch) -> np.ndarray:
    """Routed-expert weights on one GPU (all experts it hosts, all its MoE layers); under
    attention DP the ceil(n_experts / ep) expert slots of one EP rank."""
    tp_split = b.n_experts * b.params_per_expert / b.tp * _stage_fraction(b, b.n_moe_layers)
    if not b.has_attention_dp:
        return tp_split
    slots = np.ceil(b.n_experts / np.maximum(b.ep, 1.0))
    dep = slots * b.params_per_expert * _stage_fraction(b, b.n_moe_layers)
    return np.where(b.attention_dp > 1, dep, tp_split)


@per_batch
def draft_params_per_gpu(b: ConfigBatch) -> np.ndarray:
    """Weights of the draft (MTP) module on one GPU: draft_layers layers of the model's kind
    (a MoE layer where the model has them) plus the MTP projection 2h x h, sharded like the
    main layers; 0 without speculative decoding."""
    if not b.has_mtp:
        return np.zeros(len(b))
    attn = attention_params_per_gpu_per_layer(b)
    moe_layer = (b.shared_expert_params_per_layer / b.tp + b.router_params_per_layer) + expert_params_per_gpu(
        b
    ) / np.maximum(_stage_fraction(b, b.n_moe_layers), 1e-9)
    dense_layer = b.dense_mlp_params_per_layer / b.tp
    per_layer = attn + np.where(b.n_moe_layers > 0, moe_layer, dense_layer) + 2.0 * b.hidden * b.hidden / b.tp
    return np.where(b.mtp_tokens > 0, b.draft_layers * per_layer, 0.0)


@per_batch
def embedding_params_per_gpu(b: ConfigBatch) -> np.ndarray:
    """Embedding and LM head stored on the busiest stage (vocab-split by TP)."""
    head = np.where(b.tie_word_embeddings > 0, 0.0, b.lm_head_params)
    one_stage = b.embedding_params + head
    split = np.maximum(b.embedding_params, b.lm_head_params)
    return np.where(b.pp > 1, split, one_stage) / b.tp


@per_batch
def weight_bytes_per_gpu(b: ConfigBatch) -> np.ndarray:
    """Bytes of weights one GPU stores."""
    linear = (dense_linear_params_per_gpu(b) + expert_params_per_gpu(b)) * b.weight_bytes_per_param
    out = linear + embedding_params_per_gpu(b) * b.embedding_bytes_per_param
    if b.has_mtp:
        out = out + draft_params_per_gpu(b) * b.weight_bytes_per_param
    return out


@per_batch
def kv_bytes_per_token_per_layer_per_gpu(b: ConfigBatch) -> np.ndarray:
    return b.kv_elems_per_token_per_layer * _kv_share(b) * b.kv_bytes_per_elem


def kv_bytes_per_sequence_per_gpu(b: ConfigBatch, context_tokens: np.ndarray) -> np.ndarray:
    """KV-cache bytes one sequence of `context_tokens` holds on one GPU; sliding-window layers
    keep at most `sliding_window` tokens."""
    ctx = np.asarray(context_tokens, dtype=np.float64)
    n_layers = layers_per_gpu(b)
    sliding = np.minimum(b.n_sliding_layers / b.n_layers * n_layers, n_layers)
    window = np.where(b.sliding_window > 0, np.minimum(ctx, b.sliding_window), ctx)
    tokens = (n_layers - sliding) * ctx + sliding * window
    return tokens * kv_bytes_per_token_per_layer_per_gpu(b)


@per_batch
def activation_workspace_bytes(b: ConfigBatch) -> np.ndarray:
    """Activation buffers sized for `max_num_tokens` tokens in flight plus the fp32 logits of
    `max_batch_size` sequences (TensorRT-LLM / vLLM allocate both up front)."""
    ffn = np.maximum(
        b.dense_mlp_params_per_layer,
        b.experts_per_token * b.params_per_expert + b.shared_expert_params_per_layer,
    ) / (3.0 * b.hidden)
    per_token = 4.0 * b.hidden + (2.0 * ffn + (b.n_heads + 2 * b.n_kv_heads) * b.head_dim) / b.tp
    acts = b.max_num_tokens * per_token * 2.0
    logits = b.max_batch_size * b.vocab / b.tp * LOGITS_BYTES_PER_ELEM
    return acts + logits


@per_batch
def kv_budget_bytes(b: ConfigBatch) -> np.ndarray:
    """Bytes left for the KV cache on one GPU: a fraction of what weights, workspace and the
    runtime reserve leave free of the memory the engine may use (negative means the weights
    alone do not fit)."""
    # hbm_usable_fraction / workspace_in_budget: the engine's memory policy (objectives.engines);
    # 1 / 1 for a free-memory fraction (TensorRT-LLM), the default
    free = (
        b.hbm_bytes * b.hbm_usable_fraction
        - weight_bytes_per_gpu(b)
        - (activation_workspace_bytes(b) + b.runtime_reserve_bytes) * b.workspace_in_budget
    )
    return np.where(free > 0, free * b.kv_memory_fraction, free)


def max_batch_that_fits(b: ConfigBatch, context_tokens: np.ndarray) -> np.ndarray:
    """Largest number of sequences of `context_tokens` whose KV cache fits (0 if none)."""
    per_seq = kv_bytes_per_sequence_per_gpu(b, context_tokens)
    budget = kv_budget_bytes(b)
    # Pipeline stages each hold their layers' share, so one stage's budget bounds the batch.
    fit = np.where(budget > 0, np.floor(budget / np.maximum(per_seq, 1.0)), 0.0)
    if b.has_attention_dp:  # every attention rank caches its own sequences
        fit = fit * b.attention_dp
    return fit


def memory_per_gpu_bytes(b: ConfigBatch, context_tokens: np.ndarray) -> np.ndarray:
    """Total bytes in use on one GPU with `b.batch` sequences of `context_tokens` resident."""
    return (
        weight_bytes_per_gpu(b)
        + activation_workspace_bytes(b)
        + b.runtime_reserve_bytes
        + b.batch / b.attention_dp * kv_bytes_per_sequence_per_gpu(b, context_tokens)
    )
