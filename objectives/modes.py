"""Defaults and closed forms of the frontier deployment modes (numpy only, no batch import).

Attention data parallelism with expert parallelism (DEP). A replica (one pipeline stage of it)
has tp x attention_dp GPUs: `attention_dp` attention ranks of `tp` GPUs each, every rank with its
own batch and KV cache and its own copy of the attention, dense-MLP, shared-expert and embedding
weights (TP'd within the rank by `tp`); the routed experts of every MoE layer are expert-parallel
over all tp x attention_dp GPUs (ep = tp x attention_dp, as TensorRT-LLM's enable_attention_dp
with moe_ep_size = the GPUs and SGLang's --enable-dp-attention --dp-size N --ep-size N), each GPU
holding ceil(n_experts / ep) expert slots (EPLB's redundant experts fill the remainder, e.g.
288 slots of 256 experts at EP72). A MoE layer dispatches each rank's tokens to the experts and
combines them back (two all-to-alls); the busiest rank sets the layer time: `moe_imbalance`.
Without attention DP (attention_dp 1) EP stays inside the TP group and must divide it.

Speculative decoding / multi-token prediction (MTP). With k draft tokens of acceptance rate
alpha each, a verification step of the main model over k + 1 positions per sequence emits in
expectation

    E[tokens] = (1 - alpha^(k+1)) / (1 - alpha)      (k + 1 when alpha = 1, 1 when k = 0)

tokens per sequence; the draft module runs k times per step. TPOT = step time / E[tokens].
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import numpy as np
import yaml


@functools.lru_cache(maxsize=1)
def mode_data() -> dict[str, Any]:
    """objectives/data/modes.yaml, parsed once."""
    text = resources.files("objectives").joinpath("data/modes.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def default_moe_imbalance() -> float:
    """Busiest / mean EP-rank load under attention DP (sourced in data/modes.yaml)."""
    return float(mode_data()["moe_imbalance"]["value"])


@functools.lru_cache(maxsize=64)
def _speculative(model_id: str) -> tuple[float, float, str]:
    table = mode_data().get("speculative", {})
    entry = table.get(model_id)
    if entry is None:
        from objectives.models import _name_index  # aliases resolve through the model catalog

        known = _name_index().get(model_id.lower())
        entry = table.get(known.id) if known is not None else None
    if entry is None:
        return float("nan"), 1.0, ""
    return float(entry["acceptance"]), float(entry.get("draft_layers", 1)), str(entry.get("source", ""))


class SpeculativeDefaults:
    """A model's published draft acceptance rate (NaN when none) and draft-module layers."""

    def __init__(self, acceptance: float, draft_layers: float, source: str) -> None:
        self.acceptance = acceptance
        self.draft_layers = draft_layers
        self.source = source


def speculative_defaults(model_id: str) -> SpeculativeDefaults:
    return SpeculativeDefaults(*_speculative(model_id))


def expected_tokens_per_step(acceptance: np.ndarray | float, draft_tokens: np.ndarray | float) -> np.ndarray:
    """(1 - a^(k+1)) / (1 - a): expected tokens a sequence advances per verification step with
    k draft tokens each accepted with probability a (a chain: a rejected token ends the run);
    exactly 1 when k = 0 (whatever a, NaN included) and k + 1 when a = 1."""
    a = np.asarray(acceptance, dtype=np.float64)
    k = np.asarray(draft_tokens, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        geometric = (1.0 - a ** (k + 1.0)) / (1.0 - a)
    out = np.where(np.isclose(a, 1.0), k + 1.0, geometric)
    return np.where(k > 0, out, 1.0)


def tbo_exposed_fractions() -> tuple[float, float]:
    """(prefill, decode) non-overlapped fractions of two-batch overlap (sourced in data/modes.yaml)."""
    d = mode_data()["two_batch_overlap"]
    return float(d["prefill_exposed_fraction"]["value"]), float(d["decode_exposed_fraction"]["value"])


def two_batch_overlap_time_s(
    compute_s: np.ndarray, communication_s: np.ndarray, exposed_fraction: np.ndarray | float
) -> np.ndarray:
    """A DEP step run as two micro-batches, each one's all-to-all under the other's compute:
    max(compute, communication) + f * min(compute, communication) (f = 1: no overlap, the sum;
    f = 0: perfect overlap)."""
    c = np.asarray(compute_s, dtype=np.float64)
    m = np.asarray(communication_s, dtype=np.float64)
    return np.maximum(c, m) + np.asarray(exposed_fraction) * np.minimum(c, m)


@functools.lru_cache(maxsize=64)
def routing_max_nodes(model_id: str) -> float:
    """The most nodes a token's routed experts span (node-limited routing; inf: no limit)."""
    table = mode_data().get("node_limited_routing", {})
    entry = table.get(model_id)
    if entry is None:
        from objectives.models import _name_index

        known = _name_index().get(model_id.lower())
        entry = table.get(known.id) if known is not None else None
    return float("inf") if entry is None else float(entry["max_nodes"])
