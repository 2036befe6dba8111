"""GPU probes on the CPU: the suite, the fit, the record round trip, the probe evaluator, and a
missing GPU resource reported at once."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from objectives.accelerators import get_accelerator
from objectives.batch import build_batch
from objectives.efficiency import default_efficiency
from objectives.models import load_model
from objectives.probe_fit import efficiency_sections, fit_alpha_beta, fit_fractions, fit_gemm_ramp
from objectives.serving import evaluate
from search.calibration import (
    CPU_ID,
    ProbeUnavailableError,
    build_record,
    catalog_id,
    efficiency_from_record,
    layer_shape,
    load_record,
    probe_layer,
    resolve_calibration,
)
from search.cli.probe import register
from search.cluster import check_gpu_resource, ray_accelerator_type
from search.store import Store
from search.sweeps import PROBE_STATUS

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """servesweep (test shell)"""

    register(app)
    return app


# ------------------------------------------------------------------ the fit


def test_gemm_ramp_fit_recovers_known_parameters():
    m = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192], dtype=float)
    rng = np.random.default_rng(0)
    for eff_max, h in ((0.8, 100.0), (0.55, 12.0), (0.9, 900.0)):
        eff = eff_max * m / (m + h) * np.exp(rng.normal(0.0, 0.01, m.size))
        got_e, got_h = fit_gemm_ramp(m, eff)
        assert got_e == pytest.approx(eff_max, rel=0.03)
        assert got_h == pytest.approx(h, rel=0.08)


def test_fractions_from_synthetic_samples():
    peaks = {"hbm_bw_bytes_per_s": 3.35e12, "flops": {"bf16": 989e12, "fp8": 1979e12}, "link_bw_bytes_per_s": 450e9}
    samples = [
        {"kind": "copy", "bytes": 4e9, "seconds": 4e9 / 2.9e12, "bytes_per_s": 2.9e12},
        {"kind": "reduce", "bytes": 2e9, "seconds": 2e9 / 3.0e12, "bytes_per_s": 3.0e12},
        {"kind": "prefill_attention", "tokens": 4096, "seconds": 1.0, "flops_per_s": 330e12},
        {"kind": "decode_attention", "batch": 8, "context": 4096, "seconds": 1.0, "bytes_per_s": 2.0e12},
    ]
    for dtype, peak, e, h in (("bf16", 989e12, 0.8, 70.0), ("fp8", 1979e12, 0.7, 150.0)):
        for m in (1, 8, 64, 512, 4096):
            samples.append({"kind": "gemm", "dtype": dtype, "m": m, "flops_per_s": peak * e * m / (m + h)})
    for nbytes in (1 << 20, 1 << 24, 1 << 28, 1 << 30):  # alpha 30 us, busbw 480 GB/s, 8 GPUs
        samples.append({"kind": "allreduce", "bytes": nbytes, "gpus": 8, "seconds": 30e-6 + nbytes * 1.75 / 480e9})
    got = fit_fractions(samples, peaks)
    assert got["hbm_copy_fraction"] == pytest.approx(3.0 / 3.35)
    assert got["gemm"]["bf16"]["fraction"] == pytest.approx(0.8, rel=1e-3)
    assert got["gemm"]["bf16"]["half_tokens"] == pytest.approx(70.0, rel=1e-2)
    assert got["gemm"]["fp8"]["fraction"] == pytest.approx(0.7, rel=1e-3)
    assert got["attention_fraction"] == pytest.approx(330 / 989)
    assert got["attention_bw_fraction"] == pytest.approx(2.0 / 3.35)
    assert got["allreduce_busbw_fraction"] == pytest.approx(480 / 450, rel=1e-3)
    assert got["allreduce_latency_s"] == pytest.approx(30e-6, rel=1e-2)
    alpha, bw = fit_alpha_beta([1e6, 2e6, 4e6], [1e-5 + 1e6 / 1e11, 1e-5 + 2e6 / 1e11, 1e-5 + 4e6 / 1e11])
    assert alpha == pytest.approx(1e-5) and bw == pytest.approx(1e11)
    # a GPU record sets the global ramp; the model then uses the probed fractions for that GPU
    sections = efficiency_sections(got, "H100-SXM", "synthetic", is_gpu=True)
    assert sections["serving"]["gemm_half_tokens"]["value"] == pytest.approx(70.0, rel=1e-2)
    eff = efficiency_from_record({"name": "synthetic", **sections})
    e = eff.for_gpu("H100-SXM", "nvidia", "bf16")
    assert e.gemm == pytest.approx(0.8 * eff.serving["gemm_factor"], rel=1e-3)
    assert "calibration synthetic" in e.basis


def test_driver_names_map_to_the_catalog():
    assert catalog_id("NVIDIA H100 80GB HBM3") == "H100-SXM"
    assert catalog_id("NVIDIA A100-SXM4-80GB") == "A100-SXM-80GB"
    assert catalog_id("Some Unknown Accelerator 9000") is None
    assert ray_accelerator_type("H100-SXM") == "H100"


# ------------------------------------------------------------------ probe -> calibration -> estimate


def _estimate(efficiency) -> tuple[float, float]:
    b = build_batch(
        load_model(MODEL), get_accelerator("H100-SXM"), tp=1, batch=8, isl=512, osl=128, efficiency=efficiency
    )
    m = evaluate(b)
    return float(m.tpot_s[0]), float(m.ttft_s[0])


def test_cpu_probe_calibration_estimate_round_trip(tmp_path, local_ray):
    url = f"sqlite:///{tmp_path}/cal.db"
    out = tmp_path / "cpu.json"
    args = ["probe", "--device", "cpu", "--storage", url, "-o", str(out), "--name", "cpu-test", "--repeats", "2"]
    # --gpus 2 on the CPU: two gloo processes run the all-reduce probe's code path
    result = CliRunner().invoke(_app(), [*args, "--gpus", "2"])
    assert result.exit_code == 0, result.output
    assert "CPU calibration" in result.output
    record = json.loads(out.read_text())
    assert record["kind"] == "probe" and record["gpu"] == CPU_ID and record["device"] == "cpu"
    assert record["versions"]["torch"]
    kinds = {s["kind"] for s in record["samples"]}
    assert {"gemm", "copy", "reduce", "decode_attention", "prefill_attention", "allreduce"} <= kinds
    ar = [s for s in record["samples"] if s["kind"] == "allreduce"]
    assert len(ar) >= 4 and all(s["gpus"] == 2 and s["seconds"] > 0 for s in ar)
    cpu = record["gpus"][CPU_ID]
    # the CPU's link "peak" is its best measured bus rate; the fraction is the alpha-beta fit over it
    alpha, busbw = fit_alpha_beta([s["bytes"] for s in ar], [s["seconds"] for s in ar])  # 2 ranks: bus = message
    best = max(s["bus_bytes_per_s"] for s in ar)
    assert cpu["allreduce_busbw_fraction"]["value"] == pytest.approx(busbw / best, rel=1e-9)
    assert cpu["allreduce_latency_s"]["value"] == pytest.approx(alpha, rel=1e-9, abs=1e-12)
    assert 0 < cpu["hbm_copy_fraction"]["value"] <= 1.0
    assert cpu["gemm_fraction"]["bf16"]["value"] > 0
    assert "serving" not in record  # a CPU record never sets global parameters
    stored = Store(url).latest_calibration()
    assert stored["name"] == "cpu-test" and stored["kind"] == "probe" and stored["gpu"] == CPU_ID
    # both the file and `latest` load, and the CPU's own numbers come back ...
    for choice in (str(out), "latest"):
        eff, label = resolve_calibration(choice, url)
        assert label == "calibration cpu-test"
        got = eff.for_gpu(CPU_ID, "nvidia", "bf16")
        assert got.bw == pytest.approx(min(0.98, cpu["hbm_copy_fraction"]["value"] * eff.serving["bw_factor"]))
        # ... while a GPU estimate is unchanged
        assert _estimate(eff) == _estimate(default_efficiency())
        base = default_efficiency().for_gpu("H100-SXM", "nvidia", "bf16")
        assert (got_h := eff.for_gpu("H100-SXM", "nvidia", "bf16")).gemm == base.gemm and got_h.bw == base.bw
    assert load_record(out)["name"] == "cpu-test"


def test_a_gpu_record_changes_the_gpu_estimate():
    fake = {
        "info": {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "gpu": "H100-SXM", "torch": "x"},
        "samples": [
            {"kind": "copy", "bytes": 1, "seconds": 1, "bytes_per_s": 0.5 * 3.35e12},
            *({"kind": "gemm", "dtype": "bf16", "m": m, "flops_per_s": 0.4 * 989e12 * m / (m + 50)} for m in (1, 64)),
        ],
    }
    rec = build_record(fake, "slow-h100")
    assert rec["gpu"] == "H100-SXM" and rec["gpus"]["H100-SXM"]["hbm_copy_fraction"]["value"] == pytest.approx(
        0.5, rel=1e-3
    )
    slow = efficiency_from_record(rec)
    assert _estimate(slow)[0] > _estimate(default_efficiency())[0]


# ------------------------------------------------------------------ missing GPU


def test_missing_gpu_resource_is_a_clear_error_within_seconds(tmp_path, local_ray):
    t0 = time.monotonic()
    with pytest.raises(ProbeUnavailableError, match="no GPU resource"):
        check_gpu_resource("H100")
    result = CliRunner().invoke(_app(), ["probe", "--device", "cuda", "--storage", f"sqlite:///{tmp_path}/c.db"])
    assert result.exit_code == 2
    assert "no GPU resource" in result.output and "--device cpu" in result.output
    assert time.monotonic() - t0 < 10.0


# ------------------------------------------------------------------ one decoder layer and the evaluator


def test_probe_layer_dense_and_moe_tiny():
    dense = layer_shape(load_model(MODEL), tp=8, ep=1, batch=2, context=32, prefill_tokens=16)
    assert dense["heads"] == 4 and dense["kv_heads"] == 1 and not dense["moe"]
    moe = layer_shape(load_model("Qwen/Qwen3-30B-A3B"), tp=4, ep=4, batch=2, context=32, prefill_tokens=16)
    assert moe["moe"] and moe["experts_local"] == 32 and moe["top_k"] == 8
    # fp8 layers at reduced width: torch's CPU `_scaled_mm` is a scalar fallback (seconds per GEMM)
    small = {"hidden": 256, "inter": 128, "head_dim": 64, "v_head_dim": 64}
    fp8_dense = {**dense, **small, "weights": "fp8"}
    fp8_moe = {**moe, **small, "experts_local": 4, "experts_total": 16, "top_k": 2, "weights": "fp8"}
    for shape in (dense, moe, fp8_dense, fp8_moe):
        t = probe_layer(shape, "cpu", repeats=1)
        assert all(v > 0 for v in t.values()), t
    with pytest.raises(ValueError, match="not 'int4'"):
        layer_shape(load_model(MODEL), tp=8, ep=1, batch=2, context=32, prefill_tokens=16, weights="int4")


def test_which_weight_schemes_a_layer_probe_builds():
    from search.sweeps.probed import _probe_weights

    assert _probe_weights("bf16", 2.0) == "bf16"
    assert _probe_weights("fp8", 1.0) == "fp8"  # a GPU with fp8 tensor cores
    assert _probe_weights("fp8", 2.0) is None  # fp8 run another way (e.g. A100): not what the probe builds
    assert _probe_weights("int4", 2.0) is None and _probe_weights("fp4", 0.5625) is None


TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 1024,
    "max_position_embeddings": 4096,
    "torch_dtype": "bfloat16",
}

PROBE_SWEEP = {
    "model": MODEL,
    "workload": {"input_tokens": {"kind": "fixed", "mean": 64}, "output_tokens": {"kind": "fixed", "mean": 16}},
    "accelerators": ["H100-SXM", "MI300X"],
    "space": {"tp": [4], "weights": ["bf16"], "kv_cache": ["bf16"], "max_batch": [1, 2]},
    "objectives": [{"metric": "tpot"}, {"metric": "usd_per_million_output_tokens"}],
    "evaluator": "probe",
    "probe": {"device": "cpu", "max_candidates": 2, "repeats": 1},
    "sampler": "exhaustive",
}


def _probe_sweep(tmp_path, **changes):
    """(spec data, spec, store, sweep name, summary) of a finished exhaustive probe sweep of
    PROBE_SWEEP with `changes`."""
    from search.sweeps import parse_spec, run_sweep, start_sweep

    data = {**PROBE_SWEEP, **changes}
    spec = parse_spec(data)
    store = Store(f"sqlite:///{tmp_path}/sweeps.db")
    name = start_sweep(store, spec, json.dumps(data), None, workers=1)
    return data, spec, store, name, run_sweep(store, name, workers=1)


def test_probe_sweep_measures_fp8_layers(tmp_path, local_ray):
    from search.sweeps import make_evaluator, parse_spec

    # a narrow Llama: torch's CPU `_scaled_mm` is a scalar fallback, seconds per full-size GEMM
    tiny = tmp_path / "tiny-llama"
    tiny.mkdir()
    (tiny / "config.json").write_text(json.dumps(TINY_LLAMA))
    data, spec, store, name, summary = _probe_sweep(
        tmp_path,
        name="probe-fp8",
        model=str(tiny),
        accelerators=["H100-SXM"],
        space={**PROBE_SWEEP["space"], "weights": ["bf16", "fp8"]},
        probe={**PROBE_SWEEP["probe"], "max_candidates": 4},
    )
    chosen = make_evaluator(spec).probe_ids()
    measured = [r for r in store.get_evaluations(name) if r["measured"]]
    assert summary["probe_candidates"] == {"measured": len(chosen)}
    assert {r["config"]["id"] for r in measured} == chosen  # every front candidate, fp8 ones included
    assert any(r["config"]["weights"] == "fp8" for r in measured)
    # with an fp8 KV cache no layer is built: the candidates stay analytic and say why
    fp8_kv = parse_spec({**data, "space": {**data["space"], "kv_cache": ["fp8"]}})
    evaluator = make_evaluator(fp8_kv)
    result = evaluator.evaluate(np.arange(evaluator.space.size))
    status = [PROBE_STATUS[int(c)] for c in result.metrics["probe_status"]]
    assert status.count("dtype not probed") == len(evaluator.probe_ids()) > 0 and evaluator.probed == 0


def test_sweep_with_the_probe_evaluator_on_the_cpu(tmp_path, local_ray):
    slo = {"slos": [{"metric": "tpot", "max_s": 10.0}]}
    _, spec, store, name, summary = _probe_sweep(
        tmp_path, name="probe-cpu", workload={**PROBE_SWEEP["workload"], **slo}
    )
    assert summary["evaluated"] == 4
    rows = store.get_evaluations(name)
    measured = [r for r in rows if r["measured"]]
    from search.sweeps import make_evaluator

    chosen = make_evaluator(spec).probe_ids()  # the analytic front's best two
    assert len(chosen) == 2 and {r["config"]["id"] for r in measured} == chosen
    for r in measured:
        m = r["metrics"]
        assert r["evaluator"] == "probe" and PROBE_STATUS[int(m["probe_status"])] == "measured"
        assert m["probe_decode_layer_s"] > 0 and m["tpot_s"] > 0 and m["analytic_tpot_s"] > 0
        assert m["tpot_s"] != m["analytic_tpot_s"]
    for r in rows:
        if not r["measured"]:
            assert r["metrics"]["probe_status"] == 0.0  # not a candidate
    # procurement sees which recommendations rest on a measurement
    from search.outputs import recommendations, rows_from, sweep_context

    recs = recommendations(sweep_context(store.get_sweep(name)), rows_from(rows))
    picked = [r for r in recs.values() if r is not None]
    assert picked
    for rec in picked:
        assert rec["basis"].startswith("measured" if rec["id"] in chosen else "modelled"), rec["basis"]
    # (on a CPU the measured layers are slow, so the picks here are modelled ones; the label of
    # a measured row:)
    from search.outputs.recommend import _basis

    ctx = sweep_context(store.get_sweep(name))
    assert _basis(ctx, {"probe_status": 1.0}).startswith("measured")
    assert _basis(ctx, {"probe_status": 2.0}).startswith("modelled")
    assert summary["measured"] == 2 and summary["probe_analytic"] == {}
    assert summary["probe_candidates"] == {"measured": 2}


def test_probe_sweep_without_such_gpus_stays_analytic_and_says_so(tmp_path, local_ray):
    """On a cluster without the GPU type, a cuda probe sweep evaluates analytically, stores no
    measured rows, and its summary (and the `run` summary line) names each accelerator and why."""
    from search.cli.sweeps import _summary_line

    _, _, store, name, summary = _probe_sweep(
        tmp_path, name="probe-nogpu", probe={**PROBE_SWEEP["probe"], "device": "cuda"}
    )
    assert summary["evaluated"] == 4 and summary["measured"] == 0
    assert summary["probe_candidates"] == {"GPU type not in the cluster": 2}  # the two front candidates
    assert set(summary["probe_analytic"]) == {"H100-SXM", "MI300X"}
    assert "has no H100 GPU" in summary["probe_analytic"]["H100-SXM"]
    assert not any(r["measured"] for r in store.get_evaluations(name))
    line = _summary_line(summary)
    assert "measured=0" in line and "MI300X candidates stayed analytic" in line
    assert "2 probe candidate(s) stayed analytic: GPU type not in the cluster" in line


def test_allreduce_probe_errors_are_clear(local_ray):
    from search.calibration import allreduce_samples

    assert allreduce_samples("cpu", 1, (4096,), 1) == []  # one GPU: nothing to all-reduce
    with pytest.raises(ProbeUnavailableError, match="asks for 2 GPUs, but PyTorch sees 0"):
        allreduce_samples("cuda", 2, (4096,), 1)
    with pytest.raises(ProbeUnavailableError, match=r"no GPU resource \(num_gpus=4"):
        check_gpu_resource("H100", gpus=4)
