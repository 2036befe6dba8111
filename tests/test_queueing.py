"""The queueing-aware analytic latencies (objectives.queueing): properties, limits, agreement
with the simulator, and replicas sized with headroom."""

from __future__ import annotations

import numpy as np
import pytest

from objectives.accelerators import get_accelerator
from objectives.batch import build_batch
from objectives.models import load_model
from objectives.queueing import (
    DEFAULT_TARGET_UTILIZATION,
    LengthNodes,
    ReplicaTable,
    capacity_per_s,
    latency_at_load,
    pool_size,
    queueing_latency,
    replica_arrival_cv,
    size_replicas,
)
from objectives.serving import evaluate
from objectives.simulator import simulate_config
from objectives.timing import decode_step_time_s, prefill_time_s
from workloads import get_preset
from workloads.arrivals import interarrival_times, sample_requests
from workloads.workload import LengthDistribution

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def _batch(model=LLAMA_70B, gpu="H100-SXM", dtype="fp8", tp=4, batch=256, workload="chat", **kw):
    w = get_preset(workload)
    return build_batch(
        load_model(model),
        get_accelerator(gpu),
        weights=dtype,
        kv_cache=dtype,
        tp=tp,
        batch=batch,
        isl=w.isl,
        osl=w.osl,
        **kw,
    ), w


def test_length_quantiles_and_nodes_follow_the_distribution():
    d = LengthDistribution(kind="lognormal", mean=8192.0, cv=0.4)
    s = d.sample(np.random.default_rng(0), 400_000)
    for q in (0.5, 0.9, 0.99):
        assert float(d.quantile(q)) == pytest.approx(np.percentile(s, 100 * q), rel=0.01)
    values, weights = d.nodes()
    assert weights.sum() == pytest.approx(1.0)
    assert np.sum(values * weights) == pytest.approx(8192.0, rel=0.01)
    assert np.all(np.diff(values) > 0) and values[-1] > d.quantile(0.999)
    assert LengthDistribution.fixed(100).nodes()[0].tolist() == [100.0]
    u = LengthDistribution(kind="uniform", low=10, high=20)
    assert float(u.quantile(0.0)) == 10 and float(u.quantile(1.0)) == 20


@pytest.mark.parametrize("tp", [4, 8])
def test_zero_load_is_the_analytic_no_queue_latency(tp):
    b, _ = _batch(tp=tp)
    isl, osl = 1024.0, 256.0
    lat = queueing_latency(b, 1e-7, isl, osl, percentiles=(50.0, 99.0))
    prefill = float(prefill_time_s(b, np.array([isl]), 1.0).total_s[0])
    decode = float(decode_step_time_s(b, np.array([1.0]), isl + osl / 2.0).total_s[0])
    for p in (50.0, 99.0):
        assert lat.ttft_s[p][0] == pytest.approx(prefill, rel=2e-3)
        assert lat.tpot_s[p][0] == pytest.approx(decode, rel=2e-3)
    assert lat.batch[0] < 1e-3 and not lat.overloaded[0]
    # with a length distribution the p99 TTFT of an idle replica is the prefill of the p99 prompt
    w = get_preset("rag")
    lat = queueing_latency(b, 1e-7, w.input_tokens, w.output_tokens, percentiles=(99.0,))
    p99_prompt = float(w.input_tokens.quantile(0.99))
    assert p99_prompt > 2 * w.isl
    assert lat.ttft_s[99.0][0] == pytest.approx(
        float(prefill_time_s(b, np.array([p99_prompt]), 1.0).total_s[0]), rel=0.05
    )


@pytest.mark.parametrize(
    ("model", "gpu", "dtype", "tp", "workload"),
    [
        (LLAMA_70B, "H100-SXM", "fp8", 4, "rag"),
        (MIXTRAL, "H200-SXM", "fp8", 1, "chat"),
        (LLAMA_8B, "MI300X", "bf16", 1, "code-completion"),
    ],
)
def test_latencies_grow_with_load_and_with_the_percentile(model, gpu, dtype, tp, workload):
    b, w = _batch(model=model, gpu=gpu, dtype=dtype, tp=tp, workload=workload)
    table = ReplicaTable.build(b, w.input_tokens, w.output_tokens)
    us = np.linspace(0.02, 0.95, 24)
    rows = ReplicaTable(
        **{k: (v.repeat(us.size, axis=-1) if isinstance(v, np.ndarray) else v) for k, v in table.__dict__.items()}
    )
    lat = latency_at_load(rows, us * table.capacity_per_s[0], percentiles=(50.0, 90.0, 99.0))
    assert np.allclose(lat.utilization, us)
    for metric in ("ttft", "tpot", "e2e"):
        p50, p90, p99 = (lat.at(metric, p) for p in (50.0, 90.0, 99.0))
        assert np.all(np.isfinite(p99))
        assert np.all(p50 <= p90 + 1e-12) and np.all(p90 <= p99 + 1e-12), metric
        for v in (p50, p99):
            assert np.all(np.diff(v) >= -1e-9 * v[1:]), metric
    assert np.all(np.diff(lat.batch) > 0)
    assert lat.at("ttft", 99.0)[-1] > 1.5 * lat.at("ttft", 99.0)[0]
    # bursty arrivals hurt the tail; an overloaded replica has no finite latency
    bursty = latency_at_load(table, 0.7 * table.capacity_per_s, percentiles=(99.0,), arrival_cv=3.0)
    smooth = latency_at_load(table, 0.7 * table.capacity_per_s, percentiles=(99.0,))
    assert bursty.at("ttft", 99.0)[0] > smooth.at("ttft", 99.0)[0]
    flood = latency_at_load(table, 3.0 * table.capacity_per_s, percentiles=(99.0,))
    assert flood.overloaded[0] and np.isinf(flood.at("ttft", 99.0)[0])


def test_pipeline_stages_follow_the_simulators_convention_at_low_load():
    b, _ = _batch(tp=2, pp=2, batch=64)
    arrival = np.cumsum(interarrival_times(0.002, 100, np.random.default_rng(0)))  # one every ~500 s
    res = simulate_config(b, arrival, np.full(100, 1024), np.full(100, 256))
    lat = queueing_latency(b, 1e-7, 1024.0, 256.0, percentiles=(50.0,))
    assert lat.at("ttft", 50.0)[0] == pytest.approx(res.percentile("ttft", 50), rel=0.02)
    assert lat.at("tpot", 50.0)[0] == pytest.approx(res.percentile("tpot", 50), rel=0.02)


# cases of scripts/validate_queueing.py's grid (dense 70B / MoE / dense 8B), 6000 requests each
SIM_CASES = [
    (LLAMA_70B, "H100-SXM", "fp8", 4, "rag", 0.7),
    (MIXTRAL, "H100-SXM", "fp8", 2, "chat", 0.8),
    (LLAMA_8B, "H200-SXM", "bf16", 1, "chat", 0.5),
]


@pytest.mark.parametrize(("model", "gpu", "dtype", "tp", "workload", "u"), SIM_CASES)
def test_p99_agrees_with_the_simulator(model, gpu, dtype, tp, workload, u):
    b, w = _batch(model=model, gpu=gpu, dtype=dtype, tp=tp, workload=workload)
    rate = u * float(capacity_per_s(b)[0])
    lat = queueing_latency(b, rate, w.input_tokens, w.output_tokens, percentiles=(99.0,))
    reqs = sample_requests(w, 6000, rate_per_s=rate, seed=0)
    res = simulate_config(b, reqs.arrival_s, reqs.input_tokens, reqs.output_tokens)
    for metric in ("ttft", "tpot"):
        sim = res.percentile(metric, 99)
        assert lat.at(metric, 99.0)[0] == pytest.approx(sim, rel=0.15), metric


def test_replicas_sized_with_headroom_meet_the_slos_in_the_simulator():
    b, w = _batch(model=LLAMA_8B, gpu="H100-SXM", dtype="bf16", tp=1, workload="chat")
    slos = [("ttft", 0.25, 99.0), ("tpot", 0.02, 99.0)]
    rate = 60.0
    room = size_replicas(b, rate, w.input_tokens, w.output_tokens, slos=slos)
    replicas = int(room.replicas[0])
    assert room.slo_attainable[0] and 0 < room.utilization[0] <= room.max_utilization[0] <= DEFAULT_TARGET_UTILIZATION
    assert replicas >= np.ceil(rate / float(capacity_per_s(b)[0]))  # never fewer than at 100%
    assert room.latency.at("ttft", 99.0)[0] <= 0.25 and room.latency.at("tpot", 99.0)[0] <= 0.02
    # one replica fewer misses the model's targets (the sizing is tight) ...
    cv = replica_arrival_cv(1.0, replicas - 1, "least_loaded")
    fewer = queueing_latency(
        b, rate / (replicas - 1), w.input_tokens, w.output_tokens, percentiles=(99.0,), arrival_cv=cv
    )
    assert fewer.overloaded[0] or fewer.at("ttft", 99.0)[0] > 0.25 or fewer.at("tpot", 99.0)[0] > 0.02
    # ... and the sized fleet meets them in the simulator (least-loaded dispatch)
    reqs = sample_requests(w, 8000, rate_per_s=rate, seed=3)
    res = simulate_config(b, reqs.arrival_s, reqs.input_tokens, reqs.output_tokens, replicas=replicas)
    assert res.percentile("ttft", 99) <= 0.25 and res.percentile("tpot", 99) <= 0.02
    # a target utilization caps the load further
    capped = size_replicas(b, rate, w.input_tokens, w.output_tokens, slos=slos, target_utilization=0.3)
    assert capped.replicas[0] > replicas and capped.utilization[0] <= 0.3 + 1e-9
    # an SLO an idle replica misses cannot be bought with replicas
    hopeless = size_replicas(b, rate, w.input_tokens, w.output_tokens, slos=[("ttft", 1e-4, 99.0)])
    assert not hopeless.slo_attainable[0] and hopeless.max_utilization[0] == DEFAULT_TARGET_UTILIZATION


def test_evaluate_under_load_and_unchanged_without_it():
    b, w = _batch(tp=np.array([2, 4, 8]), batch=np.array([64, 128, 256]), workload="rag")
    plain = evaluate(b, arrival_rate_per_s=20.0)
    assert np.array_equal(plain.replicas, np.maximum(np.ceil(20.0 * b.osl / plain.output_tokens_per_s), 1.0))
    assert np.all(plain.utilization <= 1.0) and np.array_equal(plain.load_batch, plain.batch)
    loaded = evaluate(
        b, arrival_rate_per_s=20.0, slos=w.slos, input_lengths=w.input_tokens, output_lengths=w.output_tokens
    )
    feasible = loaded.feasible
    assert feasible.any()
    assert np.all(loaded.replicas[feasible] >= plain.replicas[feasible])
    assert np.all(loaded.utilization[feasible] <= DEFAULT_TARGET_UTILIZATION + 1e-9)
    assert np.all(loaded.ttft_s[feasible] > plain.ttft_s[feasible])  # p99 under load, not the mean prefill
    assert np.all(loaded.usd_per_hour[feasible] >= plain.usd_per_hour[feasible])
    # fixed replicas: latencies at rate / replicas; a per-metric percentile
    fixed = evaluate(b, arrival_rate_per_s=20.0, replicas=np.full(3, 40.0), latency_percentile={"ttft": 90, "tpot": 50})
    smooth = replica_arrival_cv(1.0, 40.0, "least_loaded")  # the default dispatch: cv^2 = 1 / 40
    pooled = pool_size(40.0, "least_loaded")  # ... and its 40 replicas' queues pool
    lat = queueing_latency(
        b, 0.5, float(b.isl[0]), float(b.osl[0]), percentiles=(50.0, 90.0), arrival_cv=smooth, pooled=pooled
    )
    assert np.allclose(fixed.ttft_s, lat.at("ttft", 90.0)) and np.allclose(fixed.tpot_s, lat.at("tpot", 50.0))
    # a user's token rate is at the batch the load forms, not the cap's steady state
    assert np.allclose(fixed.output_tokens_per_s_per_user, 1.0 / lat.tpot_mean_s)
    assert np.array_equal(fixed.replicas, np.full(3, 40.0))
    split = evaluate(b, arrival_rate_per_s=20.0, replicas=np.full(3, 40.0), latency_percentile=90, dispatch="random")
    poisson = queueing_latency(b, 0.5, float(b.isl[0]), float(b.osl[0]), percentiles=(90.0,))
    assert np.allclose(split.ttft_s, poisson.at("ttft", 90.0)) and np.all(split.ttft_s > fixed.ttft_s)


def test_dispatch_smooths_each_replicas_arrivals():
    assert replica_arrival_cv(1.0, 7, "random") == pytest.approx(1.0)  # thinned Poisson is Poisson
    assert pool_size(7, "least_loaded") == 7 and pool_size(7, "least_loaded", 4) == 4
    assert pool_size(7, "round_robin") == 1 and pool_size(7, "random") == 1
    assert replica_arrival_cv(2.0, 4, "random") == pytest.approx(np.sqrt(1 + 3 / 4))
    assert replica_arrival_cv(1.0, 4, "round_robin") == pytest.approx(0.5)  # Erlang-4 gaps
    assert replica_arrival_cv(1.0, 0.3, "least_loaded") == pytest.approx(1.0)  # under one replica
    assert replica_arrival_cv(1.0, 24, "least_loaded", group=4) == pytest.approx(0.5)  # groups of 4
    with pytest.raises(ValueError, match="dispatch"):
        replica_arrival_cv(1.0, 2, "fastest")  # type: ignore[arg-type]


def test_length_nodes_accept_numbers_pairs_and_distributions():
    assert LengthNodes.of(12).mean == 12.0
    n = LengthNodes.of((np.array([1.0, 3.0]), np.array([1.0, 3.0])))
    assert n.mean == pytest.approx(2.5) and n.weights.sum() == pytest.approx(1.0)
    assert LengthNodes.of(get_preset("chat").input_tokens).mean == pytest.approx(1024, rel=0.01)


def test_least_loaded_replicas_pool_their_queues():
    """Few slots per replica (batch cap 4): with least-loaded dispatch a prompt waits only when
    every replica is busy, so 8 replicas wait far less than 8 separate queues would; the pooled
    p99 TTFT follows the simulator's, the unpooled one is several times too slow."""
    b, w = _batch(model="meta-llama/Llama-3.1-8B-Instruct", tp=1, batch=4)
    rate, replicas = 8.0, 8
    per = rate / replicas
    cv = replica_arrival_cv(1.0, replicas, "least_loaded")
    args = (b, per, w.input_tokens, w.output_tokens)
    alone = queueing_latency(*args, percentiles=(99.0,), arrival_cv=cv)
    pooled = queueing_latency(*args, percentiles=(99.0,), arrival_cv=cv, pooled=pool_size(replicas, "least_loaded"))
    assert pooled.at("ttft", 99.0)[0] < 0.5 * alone.at("ttft", 99.0)[0]
    # one replica pools nothing: the same as before
    one = queueing_latency(*args, percentiles=(99.0,), pooled=1.0)
    assert np.allclose(one.at("ttft", 99.0), queueing_latency(*args, percentiles=(99.0,)).at("ttft", 99.0))
    reqs = sample_requests(w, 8000, rate_per_s=rate, seed=5)
    res = simulate_config(b, reqs.arrival_s, reqs.input_tokens, reqs.output_tokens, replicas=replicas)
    simulated = res.percentile("ttft", 99)
    assert pooled.at("ttft", 99.0)[0] == pytest.approx(simulated, rel=0.35)
    assert alone.at("ttft", 99.0)[0] > 2.0 * simulated
