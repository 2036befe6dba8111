"""Property tests over random valid configurations: monotonicity and sanity of the model.

Configurations: catalog models (a dense 8B, a dense 70B, two MoEs), three GPUs, TP among the
divisors of the head counts that stay in one scale-up domain, three weight formats, and
random batch / input / output lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from objectives.accelerators import get_accelerator
from objectives.batch import ConfigBatch, build_batch
from objectives.memory import max_batch_that_fits, weight_bytes_per_gpu
from objectives.models import load_model
from objectives.serving import evaluate
from objectives.timing import StepTime, decode_step_time_s, prefill_time_s

MODELS = (
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "Qwen/Qwen3-30B-A3B",
)
GPUS = ("H100-SXM", "A100-SXM-80GB", "MI300X")
WEIGHTS = ("bf16", "fp8", "int4")
TPS = (1, 2, 4, 8)  # divide 32 and 64 query heads; within an 8-GPU scale-up domain

PROFILE = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Config:
    model: str
    gpu: str
    weights: str
    tp: int
    batch: int
    isl: int
    osl: int

    def build(self, **overrides: int) -> ConfigBatch:
        values = {"tp": self.tp, "batch": self.batch, "isl": self.isl, "osl": self.osl, **overrides}
        return build_batch(load_model(self.model), get_accelerator(self.gpu), weights=self.weights, **values)


configs = st.builds(
    Config,
    model=st.sampled_from(MODELS),
    gpu=st.sampled_from(GPUS),
    weights=st.sampled_from(WEIGHTS),
    tp=st.sampled_from(TPS),
    batch=st.integers(1, 512),
    isl=st.integers(16, 8192),
    osl=st.integers(1, 2048),
)
factors = st.floats(1.01, 8.0)


@PROFILE
@given(cfg=configs, k=factors)
def test_more_hbm_bandwidth_never_slows_a_step(cfg: Config, k: float) -> None:
    b = cfg.build()
    faster = b.replace(hbm_bw_bytes_per_s=b.hbm_bw_bytes_per_s * k)
    ctx = b.isl + b.osl / 2.0
    for step in (
        lambda x: decode_step_time_s(x, x.batch, ctx),
        lambda x: prefill_time_s(x, x.isl, x.batch),
        lambda x: prefill_time_s(x, x.isl, 1.0, running_seqs=x.batch - 1.0, running_context=ctx),
    ):
        slow, fast = step(b), step(faster)
        assert fast.total_s[0] <= slow.total_s[0] * (1 + 1e-12)
        assert fast.weights_memory_s[0] <= slow.weights_memory_s[0] * (1 + 1e-12)


@PROFILE
@given(cfg=configs, frac=st.floats(0.0, 1.0))
def test_larger_batch_never_lowers_throughput_until_capacity(cfg: Config, frac: float) -> None:
    probe = cfg.build(batch=1)
    fit = float(max_batch_that_fits(probe, probe.isl + probe.osl)[0])
    assume(fit >= 2)
    # a batch b with 2b <= what fits
    b = max(1, int(np.floor(frac * fit / 2.0)))
    batch = probe.take(np.array([0, 0])).replace(batch=np.array([b, 2 * b], dtype=np.float64))
    m = evaluate(batch)
    assert m.feasible.all()
    assert m.batch[0] == b and m.batch[1] == 2 * b  # no clipping
    assert m.output_tokens_per_s[1] >= m.output_tokens_per_s[0] * (1 - 1e-9)
    assert m.output_tokens_per_s_per_gpu[1] >= m.output_tokens_per_s_per_gpu[0] * (1 - 1e-9)
    # per-user speed never improves with more company
    assert m.tpot_s[1] >= m.tpot_s[0] * (1 - 1e-9)


@PROFILE
@given(
    model=st.sampled_from(MODELS),
    gpu=st.sampled_from(GPUS),
    weights=st.sampled_from(WEIGHTS),
)
def test_larger_tp_never_raises_weight_bytes_per_gpu(model: str, gpu: str, weights: str) -> None:
    b = build_batch(load_model(model), get_accelerator(gpu), weights=weights, tp=np.array([1, 2, 4, 8, 16, 32]))
    w = weight_bytes_per_gpu(b)
    assert np.all(w > 0)
    assert np.all(np.diff(w) <= 0)
    # TP 1 -> 2 saves close to half: only replicated pieces (routers, KV heads past n_kv) do not split
    assert w[1] < 0.6 * w[0]


@PROFILE
@given(cfg=configs, k=factors)
def test_more_memory_never_lowers_max_batch(cfg: Config, k: float) -> None:
    b = cfg.build()
    ctx = b.isl + b.osl
    bigger = b.replace(hbm_bytes=b.hbm_bytes * k)
    assert max_batch_that_fits(bigger, ctx)[0] >= max_batch_that_fits(b, ctx)[0]


@PROFILE
@given(cfg=configs)
def test_feasible_metrics_are_finite_and_positive(cfg: Config) -> None:
    m = evaluate(cfg.build())
    if not bool(m.feasible[0]):
        # infeasible rows say why and carry no latency
        assert m.reason_code[0] > 0 and m.reason[0]
        assert np.isnan(m.tpot_s[0])
        return
    assert m.reason_code[0] == 0
    for name, value in m.__dict__.items():
        if name in {"feasible", "reason_code", "bound_code"}:
            continue
        if isinstance(value, StepTime):
            assert np.isfinite(value.total_s[0]) and value.total_s[0] > 0, name
            for part, arr in value.__dict__.items():
                assert np.isfinite(arr[0]) and arr[0] >= 0, f"{name}.{part}"
            continue
        assert np.isfinite(value[0]) and value[0] > 0, name
    assert 1 <= m.batch[0] <= max(cfg.batch, 1)
    assert m.batch[0] <= m.max_batch[0]
    assert m.memory_per_gpu_bytes[0] <= cfg.build().hbm_bytes[0]
    assert m.ttft_s[0] < m.e2e_s[0] or cfg.osl == 1
