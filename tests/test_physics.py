"""Hand calculations of the serving physics, each worked out from first principles in the test
(the arithmetic is in the comments) and compared with what the model computes.

Model inputs that are calibration data (achieved-bandwidth fraction, overheads) are read from
the ConfigBatch the model built, so these tests check the physics, not the calibration.
"""

from __future__ import annotations

import numpy as np
import pytest

from objectives.accelerators import get_accelerator
from objectives.batch import build_batch
from objectives.communication import allreduce_time_s, tp_communication_time_s
from objectives.compute import dense_weight_bytes, expected_experts_touched
from objectives.cost import HOURS_PER_YEAR, OwnershipTerms, tco_usd_per_gpu_hour, usd_per_million_tokens
from objectives.memory import (
    kv_bytes_per_sequence_per_gpu,
    kv_bytes_per_token_per_layer_per_gpu,
    kv_heads_per_gpu,
    max_batch_that_fits,
    weight_bytes_per_gpu,
)
from objectives.models import load_model
from objectives.quantization import (
    SCHEMES,
    activation_bytes,
    fallback_note,
    get_scheme,
    resolve_compute_dtype,
)
from objectives.serving import evaluate, offline_max_throughput
from objectives.timing import decode_step_time_s

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
LLAMA_405B = "meta-llama/Llama-3.1-405B-Instruct"
DEEPSEEK_V3 = "deepseek-ai/DeepSeek-V3"
MISTRAL_7B = "mistralai/Mistral-7B-v0.1"

# Llama-3.1-8B architecture (config.json): hidden 4096, 32 layers, 32 query heads, 8 KV heads,
# head_dim 4096 / 32 = 128, SwiGLU intermediate 14336, vocab 128256, untied embeddings.
H, L, NQ, NKV, HD, FF, V = 4096, 32, 32, 8, 128, 14336, 128256
# attention per layer: q (4096 x 4096) + k, v (2 x 4096 x 1024) + o (4096 x 4096)
#   = 16,777,216 + 8,388,608 + 16,777,216 = 41,943,040
ATTN_8B = H * NQ * HD + 2 * H * NKV * HD + NQ * HD * H
# gated MLP per layer: gate + up + down = 3 x 4096 x 14336 = 176,160,768
MLP_8B = 3 * H * FF
# linear weights every token multiplies: 32 x (41,943,040 + 176,160,768) = 6,979,321,856
LINEAR_8B = L * (ATTN_8B + MLP_8B)
# embedding table and LM head: 128256 x 4096 = 525,336,576 each
EMBED_8B = V * H
# norms: 2 RMSNorms per layer + the final one = 32 x 2 x 4096 + 4096 = 266,240
NORMS_8B = L * 2 * H + H


def _h100():
    return get_accelerator("H100-SXM")


# ----------------------------------------------------------------------------- Llama-3.1-8B decode


def test_llama_8b_architecture_matches_hand_count() -> None:
    spec = load_model(LLAMA_8B)
    assert (spec.hidden_size, spec.n_layers, spec.n_heads, spec.n_kv_heads, spec.head_dim) == (H, L, NQ, NKV, HD)
    assert spec.vocab_size == V
    assert not spec.tie_word_embeddings
    # 6,979,321,856 + 2 x 525,336,576 + 266,240 = 8,030,261,248 ~ 8.03e9 (model card)
    assert spec.total_params == LINEAR_8B + 2 * EMBED_8B + NORMS_8B == 8_030_261_248
    assert spec.total_params == pytest.approx(8.03e9, rel=1e-3)


def test_llama_8b_bf16_weight_bytes_per_gpu() -> None:
    b = build_batch(load_model(LLAMA_8B), _h100(), weights="bf16", batch=1, isl=1024, osl=256)
    # stored: (linear + embedding + LM head) x 2 bytes = (6,979,321,856 + 1,050,673,152) x 2
    #       = 16,059,990,016 B (norms, 0.27M params, are not counted: 0.003 %)
    hand = (LINEAR_8B + 2 * EMBED_8B) * 2
    assert hand == 16_059_990_016
    assert weight_bytes_per_gpu(b)[0] == pytest.approx(hand, rel=1e-12)
    # 8.03e9 params x 2 bytes = 16.06e9
    assert weight_bytes_per_gpu(b)[0] == pytest.approx(8.03e9 * 2, rel=1e-3)


def test_llama_8b_decode_batch1_reads_linear_weights_and_lm_head_not_embedding() -> None:
    gpu = _h100()
    b = build_batch(load_model(LLAMA_8B), gpu, weights="bf16", batch=1, isl=1024, osl=256)
    # A decode step reads every linear weight and the LM head once; the embedding table is a
    # lookup of one row per token, so it is not read:
    #   (6,979,321,856 + 525,336,576) x 2 B = 15,009,316,864 B
    bytes_read = (LINEAR_8B + EMBED_8B) * 2
    assert bytes_read == 15_009_316_864
    assert dense_weight_bytes(b)[0] == pytest.approx(bytes_read, rel=1e-12)

    assert b.hbm_bw_bytes_per_s[0] == gpu.hbm_bw_bytes_per_s == pytest.approx(3.35e12)
    achieved_bw = b.hbm_bw_bytes_per_s[0] * b.eff_bw[0]
    assert 0.0 < b.eff_bw[0] <= 1.0
    weights_s = bytes_read / achieved_bw  # ~ 15.0e9 / (3.35e12 x ~0.62) ~ 7.2 ms

    step = decode_step_time_s(b, np.array([1.0]), np.array([1024.0]))
    assert step.weights_memory_s[0] == pytest.approx(weights_s, rel=1e-12)

    # KV read at context 1024: 32 layers x 2 (K, V) x 8 heads x 128 x 2 B = 131,072 B/token,
    # x 1024 tokens = 134,217,728 B
    kv_bytes = L * 2 * NKV * HD * 2 * 1024
    assert kv_bytes == 134_217_728
    # (paged KV reads have their own achieved-bandwidth fraction, eff_kv_bw)
    kv_bw = b.hbm_bw_bytes_per_s[0] * b.eff_kv_bw[0]
    assert step.kv_memory_s[0] == pytest.approx(kv_bytes / kv_bw, rel=1e-12)

    # Fixed per-step runtime overhead: 32 layers x layer_overhead + step_overhead + 1 seq x seq_overhead
    overhead = L * b.layer_overhead_s[0] + b.step_overhead_s[0] + 1 * b.seq_overhead_s[0]
    assert step.overhead_s[0] == pytest.approx(overhead, rel=1e-12)
    assert step.communication_s[0] == 0.0  # one GPU: no collectives

    # Batch 1 is bandwidth-bound: the GEMM math (2 FLOPs per weight, one token) is far below
    # the weight-read time, so the linear layers take the weight-read time within a few %.
    assert step.gemm_compute_s[0] < 0.5 * step.weights_memory_s[0]
    assert step.gemm_s[0] == pytest.approx(weights_s, rel=0.03)
    # ... and the whole step is the weight read plus the KV read plus the fixed overheads.
    device_s = step.total_s[0] - step.overhead_s[0]
    assert device_s == pytest.approx(weights_s, rel=0.03)
    assert step.total_s[0] == pytest.approx(weights_s + kv_bytes / kv_bw + overhead, rel=0.03)
    # The weight read is the largest single component of the step.
    assert step.weights_memory_s[0] > max(step.kv_memory_s[0], step.attention_s[0], step.overhead_s[0])

    m = evaluate(b)
    assert bool(m.feasible[0])
    assert m.bound == ["bandwidth"]


# ----------------------------------------------------------------------------- KV cache


def test_llama_70b_kv_per_token_and_tp_replication() -> None:
    b = build_batch(load_model(LLAMA_70B), _h100(), weights="bf16", tp=np.array([1, 2, 8, 16]))
    # 80 layers x 2 (K and V) x 8 KV heads x 128 head_dim x 2 bytes = 327,680 B per token
    per_token_tp1 = 80 * 2 * 8 * 128 * 2
    assert per_token_tp1 == 327_680
    kv = kv_bytes_per_sequence_per_gpu(b, np.array([1.0]))
    # TP 2: 4 KV heads per GPU -> 1/2; TP 8: one KV head per GPU -> 1/8;
    # TP 16 > 8 KV heads: each GPU still keeps one whole KV head (replicated) -> still 1/8.
    np.testing.assert_allclose(kv, [per_token_tp1, per_token_tp1 / 2, per_token_tp1 / 8, per_token_tp1 / 8])
    np.testing.assert_allclose(kv_heads_per_gpu(b), [8, 4, 1, 1])
    # Linear in context length.
    np.testing.assert_allclose(kv_bytes_per_sequence_per_gpu(b, np.array([1000.0])), 1000 * kv)


def test_deepseek_v3_mla_kv_is_latent_and_replicated_across_tp() -> None:
    spec = load_model(DEEPSEEK_V3)
    assert spec.is_mla
    # MLA caches the compressed latent (kv_lora_rank 512) plus the shared RoPE key (64):
    # 512 + 64 = 576 elements per token per layer, whatever the TP (every rank keeps it whole).
    assert spec.kv_lora_rank + spec.qk_rope_head_dim == 576
    assert spec.kv_cache_elems_per_token_per_layer == 576
    gpu = get_accelerator("H200-SXM")
    b = build_batch(spec, gpu, weights="fp8", kv_cache="bf16", tp=np.array([1, 8, 16, 32]))
    np.testing.assert_allclose(b.kv_elems_per_token_per_layer, 576)
    # 576 elements x 2 bytes (bf16 cache) = 1,152 B per token per layer on every GPU
    np.testing.assert_allclose(kv_bytes_per_token_per_layer_per_gpu(b), 576 * 2)
    # 61 layers x 1,152 B = 70,272 B per token per GPU, at every TP
    assert spec.n_layers == 61
    np.testing.assert_allclose(kv_bytes_per_sequence_per_gpu(b, np.array([1.0])), 61 * 576 * 2)


def test_mistral_sliding_window_caps_kv() -> None:
    spec = load_model(MISTRAL_7B)
    assert spec.sliding_window == 4096
    assert spec.n_sliding_layers == spec.n_layers == 32
    b = build_batch(spec, _h100())
    ctx = np.array([2000.0, 4096.0, 10_000.0, 32_000.0])
    kv = kv_bytes_per_sequence_per_gpu(b.take(np.zeros(4, dtype=int)), ctx)
    # 32 layers x 2 x 8 KV heads x 128 x 2 B = 131,072 B per token; a window of 4096 tokens
    # holds 131,072 x 4096 = 536,870,912 B however long the context grows.
    per_token = 32 * 2 * 8 * 128 * 2
    np.testing.assert_allclose(kv, [2000 * per_token, 4096 * per_token, 4096 * per_token, 4096 * per_token])
    assert kv[2] == kv[1]


# ----------------------------------------------------------------------------- MoE routing


def test_expected_experts_touched() -> None:
    # one token, top-2 of 8: exactly 2 experts. 8 x (1 - (1 - 2/8)^1) = 8 x 0.25 = 2
    assert expected_experts_touched(np.array(8.0), np.array(2.0), np.array(1.0)) == pytest.approx(2.0)
    # many tokens touch every expert: 8 x (1 - 0.75^10000) -> 8
    assert expected_experts_touched(np.array(8.0), np.array(2.0), np.array(10_000.0)) == pytest.approx(8.0)
    # one token, top-1 of 128: 128 x (1/128) = 1
    assert expected_experts_touched(np.array(128.0), np.array(1.0), np.array(1.0)) == pytest.approx(1.0)
    # two tokens, top-2 of 8: 8 x (1 - 0.75^2) = 8 x 0.4375 = 3.5
    assert expected_experts_touched(np.array(8.0), np.array(2.0), np.array(2.0)) == pytest.approx(3.5)
    # dense model (no experts): 0
    assert expected_experts_touched(np.array(0.0), np.array(0.0), np.array(5.0)) == 0.0


@pytest.mark.parametrize(("n_experts", "top_k"), [(8, 2), (128, 8), (16, 1), (256, 8), (4, 4)])
def test_expected_experts_touched_monotone_and_bounded(n_experts: int, top_k: int) -> None:
    tokens = np.arange(0, 5000, dtype=np.float64)
    touched = expected_experts_touched(np.full_like(tokens, n_experts), np.full_like(tokens, top_k), tokens)
    assert touched[0] == 0.0
    assert np.all(np.diff(touched) >= 0.0)
    assert np.all(touched <= n_experts + 1e-9)
    # never more distinct experts than token-expert assignments
    assert np.all(touched <= tokens * top_k + 1e-9)


# ----------------------------------------------------------------------------- collectives


def test_allreduce_alpha_beta() -> None:
    size, bw, eff, alpha = 1.0e6, 450e9, 0.9, 36.5e-6
    one = allreduce_time_s(np.array(size), np.array(1.0), np.array(bw), np.array(eff), np.array(alpha))
    assert one == 0.0
    for n in (2, 4, 8, 16):
        # alpha + 2 (n-1)/n x S / (bw x eff); n = 8: 36.5 us + 1.75e6 / 405e9 = 36.5 us + 4.32 us
        hand = alpha + 2.0 * (n - 1) / n * size / (bw * eff)
        got = allreduce_time_s(np.array(size), np.array(float(n)), np.array(bw), np.array(eff), np.array(alpha))
        assert got == pytest.approx(hand, rel=1e-12)
    eight = allreduce_time_s(np.array(size), np.array(8.0), np.array(bw), np.array(eff), np.array(alpha))
    assert eight == pytest.approx(36.5e-6 + 1.75e6 / 405e9, rel=1e-12)


def test_tp_communication_of_a_decode_step() -> None:
    b = build_batch(load_model(LLAMA_8B), _h100(), tp=2)
    # one token: message = 1 x 4096 hidden x 2 B = 8,192 B; two all-reduces per layer x 32 layers;
    # each = alpha + 2 x (1/2) x 8192 / (link_bw x link_eff)
    ar = b.allreduce_latency_s[0] + 2 * 0.5 * 8192 / (b.link_bw_bytes_per_s[0] * b.eff_link[0])
    got = tp_communication_time_s(b, np.array([1.0]))
    assert got[0] == pytest.approx(2 * 32 * ar, rel=1e-12)


# ----------------------------------------------------------------------------- capacity


def test_405b_bf16_does_not_fit_one_h100() -> None:
    spec = load_model(LLAMA_405B)
    gpu = _h100()
    # 405.9e9 params x 2 B ~ 812 GB of weights >> 85.5 GB of HBM
    assert spec.total_params * 2 > 9 * gpu.hbm_bytes
    m = evaluate(build_batch(spec, gpu, weights="bf16", batch=8))
    assert not bool(m.feasible[0])
    assert "weights do not fit" in m.reason[0]
    assert m.max_batch[0] == 0
    assert np.isnan(m.ttft_s[0]) and np.isnan(m.output_tokens_per_s_per_gpu[0])


def test_batch_is_clipped_to_what_fits() -> None:
    b = build_batch(load_model(LLAMA_8B), _h100(), batch=100_000, isl=1024, osl=256)
    fit = max_batch_that_fits(b, b.isl + b.osl)[0]
    assert 1 <= fit < 100_000
    m = evaluate(b)
    assert bool(m.feasible[0])
    assert m.batch[0] == fit == m.max_batch[0]
    assert m.bound == ["capacity"]
    # the clipped batch's memory is within HBM
    assert m.memory_per_gpu_bytes[0] <= b.hbm_bytes[0]
    # one more sequence would not fit in the KV budget
    per_seq = kv_bytes_per_sequence_per_gpu(b, b.isl + b.osl)[0]
    assert fit * per_seq <= m.kv_budget_bytes[0] < (fit + 1) * per_seq


# ----------------------------------------------------------------------------- quantization


def test_fp8_on_a100_falls_back_to_bf16_compute_with_fp8_bytes() -> None:
    a100 = get_accelerator("A100-SXM-80GB")
    fp8 = get_scheme("fp8")
    supported = frozenset(d for d in a100.peak_flops if a100.supports(d))
    assert "fp8" not in supported
    assert resolve_compute_dtype(fp8, supported) == "bf16"
    note = fallback_note(fp8, "bf16")
    assert note is not None and "fp8" in note
    assert activation_bytes(fp8, "bf16") == 2.0
    b = build_batch(load_model(LLAMA_8B), a100, weights="fp8")
    assert b.weight_bytes_per_param[0] == 1.0  # weights stay 8-bit in HBM
    assert b.peak_flops[0] == a100.peak_flops["bf16"]  # math on bf16 tensor cores
    assert b.activation_bytes[0] == 2.0
    # on H100 fp8 runs natively
    h100 = _h100()
    h_supported = frozenset(d for d in h100.peak_flops if h100.supports(d))
    assert resolve_compute_dtype(fp8, h_supported) == "fp8"
    assert fallback_note(fp8, "fp8") is None
    assert build_batch(load_model(LLAMA_8B), h100, weights="fp8").peak_flops[0] == h100.peak_flops["fp8"]


def test_weight_bits() -> None:
    # NVFP4: 16 four-bit values share one 8-bit scale: 4 + 8/16 = 4.5 bits
    assert get_scheme("fp4").bits_per_weight == 4.5
    assert get_scheme("nvfp4").bytes_per_weight == 4.5 / 8
    # MXFP4: 32 values share an 8-bit exponent: 4 + 8/32 = 4.25 bits
    assert get_scheme("mxfp4").bits_per_weight == 4.25
    # int4 AWQ/GPTQ group 128 with fp16 scale + zero: 4 + 32/128 = 4.25 bits
    assert get_scheme("int4").bits_per_weight == 4.25
    assert get_scheme("fp8").bytes_per_weight == 1.0
    assert get_scheme("bf16").bytes_per_weight == 2.0
    b200 = get_accelerator("B200")
    b = build_batch(load_model(LLAMA_8B), b200, weights="fp4")
    assert b.weight_bytes_per_param[0] == 0.5625
    assert b.peak_flops[0] == b200.peak_flops["fp4"]


def test_int4_is_weight_only() -> None:
    int4 = get_scheme("int4")
    assert int4.weight_only
    everything = frozenset({"bf16", "fp16", "fp8", "int8", "fp4"})
    assert resolve_compute_dtype(int4, everything) == "bf16"
    assert fallback_note(int4, "bf16") is None  # weight-only by design, not a fallback
    assert get_scheme("AWQ") is int4 and get_scheme("gptq") is int4


def test_unknown_scheme_lists_names() -> None:
    with pytest.raises(ValueError, match="unknown weight quantization") as info:
        get_scheme("fp3")
    for name in SCHEMES:
        assert name in str(info.value)


# ----------------------------------------------------------------------------- cost


def test_tco_by_hand() -> None:
    terms = OwnershipTerms(years=5, usd_per_kwh=0.1, pue=1.5, hosting_usd_per_kw_month=150)
    # amortization: 30,000 $ / (5 years x 8766 h) = 30,000 / 43,830 = 0.684463 $/h
    amortization = 30_000 / (5 * 8766)
    # power: 0.7 kW x PUE 1.5 x 0.1 $/kWh = 0.105 $/h
    power = 0.7 * 1.5 * 0.1
    # hosting: 0.7 kW x 1.5 x 150 $/kW-month x 12 months / 8766 h = 1890 / 8766 = 0.215606 $/h
    hosting = 0.7 * 1.5 * 150 * 12 / 8766
    hand = amortization + power + hosting  # = 1.005069 $/h
    assert HOURS_PER_YEAR == 8766.0
    got = tco_usd_per_gpu_hour(np.array([30_000.0]), np.array([700.0]), terms)
    assert got[0] == pytest.approx(hand, rel=1e-12)
    assert got[0] == pytest.approx(1.005069, abs=1e-6)


def test_usd_per_million_tokens_by_hand() -> None:
    # 10 $/h over 1000 tok/s x 3600 s = 3.6e6 tokens per hour -> 10 / 3.6e6 $ per token
    # -> x 1e6 = 2.7778 $ per million tokens
    got = usd_per_million_tokens(np.array([10.0]), np.array([1000.0]))
    assert got[0] == pytest.approx(10 / 3.6e6 * 1e6, rel=1e-12)
    assert got[0] == pytest.approx(2.777778, abs=1e-6)
    assert np.isinf(usd_per_million_tokens(np.array([10.0]), np.array([0.0]))[0])


def test_evaluate_cost_is_price_over_throughput() -> None:
    b = build_batch(load_model(LLAMA_8B), _h100(), batch=16)
    m = evaluate(b)
    hand = b.usd_per_gpu_hour[0] / (m.output_tokens_per_s[0] * 3600) * 1e6
    assert m.usd_per_million_output_tokens[0] == pytest.approx(hand, rel=1e-12)
    # TPOT x tokens/s per replica = batch (steady state of continuous batching)
    assert m.output_tokens_per_s[0] * m.tpot_s[0] == pytest.approx(16.0, rel=1e-12)


# ----------------------------------------------------------------------------- offline throughput


@pytest.mark.parametrize(
    ("gpu_id", "weights", "isl", "osl"),
    [("H100-SXM", "fp8", 64, 64), ("H100-SXM", "bf16", 1024, 256), ("A100-SXM-80GB", "bf16", 2048, 512)],
)
def test_offline_max_throughput_picks_a_batch_that_fits(gpu_id: str, weights: str, isl: int, osl: int) -> None:
    gpu = get_accelerator(gpu_id)
    b = build_batch(load_model(LLAMA_8B), gpu, weights=weights, kv_cache="bf16", batch=1, isl=isl, osl=osl)
    fit = max_batch_that_fits(b, b.isl + b.osl)[0]
    best = offline_max_throughput(b)
    assert bool(best.feasible[0])
    assert 1 <= best.batch[0] <= min(b.max_batch_size[0], fit)
    one = evaluate(b)
    assert best.output_tokens_per_s_per_gpu[0] >= one.output_tokens_per_s_per_gpu[0]
    # With a runtime cap below what fits, the cap binds.
    capped = b.replace(max_batch_size=48.0)
    best_capped = offline_max_throughput(capped)
    assert 1 <= best_capped.batch[0] <= 48
    assert best_capped.output_tokens_per_s_per_gpu[0] <= best.output_tokens_per_s_per_gpu[0] * (1 + 1e-12)


def test_offline_max_throughput_respects_runtime_cap_when_more_fits() -> None:
    # Short sequences: far more than max_batch_size (4096) sequences fit in the KV budget.
    b = build_batch(load_model(LLAMA_8B), _h100(), weights="fp8", kv_cache="fp8", batch=1, isl=64, osl=64)
    fit = max_batch_that_fits(b, b.isl + b.osl)[0]
    assert fit > b.max_batch_size[0]
    best = offline_max_throughput(b)
    assert best.batch[0] <= b.max_batch_size[0]
