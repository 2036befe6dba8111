"""Model catalog: Hugging Face configs turned into servesweep's parameter and KV-cache counts.

A `ModelSpec` is computed from a model's `config.json` alone (no weights). It counts every
weight matrix, bias and norm of the language model, split the way the cost model needs it:
attention projections (and which part of them produces K and V, since those are replicated
once tensor parallelism exceeds the KV-head count), dense MLPs, routed experts, shared experts,
routers, embeddings and the LM head.

Architectures understood (parameter layouts follow the Hugging Face `transformers` modeling
code for each):

- `LlamaForCausalLM`, `MistralForCausalLM`, `MixtralForCausalLM`: gated (SwiGLU) MLP or top-k
  routed experts, optional `attention_bias` / `mlp_bias`, sliding window when set.
- `Qwen2ForCausalLM`: as Llama, with biases on the Q, K and V projections (not on O).
- `Qwen3MoeForCausalLM`: explicit `head_dim`, RMSNorm on queries and keys, routed experts of
  `moe_intermediate_size` on the layers chosen by `decoder_sparse_step` / `mlp_only_layers`.
- `Llama4ForConditionalGeneration` (or `Llama4ForCausalLM`): read from `text_config`. Counts
  the language model only: the vision tower and multimodal projector are NOT counted (about
  0.9B parameters; Meta's 109B / 400B totals include them). MoE layers every
  `interleave_moe_layer_step` layers with one shared expert of `intermediate_size` next to the
  routed experts of `intermediate_size`; dense layers use `intermediate_size_mlp`. The query /
  key norm is a weightless L2 norm. Chunked attention (`attention_chunk_size`) on the RoPE
  layers (3 of every 4, per `no_rope_layers`) is modelled as a sliding window.
- `GptOssForCausalLM`: biases on every attention projection, one learned attention-sink
  logit per head, experts with biases, a router with bias, alternating sliding / full
  attention per `layer_types`.
- `DeepseekV3ForCausalLM` (and `DeepseekV2ForCausalLM`): multi-head latent attention (MLA)
  with `q_lora_rank` / `kv_lora_rank`, `first_k_dense_replace` dense layers, shared plus routed
  experts, and the router's score-correction bias under `noaux_tc`. The multi-token-prediction
  module (`num_nextn_predict_layers`) is excluded, as in DeepSeek's 671B / 37B figures.
- `FalconForCausalLM` / `RWForCausalLM`: fused QKV projection with `num_kv_heads` KV heads
  (new decoder architecture) or multi-query, non-gated 4h MLP, parallel attention, LayerNorms
  with bias, biases on linear layers when `bias` is true, tied embeddings by default.

Any other architecture that carries the standard Llama-style fields is counted as a Llama
model, with a warning saying so. A missing required field raises `ValueError` naming it.

The only I/O here is reading the shipped catalog (through `importlib.resources`) or a
config.json the caller points at.
"""

from __future__ import annotations

import difflib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CatalogModel",
    "ModelConfigError",
    "ModelSpec",
    "UnknownModelError",
    "list_models",
    "load_model",
    "model_from_config",
]

_DATA_PACKAGE = "objectives"
_CATALOG_FILE = "models.yaml"


class UnknownModelError(ValueError):
    """A model name that is neither in the catalog nor a path to a config."""


class ModelConfigError(UnknownModelError):
    """A model path that cannot be used: unreadable, too long, a directory without a config.json,
    or a file that is not a JSON object (the message names the path and why)."""


def _shown(name: str, limit: int = 120) -> str:
    """A name for a message: repr, cut to `limit` characters (fuzzed paths are thousands long)."""
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}... ({len(name)} characters)"


@dataclass(frozen=True)
class ModelSpec:
    """Architecture facts and parameter counts of one model, from its config.json."""

    id: str
    architecture: str
    n_layers: int
    hidden_size: int
    vocab_size: int
    n_heads: int  # query heads
    n_kv_heads: int  # KV heads (MLA: = n_heads)
    head_dim: int  # q/k dim per head used in scores (MLA: qk_nope_head_dim + qk_rope_head_dim)
    v_head_dim: int  # value dim per head (= head_dim unless MLA)
    is_mla: bool
    kv_lora_rank: int  # MLA only, else 0
    qk_rope_head_dim: int  # MLA only, else 0
    kv_cache_elems_per_token_per_layer: int  # standard: 2*n_kv_heads*head_dim; MLA: rank + rope
    attn_params_per_layer: int  # all attention weights (+ MLA low-rank mats, biases, sinks)
    kv_proj_params_per_layer: int  # the part of attn_params_per_layer that produces K and V
    n_dense_layers: int
    dense_mlp_params_per_layer: int  # gate+up+down (gated) or up+down (non-gated)
    n_moe_layers: int  # n_dense_layers + n_moe_layers == n_layers
    n_experts: int  # routed experts per MoE layer (0 dense)
    experts_per_token: int  # top-k (0 dense)
    params_per_expert: int
    shared_expert_params_per_layer: int
    router_params_per_layer: int
    embedding_params: int  # vocab*hidden
    lm_head_params: int  # vocab*hidden (also when tied)
    tie_word_embeddings: bool
    norm_params: int  # all norms (incl. q/k norms) summed over the model
    sliding_window: int  # 0 if none
    n_sliding_layers: int
    max_position_embeddings: int

    @property
    def is_moe(self) -> bool:
        return self.n_moe_layers > 0 and self.n_experts > 0

    def _total(self, experts_counted: int) -> int:
        moe = experts_counted * self.params_per_expert
        moe += self.shared_expert_params_per_layer + self.router_params_per_layer
        return (
            self.embedding_params
            + (0 if self.tie_word_embeddings else self.lm_head_params)
            + self.n_layers * self.attn_params_per_layer
            + self.n_dense_layers * self.dense_mlp_params_per_layer
            + self.n_moe_layers * moe
            + self.norm_params
        )

    @property
    def total_params(self) -> int:
        """Every parameter: embeddings, LM head (unless tied), all layers, norms."""
        return self._total(self.n_experts)

    @property
    def active_params(self) -> int:
        """Parameters one token touches: as total, with only top-k routed experts per MoE layer.

        The input embedding table is included (some publishers, e.g. OpenAI for gpt-oss, leave
        it out of their "active" figure).
        """
        return self._total(self.experts_per_token)


@dataclass(frozen=True)
class CatalogModel:
    """One entry of the shipped model catalog (objectives/data/models.yaml)."""

    id: str
    dir: str
    aliases: tuple[str, ...]
    published_total_params: float
    published_active_params: float
    params_source: str
    config_source: str
    published_active_counts_input_embedding: bool = True


# ---------------------------------------------------------------------------------------------
# Config reading helpers
# ---------------------------------------------------------------------------------------------


def _require_int(cfg: Mapping[str, Any], key: str, model_id: str, *alts: str) -> int:
    for k in (key, *alts):
        value = cfg.get(k)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
                raise ValueError(f"{model_id}: config field {k!r} must be an integer, got {value!r}")
            return int(value)
    raise ValueError(f"{model_id}: config is missing required field {key!r}")


def _opt_int(cfg: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = cfg.get(key)
    if value is None or isinstance(value, bool):
        return default
    return int(value)


def _opt_bool(cfg: Mapping[str, Any], key: str, default: bool) -> bool:
    value = cfg.get(key)
    return default if value is None else bool(value)


def _architecture(config: Mapping[str, Any]) -> str:
    archs = config.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        return archs[0]
    model_type = config.get("model_type")
    return str(model_type) if model_type else "unknown"


_LLAMA_ARCHS = {"LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen2ForCausalLM"}
_LLAMA_TYPES = {"llama", "mistral", "mixtral", "qwen2"}
_FAMILY_BY_ARCH = {
    **dict.fromkeys(_LLAMA_ARCHS, "llama"),
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "Llama4ForConditionalGeneration": "llama4",
    "Llama4ForCausalLM": "llama4",
    "GptOssForCausalLM": "gpt_oss",
    "DeepseekV3ForCausalLM": "deepseek",
    "DeepseekV2ForCausalLM": "deepseek",
    "FalconForCausalLM": "falcon",
    "RWForCausalLM": "falcon",
}
_FAMILY_BY_TYPE = {
    **dict.fromkeys(_LLAMA_TYPES, "llama"),
    "qwen3_moe": "qwen3_moe",
    "llama4": "llama4",
    "llama4_text": "llama4",
    "gpt_oss": "gpt_oss",
    "deepseek_v3": "deepseek",
    "deepseek_v2": "deepseek",
    "falcon": "falcon",
    "RefinedWeb": "falcon",
    "RefinedWebModel": "falcon",
}


def _family(config: Mapping[str, Any]) -> str | None:
    arch = _architecture(config)
    if arch in _FAMILY_BY_ARCH:
        return _FAMILY_BY_ARCH[arch]
    return _FAMILY_BY_TYPE.get(str(config.get("model_type")))


def _window_layers(cfg: Mapping[str, Any], n_layers: int, all_layers: bool) -> tuple[int, int]:
    """(sliding_window, n_sliding_layers) for configs with `sliding_window` / `layer_types`."""
    window = _opt_int(cfg, "sliding_window")
    if window <= 0:
        return 0, 0
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and layer_types:
        n = sum(1 for t in layer_types if t == "sliding_attention")
        return (window, n) if n else (0, 0)
    if cfg.get("use_sliding_window") is False:
        return 0, 0
    if all_layers:
        return window, n_layers
    # Qwen2 / Qwen3: layers from max_window_layers on use the window.
    start = _opt_int(cfg, "max_window_layers", 0)
    n = max(0, n_layers - start)
    return (window, n) if n else (0, 0)


def _gated_mlp(hidden: int, inter: int, bias: bool = False) -> int:
    return 3 * hidden * inter + ((2 * inter + hidden) if bias else 0)


def _standard_attention(
    hidden: int, n_heads: int, n_kv: int, head_dim: int, qkv_bias: bool, o_bias: bool
) -> tuple[int, int]:
    """(attention params, K+V projection params) for separate q/k/v/o projections."""
    q_out, kv_out = n_heads * head_dim, n_kv * head_dim
    kv = 2 * (hidden * kv_out + (kv_out if qkv_bias else 0))
    q = hidden * q_out + (q_out if qkv_bias else 0)
    o = q_out * hidden + (hidden if o_bias else 0)
    return q + kv + o, kv


# ---------------------------------------------------------------------------------------------
# Per-family builders
# ---------------------------------------------------------------------------------------------


def _common(cfg: Mapping[str, Any], model_id: str) -> dict[str, int]:
    return {
        "hidden": _require_int(cfg, "hidden_size", model_id),
        "layers": _require_int(cfg, "num_hidden_layers", model_id),
        "heads": _require_int(cfg, "num_attention_heads", model_id),
        "vocab": _require_int(cfg, "vocab_size", model_id),
    }


def _llama_like(cfg: Mapping[str, Any], model_id: str, arch: str, family: str) -> ModelSpec:
    """Llama / Mistral / Mixtral / Qwen2 / Qwen3-MoE (and the Llama-like fallback)."""
    c = _common(cfg, model_id)
    hidden, layers, heads, vocab = c["hidden"], c["layers"], c["heads"], c["vocab"]
    inter = _require_int(cfg, "intermediate_size", model_id)
    n_kv = _opt_int(cfg, "num_key_value_heads", heads) or heads
    head_dim = _opt_int(cfg, "head_dim", 0) or hidden // heads
    model_type = str(cfg.get("model_type", ""))
    is_qwen2 = arch == "Qwen2ForCausalLM" or model_type == "qwen2"
    is_qwen3_moe = family == "qwen3_moe"
    attn_bias = _opt_bool(cfg, "attention_bias", False)
    attn, kv_proj = _standard_attention(hidden, heads, n_kv, head_dim, qkv_bias=attn_bias or is_qwen2, o_bias=attn_bias)
    mlp_bias = _opt_bool(cfg, "mlp_bias", False)

    norm = layers * 2 * hidden + hidden
    if is_qwen3_moe:
        norm += layers * 2 * head_dim  # q_norm, k_norm (RMSNorm over head_dim)

    n_experts = _opt_int(cfg, "num_local_experts") or _opt_int(cfg, "num_experts")
    n_moe = 0
    per_expert = router = top_k = 0
    if n_experts > 0:
        top_k = _require_int(cfg, "num_experts_per_tok", model_id)
        if is_qwen3_moe or "moe_intermediate_size" in cfg:
            expert_inter = _require_int(cfg, "moe_intermediate_size", model_id)
        else:
            expert_inter = inter
        per_expert = _gated_mlp(hidden, expert_inter, mlp_bias)
        router = hidden * n_experts
        if is_qwen3_moe:
            step = _opt_int(cfg, "decoder_sparse_step", 1) or 1
            mlp_only = set(cfg.get("mlp_only_layers") or [])
            n_moe = sum(1 for i in range(layers) if i not in mlp_only and (i + 1) % step == 0)
        else:
            n_moe = layers
    window, n_sliding = _window_layers(cfg, layers, all_layers=not (is_qwen2 or is_qwen3_moe))
    tie = _opt_bool(cfg, "tie_word_embeddings", False)
    return ModelSpec(
        id=model_id,
        architecture=arch,
        n_layers=layers,
        hidden_size=hidden,
        vocab_size=vocab,
        n_heads=heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        v_head_dim=head_dim,
        is_mla=False,
        kv_lora_rank=0,
        qk_rope_head_dim=0,
        kv_cache_elems_per_token_per_layer=2 * n_kv * head_dim,
        attn_params_per_layer=attn,
        kv_proj_params_per_layer=kv_proj,
        n_dense_layers=layers - n_moe,
        dense_mlp_params_per_layer=_gated_mlp(hidden, inter, mlp_bias) if layers > n_moe else 0,
        n_moe_layers=n_moe,
        n_experts=n_experts if n_moe else 0,
        experts_per_token=top_k if n_moe else 0,
        params_per_expert=per_expert if n_moe else 0,
        shared_expert_params_per_layer=0,
        router_params_per_layer=router if n_moe else 0,
        embedding_params=vocab * hidden,
        lm_head_params=vocab * hidden,
        tie_word_embeddings=tie,
        norm_params=norm,
        sliding_window=window,
        n_sliding_layers=n_sliding,
        max_position_embeddings=_opt_int(cfg, "max_position_embeddings"),
    )


def _llama4(config: Mapping[str, Any], model_id: str, arch: str) -> ModelSpec:
    """Llama 4 language model (text_config); the vision tower is not counted."""
    text = config.get("text_config")
    cfg: Mapping[str, Any] = text if isinstance(text, Mapping) else config
    c = _common(cfg, model_id)
    hidden, layers, heads, vocab = c["hidden"], c["layers"], c["heads"], c["vocab"]
    expert_inter = _require_int(cfg, "intermediate_size", model_id)
    dense_inter = _opt_int(cfg, "intermediate_size_mlp", 0) or expert_inter
    n_kv = _opt_int(cfg, "num_key_value_heads", heads) or heads
    head_dim = _opt_int(cfg, "head_dim", 0) or hidden // heads
    attn_bias = _opt_bool(cfg, "attention_bias", False)
    attn, kv_proj = _standard_attention(hidden, heads, n_kv, head_dim, attn_bias, attn_bias)

    n_experts = _require_int(cfg, "num_local_experts", model_id)
    top_k = _opt_int(cfg, "num_experts_per_tok", 1)
    moe_layers = cfg.get("moe_layers")
    if isinstance(moe_layers, list) and moe_layers:
        n_moe = len({int(i) for i in moe_layers if 0 <= int(i) < layers})
    else:
        step = _opt_int(cfg, "interleave_moe_layer_step", 1) or 1
        n_moe = len(range(step - 1, layers, step))

    no_rope = cfg.get("no_rope_layers")
    if not (isinstance(no_rope, list) and len(no_rope) == layers):
        interval = _opt_int(cfg, "no_rope_layer_interval", 4) or 4
        no_rope = [int((i + 1) % interval != 0) for i in range(layers)]
    chunk = _opt_int(cfg, "attention_chunk_size")
    n_chunked = sum(1 for v in no_rope if v) if chunk > 0 else 0

    tie = cfg.get("tie_word_embeddings")
    if tie is None:
        tie = config.get("tie_word_embeddings", False)
    return ModelSpec(
        id=model_id,
        architecture=arch,
        n_layers=layers,
        hidden_size=hidden,
        vocab_size=vocab,
        n_heads=heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        v_head_dim=head_dim,
        is_mla=False,
        kv_lora_rank=0,
        qk_rope_head_dim=0,
        kv_cache_elems_per_token_per_layer=2 * n_kv * head_dim,
        attn_params_per_layer=attn,
        kv_proj_params_per_layer=kv_proj,
        n_dense_layers=layers - n_moe,
        dense_mlp_params_per_layer=_gated_mlp(hidden, dense_inter) if layers > n_moe else 0,
        n_moe_layers=n_moe,
        n_experts=n_experts,
        experts_per_token=top_k,
        params_per_expert=_gated_mlp(hidden, expert_inter),
        shared_expert_params_per_layer=_gated_mlp(hidden, expert_inter),
        router_params_per_layer=hidden * n_experts,
        embedding_params=vocab * hidden,
        lm_head_params=vocab * hidden,
        tie_word_embeddings=bool(tie),
        norm_params=layers * 2 * hidden + hidden,  # the q/k L2 norm has no weights
        sliding_window=chunk if n_chunked else 0,
        n_sliding_layers=n_chunked,
        max_position_embeddings=_opt_int(cfg, "max_position_embeddings"),
    )


def _gpt_oss(cfg: Mapping[str, Any], model_id: str, arch: str) -> ModelSpec:
    c = _common(cfg, model_id)
    hidden, layers, heads, vocab = c["hidden"], c["layers"], c["heads"], c["vocab"]
    inter = _require_int(cfg, "intermediate_size", model_id)
    n_kv = _opt_int(cfg, "num_key_value_heads", heads) or heads
    head_dim = _opt_int(cfg, "head_dim", 0) or hidden // heads
    attn_bias = _opt_bool(cfg, "attention_bias", True)
    attn, kv_proj = _standard_attention(hidden, heads, n_kv, head_dim, attn_bias, attn_bias)
    attn += heads  # one learned attention-sink logit per head
    n_experts = _require_int(cfg, "num_local_experts", model_id, "num_experts")
    top_k = _require_int(cfg, "num_experts_per_tok", model_id, "experts_per_token")
    # gate_up_proj (hidden x 2*inter, + 2*inter bias) and down_proj (inter x hidden, + bias)
    per_expert = 3 * hidden * inter + 2 * inter + hidden
    window, n_sliding = _window_layers(cfg, layers, all_layers=True)
    return ModelSpec(
        id=model_id,
        architecture=arch,
        n_layers=layers,
        hidden_size=hidden,
        vocab_size=vocab,
        n_heads=heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        v_head_dim=head_dim,
        is_mla=False,
        kv_lora_rank=0,
        qk_rope_head_dim=0,
        kv_cache_elems_per_token_per_layer=2 * n_kv * head_dim,
        attn_params_per_layer=attn,
        kv_proj_params_per_layer=kv_proj,
        n_dense_layers=0,
        dense_mlp_params_per_layer=0,
        n_moe_layers=layers,
        n_experts=n_experts,
        experts_per_token=top_k,
        params_per_expert=per_expert,
        shared_expert_params_per_layer=0,
        router_params_per_layer=hidden * n_experts + n_experts,
        embedding_params=vocab * hidden,
        lm_head_params=vocab * hidden,
        tie_word_embeddings=_opt_bool(cfg, "tie_word_embeddings", False),
        norm_params=layers * 2 * hidden + hidden,
        sliding_window=window,
        n_sliding_layers=n_sliding,
        max_position_embeddings=_opt_int(cfg, "max_position_embeddings"),
    )


def _deepseek(cfg: Mapping[str, Any], model_id: str, arch: str) -> ModelSpec:
    """DeepSeek-V2/V3 with multi-head latent attention; the MTP module is excluded."""
    c = _common(cfg, model_id)
    hidden, layers, heads, vocab = c["hidden"], c["layers"], c["heads"], c["vocab"]
    inter = _require_int(cfg, "intermediate_size", model_id)
    kv_rank = _require_int(cfg, "kv_lora_rank", model_id)
    q_rank = _opt_int(cfg, "q_lora_rank", 0)
    nope = _require_int(cfg, "qk_nope_head_dim", model_id)
    rope = _require_int(cfg, "qk_rope_head_dim", model_id)
    v_dim = _require_int(cfg, "v_head_dim", model_id)
    bias = _opt_bool(cfg, "attention_bias", False)
    qk_dim = nope + rope

    if q_rank > 0:  # q_a_proj (+bias) then q_b_proj; q_a_layernorm counted with the norms
        q = hidden * q_rank + (q_rank if bias else 0) + q_rank * heads * qk_dim
    else:
        q = hidden * heads * qk_dim
    kv_a = hidden * (kv_rank + rope) + ((kv_rank + rope) if bias else 0)
    kv_b = kv_rank * heads * (nope + v_dim)
    o = heads * v_dim * hidden + (hidden if bias else 0)
    attn = q + kv_a + kv_b + o

    n_routed = _opt_int(cfg, "n_routed_experts", 0)
    first_dense = _opt_int(cfg, "first_k_dense_replace", 0)
    freq = _opt_int(cfg, "moe_layer_freq", 1) or 1
    if n_routed > 0:
        n_moe = sum(1 for i in range(layers) if i >= first_dense and i % freq == 0)
        moe_inter = _require_int(cfg, "moe_intermediate_size", model_id)
        top_k = _require_int(cfg, "num_experts_per_tok", model_id)
        n_shared = _opt_int(cfg, "n_shared_experts", 0)
        router = hidden * n_routed
        if cfg.get("topk_method") == "noaux_tc":
            router += n_routed  # e_score_correction_bias
    else:
        n_moe = moe_inter = top_k = n_shared = router = 0
    norm = layers * (2 * hidden + kv_rank + q_rank) + hidden
    return ModelSpec(
        id=model_id,
        architecture=arch,
        n_layers=layers,
        hidden_size=hidden,
        vocab_size=vocab,
        n_heads=heads,
        n_kv_heads=heads,
        head_dim=qk_dim,
        v_head_dim=v_dim,
        is_mla=True,
        kv_lora_rank=kv_rank,
        qk_rope_head_dim=rope,
        kv_cache_elems_per_token_per_layer=kv_rank + rope,
        attn_params_per_layer=attn,
        kv_proj_params_per_layer=kv_a,
        n_dense_layers=layers - n_moe,
        dense_mlp_params_per_layer=_gated_mlp(hidden, inter) if layers > n_moe else 0,
        n_moe_layers=n_moe,
        n_experts=n_routed if n_moe else 0,
        experts_per_token=top_k if n_moe else 0,
        params_per_expert=_gated_mlp(hidden, moe_inter) if n_moe else 0,
        shared_expert_params_per_layer=n_shared * _gated_mlp(hidden, moe_inter) if n_moe else 0,
        router_params_per_layer=router if n_moe else 0,
        embedding_params=vocab * hidden,
        lm_head_params=vocab * hidden,
        tie_word_embeddings=_opt_bool(cfg, "tie_word_embeddings", False),
        norm_params=norm,
        sliding_window=0,
        n_sliding_layers=0,
        max_position_embeddings=_opt_int(cfg, "max_position_embeddings"),
    )


def _falcon(cfg: Mapping[str, Any], model_id: str, arch: str) -> ModelSpec:
    hidden = _require_int(cfg, "hidden_size", model_id)
    layers = _require_int(cfg, "num_hidden_layers", model_id, "n_layer")
    heads = _require_int(cfg, "num_attention_heads", model_id, "n_head")
    vocab = _require_int(cfg, "vocab_size", model_id)
    new_arch = _opt_bool(cfg, "new_decoder_architecture", False) or cfg.get("model_type") == ("RefinedWeb")
    if new_arch:
        n_kv = _opt_int(cfg, "num_kv_heads", 0) or _opt_int(cfg, "n_head_kv", 0) or heads
    elif _opt_bool(cfg, "multi_query", True):
        n_kv = 1
    else:
        n_kv = heads
    head_dim = _opt_int(cfg, "head_dim", 0) or hidden // heads
    bias = _opt_bool(cfg, "bias", False)
    qkv_out = (heads + 2 * n_kv) * head_dim
    kv_out = 2 * n_kv * head_dim
    attn = hidden * qkv_out + (qkv_out if bias else 0) + heads * head_dim * hidden
    attn += hidden if bias else 0
    kv_proj = hidden * kv_out + (kv_out if bias else 0)
    ffn = _opt_int(cfg, "ffn_hidden_size", 0) or 4 * hidden
    mlp = 2 * hidden * ffn + ((ffn + hidden) if bias else 0)
    if new_arch:
        n_ln = _opt_int(cfg, "num_ln_in_parallel_attn", 0) or 2
    elif _opt_bool(cfg, "parallel_attn", True):
        n_ln = 1
    else:
        n_ln = 2
    norm = layers * n_ln * 2 * hidden + 2 * hidden  # LayerNorm: weight + bias
    return ModelSpec(
        id=model_id,
        architecture=arch,
        n_layers=layers,
        hidden_size=hidden,
        vocab_size=vocab,
        n_heads=heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        v_head_dim=head_dim,
        is_mla=False,
        kv_lora_rank=0,
        qk_rope_head_dim=0,
        kv_cache_elems_per_token_per_layer=2 * n_kv * head_dim,
        attn_params_per_layer=attn,
        kv_proj_params_per_layer=kv_proj,
        n_dense_layers=layers,
        dense_mlp_params_per_layer=mlp,
        n_moe_layers=0,
        n_experts=0,
        experts_per_token=0,
        params_per_expert=0,
        shared_expert_params_per_layer=0,
        router_params_per_layer=0,
        embedding_params=vocab * hidden,
        lm_head_params=vocab * hidden,
        tie_word_embeddings=_opt_bool(cfg, "tie_word_embeddings", True),
        norm_params=norm,
        sliding_window=0,
        n_sliding_layers=0,
        max_position_embeddings=_opt_int(cfg, "max_position_embeddings", 2048),
    )


def model_from_config(config: dict, model_id: str) -> ModelSpec:
    """Build a ModelSpec from a parsed Hugging Face config.json."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{model_id}: config must be a JSON object, got {type(config).__name__}")
    arch = _architecture(config)
    family = _family(config)
    if family == "llama4":
        return _llama4(config, model_id, arch)
    if family == "gpt_oss":
        return _gpt_oss(config, model_id, arch)
    if family == "deepseek":
        return _deepseek(config, model_id, arch)
    if family == "falcon":
        return _falcon(config, model_id, arch)
    if family in ("llama", "qwen3_moe"):
        return _llama_like(config, model_id, arch, family)
    # Unknown architecture: count it as a Llama model if it has the fields one needs.
    for key in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
        "intermediate_size",
    ):
        _require_int(config, key, model_id)
    warnings.warn(
        f"{model_id}: unknown architecture {arch!r}; counting its parameters as a Llama-like "
        "model (RoPE, RMSNorm, gated MLP, separate q/k/v/o projections)",
        stacklevel=2,
    )
    return _llama_like(config, model_id, arch, "llama")


# ---------------------------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------------------------


def _data_root() -> Any:
    return resources.files(_DATA_PACKAGE).joinpath("data")


@lru_cache(maxsize=1)
def _catalog() -> tuple[CatalogModel, ...]:
    raw = yaml.safe_load(_data_root().joinpath(_CATALOG_FILE).read_text(encoding="utf-8"))
    entries = []
    for item in raw:
        entries.append(
            CatalogModel(
                id=str(item["id"]),
                dir=str(item["dir"]),
                aliases=tuple(str(a) for a in item.get("aliases") or ()),
                # PyYAML reads "70.6e9" (no exponent sign) as a string: coerce.
                published_total_params=float(item["published_total_params"]),
                published_active_params=float(item["published_active_params"]),
                params_source=str(item["params_source"]),
                config_source=str(item["config_source"]),
                published_active_counts_input_embedding=bool(item.get("published_active_counts_input_embedding", True)),
            )
        )
    return tuple(entries)


@lru_cache(maxsize=1)
def _name_index() -> dict[str, CatalogModel]:
    index: dict[str, CatalogModel] = {}
    for entry in _catalog():
        for name in (entry.id, entry.dir, *entry.aliases):
            key = name.lower()
            other = index.get(key)
            if other is not None and other.id != entry.id:
                raise ValueError(f"catalog name {name!r} is used by {other.id} and {entry.id}")
            index[key] = entry
    return index


def list_models() -> list[CatalogModel]:
    """The shipped catalog, in file order."""
    return list(_catalog())


@cache
def _catalog_spec(model_id: str) -> ModelSpec:
    entry = next(e for e in _catalog() if e.id == model_id)
    text = _data_root().joinpath("models", entry.dir, "config.json").read_text(encoding="utf-8")
    return model_from_config(json.loads(text), entry.id)


def _load_path(path: Path) -> ModelSpec:
    shown = _shown(str(path))
    try:
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise ModelConfigError(f"no config.json in directory {shown}")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelConfigError(f"cannot read model config {shown}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ModelConfigError(f"model config {shown} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        config = json.loads(text)
    except RecursionError:
        raise ModelConfigError(f"model config {shown} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer past Python's 4,300-digit limit
        raise ModelConfigError(f"model config {shown} is not a Hugging Face config.json (JSON: {exc})") from None
    if not isinstance(config, Mapping):
        raise ModelConfigError(f"model config {shown} must be a JSON object, got {type(config).__name__}")
    name = config.get("_name_or_path")
    model_id = str(name) if name else str(path)
    try:
        return model_from_config(config, model_id)
    except (TypeError, KeyError, ArithmeticError, RecursionError) as exc:  # odd field types or values
        raise ModelConfigError(f"model config {shown} cannot be used ({type(exc).__name__}: {exc})") from None


def load_model(name_or_path: str) -> ModelSpec:
    """A catalog model by id or alias (case-insensitive), or a config.json / its directory.
    UnknownModelError for anything else; ModelConfigError (a subclass) for a path that is not
    a usable config."""
    if not str(name_or_path).strip():
        raise UnknownModelError("empty model name: give a catalog id or alias, or a path to a config.json")
    entry = _name_index().get(str(name_or_path).lower())
    if entry is not None:
        return _catalog_spec(entry.id)
    path = Path(name_or_path)
    try:
        exists = path.exists()
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte
        why = getattr(exc, "strerror", None) or str(exc)
        raise ModelConfigError(
            f"model {_shown(str(name_or_path))} is not a catalog id or alias, nor a usable path ({why})"
        ) from None
    if exists:
        return _load_path(path)
    names = sorted({n for e in _catalog() for n in (e.id.lower(), *(a.lower() for a in e.aliases))})
    close = difflib.get_close_matches(str(name_or_path).lower()[:200], names, n=5, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else "no close matches in the catalog"
    raise UnknownModelError(
        f"unknown model {_shown(str(name_or_path))} (not a catalog id or alias, nor an existing path); {hint}"
    )
