"""Recommendations, rent vs own, price sensitivity and launch commands (search.recommend,
search.launch): on a real analytic evaluation of a small space and on hand-made rows whose
answers are known, and `servesweep front --format json` carrying the recommendations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from objectives.cost import HOURS_PER_YEAR, tco_usd_per_gpu_hour
from objectives.serving import BOUNDS
from search.cli import app
from search.outputs import (
    CHECKPOINT,
    CONFIG_FIELDS,
    KINDS,
    analyze,
    efficiency_bases,
    for_store,
    knee_index,
    launch_commands,
    pricing_assumptions,
    recommendations,
    rent_vs_own,
    rows_from,
    sweep_context,
)
from search.store import Store
from search.sweeps import LATENCY_METRICS, AnalyticEvaluator, SearchSpace, SpecError, pareto_mask, parse_spec

SPEC = {
    "name": "rec",
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "workload": "chat",
    "accelerators": ["H100-SXM", "A100-SXM-80GB", "MI300X"],
    "space": {
        "tp": [1, 2, 4],
        "weights": ["bf16", "fp8", "int4"],
        "kv_cache": ["bf16", "fp8"],
        "max_batch": [1, 4, 16, 64, 256],
        "chunked_prefill": [2048, 8192],
    },
    "sampler": "exhaustive",
}


def _spec_dict(**changes):
    data = json.loads(json.dumps(SPEC))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


def _evaluate(data: dict) -> tuple[dict, list[dict]]:
    """(sweep record, stored-evaluation dicts) of every configuration, evaluated in-process."""
    spec = parse_spec(data)
    ev = AnalyticEvaluator(spec)
    space = SearchSpace(spec)
    evaluations = ev.evaluate(np.arange(space.size)).rows(space, ev.name)
    record = {
        "name": spec.name,
        "spec": spec.model_dump(mode="json"),
        "price_table": {
            "basis": spec.pricing.basis,
            "usd_per_gpu_hour": {g: ev.price_per_gpu_hour(g) for g in spec.accelerators},
        },
    }
    return record, evaluations


@pytest.fixture(scope="module")
def small():
    record, evaluations = _evaluate(_spec_dict())
    ctx = sweep_context(record)
    rows = rows_from(evaluations)
    return ctx, rows, analyze(ctx, rows)


def _brute(ctx, rows, scale=None):
    """Candidates by a plain loop: every SLO met, every non-budget constraint passed, in budget."""
    scale = scale or {}
    out = []
    for r in rows:
        s = scale.get(r["accelerator"], 1.0)
        if r["tpot_s"] is None or r["usd_per_million_output_tokens"] is None:
            continue
        if any(r[LATENCY_METRICS[slo.metric]] > slo.max_s for slo in ctx.workload.slos):
            continue
        if any(v > 0 for k, v in r["constraints"].items() if not k.startswith("slo_") and k != "max_usd_per_hour"):
            continue
        if ctx.budget_usd_per_hour is not None and r["usd_per_hour"] * s > ctx.budget_usd_per_hour:
            continue
        out.append((r, s))
    return out


# ------------------------------------------------------------------------------ knee


def test_knee_is_the_point_farthest_from_the_extremes_line_in_log_space():
    latency = np.array([1.0, 2.0, 4.0, 8.0])
    cost = np.array([8.0, 2.0, 1.5, 1.0])
    # log2 coordinates normalized: x = [0, 1/3, 2/3, 1], y = [1, 1/3, 0.195, 0]; 1 - x - y largest at index 1
    assert knee_index(latency, cost) == 1
    # units do not matter: ms instead of s, cents instead of dollars
    assert knee_index(latency * 1000, cost * 100) == 1
    # a straight line in log space has no knee: ties go to the cheaper point
    assert knee_index(np.array([1.0, 10.0, 100.0]), np.array([100.0, 10.0, 1.0])) == 2
    assert knee_index(np.array([3.0]), np.array([5.0])) == 0
    assert knee_index(np.array([1.0, 2.0]), np.array([2.0, 1.0])) == 1


# ------------------------------------------------------------------------------ rows


def test_rows_keep_the_configured_batch_limit_and_merge_front_points(small):
    _, rows, _ = small
    r = next(r for r in rows if r["feasible"] and r["max_batch"] == 256)
    assert r["max_batch"] == 256 and r["batch_that_fits"] >= r["batch"]
    point = {k: v for k, v in rows[0].items() if k in CONFIG_FIELDS or k == "id"}
    extra = {**point, "id": 10**9, "objectives": [0.01, 1.0], "metrics": {"tpot_s": 0.01, "max_batch": 7.0}}
    merged = rows_from(None, [extra])
    assert (
        merged[0]["feasible"] and merged[0]["batch_that_fits"] == 7.0 and merged[0]["max_batch"] == point["max_batch"]
    )


# ------------------------------------------------------------------------------ recommendations


def test_recommendations_match_a_brute_force_ranking(small):
    ctx, rows, a = small
    recs = a["recommendations"]
    cands = [r for r, _ in _brute(ctx, rows)]
    assert a["candidates"] == len(cands) > 0
    cheapest = min(cands, key=lambda r: (r["usd_per_million_output_tokens"], r["tpot_s"], r["id"]))
    # fastest: the cheapest within the tolerance (default 5%) of the lowest TPOT
    quickest = min(r["tpot_s"] for r in cands)
    near = [r for r in cands if r["tpot_s"] <= (1 + ctx.fastest_tolerance) * quickest]
    assert ctx.fastest_tolerance == 0.05
    fastest = min(near, key=lambda r: (r["usd_per_million_output_tokens"], r["tpot_s"], r["id"]))
    assert recs["cheapest"]["id"] == cheapest["id"]
    assert recs["fastest"]["id"] == fastest["id"]
    # the knee is on the candidates' front, and the front is what pareto_mask says
    pts = np.array([[r["tpot_s"], r["usd_per_million_output_tokens"]] for r in cands])
    front_ids = {cands[i]["id"] for i in np.flatnonzero(pareto_mask(pts))}
    assert set(a["front_ids"]) == front_ids
    assert recs["knee"]["id"] in front_ids
    for kind in KINDS:
        rec = recs[kind]
        assert rec["tpot_s"] <= 0.05 and rec["ttft_s"] <= 1.0  # the chat SLOs
        assert rec["total_gpus"] == rec["replicas"] * rec["gpus_per_replica"]
        assert rec["bound"] in BOUNDS
        assert rec["memory_per_gpu_gb"] <= rec["hbm_per_gpu_gb"]
        assert rec["reason"] and rec["what_would_change"]
        assert set(rec["launch"]) == {"vllm", "sglang", "trtllm"}
    json.dumps(a)  # plain JSON


def test_knee_agrees_with_knee_index_on_the_front(small):
    _, rows, a = small
    by_id = {r["id"]: r for r in rows}
    front = [by_id[i] for i in a["front_ids"]]
    k = knee_index(
        np.array([r["tpot_s"] for r in front]), np.array([r["usd_per_million_output_tokens"] for r in front])
    )
    assert a["recommendations"]["knee"]["id"] == front[k]["id"]


def test_budget_limits_the_fastest_and_binding_budget_is_explained():
    record, evaluations = _evaluate(_spec_dict())
    rows = rows_from(evaluations)
    free = recommendations(sweep_context(record), rows)["fastest"]
    budget = free["usd_per_hour"] / 2
    record2, evaluations2 = _evaluate(_spec_dict(constraints={"max_usd_per_hour": budget}))
    ctx2 = sweep_context(record2)
    recs = recommendations(ctx2, rows_from(evaluations2))
    assert recs["fastest"]["usd_per_hour"] <= budget
    assert recs["fastest"]["tpot_s"] >= free["tpot_s"]
    assert any("hourly budget" in c and "binds" in c for c in recs["fastest"]["what_would_change"])


def test_slos_are_met_even_when_the_spec_does_not_constrain_them():
    record, evaluations = _evaluate(_spec_dict(constraints={"slos": False}))
    ctx = sweep_context(record)
    recs = recommendations(ctx, rows_from(evaluations))
    for rec in recs.values():
        assert rec["tpot_s"] <= 0.05 and rec["ttft_s"] <= 1.0


def test_no_candidate_gives_none():
    record, evaluations = _evaluate(_spec_dict(accelerators=["L4"], space={"tp": [1], "weights": ["bf16"]}))
    ctx = sweep_context(record)
    a = analyze(ctx, rows_from(evaluations))
    assert a["recommendations"] == {"cheapest": None, "fastest": None, "knee": None}
    assert a["rent_vs_own"] == []
    assert a["per_accelerator"][0]["best"] is None and a["per_accelerator"][0]["why_none"]


# ------------------------------------------------------------------------------ price sensitivity


def test_price_sensitivity_matches_rescaled_brute_force(small):
    ctx, rows, a = small
    sens = a["price_sensitivity"]
    assert len(sens) == 2 * len(ctx.spec.accelerators)
    for s in sens:
        scale = {s["accelerator"]: s["factor"]}
        cands = _brute(ctx, rows, scale)
        best, f = min(cands, key=lambda c: (c[0]["usd_per_million_output_tokens"] * c[1], c[0]["tpot_s"], c[0]["id"]))
        assert s["cheapest"]["id"] == best["id"]
        assert s["cheapest"]["usd_per_million_output_tokens"] == pytest.approx(
            best["usd_per_million_output_tokens"] * f
        )
        assert s["changed"]["cheapest"] == (best["id"] != a["recommendations"]["cheapest"]["id"])


def _synthetic_rows(costs: dict[str, float]) -> list[dict]:
    """One feasible configuration per GPU, TPOT 30 ms, with the given $/Mtok."""
    rows = []
    for i, (gpu, cost) in enumerate(costs.items()):
        rows.append(
            {
                "id": i,
                "accelerator": gpu,
                "tp": 1,
                "pp": 1,
                "ep": 1,
                "weights": "fp8",
                "kv_cache": "fp8",
                "max_batch": 64,
                "chunked_prefill": 8192,
                "feasible": True,
                "reason": "",
                "constraints": {"fits": 0.0},
                "ttft_s": 0.2,
                "tpot_s": 0.03 + 0.001 * i,
                "e2e_s": 8.0,
                "usd_per_hour": 10 * cost,
                "usd_per_million_output_tokens": cost,
                "gpus": 1.0,
                "replicas": 2.0,
                "total_gpus": 2.0,
                "batch": 64.0,
                "batch_that_fits": 300.0,
                "bound_code": 0.0,
                "memory_per_gpu_bytes": 60e9,
                "weight_bytes_per_gpu": 8e9,
            }
        )
    return rows


def test_a_30_percent_price_move_flips_a_close_call():
    record, _ = _evaluate(_spec_dict())
    ctx = sweep_context(record)
    rows = _synthetic_rows({"H100-SXM": 1.0, "A100-SXM-80GB": 1.2, "MI300X": 2.0})
    a = analyze(ctx, rows)
    assert a["recommendations"]["cheapest"]["accelerator"] == "H100-SXM"
    flips = {(s["accelerator"], s["factor"]): s for s in a["price_sensitivity"]}
    assert flips[("H100-SXM", 1.3)]["cheapest"]["accelerator"] == "A100-SXM-80GB"
    assert flips[("H100-SXM", 1.3)]["changed"]["cheapest"]
    assert flips[("A100-SXM-80GB", 0.7)]["cheapest"]["accelerator"] == "A100-SXM-80GB"
    assert not flips[("MI300X", 0.7)]["changed"]["cheapest"]  # 1.4 > 1.0
    change = a["recommendations"]["cheapest"]["what_would_change"]
    assert any("H100-SXM at +30% price" in c for c in change)
    assert any("fell 17%" in c for c in change)  # A100 must fall 1 - 1/1.2 = 16.7% to tie
    per = {p["accelerator"]: p for p in a["per_accelerator"]}
    assert per["H100-SXM"]["price_change_to_be_cheapest_pct"] == 0.0
    assert per["A100-SXM-80GB"]["price_change_to_be_cheapest_pct"] == pytest.approx(-100 / 6)


def _record(data: dict) -> dict:
    """A sweep record for hand-made rows (nothing evaluated)."""
    spec = parse_spec(data)
    return {"name": spec.name, "spec": spec.model_dump(mode="json")}


def _fleet_rows() -> list[dict]:
    """Three H100 candidates: 0 is 2% faster than 1 on a 15x larger fleet; 2 is cheapest but 50% slower."""
    rows = _synthetic_rows({"H100-SXM": 1.0, "A100-SXM-80GB": 1.0, "MI300X": 1.0})
    for r, (tpot, gpus, cost) in zip(rows, [(0.0196, 30, 15.0), (0.0200, 2, 1.0), (0.0300, 1, 0.5)], strict=True):
        r.update(accelerator="H100-SXM", tpot_s=tpot, total_gpus=float(gpus), replicas=float(gpus))
        r.update(usd_per_hour=10.0 * gpus, usd_per_million_output_tokens=cost)
    return rows


def test_fastest_is_the_cheapest_within_the_tolerance_of_the_fastest_latency():
    rows = _fleet_rows()
    ctx = sweep_context(_record(_spec_dict()))
    assert ctx.fastest_tolerance == 0.05  # the default
    recs = recommendations(ctx, rows)
    fastest = recs["fastest"]
    assert fastest["id"] == 1  # 2% slower than id 0 on a fleet of 2 GPUs, not 30
    assert recs["cheapest"]["id"] == 2  # outside the 5% window of the fastest pick
    assert "Within 5% of the fastest TPOT (19.6 ms)" in fastest["reason"] and "the cheapest" in fastest["reason"]
    assert "30× H100-SXM" in fastest["reason"] and "15× the $/hour" in fastest["reason"]
    from search.outputs.report_sections import _fastest_method

    assert "within 5% of the fastest latency, the cheapest" in _fastest_method(ctx)
    a = analyze(ctx, rows)
    assert a["fastest_tolerance"] == 0.05 and "within 5% of the fastest" in a["fastest_definition"]
    assert a["cost_metric"] == "usd_per_million_output_tokens"


def test_fastest_tolerance_zero_is_the_lowest_latency():
    rows = _fleet_rows()
    ctx = sweep_context(_record(_spec_dict(report={"fastest_tolerance": 0.0})))
    fastest = recommendations(ctx, rows)["fastest"]
    assert fastest["id"] == 0
    assert fastest["reason"].startswith("Lowest TPOT among")
    # a wide tolerance reaches the 50% slower point
    wide = sweep_context(_record(_spec_dict(report={"fastest_tolerance": 0.6})))
    assert recommendations(wide, rows)["fastest"]["id"] == 2


def test_fastest_tolerance_ties_go_to_the_lower_latency_then_the_id():
    rows = _fleet_rows()
    rows[0]["usd_per_million_output_tokens"] = 1.0  # as cheap as id 1 and faster
    ctx = sweep_context(_record(_spec_dict()))
    assert recommendations(ctx, rows)["fastest"]["id"] == 0
    rows[0]["tpot_s"] = 0.0200
    assert recommendations(ctx, rows)["fastest"]["id"] == 0  # same cost, same latency: the lower id


@pytest.mark.parametrize("bad", [-0.01, 1.0, 2.0])
def test_fastest_tolerance_is_validated(bad):
    with pytest.raises(SpecError, match=r"report\.fastest_tolerance"):
        parse_spec(_spec_dict(report={"fastest_tolerance": bad}))


def test_cost_axis_follows_a_cost_objective():
    rows = _fleet_rows()
    for r, per_request in zip(rows, [0.02, 0.0013, 0.009], strict=True):
        r["usd_per_request"] = per_request
    data = _spec_dict(objectives=[{"metric": "tpot"}, {"metric": "usd_per_request"}])
    ctx = sweep_context(_record(data))
    assert ctx.cost_column == "usd_per_request"
    recs = recommendations(ctx, rows)
    assert recs["cheapest"]["id"] == 1  # by $/request, not by $/Mtok output (id 2)
    assert "Lowest $ per request" in recs["cheapest"]["reason"] and "$0.0013/request" in recs["cheapest"]["reason"]
    assert recs["cheapest"]["cost_metric"] == "usd_per_request"
    # default: $ per million output tokens
    assert sweep_context(_record(_spec_dict())).cost_column == "usd_per_million_output_tokens"


# ------------------------------------------------------------------------------ rent vs own


def test_rent_vs_own_uses_catalog_prices_and_tco(small):
    ctx, _, a = small
    assert [r["kind"] for r in a["rent_vs_own"]] == [k for k in KINDS if a["recommendations"][k]]
    for row in a["rent_vs_own"]:
        gpu = ctx.catalog[row["accelerator"]]
        n = row["total_gpus"]
        assert row["cloud_usd_per_month"] == pytest.approx(n * gpu.usd_per_gpu_hour * HOURS_PER_YEAR / 12)
        assert row["cloud_usd_3y"] == pytest.approx(n * gpu.usd_per_gpu_hour * 3 * HOURS_PER_YEAR)
        tco = float(tco_usd_per_gpu_hour(np.array([gpu.purchase_usd]), np.array([gpu.tdp_w]), ctx.terms)[0])
        assert row["owned_usd_per_hour"] == pytest.approx(n * tco)
        assert row["break_even_utilization"] == pytest.approx(tco / gpu.usd_per_gpu_hour)
        assert row["purchase_usd_total"] == pytest.approx(n * gpu.purchase_usd)
        assert row["owned_cash_usd_3y"] > row["owned_usd_3y"]  # 5-year amortization
        assert 0 < row["break_even_utilization"] < row["break_even_utilization_3y"]


def test_rent_vs_own_without_purchase_price_says_so():
    record, _ = _evaluate(_spec_dict(accelerators=["MI325X", "H100-SXM"]))
    ctx = sweep_context(record)
    rows = _synthetic_rows({"MI325X": 0.5, "H100-SXM": 1.0})
    (row, *_) = rent_vs_own(ctx, recommendations(ctx, rows))
    assert row["accelerator"] == "MI325X" and row["owned_usd_per_hour"] is None
    assert "no purchase price" in row["note"]
    assert row["cloud_usd_per_hour"] == pytest.approx(2 * ctx.catalog["MI325X"].usd_per_gpu_hour)


def test_owned_basis_prices_are_converted_back_to_cloud():
    record, evaluations = _evaluate(_spec_dict(accelerators=["H100-SXM"], pricing={"basis": "owned"}))
    ctx = sweep_context(record)
    a = analyze(ctx, rows_from(evaluations))
    row = a["rent_vs_own"][0]
    rec = a["recommendations"]["cheapest"]
    assert row["owned_usd_per_million_output_tokens"] == pytest.approx(rec["usd_per_million_output_tokens"])
    assert row["cloud_usd_per_million_output_tokens"] > row["owned_usd_per_million_output_tokens"]


def test_pricing_assumptions_and_efficiency_bases_carry_sources(small):
    ctx, _, _ = small
    p = pricing_assumptions(ctx)
    assert p["basis"] == "cloud"
    assert all(g["cloud_source"] for g in p["gpus"])
    assert {t["term"] for t in p["ownership_terms"]} == {"years", "usd_per_kwh", "pue", "hosting_usd_per_kw_month"}
    assert all(t["source"] and t["date"] for t in p["ownership_terms"])
    bases = {b["accelerator"]: b for b in efficiency_bases(ctx)}
    assert set(bases["A100-SXM-80GB"]["bases"]) == {"bf16"}  # fp8 and int4 compute in bf16 on Ampere
    assert set(bases["H100-SXM"]["bases"]) == {"bf16", "fp8"}
    assert not any(b["calibrated"] for b in bases.values())


# ------------------------------------------------------------------------------ launch commands


def test_launch_flags_match_the_configuration():
    c = {"tp": 4, "pp": 2, "ep": 1, "weights": "fp8", "kv_cache": "fp8", "max_batch": 64, "chunked_prefill": 2048}
    cmds = launch_commands("meta-llama/Llama-3.1-70B-Instruct", c, vendor="nvidia", replicas=3)
    v = cmds["vllm"]["argv"]
    assert v[:3] == ["vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct"]
    for flag, value in (
        ("--tensor-parallel-size", "4"),
        ("--pipeline-parallel-size", "2"),
        ("--quantization", "fp8"),
        ("--kv-cache-dtype", "fp8"),
        ("--max-num-seqs", "64"),
        ("--max-num-batched-tokens", "2048"),
    ):
        assert v[v.index(flag) + 1] == value
    assert "--enable-expert-parallel" not in v
    s = cmds["sglang"]["argv"]
    assert s[:3] == ["python", "-m", "sglang.launch_server"]
    for flag, value in (
        ("--tp-size", "4"),
        ("--pp-size", "2"),
        ("--quantization", "fp8"),
        ("--kv-cache-dtype", "fp8_e4m3"),
        ("--max-running-requests", "64"),
        ("--chunked-prefill-size", "2048"),
    ):
        assert s[s.index(flag) + 1] == value
    t = cmds["trtllm"]["argv"]
    assert t[1] == CHECKPOINT  # fp8 weights come from a checkpoint
    for flag, value in (
        ("--tp_size", "4"),
        ("--pp_size", "2"),
        ("--max_batch_size", "64"),
        ("--max_num_tokens", "2048"),
    ):
        assert t[t.index(flag) + 1] == value
    assert "--quantization" not in t
    assert any("from the checkpoint" in n for n in cmds["trtllm"]["notes"])
    assert cmds["trtllm"]["extra_file"]["content"] == "kv_cache_config:\n  dtype: fp8\n"
    assert all(any("run 3 behind a load balancer" in n for n in x["notes"]) for x in cmds.values())
    assert "\\\n  --tensor-parallel-size 4" in cmds["vllm"]["command"]


def test_launch_expert_parallel_int4_and_amd():
    c = {"tp": 8, "pp": 1, "ep": 8, "weights": "int4", "kv_cache": "bf16", "max_batch": 16, "chunked_prefill": 8192}
    cmds = launch_commands("mistralai/Mixtral-8x7B-Instruct-v0.1", c, vendor="amd")
    v = cmds["vllm"]["argv"]
    assert "--enable-expert-parallel" in v and "--kv-cache-dtype" not in v and "--quantization" not in v
    assert v[2] == CHECKPOINT and any("AWQ or GPTQ" in n for n in cmds["vllm"]["notes"])
    s = cmds["sglang"]["argv"]
    assert s[s.index("--ep-size") + 1] == "8" and "--pp-size" not in s
    assert cmds["trtllm"]["argv"][cmds["trtllm"]["argv"].index("--ep_size") + 1] == "8"
    assert not cmds["trtllm"]["available"] and "NVIDIA GPUs only" in cmds["trtllm"]["notes"][0]
    assert "$CHECKPOINT" in cmds["vllm"]["command"]  # not quoted: the shell expands it
    bf16 = launch_commands("m", {**c, "weights": "bf16", "ep": 1}, vendor="nvidia")
    assert bf16["vllm"]["argv"][bf16["vllm"]["argv"].index("--dtype") + 1] == "bfloat16"
    assert bf16["trtllm"]["available"] and bf16["trtllm"]["argv"][1] == "m"


# ------------------------------------------------------------------------------ CLI


def test_front_json_carries_the_recommendations(tmp_path):
    data = _spec_dict(name="cli-rec", accelerators=["H100-SXM", "MI300X"])
    record, evaluations = _evaluate(data)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    store = Store(url)
    store.create_sweep("cli-rec", yaml.safe_dump(data), record["spec"], price_table=record["price_table"])
    store.add_evaluations("cli-rec", evaluations)
    feasible = [e for e in evaluations if e["feasible"]]
    objs = np.array([e["objectives"] for e in feasible], dtype=float)
    points = [
        {**e["config"], "objectives": e["objectives"], "metrics": e["metrics"]}
        for e, on in zip(feasible, pareto_mask(objs), strict=True)
        if on
    ]
    store.save_front("cli-rec", "final", points)
    store.update_sweep("cli-rec", status="finished")
    result = CliRunner().invoke(app, ["front", "cli-rec", "--format", "json", "--storage", url])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    expected = for_store(store, "cli-rec")["recommendations"]
    assert set(out["recommendations"]) == set(KINDS)
    for kind in KINDS:
        assert out["recommendations"][kind]["id"] == expected[kind]["id"]
        assert out["recommendations"][kind]["launch"]["vllm"]["command"].startswith("vllm serve")
    assert math.isfinite(out["recommendations"]["cheapest"]["usd_per_million_output_tokens"])
