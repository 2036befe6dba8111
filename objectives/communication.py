"""Collectives between GPUs: alpha-beta models.

An all-reduce of S bytes over n GPUs moves 2 (n - 1) / n * S bytes per GPU (ring / NVLS bus
bandwidth convention of nccl-tests), so

    t_allreduce = alpha + 2 (n - 1) / n * S / (link_bw * link_efficiency)

with alpha the latency measured at small messages (decode messages are kilobytes: latency,
not bandwidth, sets them). Expert parallelism replaces the MoE output all-reduce with an
all-to-all dispatch and combine of the routed tokens, each moving (ep - 1) / ep of them.
Pipeline stages hand their activations on point to point.
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
