"""Collectives between GPUs: alpha-beta models.

An all-reduce of S bytes over n GPUs moves 2 (n - 1) / n * S bytes per GPU (ring / NVLS bus
bandwidth convention of nccl-tests), so

    t_allreduce = alpha + 2 (n - 1) / n * S / (link_bw * link_efficiency)

with alpha the latency measured at small messages (decode messages are kilobytes: latency,
not bandwidth, sets them). Expert parallelism replaces the MoE output all-reduce with an
all-to-all dispatch and combine of the routed tokens, each moving (ep - 1) / ep of them.
Pipeline stages hand their activations on point to point.

Under attention data parallelism (`dep_communication_time_s`) attention and dense layers
all-reduce only inside an attention rank of tp GPUs (nothing at tp = 1), and each MoE layer
dispatches every rank's routed token copies to the experts and combines them back across all
ep = tp x attention_dp GPUs. Wide EP across nodes: of the ep - 1 peers of a GPU, g - 1 share
its scale-up domain (g = min(scaleup_domain, ep)) and ep - g are reached over the scale-out
NIC; the two paths run concurrently, so

    t_a2a = alpha + max((g - 1) / ep * S / bw_up, (ep - g) / ep * S / bw_out) / link_efficiency

(one 72-GPU NVLink domain on GB200 NVL72, NICs between 8-GPU nodes on HGX). Node-limited routing
(DeepSeek-V3: a token's experts on at most M = 4 nodes) with a dispatch that forwards by node
(DeepEP's normal kernels, prefill) sends min(top-k, M) copies of a token over the NIC instead of
top-k (`scaleout_copies_per_token`); the NVLink part still carries the top-k copies.
"""

from __future__ import annotations

import numpy as np

from objectives.batch import ConfigBatch
from objectives.memory import layers_per_gpu


def allreduce_time_s(
    message_bytes: np.ndarray,
    n_gpus: np.ndarray,
    link_bw_bytes_per_s: np.ndarray,
    link_efficiency: np.ndarray,
    latency_s: np.ndarray,
) -> np.ndarray:
    """One all-reduce of `message_bytes` over `n_gpus` (0 when n_gpus == 1)."""
    n = np.maximum(n_gpus, 1.0)
    bus_bytes = 2.0 * (n - 1.0) / n * message_bytes
    t = latency_s + bus_bytes / (link_bw_bytes_per_s * link_efficiency)
    return np.where(n > 1, t, 0.0)


def alltoall_time_s(
    message_bytes: np.ndarray,
    n_gpus: np.ndarray,
    link_bw_bytes_per_s: np.ndarray,
    link_efficiency: np.ndarray,
    latency_s: np.ndarray,
) -> np.ndarray:
    """One all-to-all in which each GPU sends (n-1)/n of `message_bytes` (0 when n == 1)."""
    n = np.maximum(n_gpus, 1.0)
    t = latency_s + (n - 1.0) / n * message_bytes / (link_bw_bytes_per_s * link_efficiency)
    return np.where(n > 1, t, 0.0)


def tp_communication_time_s(b: ConfigBatch, tokens: np.ndarray) -> np.ndarray:
    """Per-step TP / EP communication of one pipeline stage for `tokens` tokens.

    Each layer all-reduces after attention and after the MLP (message: tokens x hidden in
    bf16). In MoE layers with EP > 1 the MLP all-reduce becomes dispatch + combine all-to-alls
    of the k routed copies of each token among the EP ranks.
    """
    n_layers = layers_per_gpu(b)
    moe_layers = b.n_moe_layers / b.n_layers * n_layers
    msg = tokens * b.hidden * 2.0
    ar = allreduce_time_s(msg, b.tp, b.link_bw_bytes_per_s, b.eff_link, b.allreduce_latency_s)
    a2a = alltoall_time_s(msg * b.experts_per_token, b.ep, b.link_bw_bytes_per_s, b.eff_link, b.allreduce_latency_s)
    use_a2a = (b.ep > 1) & (b.n_experts > 0)
    attention = n_layers * ar
    mlp = (n_layers - moe_layers) * ar + moe_layers * np.where(use_a2a, 2.0 * a2a, ar)
    return attention + mlp


def pp_handoff_time_s(b: ConfigBatch, tokens: np.ndarray) -> np.ndarray:
    """Activations one stage sends to the next for `tokens` tokens (0 when PP == 1)."""
    msg = tokens * b.hidden * 2.0
    t = b.allreduce_latency_s + msg / (b.link_bw_bytes_per_s * b.eff_link)
    return np.where(b.pp > 1, t, 0.0)


def hierarchical_alltoall_time_s(
    message_bytes: np.ndarray,
    n_gpus: np.ndarray,
    domain_gpus: np.ndarray,
    scaleup_bw_bytes_per_s: np.ndarray,
    scaleout_bw_bytes_per_s: np.ndarray,
    link_efficiency: np.ndarray,
    latency_s: np.ndarray,
    scaleout_message_bytes: np.ndarray | None = None,
) -> np.ndarray:
    """One all-to-all over `n_gpus` that spans scale-up domains of `domain_gpus` GPUs: each GPU
    sends `message_bytes` spread evenly over all n GPUs (itself included); the in-domain and
    the scale-out parts move concurrently (0 when n == 1; NaN when it leaves the domain and
    the catalog has no scale-out bandwidth). `scaleout_message_bytes` (default
    `message_bytes`) is what the GPU would send if all of it were spread over the n GPUs, for
    the scale-out part alone (fewer bytes where copies are deduplicated per node)."""
    n = np.maximum(n_gpus, 1.0)
    g = np.minimum(np.maximum(domain_gpus, 1.0), n)
    out_bytes = message_bytes if scaleout_message_bytes is None else scaleout_message_bytes
    inside = (g - 1.0) / n * message_bytes / (scaleup_bw_bytes_per_s * link_efficiency)
    with np.errstate(invalid="ignore"):
        outside = np.where(n > g, (n - g) / n * out_bytes / (scaleout_bw_bytes_per_s * link_efficiency), 0.0)
    t = latency_s + np.maximum(inside, outside)
    return np.where(n > 1, t, 0.0)


def scaleout_copies_per_token(b: ConfigBatch, node_dedup: bool) -> np.ndarray:
    """Copies of a token's hidden state that cross the scale-out network per routed token
    (before the (ep - g) / ep share of remote destinations): top-k, or with node-limited
    routing and a dispatch that forwards by node (`node_dedup`: DeepEP's normal kernels, one
    copy per destination node over the NIC, NVLink inside it) min(top-k, routing_max_nodes)."""
    k = b.experts_per_token
    return np.minimum(k, b.routing_max_nodes) if node_dedup else k


def dep_moe_alltoall_time_s(b: ConfigBatch, rank_tokens: np.ndarray, node_dedup: bool = False) -> np.ndarray:
    """Dispatch + combine of one MoE layer under attention DP for `rank_tokens` tokens on each
    attention rank: each of its tp GPUs sends rank_tokens / tp tokens x top-k copies of the
    hidden state — dispatched in the activation dtype (fp8 with fp8 / fp4 weights, as DeepEP
    does), combined in bf16 — times the load imbalance (the busiest rank receives the most).
    Over the scale-out network `scaleout_copies_per_token` copies (node-limited routing with
    `node_dedup`: the prefill kernels)."""
    tokens = rank_tokens / b.tp * b.hidden
    copies = tokens * b.experts_per_token
    out = tokens * scaleout_copies_per_token(b, node_dedup)
    parts = []
    for bytes_per_elem in (b.activation_bytes, 2.0):  # dispatch, combine
        parts.append(
            hierarchical_alltoall_time_s(
                copies * bytes_per_elem,
                b.ep,
                b.scaleup_domain,
                b.scaleup_bw_bytes_per_s,
                b.scaleout_bw_bytes_per_s,
                b.eff_link,
                b.allreduce_latency_s,
                scaleout_message_bytes=out * bytes_per_elem,
            )
        )
    return (parts[0] + parts[1]) * b.moe_imbalance


def dep_communication_time_s(
    b: ConfigBatch, rank_tokens: np.ndarray, moe_a2a_s: np.ndarray | None = None, node_dedup: bool = False
) -> np.ndarray:
    """Per-step communication of one pipeline stage under attention DP for `rank_tokens` tokens
    per attention rank: the tp all-reduces inside the rank (attention, dense MLP layers) plus
    each MoE layer's dispatch + combine (`moe_a2a_s`, default `dep_moe_alltoall_time_s`)."""
    n_layers = layers_per_gpu(b)
    moe_layers = b.n_moe_layers / b.n_layers * n_layers
    msg = rank_tokens * b.hidden * 2.0
    inside = np.where(b.tp <= b.scaleup_domain, b.scaleup_bw_bytes_per_s, b.scaleout_bw_bytes_per_s)
    ar = allreduce_time_s(msg, b.tp, inside, b.eff_link, b.allreduce_latency_s)
    a2a = dep_moe_alltoall_time_s(b, rank_tokens, node_dedup) if moe_a2a_s is None else moe_a2a_s
    use_a2a = b.n_experts > 0
    return n_layers * ar + (n_layers - moe_layers) * ar + moe_layers * np.where(use_a2a, a2a, ar)
