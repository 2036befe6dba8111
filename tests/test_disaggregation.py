"""Disaggregated prefill / decode (objectives.disaggregation, the two-pool simulator, the sweep
space's `disaggregation` section, launch lines, the report's sentence)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from objectives.accelerators import get_accelerator
from objectives.batch import build_batch
from objectives.disaggregation import (
    DecodeTable,
    decode_batch_for_tpot,
    evaluate_disaggregated,
    kv_link_for,
    kv_transfer_time_s,
    link_arrays,
    link_defaults,
)
from objectives.models import load_model
from objectives.simulator import simulate_disaggregated
from objectives.timing import decode_step_time_s
from search.outputs import for_store
from search.outputs.launch import launch_commands
from search.store import Store
from search.sweeps import SearchSpace, make_evaluator, parse_spec, run_sweep, start_sweep
from workloads import get_preset
from workloads.arrivals import sample_requests

MODEL_8B = "meta-llama/Llama-3.1-8B-Instruct"
MODEL_70B = "meta-llama/Llama-3.1-70B-Instruct"


def _pools(model=MODEL_8B, tp=1, batch=64, gpu="H100-SXM"):
    m, g, w = load_model(model), get_accelerator(gpu), get_preset("chat")
    bp = build_batch(m, g, weights="fp8", kv_cache="fp8", tp=tp, isl=w.isl, osl=w.osl, batch=1)
    bd = build_batch(m, g, weights="fp8", kv_cache="fp8", tp=tp, isl=w.isl, osl=w.osl, batch=batch)
    return bp, bd, g, w


def test_kv_transfer_by_hand():
    """Llama-3.1-70B fp8 KV: 80 layers x 8 KV heads x 128 x (K + V) x 1 byte = 163,840 B/token;
    TP4 -> TP4 over the H100's scale-out NIC (50 GB/s per GPU, RDMA at 0.72, 0.5 ms alpha)."""
    bp, bd, g, _ = _pools(MODEL_70B, tp=4)
    link = kv_link_for(g, g, "infiniband", one_domain=False)
    assert link.name == "infiniband" and link.bytes_per_s == 50e9
    d = link_defaults()
    per_gpu = 1024 * 163_840 / 4
    expected = d["rdma_latency_s"] + per_gpu / (50e9 * d["rdma_efficiency"])
    got = kv_transfer_time_s(bp, bd, 1024.0, link.bytes_per_s, link.efficiency, link.latency_s)
    assert got[0] == pytest.approx(expected, rel=1e-9)
    # a TP2 receiver takes twice the bytes per GPU: it sets the time
    _, bd2, _, _ = _pools(MODEL_70B, tp=2)
    got2 = kv_transfer_time_s(bp, bd2, 1024.0, link.bytes_per_s, link.efficiency, link.latency_s)
    assert got2[0] == pytest.approx(d["rdma_latency_s"] + 2 * per_gpu / (50e9 * d["rdma_efficiency"]))
    # auto inside one NVLink domain uses the scale-up bandwidth; TCP is capped per node
    assert kv_link_for(g, g, "auto", one_domain=True).bytes_per_s == g.scaleup_bw_bytes_per_s
    tcp = kv_link_for(g, g, "ethernet", one_domain=False)
    assert tcp.bytes_per_s == pytest.approx(d["tcp_node_bytes_per_s"] / g.gpus_per_node)


def test_decode_batch_is_set_by_the_tpot_target():
    _, bd, _, _ = _pools(MODEL_70B, tp=2, batch=512)
    ctx = 1024 + 256
    cap = np.array([512.0])
    target = float(decode_step_time_s(bd, np.array([100.0]), ctx).total_s[0])
    b = decode_batch_for_tpot(bd, cap, target, ctx)
    assert b[0] == pytest.approx(100.0, abs=1.0)
    assert decode_step_time_s(bd, b, ctx).total_s[0] <= target
    assert decode_batch_for_tpot(bd, cap, None, ctx)[0] == 512.0


def test_pool_sizing_by_hand():
    """Replicas = ceil(rate / (u * capacity)) per pool with u = 0.8 when the SLOs hold there;
    capacities by hand: prefill from queueing's one-token replica, decode B / (E[Y] t(B))."""
    bp, bd, g, w = _pools()
    links = link_arrays([kv_link_for(g, g, "infiniband", one_domain=False)], 1)
    common = dict(
        prefill_usd_per_gpu_hour=np.array([2.0]),
        decode_usd_per_gpu_hour=np.array([3.0]),
        links=links,
        input_lengths=w.input_tokens,
        output_lengths=w.output_tokens,
        slos=[("ttft", 10.0, 99), ("tpot", 1.0, 99)],  # loose: utilization sets the fleet
    )
    m1 = evaluate_disaggregated(bp, bd, arrival_rate_per_s=1.0, **common)
    rate = 3.5 * float(m1.decode_capacity_per_s[0])  # several decode replicas
    m = evaluate_disaggregated(bp, bd, arrival_rate_per_s=rate, **common)
    assert m.feasible[0]
    from objectives.queueing import LengthNodes

    ey = LengthNodes.of(w.output_tokens).mean
    tab = DecodeTable.build(bd, m.batch, 1.0)
    assert m.batch[0] == 64.0
    cap_d = float(m.decode_capacity_per_s[0])
    ctx = LengthNodes.of(w.input_tokens).mean + LengthNodes.of(w.output_tokens).second_moment / (2 * ey)
    t_full = float(decode_step_time_s(bd, np.array([64.0]), ctx).total_s[0])
    assert cap_d == pytest.approx(64.0 / (ey * t_full), rel=1e-6)
    assert tab.batch_cap[0] == 64.0
    assert m.decode_replicas[0] == np.ceil(rate / (0.8 * cap_d))
    assert m.prefill_replicas[0] == np.ceil(rate / (0.8 * float(m.prefill_capacity_per_s[0])))
    # cost of both pools, GPUs of both pools
    x, y = m.prefill_replicas[0], m.decode_replicas[0]
    assert m.usd_per_hour[0] == pytest.approx(x * 2.0 + y * 3.0)
    assert m.total_gpus[0] == x + y
    assert m.capacity_per_s[0] == pytest.approx(min(x * m.prefill_capacity_per_s[0], y * cap_d))


def test_two_pool_simulator_matches_the_analytic_model_at_moderate_load():
    """Llama-3.1-8B fp8 on H100, chat lengths at 10 requests/s (pools ~30% busy): the analytic
    TTFT p50 / p90 within 15%, p99 within 25%; TPOT p50 / p99 within 5%."""
    bp, bd, g, w = _pools()
    link = kv_link_for(g, g, "infiniband", one_domain=False)
    m = evaluate_disaggregated(
        bp,
        bd,
        prefill_usd_per_gpu_hour=np.array([2.0]),
        decode_usd_per_gpu_hour=np.array([2.0]),
        links=link_arrays([link], 1),
        arrival_rate_per_s=10.0,
        input_lengths=w.input_tokens,
        output_lengths=w.output_tokens,
        slos=w.slos,
        extra_percentiles=(50, 90, 99),
    )
    reqs = sample_requests(w, 3000, rate_per_s=10.0, seed=0)
    xfer = kv_transfer_time_s(
        bp, bd, reqs.input_tokens.astype(float), link.bytes_per_s, link.efficiency, link.latency_s
    )
    x, y = int(m.prefill_replicas[0]), int(m.decode_replicas[0])
    res = simulate_disaggregated(
        bp,
        bd,
        reqs.arrival_s,
        reqs.input_tokens,
        reqs.output_tokens,
        transfer_s=xfer,
        prefill_replicas=x,
        decode_replicas=y,
    )
    assert res.meta["disaggregated"] and res.meta["prefill_replicas"] == x
    for p, tol in ((50, 0.15), (90, 0.15), (99, 0.25)):
        assert m.at("ttft", p)[0] == pytest.approx(res.percentile("ttft", p), rel=tol)
    for p in (50, 99):
        assert m.at("tpot", p)[0] == pytest.approx(res.percentile("tpot", p), rel=0.05)
    # no prefill interference: TPOT is a decode step, far below the aggregated replica's
    assert res.percentile("tpot", 99) < 1.5 * float(decode_step_time_s(bd, np.array([64.0]), 1500).total_s[0])


SPEC = {
    "name": "disagg",
    "model": MODEL_8B,
    "workload": "chat",
    "accelerators": ["H100-SXM", "L40S"],
    "space": {
        "tp": [1, 2],
        "weights": ["fp8"],
        "kv_cache": ["fp8"],
        "max_batch": [16, 64],
        "disaggregation": {"decode": {"accelerators": ["H100-SXM"]}},
    },
    "sampler": "exhaustive",
    "seed": 1,
}


def test_mode_off_identity():
    """Without a disaggregation section the space, its ids and the metrics are unchanged; with
    one, the aggregated rows (disaggregated = false, decode dimensions at their first value)
    evaluate exactly as before and their twins are marked as repeats."""
    off = {**SPEC, "space": {k: v for k, v in SPEC["space"].items() if k != "disaggregation"}}
    s_off, s_on = parse_spec(off), parse_spec(SPEC)
    a, b = SearchSpace(s_off), SearchSpace(s_on)
    assert "disaggregated" not in a.names and a.names == b.names[: len(a.names)]
    assert b.size == a.size * 2 * 1 * 2
    ev_off, ev_on = make_evaluator(s_off), make_evaluator(s_on)
    ids = np.arange(a.size)
    r_off, r_on = ev_off.evaluate(ids), ev_on.evaluate(ids)  # same ids: disaggregated = false
    assert set(r_off.metrics) == {*ev_off.evaluate(ids[:1]).metrics}
    assert "prefill_replicas" not in r_off.metrics
    for k, v in r_off.metrics.items():
        np.testing.assert_array_equal(v, r_on.metrics[k])
    np.testing.assert_array_equal(r_off.feasible, r_on.feasible)
    twins = b.encode({**b.decode(ids), "decode_tp": np.ones(a.size, dtype=np.int64)})
    r_twin = ev_on.evaluate(twins)
    assert not r_twin.feasible.any() and all(r.startswith("repeats") for r in r_twin.reason)


def test_sweep_with_a_disaggregation_section_end_to_end(tmp_path, local_ray):
    """The exhaustive analytic sweep on a real SQLite file and a local Ray: disaggregated rows
    are stored with their pools, the front includes them or not by merit, the analysis says
    whether they win, and a disaggregated pick gets launch lines for both pools."""
    data = json.loads(json.dumps(SPEC))
    spec = parse_spec(data)
    store = Store(f"sqlite:///{tmp_path}/disagg.db")
    name = start_sweep(store, spec, yaml.safe_dump(data), data["name"], workers=2)
    run_sweep(store, name, workers=2)
    rows = store.get_evaluations(name)
    space = SearchSpace(spec)
    assert len(rows) == space.size
    dis = [r for r in rows if r["config"]["disaggregated"] and r["feasible"]]
    assert dis, "some disaggregated configurations are feasible"
    for r in dis:
        m = r["metrics"]
        assert m["prefill_replicas"] >= 1 and m["decode_replicas"] >= 1 and m["kv_transfer_s"] > 0
        assert m["total_gpus"] == pytest.approx(
            m["prefill_replicas"] * m["prefill_gpus"] + m["decode_replicas"] * m["decode_gpus"]
        )
        assert m["replicas"] == m["prefill_replicas"] + m["decode_replicas"]
    # prefill on L40S, decode on H100: two GPU types, over the scale-out NIC
    mixed = [r for r in dis if r["config"]["accelerator"] == "L40S"]
    assert mixed and all(r["metrics"]["kv_link_code"] == 1.0 for r in mixed)
    analysis = for_store(store, name)
    comp = analysis["disaggregation"]
    assert comp["cheapest"]["disaggregated"] is not None and comp["cheapest"]["aggregated"] is not None
    assert "Disaggregation" in comp["sentence"] and "%" in comp["sentence"]


def test_launch_lines_of_a_disaggregated_configuration():
    config = {
        "accelerator": "H100-SXM",
        "tp": 2,
        "pp": 1,
        "ep": 1,
        "weights": "bf16",
        "kv_cache": "fp8",
        "max_batch": 128,
        "chunked_prefill": 8192,
        "disaggregated": True,
        "decode_accelerator": "H200-SXM",
        "decode_tp": 4,
    }
    cmds = launch_commands(MODEL_70B, config, vendor="nvidia", pools={"prefill_replicas": 3, "decode_replicas": 2})
    sg = cmds["sglang"]["roles"]
    assert sg["prefill"][sg["prefill"].index("--disaggregation-mode") + 1] == "prefill"
    assert sg["decode"][sg["decode"].index("--disaggregation-mode") + 1] == "decode"
    assert sg["decode"][sg["decode"].index("--tp-size") + 1] == "4"
    assert "--pd-disaggregation" in sg["router"]
    v = cmds["vllm"]["roles"]
    assert "kv_producer" in v["prefill"][v["prefill"].index("--kv-transfer-config") + 1]
    assert "kv_consumer" in v["decode"][v["decode"].index("--kv-transfer-config") + 1]
    t = cmds["trtllm"]
    assert t["roles"]["router"] == ["trtllm-serve", "disaggregated", "-c", "disagg_config.yaml"]
    assert "num_instances: 3" in t["disagg_config"]["content"] and "num_instances: 2" in t["disagg_config"]["content"]
    assert t["roles"]["prefill"].count("--extra_llm_api_options") == 1
    assert "dtype: fp8" in t["extra_file"]["content"]
    # an aggregated configuration keeps its single command
    agg = launch_commands(MODEL_70B, {k: v for k, v in config.items() if not k.startswith(("disagg", "decode"))})
    assert "roles" not in agg["sglang"] and "--disaggregation-mode" not in agg["sglang"]["argv"]


def test_pool_throughputs_by_hand_and_dep_pools():
    """The pool throughputs the headline rows are compared with: by hand from the step
    functions, and under attention DP every rank prefills its own chunk (prompts x dp)."""
    from objectives.disaggregation import decode_pool_tokens_per_s_per_gpu, prefill_pool_tokens_per_s_per_gpu
    from objectives.memory import max_batch_that_fits
    from objectives.timing import prefill_time_s

    bp, bd, _, _ = _pools(tp=2)
    tps = prefill_pool_tokens_per_s_per_gpu(bp, 1000.0, 8192.0)[0]
    t = prefill_time_s(bp.replace(max_num_tokens=8192.0), 1000.0, 8.0).total_s[0]
    assert tps == pytest.approx(8 * 1000.0 / t / 2.0)
    out, n = decode_pool_tokens_per_s_per_gpu(bd, 64.0, 1500.0)
    assert n[0] == min(64.0, max_batch_that_fits(bd, np.array([1500.0]))[0])
    assert out[0] == pytest.approx(n[0] / decode_step_time_s(bd, n, 1500.0).total_s[0] / 2.0)
    m, g = load_model("deepseek-ai/DeepSeek-V3"), get_accelerator("H100-SXM")
    dep = build_batch(m, g, weights="fp8", kv_cache="fp8", tp=1, ep=32, attention_dp=32, isl=2048, osl=1)
    t_dep = prefill_time_s(dep.replace(max_num_tokens=16384.0), 2048.0, 8.0 * 32).total_s[0]
    got = prefill_pool_tokens_per_s_per_gpu(dep, 2048.0, 16384.0)[0]
    assert got == pytest.approx(8 * 32 * 2048.0 / t_dep / 32)


def test_disaggregated_pools_take_attention_dp_and_mtp():
    """A disaggregated configuration with attention_dp > 1 runs DEP pools (EP over each pool's
    tp x attention_dp GPUs, the decode pool's following decode_tp) and mtp drafts on the decode
    pool only; attention_dp 1 / mtp 0 rows evaluate as in a space without those dimensions."""
    from search.sweeps.disaggregated import pool_batches

    base = {
        "model": "deepseek-ai/DeepSeek-R1",
        "workload": "chat",
        "accelerators": ["H200-SXM"],
        "space": {
            "tp": [1, 8],
            "ep": [1, 8],
            "weights": ["fp8"],
            "kv_cache": ["fp8"],
            "max_batch": [64],
            "disaggregation": {"enabled": [True]},
        },
        "sampler": "exhaustive",
    }
    modes = json.loads(json.dumps(base))
    modes["space"].update(attention_dp=[1, 8], mtp=[0, 1])
    ev0, ev = make_evaluator(parse_spec(base)), make_evaluator(parse_spec(modes))
    sp = ev.space
    idx = sp.decode(np.arange(sp.size))
    dims = {d.name: d for d in sp.dimensions}
    pick = np.flatnonzero(
        (np.asarray(dims["attention_dp"].values)[idx["attention_dp"]] == 8)
        & (np.asarray(dims["tp"].values)[idx["tp"]] == 1)
        & (np.asarray(dims["decode_tp"].values)[idx["decode_tp"]] == 1)
        & (np.asarray(dims["ep"].values)[idx["ep"]] == 8)
        & (np.asarray(dims["mtp"].values)[idx["mtp"]] == 1)
    )
    assert pick.size == 1
    bp, bd = pool_batches(ev, sp.decode(pick), np.array([0]))
    assert bp.attention_dp[0] == bd.attention_dp[0] == 8 and bd.ep[0] == 8 and bp.ep[0] == 8
    assert bp.mtp_tokens[0] == 0 and bd.mtp_tokens[0] == 1
    r = ev.evaluate(pick)
    assert r.feasible[0] and r.metrics["disaggregated"][0] == 1.0 and np.isfinite(r.metrics["tpot_s"][0])
    # mode-off rows of the larger space match the space without the modes
    off = np.flatnonzero((idx["attention_dp"] == 0) & (idx["mtp"] == 0))
    r_on, r_off = ev.evaluate(off), ev0.evaluate(np.arange(ev0.space.size))
    for k in ("usd_per_million_output_tokens", "ttft_s", "tpot_s", "prefill_replicas", "decode_replicas"):
        np.testing.assert_array_equal(r_on.metrics[k], r_off.metrics[k])


def test_headline_rows_predicted_once_at_their_layout():
    """validate_disaggregation.py and validate_frontier.py share one prediction per row: the
    disaggregated rows at their stated layouts (DEP32 prefill, DEP72 / DEP48 decode)."""
    from pathlib import Path

    from search.calibration.frontier import is_disaggregated, load_rows, predict_row

    path = Path(__file__).resolve().parent / "data" / "measurements.frontier_headlines.jsonl"  # copy of shared/
    rows = {r["id"]: r for r in load_rows(path) if is_disaggregated(r)}
    pre = predict_row(rows["sglang-2025-05-05-prefill-h100-ep32-isl2048"])
    assert pre.predicted and "DEP32 prefill" in pre.note
    for rid in ("sglang-2025-05-05-decode-h100-ep72-2k", "sglang-2025-05-05-e2e-h100-12nodes-headline"):
        assert "DEP72 decode" in predict_row(rows[rid]).note
    e2e = predict_row(rows["sglang-2025-05-05-e2e-h100-12nodes-headline"])
    dec = predict_row(rows["sglang-2025-05-05-decode-h100-ep72-2k"])
    assert e2e.predicted == dec.predicted
    assert "DEP48 decode" in predict_row(rows["sglang-2025-06-16-decode-gb200-nvl72"]).note
    assert not any("TP8 EP8" in predict_row(r).note for r in rows.values())


def test_two_pool_simulator_with_dep_and_mtp_pools():
    """DeepSeek-R1 fp8 on H200, DEP8 prefill and DEP8 + MTP 1 decode pools at the chat rate:
    the simulated decode pool's TPOT (sequences spread over the ranks, per output token) matches
    the analytic pool within 5%; the analytic TTFT, a prompt on one rank, is not below the
    simulator's, which spreads a prompt's chunk over the ranks."""
    m, g, w = load_model("deepseek-ai/DeepSeek-R1"), get_accelerator("H200-SXM"), get_preset("chat")
    common = dict(weights="fp8", kv_cache="fp8", tp=1, ep=8, attention_dp=8, isl=w.isl, osl=w.osl)
    bp = build_batch(m, g, batch=1, **common)
    bd = build_batch(m, g, batch=8 * 64, mtp=1, **common)
    link = kv_link_for(g, g, "infiniband", one_domain=False)
    r = evaluate_disaggregated(
        bp,
        bd,
        prefill_usd_per_gpu_hour=np.array([3.0]),
        decode_usd_per_gpu_hour=np.array([3.0]),
        links=link_arrays([link], 1),
        arrival_rate_per_s=10.0,
        input_lengths=w.input_tokens,
        output_lengths=w.output_tokens,
        slos=w.slos,
        extra_percentiles=(50, 99),
    )
    reqs = sample_requests(w, 2000, rate_per_s=10.0, seed=0)
    xfer = kv_transfer_time_s(
        bp, bd, reqs.input_tokens.astype(float), link.bytes_per_s, link.efficiency, link.latency_s
    )
    res = simulate_disaggregated(
        bp,
        bd,
        reqs.arrival_s,
        reqs.input_tokens,
        reqs.output_tokens,
        transfer_s=xfer,
        prefill_replicas=int(r.prefill_replicas[0]),
        decode_replicas=int(r.decode_replicas[0]),
    )
    for p in (50, 99):
        assert r.at("tpot", p)[0] == pytest.approx(res.percentile("tpot", p), rel=0.05)
    assert r.at("ttft", 99)[0] >= res.percentile("ttft", 99)


def test_launch_lines_of_a_dep_disaggregated_configuration():
    """A DEP disaggregated pick: each pool's servers get DP attention with EP over that pool's
    tp x attention_dp GPUs (the decode pool's following decode_tp), the header counts them."""
    from search.outputs.launch import disaggregated_launch_commands

    c = {
        "accelerator": "H200-SXM",
        "tp": 1,
        "pp": 1,
        "ep": 8,
        "attention_dp": 8,
        "weights": "fp8",
        "kv_cache": "fp8",
        "max_batch": 256,
        "chunked_prefill": 8192,
        "disaggregated": True,
        "decode_accelerator": "H200-SXM",
        "decode_tp": 2,
    }
    out = disaggregated_launch_commands(
        "deepseek-ai/DeepSeek-R1", c, pools={"prefill_replicas": 1, "decode_replicas": 2}
    )
    pre, dec = out["sglang"]["roles"]["prefill"], out["sglang"]["roles"]["decode"]
    assert "--enable-dp-attention" in pre and "--enable-dp-attention" in dec
    assert pre[pre.index("--ep-size") + 1] == "8" and dec[dec.index("--ep-size") + 1] == "16"
    text = json.dumps(out)
    assert "8 GPUs each" in text and "16 GPUs each" in text
