"""The `servesweep` command line end to end: typer's CliRunner on `search.cli.app`, and the
installed console script in a real subprocess."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from objectives.accelerators import get_accelerator, load_accelerators
from objectives.cost import OwnershipTerms, tco_usd_per_gpu_hour
from objectives.serving import BOUNDS
from search.cli import app

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
ESTIMATE_8B = [
    "estimate",
    "--model",
    LLAMA_8B,
    "--gpu",
    "h100",
    "--weights",
    "fp8",
    "--isl",
    "1024",
    "--osl",
    "256",
]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def _estimate_json(runner: CliRunner, *extra: str) -> dict:
    result = runner.invoke(app, [*ESTIMATE_8B, *extra, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ----------------------------------------------------------------------------- catalog


def test_catalog_gpus_table(runner: CliRunner) -> None:
    result = runner.invoke(app, ["catalog", "gpus"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for gpu in ("H100-SXM", "A100-SXM-80GB", "MI300X"):
        assert gpu in result.stdout


def test_catalog_gpus_json(runner: CliRunner) -> None:
    result = runner.invoke(app, ["catalog", "gpus", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) >= 14
    assert {"H100-SXM", "MI300X", "B200"} <= {r["id"] for r in rows}
    # GPUs without a sourced scale-out bandwidth (e.g. H100-PCIe) list it as null
    by_id = {r["id"]: r for r in rows}
    for gpu in load_accelerators().values():
        if gpu.scaleout_bw_bytes_per_s is None:
            assert by_id[gpu.id]["scaleout_gb_per_s"] is None
        else:
            assert by_id[gpu.id]["scaleout_gb_per_s"] == pytest.approx(gpu.scaleout_bw_bytes_per_s / 1e9)


def test_catalog_gpus_json_with_gpu_file(runner: CliRunner, tmp_path: Path) -> None:
    # An override file giving every GPU that lacks one a scale-out bandwidth.
    missing = [g.id for g in load_accelerators().values() if g.scaleout_bw_bytes_per_s is None]
    override = tmp_path / "gpus.yaml"
    override.write_text("".join(f"{gpu}:\n  scaleout_bw_bytes_per_s: 12.5e9\n" for gpu in missing))
    result = runner.invoke(app, ["catalog", "gpus", "--json", "--gpu-file", str(override)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) >= 14
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert {"H100-SXM", "A100-SXM-80GB", "MI300X", "B200", "GB200", "L4"} <= set(ids)
    h100 = next(r for r in rows if r["id"] == "H100-SXM")
    assert h100["hbm_tb_per_s"] == pytest.approx(3.35)
    assert h100["peak_tflops"]["bf16"] == pytest.approx(989, rel=0.01)
    assert all(r["usd_per_gpu_hour"] > 0 and r["sources"] for r in rows)
    assert all(r["scaleout_gb_per_s"] is not None for r in rows)
    assert next(r for r in rows if r["id"] == missing[0])["scaleout_gb_per_s"] == pytest.approx(12.5)


def test_catalog_models_json(runner: CliRunner) -> None:
    result = runner.invoke(app, ["catalog", "models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 20
    ids = {r["id"] for r in rows}
    assert {LLAMA_8B, "deepseek-ai/DeepSeek-V3", "Qwen/Qwen3-30B-A3B"} <= ids
    llama = next(r for r in rows if r["id"] == LLAMA_8B)
    assert llama["total_params_b"] == pytest.approx(8.03, rel=0.01)
    assert llama["experts"] == 0
    dsv3 = next(r for r in rows if r["id"] == "deepseek-ai/DeepSeek-V3")
    assert dsv3["mla"] is True and dsv3["experts"] == 256


def test_catalog_models_table(runner: CliRunner) -> None:
    result = runner.invoke(app, ["catalog", "models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert LLAMA_8B in result.stdout


# ----------------------------------------------------------------------------- estimate


def test_estimate_json_fixed_batch(runner: CliRunner) -> None:
    r = _estimate_json(runner, "--batch", "32")
    for key in (
        "feasible",
        "batch",
        "ttft_s",
        "tpot_s",
        "output_tokens_per_s_per_gpu",
        "usd_per_million_output_tokens",
        "memory_per_gpu_gb",
        "bound",
    ):
        assert key in r, key
    assert r["feasible"] is True
    assert r["model"] == LLAMA_8B and r["gpu"] == "H100-SXM"
    assert r["weights"] == "fp8" and r["compute_dtype"] == "fp8" and r["kv_cache"] == "fp8"
    assert r["batch"] == 32 <= r["max_batch"]
    assert 0.001 < r["ttft_s"] < 1.0
    assert 0.001 < r["tpot_s"] < 0.1
    assert r["ttft_s"] < r["e2e_s"]
    # steady state: tokens/s = batch / TPOT (one GPU)
    assert r["output_tokens_per_s_per_gpu"] == pytest.approx(32 / r["tpot_s"], rel=1e-9)
    assert 100 < r["output_tokens_per_s_per_gpu"] < 100_000
    # $/M tokens = $/h / (tokens/s x 3600) x 1e6
    hand = r["usd_per_hour"] / (r["output_tokens_per_s"] * 3600) * 1e6
    assert r["usd_per_million_output_tokens"] == pytest.approx(hand, rel=1e-9)
    assert r["usd_per_hour"] == pytest.approx(get_accelerator("H100-SXM").usd_per_gpu_hour)
    # fp8 weights: ~7.0e9 linear params x 1 B + 1.05e9 embedding/LM-head params x 2 B ~ 9.1 GB
    assert r["weights_per_gpu_gb"] == pytest.approx(9.08, abs=0.05)
    assert r["weights_per_gpu_gb"] < r["memory_per_gpu_gb"] < r["hbm_gb"]
    assert r["bound"] in BOUNDS
    assert r["notes"] == []


def test_estimate_max_throughput(runner: CliRunner) -> None:
    best = _estimate_json(runner, "--max-throughput")
    one = _estimate_json(runner, "--batch", "1")
    assert best["feasible"] is True
    assert 1 <= best["batch"] <= min(best["max_batch"], 4096)
    assert best["output_tokens_per_s_per_gpu"] >= one["output_tokens_per_s_per_gpu"]
    assert best["usd_per_million_output_tokens"] <= one["usd_per_million_output_tokens"]
    # without --batch the default is the same search
    default = _estimate_json(runner)
    assert default["batch"] == best["batch"]


def test_estimate_readable_output(runner: CliRunner) -> None:
    result = runner.invoke(app, [*ESTIMATE_8B, "--batch", "8"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "memory per GPU" in out
    assert "bound" in out
    assert "TTFT" in out and "TPOT" in out
    assert "H100-SXM" in out


def test_estimate_batch_that_does_not_fit_is_clipped_with_a_note(runner: CliRunner) -> None:
    r = _estimate_json(runner, "--batch", "100000")
    assert r["feasible"] is True
    assert r["batch"] == r["max_batch"] < 100_000
    assert r["bound"] == "capacity"
    assert any("does not fit" in n for n in r["notes"])


def test_estimate_infeasible_readable_exits_nonzero(runner: CliRunner) -> None:
    args = ["estimate", "--model", "meta-llama/Llama-3.1-405B-Instruct", "--gpu", "H100-SXM", "--batch", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "weights do not fit" in _flat(result.stdout)
    r = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert r["feasible"] is False and "weights do not fit" in r["reason"]
    assert r["ttft_s"] is None  # NaN becomes null in JSON


def test_unknown_gpu_lists_the_right_id(runner: CliRunner) -> None:
    result = runner.invoke(app, ["estimate", "--model", LLAMA_8B, "--gpu", "H100-SMX", "--batch", "1"])
    assert result.exit_code != 0
    err = _flat(result.stderr)
    assert "H100-SMX" in err
    assert "H100-SXM" in err
    assert "Traceback" not in result.output


def test_unknown_model_lists_close_matches(runner: CliRunner) -> None:
    result = runner.invoke(app, ["estimate", "--model", "llama-3.1-8bb", "--gpu", "H100-SXM", "--batch", "1"])
    assert result.exit_code != 0
    err = _flat(result.stderr)
    assert "unknown model" in err
    assert "close matches" in err and "llama-3.1-8b" in err


def test_unknown_weights_lists_schemes(runner: CliRunner) -> None:
    result = runner.invoke(app, [*ESTIMATE_8B[:5], "--weights", "fp3", "--batch", "1"])
    assert result.exit_code != 0
    assert "fp8" in _flat(result.stderr) and "int4" in _flat(result.stderr)


def test_batch_and_max_throughput_together_is_an_error(runner: CliRunner) -> None:
    result = runner.invoke(app, [*ESTIMATE_8B, "--batch", "4", "--max-throughput"])
    assert result.exit_code != 0
    assert "--batch" in result.stderr and "--max-throughput" in result.stderr


def test_pricing_owned_for_h100(runner: CliRunner) -> None:
    owned = _estimate_json(runner, "--batch", "32", "--pricing", "owned")
    cloud = _estimate_json(runner, "--batch", "32")
    h100 = get_accelerator("H100-SXM")
    assert h100.purchase_usd is not None
    tco = tco_usd_per_gpu_hour(np.array([h100.purchase_usd]), np.array([h100.tdp_w]), OwnershipTerms.default())[0]
    assert owned["pricing"] == "owned"
    assert owned["usd_per_hour"] == pytest.approx(tco, rel=1e-9)
    assert owned["usd_per_hour"] != pytest.approx(cloud["usd_per_hour"])
    # same physics, different price
    assert owned["output_tokens_per_s"] == pytest.approx(cloud["output_tokens_per_s"], rel=1e-12)
    ratio = owned["usd_per_million_output_tokens"] / cloud["usd_per_million_output_tokens"]
    assert ratio == pytest.approx(owned["usd_per_hour"] / cloud["usd_per_hour"], rel=1e-9)


def test_pricing_owned_without_purchase_price_is_an_error(runner: CliRunner) -> None:
    assert get_accelerator("H100-PCIe").purchase_usd is None
    result = runner.invoke(app, ["estimate", "--model", LLAMA_8B, "--gpu", "H100-PCIe", "--pricing", "owned"])
    assert result.exit_code != 0
    assert "purchase price" in _flat(result.stderr)


def test_gpu_file_override_changes_the_price(runner: CliRunner, tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text("H100-SXM:\n  usd_per_gpu_hour: 1.25\n")
    cheap = _estimate_json(runner, "--batch", "32", "--gpu-file", str(override))
    cloud = _estimate_json(runner, "--batch", "32")
    assert cheap["usd_per_hour"] == pytest.approx(1.25)
    assert cloud["usd_per_hour"] == pytest.approx(get_accelerator("H100-SXM").usd_per_gpu_hour)
    ratio = cheap["usd_per_million_output_tokens"] / cloud["usd_per_million_output_tokens"]
    assert ratio == pytest.approx(1.25 / cloud["usd_per_hour"], rel=1e-9)
    assert cheap["output_tokens_per_s"] == pytest.approx(cloud["output_tokens_per_s"], rel=1e-12)


def test_bad_gpu_file_is_a_clean_error(runner: CliRunner, tmp_path: Path) -> None:
    override = tmp_path / "bad.yaml"
    override.write_text("H100-SXM:\n  usd_per_gpu_hour: -3\n")
    result = runner.invoke(app, [*ESTIMATE_8B, "--batch", "1", "--gpu-file", str(override)])
    assert result.exit_code != 0
    assert "usd_per_gpu_hour" in _flat(result.stderr)


# ----------------------------------------------------------------------------- console script


def _console_script() -> Path:
    script = Path(sys.executable).parent / "servesweep"
    if not script.exists():
        pytest.skip("console script servesweep is not installed next to this interpreter")
    return script


def test_console_script_subprocess() -> None:
    script = _console_script()
    proc = subprocess.run(
        [str(script), *ESTIMATE_8B, "--batch", "32", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["feasible"] is True and r["batch"] == 32
    assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("ttft_s", "tpot_s", "output_tokens_per_s_per_gpu"))

    proc = subprocess.run(
        [str(script), "catalog", "models", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 20

    proc = subprocess.run(
        [str(script), "estimate", "--model", LLAMA_8B, "--gpu", "H100-SMX"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "H100-SXM" in proc.stderr


def test_console_script_catalog_gpus_json() -> None:
    proc = subprocess.run(
        [str(_console_script()), "catalog", "gpus", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) >= 14
