"""One real decoder layer of a model, timed on a GPU: what the probe evaluator measures.

`layer_shape` gives a candidate's per-GPU shapes (attention heads and KV heads after TP, the
gated MLP or the top-k MoE block with the GPU's experts); `probe_layer` builds that layer with
random weights (bf16, or fp8 W8A8 e4m3 through `torch._scaled_mm` where the GPU has fp8 tensor
cores) and times its linear layers and attention for decode steps at a context and a prefill
chunk; `probe_layer_remote` runs it as a Ray task on a GPU of the candidate's type. The probe
evaluator (search.sweeps.probed) combines those times with the analytic model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from objectives.models import ModelSpec
from search.calibration.probes import _device, _mlp_inter, _timer, _torch

# ------------------------------------------------------------------ one decoder layer


PROBE_WEIGHTS = ("bf16", "fp8")  # linear-layer dtypes a layer probe builds (fp8: W8A8 e4m3, bf16 out)


def layer_shape(
    model: ModelSpec,
    *,
    tp: int,
    ep: int,
    batch: int,
    context: int,
    prefill_tokens: int,
    seed: int = 0,
    weights: str = "bf16",
) -> dict[str, Any]:
    """Per-GPU shapes of one decoder layer under TP `tp` / EP `ep`, with its linear layers in
    `weights` (one of PROBE_WEIGHTS) (plain, JSON-able)."""
    if weights not in PROBE_WEIGHTS:
        raise ValueError(f"a layer probe builds {' or '.join(PROBE_WEIGHTS)} linear layers, not {weights!r}")
    heads = max(1, math.ceil(model.n_heads / tp))
    kv_heads = max(1, math.ceil(model.n_kv_heads / tp))
    if heads % kv_heads:  # SDPA's grouped-query attention needs whole groups
        kv_heads = math.gcd(heads, kv_heads)
    moe = model.n_moe_layers > 0 and model.n_experts > 0
    inter = _mlp_inter(model) if not moe else max(1, model.params_per_expert // (3 * model.hidden_size))
    shard = min(ep, tp) if moe else 1
    return {
        "hidden": model.hidden_size,
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": model.head_dim,
        "v_head_dim": model.v_head_dim,
        "moe": moe,
        "inter": max(1, inter * shard // tp),  # per expert (MoE) or per layer (dense), per GPU
        "experts_total": model.n_experts if moe else 0,
        "experts_local": max(1, model.n_experts // shard) if moe else 0,
        "top_k": model.experts_per_token if moe else 0,
        "shared_inter": max(0, model.shared_expert_params_per_layer // (3 * model.hidden_size)) // tp if moe else 0,
        "batch": max(1, int(batch)),
        "context": max(1, int(context)),
        "prefill_tokens": max(1, int(prefill_tokens)),
        "seed": seed,
        "weights": weights,
    }


def probe_layer(shape: Mapping[str, Any], device: str = "cpu", repeats: int = 3) -> dict[str, float]:
    """Seconds of one decoder layer's linear layers and attention for one decode step of
    `batch` sequences at `context` and for a causal prefill chunk of `prefill_tokens`.

    Linear layers are bf16, or with `weights: fp8` W8A8 as serving runtimes run them: e4m3
    weights, the activations quantized to e4m3 per tensor before each GEMM (timed: it is part of
    the real cost), `torch._scaled_mm` with bf16 output; dimensions are padded to multiples of
    16 as it requires. The MoE router and attention (KV cache) stay bf16."""
    torch = _torch()
    dev = _device(device)
    f = torch.nn.functional
    bf = torch.bfloat16
    fp8 = shape.get("weights", "bf16") == "fp8"
    e4m3 = torch.float8_e4m3fn
    one = torch.ones((), device=dev, dtype=torch.float32)
    g = torch.Generator(device="cpu").manual_seed(int(shape.get("seed", 0)))
    h, hq, hkv = shape["hidden"], shape["heads"], shape["kv_heads"]
    d, dv = shape["head_dim"], shape["v_head_dim"]

    def pad16(n: int) -> int:
        return -(-n // 16) * 16

    def weight(n: int, k: int, dtype_fp8: bool | None = None) -> Any:
        w = (torch.randn(n, k, generator=g, dtype=torch.float32) * k**-0.5).to(device=dev, dtype=bf)
        if not (fp8 if dtype_fp8 is None else dtype_fp8):
            return w
        return (f.pad(w, (0, pad16(k) - k, 0, pad16(n) - n)).to(e4m3), n)

    def mm(x: Any, w: Any) -> Any:
        """x[M, K] @ W[N, K]^T in bf16."""
        if not isinstance(w, tuple):
            return x @ w.t()
        w8, n = w
        m, k = x.shape
        x8 = f.pad(x, (0, w8.shape[1] - k, 0, pad16(m) - m)).to(e4m3)
        return torch._scaled_mm(x8, w8.t(), one, one, out_dtype=bf)[:m, :n]

    w_qkv = weight(hq * d + hkv * (d + dv), h)
    w_o = weight(h, hq * dv)
    inter = shape["inter"]
    if shape["moe"]:
        experts = [(weight(2 * inter, h), weight(h, inter)) for _ in range(shape["experts_local"])]
        w_router = weight(shape["experts_total"], h, dtype_fp8=False)
        shared = (
            (weight(2 * shape["shared_inter"], h), weight(h, shape["shared_inter"])) if shape["shared_inter"] else None
        )
    else:
        w_gu, w_dn = weight(2 * inter, h), weight(h, inter)

    def mlp(x: Any, wgu: Any, wdn: Any) -> Any:
        gate, up = mm(x, wgu).chunk(2, dim=-1)
        return mm(f.silu(gate) * up, wdn)

    def linear(x: Any) -> Any:
        qkv = mm(x, w_qkv)
        att = qkv[:, : hq * dv] if qkv.shape[1] >= hq * dv else x.new_zeros(x.shape[0], hq * dv)
        y = x + mm(att, w_o)
        if not shape["moe"]:
            return y + mlp(y, w_gu, w_dn)
        logits = mm(y, w_router)
        _, top = torch.topk(logits, shape["top_k"], dim=-1)
        out = y.clone() if shared is None else y + mlp(y, *shared)
        for e, (wgu, wdn) in enumerate(experts):  # only the experts this GPU hosts
            rows = (top == e).any(dim=-1).nonzero().flatten()
            if rows.numel():
                out.index_add_(0, rows, mlp(y[rows], wgu, wdn))
        return out

    b, ctx, t = shape["batch"], shape["context"], shape["prefill_tokens"]
    x_dec = torch.randn(b, h, generator=g).to(device=dev, dtype=bf)
    x_pre = torch.randn(t, h, generator=g).to(device=dev, dtype=bf)
    q = torch.randn(b, hq, 1, d, generator=g).to(device=dev, dtype=bf)
    k = torch.randn(b, hkv, ctx, d, generator=g).to(device=dev, dtype=bf)
    v = torch.randn(b, hkv, ctx, dv, generator=g).to(device=dev, dtype=bf)
    qp = torch.randn(1, hq, t, d, generator=g).to(device=dev, dtype=bf)
    kp = torch.randn(1, hkv, t, d, generator=g).to(device=dev, dtype=bf)
    vp = torch.randn(1, hkv, t, dv, generator=g).to(device=dev, dtype=bf)
    with torch.inference_mode():
        return {
            "decode_linear_s": _timer(dev, lambda: linear(x_dec), repeats),
            "decode_attention_s": _timer(
                dev, lambda: f.scaled_dot_product_attention(q, k, v, enable_gqa=True), repeats
            ),
            "prefill_linear_s": _timer(dev, lambda: linear(x_pre), repeats),
            "prefill_attention_s": _timer(
                dev, lambda: f.scaled_dot_product_attention(qp, kp, vp, is_causal=True, enable_gqa=True), repeats
            ),
        }


def probe_layer_remote(shape: Mapping[str, Any], accelerator_type: str | None, repeats: int) -> dict[str, float]:
    """`probe_layer` on a cluster GPU (of `accelerator_type` when given), as a Ray task."""
    import ray

    opts: dict[str, Any] = {"num_gpus": 1, "num_cpus": 0}
    if accelerator_type:
        opts["accelerator_type"] = accelerator_type
    task = ray.remote(max_retries=1)(probe_layer).options(**opts)
    return ray.get(task.remote(dict(shape), "cuda", repeats))
