"""Engines as an input (issue 12, points 3 and 4): runtime profiles, the `engine` dimension of a
sweep, estimate / launch lines per engine, each term's basis, and kernel surfaces scaled onto
GPUs without records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from objectives.accelerators import get_accelerator
from objectives.batch import build_batch
from objectives.efficiency import EfficiencyModel
from objectives.engines import ENGINES, UnknownEngineError, default_engine, engine_profiles, get_profile
from objectives.memory import kv_budget_bytes, weight_bytes_per_gpu
from objectives.models import load_model
from search.outputs import estimate
from search.outputs.launch import launch_commands
from search.sweeps import SearchSpace, parse_spec

GIB = 2**30


def _none(_gpu: str):
    return EfficiencyModel.default(), "none"


def _kernels(_gpu: str):
    return EfficiencyModel.kernel_default(), "kernel model"


# ------------------------------------------------------------------------------ profiles


def test_profiles_load_with_sources_and_dates():
    profiles = engine_profiles()
    assert set(profiles) == set(ENGINES) and default_engine() == "trtllm"
    for p in profiles.values():
        sources = p.sources()
        for key in ("memory", "max_batch_size", "max_num_tokens", "chunked_prefill"):
            assert sources[key] and "(20" in sources[key]  # a source and its date
        assert p.kernels in ENGINES and p.memory["flag"].startswith("--")
    assert get_profile("TensorRT-LLM").id == "trtllm"
    with pytest.raises(UnknownEngineError, match="allowed: trtllm, vllm, sglang"):
        get_profile("tgi")


def test_profile_defaults_follow_the_engines_rules():
    vllm, sglang, trt = get_profile("vllm"), get_profile("sglang"), get_profile("trtllm")
    h100, a100, l40s, b200 = (get_accelerator(g) for g in ("H100-SXM", "A100-SXM-80GB", "L40S", "B200"))
    # vLLM: 1024 seqs / 8192 tokens on >= 70 GiB GPUs that are not A100, else 256 / 2048
    assert (vllm.max_batch(h100.hbm_bytes, h100.id), vllm.max_tokens(h100.hbm_bytes, h100.id)) == (1024, 8192)
    assert (vllm.max_batch(a100.hbm_bytes, a100.id), vllm.max_tokens(a100.hbm_bytes, a100.id)) == (256, 2048)
    assert float(vllm.memory_fraction(h100.hbm_bytes)) == 0.9
    # SGLang: chunked_prefill_size by memory; mem_fraction_static = (M - reserved) / M
    assert [sglang.max_tokens(g.hbm_bytes) for g in (l40s, h100, b200)] == [8192, 8192, 16384]
    m = h100.hbm_bytes / GIB
    assert float(sglang.memory_fraction(h100.hbm_bytes, 4.0)) == pytest.approx(round((m - 11.5) / m, 3))
    assert float(sglang.memory_fraction(h100.hbm_bytes, 8.0)) < float(sglang.memory_fraction(h100.hbm_bytes, 1.0))
    # TensorRT-LLM: the fitted rows' settings, identical to the efficiency model's serving values
    serving = EfficiencyModel.default().serving
    assert float(trt.memory_fraction(h100.hbm_bytes)) == serving["kv_memory_fraction"]
    assert trt.max_batch(h100.hbm_bytes) == serving["max_batch_size"]
    assert not trt.supports("AMD") and vllm.supports("amd") and sglang.supports("nvidia")


def test_engine_changes_memory_and_caps_as_the_profile_says():
    model, gpu = load_model("llama-3.1-70b"), get_accelerator("H100-SXM")
    kw = {"weights": "fp8", "kv_cache": "fp8", "tp": 4, "batch": 64}
    base = build_batch(model, gpu, **kw)
    trt = build_batch(model, gpu, engine="trtllm", **kw)
    vllm = build_batch(model, gpu, engine="vllm", **kw)
    sgl = build_batch(model, gpu, engine="sglang", **kw)
    assert kv_budget_bytes(trt)[0] == kv_budget_bytes(base)[0]  # the default engine: unchanged
    # vLLM: 0.9 of the whole GPU for weights, workspace, reserve and KV cache
    from objectives.memory import activation_workspace_bytes

    used = weight_bytes_per_gpu(vllm) + activation_workspace_bytes(vllm) + vllm.runtime_reserve_bytes
    want = gpu.hbm_bytes * 0.9 - used
    assert kv_budget_bytes(vllm)[0] == pytest.approx(want[0])
    assert (vllm.max_batch_size[0], vllm.max_num_tokens[0]) == (1024, 8192)
    # SGLang: weights + KV pool take mem_fraction_static; activations live outside it
    frac = float(get_profile("sglang").memory_fraction(gpu.hbm_bytes, 4.0))
    assert sgl.kv_memory_fraction[0] == 1.0 and sgl.hbm_usable_fraction[0] == frac
    assert kv_budget_bytes(sgl)[0] == pytest.approx(gpu.hbm_bytes * frac - weight_bytes_per_gpu(sgl)[0])
    assert len({round(float(kv_budget_bytes(b)[0]) / 1e9, 2) for b in (trt, vllm, sgl)}) == 3


def test_kernel_model_reads_the_engines_records():
    model, gpu = load_model("llama-3.1-8b"), get_accelerator("H200-SXM")
    eff = EfficiencyModel.kernel_default()
    trt = build_batch(model, gpu, weights="bf16", efficiency=eff, engine="trtllm")
    vllm = build_batch(model, gpu, weights="bf16", efficiency=eff, engine="vllm")
    assert trt.uses_kernels and vllm.uses_kernels
    assert not np.allclose(trt.kt_gemm_dense, vllm.kt_gemm_dense)  # vLLM's own GEMM records
    r = estimate(model="llama-3.1-8b", gpu="H200-SXM", calibration=_kernels, engine="vllm", batch=8)
    assert r["engine"] == "vllm" and r["basis"]["gemm"].startswith("kernel-db vllm ")


# ------------------------------------------------------------------------------ estimate --json


def test_estimate_json_names_the_engine_and_each_terms_basis():
    r = estimate(model="llama-3.1-8b", gpu="H100-SXM", calibration=_none, weights="fp8", batch=16)
    assert r["engine"] == "trtllm" and r["engine_profile"]["applied"] is False
    assert set(r["basis"]) == {"gemm", "attention", "moe", "communication", "overhead"}
    assert r["basis"]["gemm"] == "microbenchmark" and r["basis"]["moe"] == "n/a (dense model)"
    v = estimate(model="llama-3.1-8b", gpu="H100-SXM", calibration=_none, weights="fp8", batch=16, engine="vllm")
    assert v["engine"] == "vllm" and v["engine_profile"]["memory_fraction"] == 0.9
    assert v["kv_budget_per_gpu_gb"] < r["kv_budget_per_gpu_gb"]
    k = estimate(model="mixtral-8x7b", gpu="H200-SXM", calibration=_kernels, weights="fp8", tp=2, batch=16)
    assert k["basis"]["gemm"].startswith("kernel-db trtllm ") and k["basis"]["moe"].startswith("kernel-db")
    assert k["basis"]["communication"].startswith("kernel-db") and "fitted" in k["basis"]["overhead"]
    json.dumps(k)  # plain JSON
    from search.outputs import EstimateError

    with pytest.raises(EstimateError, match="TensorRT-LLM does not run on AMD"):
        estimate(model="llama-3.1-8b", gpu="MI300X", calibration=_none, engine="trtllm", batch=1)


def test_estimate_cli_engine_option():
    from typer.testing import CliRunner

    from search.cli import app

    out = CliRunner().invoke(
        app, ["estimate", "--model", "llama-3.1-8b", "--gpu", "MI300X", "--engine", "sglang", "--batch", "8", "--json"]
    )
    assert out.exit_code == 0, out.output
    r = json.loads(out.output)
    assert r["engine"] == "sglang" and r["engine_profile"]["memory_basis"] == "static"
    assert r["basis"]["gemm"] == "microbenchmark"


# ------------------------------------------------------------------------------ sweep space

SPEC = {
    "name": "engines",
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "workload": "chat",
    "accelerators": ["H100-SXM", "MI300X"],
    "space": {"tp": [1, 2], "weights": ["fp8"], "kv_cache": ["fp8"], "max_batch": [16, 64]},
    "sampler": "exhaustive",
    "seed": 1,
}


def _spec(**space):
    data = json.loads(json.dumps(SPEC))
    data["space"].update(space)
    return parse_spec(data), yaml.safe_dump(data)


def test_configuration_ids_of_a_spec_without_engines_are_unchanged():
    plain, _ = _spec()
    space = SearchSpace(plain)
    assert "engine" not in space.names and plain.space.engine is None
    first = {i: space.config(i) for i in range(space.size)}
    with_engines = SearchSpace(_spec(engine=["trtllm", "vllm"])[0])
    assert with_engines.size == 2 * space.size and with_engines.names[-1] == "engine"
    for i, c in first.items():  # the first engine's configurations keep their ids
        assert with_engines.config(i) == {**c, "engine": "trtllm"}
    with pytest.raises(Exception, match="unknown engine"):
        _spec(engine=["tgi"])


def test_sweep_over_vllm_and_sglang_end_to_end(tmp_path, local_ray):
    from search.outputs import for_store
    from search.store import Store
    from search.sweeps import run_sweep, start_sweep

    spec, text = _spec(engine=["vllm", "sglang"])
    store = Store(f"sqlite:///{tmp_path}/engines.db")
    name = start_sweep(store, spec, text, None, workers=2)
    summary = run_sweep(store, name, workers=2)
    size = SearchSpace(spec).size
    assert summary["evaluated"] == size == 16
    evals = store.get_evaluations(name)
    assert {e["config"]["engine"] for e in evals} == {"vllm", "sglang"}
    by = {}
    for e in evals:
        c = e["config"]
        by[(c["accelerator"], c["tp"], c["max_batch"], c["engine"])] = e
    # the engines differ by their profiles: the KV budget, hence the largest batch that fits
    a, b = by[("H100-SXM", 1, 64, "vllm")], by[("H100-SXM", 1, 64, "sglang")]
    assert a["feasible"] and b["feasible"]
    assert a["metrics"]["max_batch"] != b["metrics"]["max_batch"]
    recs = for_store(store, name)["recommendations"]
    picked = [r for r in recs.values() if r is not None]
    assert picked and all(r["engine"] in ("vllm", "sglang") for r in picked)
    for r in picked:
        first = next(iter(r["launch"]))
        assert first == r["engine"] and r["launch"][first]["chosen"] is True


def test_trtllm_rows_on_amd_are_infeasible_with_the_reason():
    from search.sweeps.analytic import AnalyticEvaluator

    spec, _ = _spec(engine=["trtllm", "vllm"])
    ev = AnalyticEvaluator(spec)
    space = SearchSpace(spec)
    res = ev.evaluate(np.arange(space.size))
    for i in range(space.size):
        c = space.config(i)
        if c["accelerator"] == "MI300X" and c["engine"] == "trtllm":
            assert not res.feasible[i] and "NVIDIA GPUs only" in res.reason[i]
    assert res.feasible.any()


# ------------------------------------------------------------------------------ launch lines


def test_launch_lines_per_engine():
    c = {"tp": 2, "pp": 1, "ep": 1, "weights": "fp8", "kv_cache": "fp8", "max_batch": 64, "chunked_prefill": 8192}
    h100 = get_accelerator("H100-SXM")
    plain = launch_commands("m", c, vendor="nvidia")
    assert "chosen" not in plain["vllm"] and "--gpu-memory-utilization" not in plain["vllm"]["argv"]
    v = launch_commands("m", {**c, "engine": "vllm"}, vendor="nvidia", hbm_bytes=h100.hbm_bytes)
    assert next(iter(v)) == "vllm" and v["vllm"]["chosen"] and not v["sglang"]["chosen"]
    argv = v["vllm"]["argv"]
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.9"
    s = launch_commands("m", c, vendor="amd", engine="sglang", hbm_bytes=get_accelerator("MI300X").hbm_bytes)
    argv = s["sglang"]["argv"]
    frac = float(get_profile("sglang").memory_fraction(get_accelerator("MI300X").hbm_bytes, 2.0))
    assert next(iter(s)) == "sglang" and float(argv[argv.index("--mem-fraction-static") + 1]) == pytest.approx(frac)
    t = launch_commands("m", c, vendor="nvidia", engine="trtllm", hbm_bytes=h100.hbm_bytes)
    argv = t["trtllm"]["argv"]
    assert argv[argv.index("--kv_cache_free_gpu_memory_fraction") + 1] == "0.95"
    assert t["trtllm"]["extra_file"]["content"] == "kv_cache_config:\n  dtype: fp8\nenable_chunked_prefill: true\n"
    assert argv.count("--extra_llm_api_options") == 1


# ------------------------------------------------------------------------------ GPUs without kernel data


def test_scaled_surface_for_mi300x_says_scaled_from_its_sibling():
    from objectives.kernel_timing import GpuPeaks, scaled_record, scaled_records
    from objectives.kernels import default_library

    eff = EfficiencyModel.default()
    mi300x, h200 = get_accelerator("MI300X"), get_accelerator("H200-SXM")
    recs = scaled_records(mi300x, eff, engine="vllm")
    assert recs and {r.op for r in recs} >= {"gemm", "generation_attention", "context_attention"}
    for r in recs:
        assert r.gpu == "MI300X" and r.basis.startswith("scaled from H200-SXM (kernel-db ")
        assert "scaled from H200-SXM" in r.note and "microbenchmark fractions MI300X: measured" in r.note
        assert r.fit["rows"] == 0 and r.source["scaled_from_gpu"] == "H200-SXM"
    # decode attention: the sibling's times x (its bandwidth x copy fraction / MI300X's)
    src = default_library().get("H200-SXM", "vllm", "generation_attention", "bf16")
    dec = scaled_record(src, mi300x, eff)
    f_t, f_s = eff.fractions("MI300X", "amd", "bf16"), eff.fractions("H200-SXM", "nvidia", "bf16")
    ratio = (h200.hbm_bw_bytes_per_s * f_s.bw) / (mi300x.hbm_bw_bytes_per_s * f_t.bw)
    assert np.allclose(dec.time_s / src.time_s, ratio)
    # GEMM: per shape, the ratio of the two GPUs' rooflines (peak x GEMM fraction, HBM x copy fraction)
    gemm = default_library().get("H200-SXM", "trtllm", "gemm", "fp8")
    scaled = scaled_record(gemm, mi300x, eff)
    m, n, k = (g[len(g) // 2] for g in gemm.grid)
    peaks = [
        GpuPeaks(g.hbm_bw_bytes_per_s, g.peak_flops["fp8"], g.peak_flops["bf16"], g.scaleup_bw_bytes_per_s, f)
        for g, f in (
            (mi300x, eff.fractions("MI300X", "amd", "fp8")),
            (h200, eff.fractions("H200-SXM", "nvidia", "fp8")),
        )
    ]
    want = gemm.time_at(m, n, k) * peaks[0].gemm_roof_s(m, n, k, 1.0) / peaks[1].gemm_roof_s(m, n, k, 1.0)
    assert scaled.time_at(m, n, k) == pytest.approx(want, rel=1e-3)
    assert scaled_records(h200, eff) == []  # a GPU with records of its own


def test_estimate_basis_of_a_gpu_without_kernel_data():
    r = estimate(
        model="llama-3.1-70b", gpu="MI300X", calibration=_kernels, weights="fp8", tp=4, batch=32, engine="vllm"
    )
    assert r["engine"] == "vllm"
    for term in ("gemm", "attention", "communication"):
        assert r["basis"][term].startswith("scaled from H200-SXM"), r["basis"]
    a = estimate(model="llama-3.1-70b", gpu="MI325X", calibration=_none, weights="fp8", tp=4, batch=32)
    assert all(a["basis"][t] for t in ("gemm", "attention", "communication", "overhead"))


def test_kernels_ls_lists_scaled_surfaces_for_a_gpu_without_data():
    from typer.testing import CliRunner

    from search.cli import app

    out = CliRunner().invoke(app, ["kernels", "ls", "--gpu", "MI300X"])
    assert out.exit_code == 0, out.output
    assert "MI300X has no kernel data: scaled from H200-SXM" in out.output
    assert "MI300X/scaled-from-H200-SXM/trtllm/gemm/fp8" in out.output
