"""The discrete-event serving simulator, checked against queueing theory and against the
analytic model; its arrivals, trace reader, sweep evaluator and command line."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
import typer
import yaml
from typer.testing import CliRunner

from objectives.accelerators import get_accelerator
from objectives.batch import build_batch
from objectives.models import load_model
from objectives.serving import evaluate, offline_max_throughput
from objectives.simulator import (
    SchedulerConfig,
    StepTimeTable,
    kv_blocks_for,
    scheduler_for,
    simulate,
    simulate_config,
)
from objectives.timing import decode_step_time_s, forward_time_s, prefill_time_s
from search.sweeps import SpecError, parse_spec
from workloads import get_preset
from workloads.arrivals import interarrival_times, read_trace, sample_requests, trace_requests
from workloads.workload import SLO, LengthDistribution, Workload

LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def _batch(model=LLAMA_70B, gpu="H100-SXM", weights="fp8", kv="fp8", tp=4, pp=1, batch=64, isl=1024, osl=256):
    return build_batch(
        load_model(model),
        get_accelerator(gpu),
        weights=weights,
        kv_cache=kv,
        tp=tp,
        pp=pp,
        batch=batch,
        isl=isl,
        osl=osl,
    )


def _fixed(n, isl, osl):
    return np.full(n, isl), np.full(n, osl)


# ---------------------------------------------------------------- step times come from forward_time_s


@pytest.mark.parametrize(("model", "weights", "tp"), [(LLAMA_70B, "fp8", 4), (MIXTRAL, "bf16", 2)])
def test_step_table_interpolates_forward_time_s(model, weights, tp):
    b = _batch(model=model, weights=weights, kv="bf16", tp=tp, batch=128)
    table = StepTimeTable.from_batch(b, 128, 8192, 12_000)
    assert table.source == "forward_time_s"
    rng = np.random.default_rng(0)
    k = 800
    n = rng.integers(0, 129, k)
    c = rng.uniform(0, 12_000, k)
    p = rng.integers(1, 8193, k)
    pc = p / 2 + rng.uniform(0, 1, k) * (12_000 - p / 2)
    rows = b.take(np.zeros(k, dtype=np.int64))
    exact = forward_time_s(rows, n.astype(float), c, p.astype(float), pc, np.ones(k)).total_s
    approx = np.array([table.mixed(int(n[i]), c[i], int(p[i]), pc[i]) for i in range(k)])
    err = np.abs(approx / exact - 1)
    assert np.percentile(err, 99) < 0.03 and err.max() < 0.06
    nd = rng.integers(1, 129, k)
    exact_dec = forward_time_s(rows, nd.astype(float), c).total_s
    approx_dec = np.array([table.decode(int(nd[i]), c[i]) for i in range(k)])
    assert np.max(np.abs(approx_dec / exact_dec - 1)) < 0.005
    # the pipeline convention of decode_step_time_s
    b2 = _batch(tp=2, pp=2)
    t2 = StepTimeTable.from_batch(b2, 64, 8192, 4096)
    assert t2.decode(32, 1500.0) == pytest.approx(float(decode_step_time_s(b2, np.array([32.0]), 1500.0).total_s[0]))


# ---------------------------------------------------------------- against the analytic model


@pytest.mark.parametrize(("tp", "weights"), [(4, "fp8"), (8, "bf16")])
def test_low_load_ttft_is_the_prefill_and_tpot_the_decode_step(tp, weights):
    isl, osl, n = 1024, 256, 150
    b = _batch(tp=tp, weights=weights)
    arrival = np.cumsum(interarrival_times(0.002, n, np.random.default_rng(0)))  # one every ~500 s
    res = simulate_config(b, arrival, *_fixed(n, isl, osl))
    prefill = float(prefill_time_s(b, np.array([float(isl)])).total_s[0])
    decode = float(decode_step_time_s(b, np.array([1.0]), isl + osl / 2).total_s[0])
    analytic = evaluate(b.replace(batch=1.0))
    assert analytic.ttft_s[0] == pytest.approx(prefill)
    assert res.percentile("ttft", 50) == pytest.approx(prefill, rel=0.05)
    assert res.percentile("tpot", 50) == pytest.approx(decode, rel=0.05)
    assert res.percentile("tpot", 50) == pytest.approx(analytic.decode_step_s[0], rel=0.05)
    assert np.median(res.queue_s) == 0.0  # almost nobody waited ...
    assert np.max(res.queue_s) <= decode * 1.01  # ... and then for the step in progress at most


@pytest.mark.parametrize(
    ("model", "gpu", "weights", "tp"), [(LLAMA_70B, "H100-SXM", "fp8", 4), (LLAMA_8B, "A100-SXM-80GB", "bf16", 1)]
)
def test_throughput_saturates_at_the_analytic_max_throughput(model, gpu, weights, tp):
    isl, osl = 1024, 256
    b = _batch(model=model, gpu=gpu, weights=weights, kv="fp8" if weights == "fp8" else "bf16", tp=tp)
    best = offline_max_throughput(b)
    batch = int(best.batch[0])
    n = 6 * batch
    res = simulate_config(b, np.zeros(n), *_fixed(n, isl, osl), max_num_seqs=batch)
    assert res.completed.all()
    assert res.output_tokens_per_s() == pytest.approx(float(best.output_tokens_per_s[0]), rel=0.10)
    # and a flood of arrivals far above capacity saturates at the same throughput
    arrival = np.cumsum(interarrival_times(10 * res.requests_per_s(), n, np.random.default_rng(1)))
    flood = simulate_config(b, arrival, *_fixed(n, isl, osl), max_num_seqs=batch)
    assert flood.output_tokens_per_s() == pytest.approx(float(best.output_tokens_per_s[0]), rel=0.10)


# ---------------------------------------------------------------- against queueing theory


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_fixed_step_times_queue_like_md1(rho):
    service = 0.1
    table = StepTimeTable.constant(service, max_seqs=1, max_tokens=16)
    sched = SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=16, kv_blocks=100)
    n = 20_000
    arrival = np.cumsum(interarrival_times(rho / service, n, np.random.default_rng(7)))
    res = simulate(table, sched, arrival, *_fixed(n, 16, 1))  # one step serves one request
    pollaczek_khinchine = rho * service / (2 * (1 - rho))
    assert np.mean(res.queue_s) == pytest.approx(pollaczek_khinchine, rel=0.10)
    assert np.allclose(res.e2e_s - res.queue_s, service)


def test_chunked_prefill_takes_one_step_per_chunk():
    table = StepTimeTable.constant(0.01, max_seqs=8, max_tokens=2048, max_context=12_000)
    sched = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=2048, kv_blocks=10_000)
    res = simulate(table, sched, np.array([0.0, 100.0]), np.array([10_000, 100]), np.array([50, 50]))
    assert res.ttft_s[0] == pytest.approx(5 * 0.01)  # ceil(10000 / 2048) = 5 chunks
    assert res.ttft_s[1] == pytest.approx(0.01)
    assert res.tpot_s == pytest.approx([0.01, 0.01])


def test_prefill_chunks_share_steps_with_decodes():
    """A prompt arriving while another sequence decodes is prefilled in the same steps: the
    decoding sequence is slowed by one (mixed) step, not stopped."""
    b = _batch(batch=8)
    arrival = np.array([0.0, 1.0])
    res = simulate_config(b, arrival, np.array([512, 4096]), np.array([400, 10]), max_num_batched_tokens=8192)
    table = StepTimeTable.from_batch(b, 8, 8192, 5000)
    mixed = table.mixed(1, 512 + 45, 4096, 2048)
    assert res.ttft_s[1] < mixed * 2 + 1e-9  # at most one step of waiting plus its prefill step
    assert res.ttft_s[1] >= mixed * (1 - 0.03)


# ---------------------------------------------------------------- KV cache, preemption, rejection


def test_full_cache_preempts_and_recomputes():
    table = StepTimeTable.constant(0.01, max_seqs=20, max_tokens=512, max_context=400)
    sched = SchedulerConfig(max_num_seqs=20, max_num_batched_tokens=512, kv_blocks=120, block_size=16)
    n = 60
    res = simulate(table, sched, np.zeros(n), *_fixed(n, 16, 300))
    s = res.summary()
    assert res.completed.all()
    assert s["preemptions"] > 0 and s["preempted_requests"] > 0
    assert res.peak_kv_blocks <= sched.kv_blocks
    assert 0 < s["kv_utilization"] <= 1
    # a preempted request keeps its first token, and recomputation costs it time
    pre = res.preemptions > 0
    assert np.all(np.isfinite(res.first_token_s))
    assert np.mean(res.tpot_s[pre]) > np.mean(res.tpot_s[~pre])


def test_a_prompt_larger_than_the_cache_is_rejected():
    table = StepTimeTable.constant(0.01, max_seqs=4, max_tokens=4096, max_context=5000)
    sched = SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=4096, kv_blocks=100)
    res = simulate(table, sched, np.array([0.0, 0.5, 1.0]), np.array([100, 4000, 100]), np.array([10, 10, 10]))
    assert list(res.rejected) == [False, True, False]
    assert res.completed.tolist() == [True, False, True]
    assert res.slo_attainment([SLO(metric="e2e", max_s=10.0)]) == pytest.approx(2 / 3)
    assert res.percentile("e2e", 99) == np.inf


def test_admission_waits_for_blocks():
    """Two requests whose prompts cannot both fit run one after the other."""
    table = StepTimeTable.constant(0.01, max_seqs=4, max_tokens=4096, max_context=2000)
    sched = SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=4096, kv_blocks=100)  # 1600 tokens
    res = simulate(table, sched, np.zeros(2), np.array([1000, 1000]), np.array([5, 5]))
    assert res.queue_s[0] == 0.0
    assert res.queue_s[1] == pytest.approx(res.finish_s[0])


def test_kv_blocks_follow_the_analytic_budget():
    b = _batch(batch=64)
    sched = scheduler_for(b)
    fit = float(evaluate(b).max_batch[0])  # sequences of isl + osl that fit
    assert sched.kv_tokens == pytest.approx(fit * (1024 + 256), rel=0.01)
    assert kv_blocks_for(b, 1280) == sched.kv_blocks
    assert sched.max_num_seqs == 64 and sched.max_num_batched_tokens == 8192


# ---------------------------------------------------------------- replay, arrivals, replicas


def test_a_seeded_run_replays_identically():
    w = get_preset("chat")
    b = _batch(batch=128)
    a = sample_requests(w, 2000, rate_per_s=12, seed=5)
    again = sample_requests(w, 2000, rate_per_s=12, seed=5)
    assert np.array_equal(a.arrival_s, again.arrival_s) and np.array_equal(a.input_tokens, again.input_tokens)
    r1 = simulate_config(b, a.arrival_s, a.input_tokens, a.output_tokens, replicas=2)
    r2 = simulate_config(b, again.arrival_s, again.input_tokens, again.output_tokens, replicas=2)
    for field in ("start_s", "first_token_s", "finish_s", "preemptions", "replica"):
        assert np.array_equal(getattr(r1, field), getattr(r2, field), equal_nan=True), field
    assert r1.summary(slos=w.slos) == r2.summary(slos=w.slos)
    other = sample_requests(w, 2000, rate_per_s=12, seed=6)
    assert not np.array_equal(other.arrival_s, a.arrival_s)
    # the rate changes the arrivals only: lengths are common random numbers
    faster = sample_requests(w, 2000, rate_per_s=24, seed=5)
    assert np.array_equal(faster.input_tokens, a.input_tokens)
    assert np.allclose(faster.arrival_s * 2, a.arrival_s)


def test_gamma_arrivals_are_burstier_and_hurt_the_tail():
    rng = np.random.default_rng(0)
    gaps = interarrival_times(5.0, 50_000, rng, "gamma", cv=3.0)
    assert np.mean(gaps) == pytest.approx(0.2, rel=0.05)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(3.0, rel=0.1)
    w = get_preset("chat")
    b = _batch(batch=128)
    smooth = sample_requests(w, 3000, rate_per_s=10, process="poisson", seed=1)
    bursty = sample_requests(w, 3000, rate_per_s=10, process="gamma", cv=4.0, seed=1)
    p = simulate_config(b, smooth.arrival_s, smooth.input_tokens, smooth.output_tokens)
    g = simulate_config(b, bursty.arrival_s, bursty.input_tokens, bursty.output_tokens)
    assert g.percentile("ttft", 99) > p.percentile("ttft", 99)


def test_a_group_of_replicas_shares_the_load():
    w = get_preset("chat")
    b = _batch(batch=128)
    one = sample_requests(w, 2000, rate_per_s=8, seed=2)
    four = sample_requests(w, 2000, rate_per_s=32, seed=2)
    single = simulate_config(b, one.arrival_s, one.input_tokens, one.output_tokens)
    for dispatch in ("least_loaded", "round_robin"):
        group = simulate_config(b, four.arrival_s, four.input_tokens, four.output_tokens, replicas=4, dispatch=dispatch)
        counts = np.bincount(group.replica, minlength=4)
        assert counts.min() > 400
        assert group.completed.all()
        # four replicas at four times the rate: per-request latency close to one replica's
        assert group.percentile("tpot", 50) == pytest.approx(single.percentile("tpot", 50), rel=0.15)
        assert group.percentile("e2e", 50) == pytest.approx(single.percentile("e2e", 50), rel=0.15)


def test_azure_trace_format(tmp_path):
    path = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:47.0000000,879,0\n"
        "2023-11-16 18:15:56.6805900,100,20\n"
    )
    reqs = read_trace(path)
    assert len(reqs) == 4
    assert reqs.arrival_s[0] == 0.0 and np.all(np.diff(reqs.arrival_s) >= 0)
    assert reqs.arrival_s[-1] == pytest.approx(10.0)
    assert reqs.input_tokens.tolist() == [374, 879, 396, 100]
    assert reqs.output_tokens.tolist() == [44, 1, 109, 20]  # zero-token outputs count as one
    assert trace_requests(path, rate_per_s=3.0).mean_rate_per_s == pytest.approx(3.0)
    assert len(trace_requests(path, n=2)) == 2
    plain = tmp_path / "plain.csv"
    plain.write_text("0.0,10,5\n0.5,20,6\n")
    assert read_trace(plain).input_tokens.tolist() == [10, 20]
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,input_tokens,output_tokens\n0,abc,3\n")
    with pytest.raises(ValueError, match="line 2"):
        read_trace(bad)


def test_slo_attainment_counts_requests_meeting_every_target():
    table = StepTimeTable.constant(0.1, max_seqs=1, max_tokens=64, max_context=200)
    sched = SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=64, kv_blocks=100)
    res = simulate(table, sched, np.zeros(4), np.full(4, 10), np.full(4, 2))  # served one by one
    # TTFT 0.1, 0.3, 0.5, 0.7 s; TPOT 0.1 s each
    assert res.ttft_s == pytest.approx([0.1, 0.3, 0.5, 0.7])
    assert res.slo_attainment([SLO(metric="ttft", max_s=0.35)]) == pytest.approx(0.5)
    assert res.slo_attainment([SLO(metric="ttft", max_s=0.4), SLO(metric="tpot", max_s=0.05)]) == 0.0
    assert res.slo_attainment([]) is None
    s = res.summary(slos=[SLO(metric="ttft", max_s=0.35, percentile=50)])  # p50 = 0.4 s
    assert s["slos"][0]["met"] is False and s["slo_attainment"] == pytest.approx(0.5)
    json.dumps(s)


def test_variable_lengths_low_load_still_match_the_step_times():
    w = Workload(
        input_tokens=LengthDistribution(kind="uniform", low=200, high=3000),
        output_tokens=LengthDistribution.fixed(64),
        arrival_rate_per_s=0.01,
    )
    reqs = sample_requests(w, 100, seed=3)
    b = _batch()
    res = simulate_config(b, reqs.arrival_s, reqs.input_tokens, reqs.output_tokens)
    expect = prefill_time_s(b.take(np.zeros(100, dtype=np.int64)), reqs.input_tokens.astype(float)).total_s
    assert np.median(np.abs(res.ttft_s / expect - 1)) < 0.02


# ---------------------------------------------------------------- sweeps and the command line


SIM_SPEC = {
    "name": "simsmall",
    "model": LLAMA_8B,
    "workload": "chat",
    "accelerators": ["H100-SXM", "L40S"],
    "space": {"tp": [1, 2], "weights": ["fp8"], "kv_cache": ["fp8"], "max_batch": [16, 256], "chunked_prefill": [8192]},
    "objectives": [{"metric": "tpot", "percentile": 90}, {"metric": "usd_per_million_output_tokens"}],
    "evaluator": "simulator",
    "simulation": {"requests": 300},
    "sampler": "tpe",
    "budget": {"trials": 6},
    "seed": 1,
}


def test_spec_takes_the_simulator_and_its_settings(tmp_path):
    spec = parse_spec(SIM_SPEC)
    assert spec.evaluator == "simulator" and spec.simulation.requests == 300
    assert parse_spec({"model": LLAMA_8B}).evaluator == "analytic"
    with pytest.raises(SpecError, match="evaluator"):
        parse_spec({**SIM_SPEC, "evaluator": "gpu"})
    with pytest.raises(SpecError, match=r"simulation\.requests"):
        parse_spec({**SIM_SPEC, "simulation": {"requests": 0}})
    with pytest.raises(SpecError, match=r"simulation\.trace"):
        parse_spec({**SIM_SPEC, "simulation": {"trace": str(tmp_path / "missing.csv")}})


def test_simulator_evaluator_gives_the_asked_percentiles():
    from search.sweeps import AnalyticEvaluator, make_evaluator

    spec = parse_spec(SIM_SPEC)
    ev = make_evaluator(spec)
    assert ev.name == "simulator"
    ids = np.arange(8)
    r = ev.evaluate(ids)
    again = ev.evaluate(ids[::-1])
    assert np.array_equal(r.objectives, again.objectives[::-1], equal_nan=True)  # deterministic
    base = AnalyticEvaluator(spec).evaluate(ids)
    fits = base.constraints[:, 0] <= 0
    assert fits.any()
    m = r.metrics
    np.testing.assert_allclose(m["tpot_s"][fits], m["sim_tpot_p90_s"][fits])  # the objective's percentile
    np.testing.assert_allclose(m["ttft_s"][fits], m["sim_ttft_p99_s"][fits])  # the SLO's percentile
    np.testing.assert_allclose(r.objectives[:, 0], m["tpot_s"], equal_nan=True)
    assert np.all(np.isnan(m["ttft_s"][~fits]))
    np.testing.assert_allclose(m["usd_per_hour"], base.metrics["usd_per_hour"])
    ci = r.constraint_names.index("slo_ttft_p99")
    np.testing.assert_allclose(r.constraints[fits, ci], m["sim_ttft_p99_s"][fits] - 1.0)
    assert all(np.isfinite(m["sim_slo_attainment"][fits]))
    assert list(r.feasible) == [bool(np.all(c <= 0)) for c in r.constraints]


def test_guided_sweep_with_the_simulator_is_seeded_from_the_analytic_front(tmp_path):
    from search.store import Store
    from search.sweeps import SearchSpace, exact_front, run_sweep, start_sweep
    from search.sweeps.guided import _analytic_seeds

    spec = parse_spec(SIM_SPEC)
    space = SearchSpace(spec)
    seeds = _analytic_seeds(spec, space)
    ids, _ = exact_front(spec.model_copy(update={"evaluator": "analytic"}))
    assert sorted(space.id_of(s) for s in seeds) == sorted(int(i) for i in ids) and seeds
    assert _analytic_seeds(parse_spec({**SIM_SPEC, "evaluator": "analytic"}), space) == []
    store = Store(f"sqlite:///{tmp_path / 'sim.db'}")
    name = start_sweep(store, spec, yaml.safe_dump(SIM_SPEC), None, workers=2)
    summary = run_sweep(store, name, workers=2, local=True)
    assert summary["evaluated"] == 6 and summary["trials"] >= 6  # the budget: distinct configurations
    study = optuna.load_study(study_name=f"servesweep:{name}", storage=f"sqlite:///{tmp_path / 'sim.db'}")
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert len(trials) == summary["trials"] and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [t.params for t in trials[: len(seeds)]] == seeds[:6]
    rows = store.get_evaluations(name)
    assert rows and all(r["evaluator"] == "simulator" for r in rows)
    assert all("sim_tpot_p99_s" in r["metrics"] for r in rows)


def test_cli_simulate_json():
    from search.cli.simulate import register

    app = typer.Typer()
    register(app)

    @app.command()
    def _other() -> None:  # a second command keeps typer's subcommand layout
        pass

    runner = CliRunner()
    args = ["simulate", "--model", LLAMA_8B, "--gpu", "h100", "--weights", "fp8", "--workload", "chat"]
    args += ["--rate", "5", "--requests", "500", "--slo", "ttft:0.5:p90", "--json"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    r = json.loads(out.stdout)
    s = r["simulation"]
    assert s["requests"] == s["completed"] == 500
    assert set(s["ttft_s"]) == {"p50", "p90", "p99", "mean"}
    assert s["slos"] == [
        {"metric": "ttft", "percentile": 90.0, "max_s": 0.5, "value_s": s["slos"][0]["value_s"], "met": True}
    ]
    assert 0 < s["slo_attainment"] <= 1
    assert r["analytic"]["ttft_s"] > 0
    again = json.loads(runner.invoke(app, args).stdout)
    assert again["simulation"] == s  # seeded: the same run
    text = runner.invoke(app, args[:-1])
    assert text.exit_code == 0 and "TTFT" in text.output and "SLO attainment" in text.output
    bad = runner.invoke(app, [*args[:-1], "--slo", "latency:1"])
    assert bad.exit_code == 2
    missing = runner.invoke(app, ["simulate", "--model", LLAMA_8B, "--gpu", "h100", "--workload", "nope.csv"])
    assert missing.exit_code == 2 and "cannot read trace" in missing.output


@pytest.mark.parametrize("seed", range(6))
def test_random_runs_keep_the_invariants(seed):
    rng = np.random.default_rng(seed)
    n = 400
    isl = rng.integers(1, 600, n)
    osl = rng.integers(1, 300, n)
    arrival = np.cumsum(rng.exponential(rng.uniform(0.001, 0.05), n))
    seqs = int(rng.integers(1, 40))
    tokens = int(rng.integers(seqs, 1024))
    blocks = int(rng.integers(20, 400))
    block = int(rng.choice([1, 8, 16, 32]))
    table = StepTimeTable.constant(0.01, seqs, max(tokens, seqs))
    sched = SchedulerConfig(max_num_seqs=seqs, max_num_batched_tokens=tokens, kv_blocks=blocks, block_size=block)
    res = simulate(table, sched, arrival, isl, osl, replicas=int(rng.integers(1, 4)))
    done = res.completed
    assert np.all(done | res.rejected) and not np.any(done & res.rejected)
    assert res.peak_kv_blocks <= blocks
    d = np.flatnonzero(done)
    assert np.all(res.start_s[d] >= res.arrival_s[d] - 1e-12)
    assert np.all(res.first_token_s[d] >= res.start_s[d] + 0.01 - 1e-9)
    assert np.all(res.finish_s[d] >= res.first_token_s[d] - 1e-12)
    multi = d[res.output_tokens[d] > 1]
    assert np.all(res.tpot_s[multi] >= 0.01 - 1e-9)  # one step per token at least
    unpreempted = multi[res.preemptions[multi] == 0]
    # a sequence never preempted decodes one token per step: its time is a whole number of steps
    steps = (res.finish_s[unpreempted] - res.first_token_s[unpreempted]) / 0.01
    assert np.allclose(steps, np.round(steps), atol=1e-6)
    assert np.all(np.round(steps) == res.output_tokens[unpreempted] - 1)
