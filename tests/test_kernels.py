"""Kernel records: the importer on small synthetic tables (same schema as aiconfigurator-core's
parquet files, written here; CI never downloads the wheel), surface interpolation, fit-error
fields, the `servesweep kernels` commands, and every committed record."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from objectives.kernels import (
    OP_AXES,
    KernelLibrary,
    KernelRecord,
    allreduce_time_s,
    context_attention_time_s,
    default_library,
    generation_attention_time_s,
    interp_log_grid,
    moe_time_s,
    read_records,
)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from search.calibration import kernel_import as ki  # noqa: E402
from search.cli import app  # noqa: E402

runner = CliRunner()

# A made-up GPU: 1 PFLOP/s bf16, 2 PFLOP/s fp8, 4 TB/s, 5 us kernel floor.
PEAK = {"bfloat16": 1e15, "fp8": 2e15}
BW = 4e12
FLOOR_S = 5e-6


def _smooth_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a**3 + b**3) ** (1.0 / 3.0)


def gemm_ms(dtype: str, m, n, k):
    m, n, k = (np.asarray(x, dtype=np.float64) for x in (m, n, k))
    size = 2.0 if dtype == "bfloat16" else 1.0
    t = _smooth_max(2 * m * n * k / PEAK[dtype], (m * k + k * n + 2 * m * n) * size / BW)
    return (t + FLOOR_S) * 1e3


def ctx_attention_ms(b, isl, h, kvh, hd):
    flops = 2.0 * b * h * isl * isl * hd * 2 / 2
    return (flops / (0.5e15) + b * isl * (h + 2 * kvh) * hd * 2 / BW + FLOOR_S) * 1e3


def gen_attention_ms(b, ctx, h, kvh, hd):
    return (b * ctx * kvh * hd * 2 * 2 / (0.8 * BW) + b * h * ctx * hd * 4 / 0.3e15 + FLOOR_S) * 1e3


def moe_ms(t, hidden, inter, topk, e, tp, ep):
    copies = t * topk / ep
    local = e / ep
    touched = local * (1 - np.exp(-copies / local))
    bytes_ = touched * 3 * hidden * inter / tp * 1.0
    flops = 2 * 3 * copies * hidden * inter / tp
    return (_smooth_max(bytes_ / BW, flops / PEAK["fp8"]) + 2 * FLOOR_S) * 1e3


def allreduce_ms(n, elements):
    bus = 2 * (n - 1) / n * elements * 2
    return (8e-6 + bus / 400e9) * 1e3


def _table(path: Path, columns: dict[str, list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def _meta(path: Path, engine: str, version: str, table: str) -> None:
    path.write_text(
        f"schema_version: 1\nprovenance: collected\nruntime:\n  framework: {engine}\n  version: {version}\n"
        f"tables:\n  {table}:\n    status: complete\n"
    )


def _common(n: int, op: str, engine: str, version: str, source: str) -> dict[str, list]:
    return {
        "framework": [engine.upper()] * n,
        "version": [version] * n,
        "device": ["NVIDIA H200"] * n,
        "op_name": [op] * n,
        "kernel_source": [source] * n,
    }


def write_database(root: Path) -> Path:
    """A small aiconfigurator-core tree: h200_sxm (trtllm 1.3.0rc20 current + an older 1.2.0),
    and b300_sxm (not in the catalog). Returns the systems directory."""
    systems = root / "aiconfigurator_core" / "systems"
    data = systems / "data"
    (systems).mkdir(parents=True)
    (systems / "query_versions.yaml").write_text(
        'schema_version: 1\ndefaults:\n  trtllm: {current: "1.3.0rc20", previous: null}\n'
    )
    meta = root / "aiconfigurator_core-0.12.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: aiconfigurator-core\nVersion: 0.12.0\n")
    v = "1.3.0rc20"
    for db_gpu in ("h200_sxm", "b300_sxm"):
        # GEMM
        ms, ns, ks, ds = [], [], [], []
        for dtype in ("bfloat16", "fp8"):
            for m in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192):
                for n in (256, 1024, 4096, 16384):
                    for k in (256, 1024, 4096, 16384):
                        ms.append(m), ns.append(n), ks.append(k), ds.append(dtype)
        lat = [float(gemm_ms(d, m, n, k)) for d, m, n, k in zip(ds, ms, ns, ks, strict=True)]
        d = data / db_gpu / "gemm" / "trtllm" / v
        _table(
            d / "gemm_perf.parquet",
            {
                **_common(len(ms), "gemm", "trtllm", v, "torch_flow"),
                "gemm_dtype": ds,
                "m": ms,
                "n": ns,
                "k": ks,
                "latency": lat,
            },
        )
        _meta(d / "collection_meta.yaml", "trtllm", v, "gemm_perf")
    # an older version with different numbers, which the importer must not pick
    d = data / "h200_sxm" / "gemm" / "trtllm" / "1.2.0"
    _table(
        d / "gemm_perf.parquet",
        {
            **_common(4, "gemm", "trtllm", "1.2.0", "torch_flow"),
            "gemm_dtype": ["bfloat16"] * 4,
            "m": [1, 2, 4, 8],
            "n": [256] * 4,
            "k": [256] * 4,
            "latency": [1.0] * 4,
        },
    )
    # attention
    rows: dict[str, list] = {
        k: []
        for k in (
            "batch_size",
            "isl",
            "num_heads",
            "num_key_value_heads",
            "head_dim",
            "window_size",
            "beam_width",
            "attn_dtype",
            "kv_cache_dtype",
            "step",
            "latency",
        )
    }
    grows = {k: [] for k in rows}
    for b in (1, 2, 4, 8, 16, 32, 64):
        for h, kvh in ((8, 1), (8, 8), (32, 8), (64, 8), (16, 2)):
            for hd in (64, 128):
                for isl in (16, 64, 256, 1024, 4096):
                    vals = (
                        b,
                        isl,
                        h,
                        kvh,
                        hd,
                        0,
                        1,
                        "bfloat16",
                        "bfloat16",
                        0,
                        float(ctx_attention_ms(b, isl, h, kvh, hd)),
                    )
                    for key, val in zip(rows, vals, strict=True):
                        rows[key].append(val)
                for step in (1, 15, 127, 1023, 8191):
                    vals = (
                        b,
                        1,
                        h,
                        kvh,
                        hd,
                        0,
                        1,
                        "bfloat16",
                        "fp8",
                        step,
                        float(gen_attention_ms(b, step + 1, h, kvh, hd)),
                    )
                    for key, val in zip(grows, vals, strict=True):
                        grows[key].append(val)
    # a sliding-window row the importer must leave out
    for key, val in zip(rows, (1, 16, 8, 1, 64, 128, 1, "bfloat16", "bfloat16", 0, 99.0), strict=True):
        rows[key].append(val)
    d = data / "h200_sxm" / "attention" / "trtllm" / v
    _table(
        d / "context_attention_perf.parquet",
        {**_common(len(rows["isl"]), "context_attention", "trtllm", v, "torch_flow"), **rows},
    )
    _table(
        d / "generation_attention_perf.parquet",
        {**_common(len(grows["isl"]), "generation_attention", "trtllm", v, "torch_flow"), **grows},
    )
    _meta(d / "collection_meta.yaml", "trtllm", v, "context_attention_perf")
    # MoE
    mo: dict[str, list] = {
        k: []
        for k in (
            "moe_dtype",
            "num_tokens",
            "hidden_size",
            "inter_size",
            "topk",
            "num_experts",
            "moe_tp_size",
            "moe_ep_size",
            "distribution",
            "latency",
        )
    }
    for t in (1, 4, 16, 64, 256, 1024, 4096):
        for hidden, inter, topk, e in ((4096, 1024, 8, 128), (2048, 768, 8, 64), (4096, 2048, 2, 8)):
            for tp, ep in ((1, 1), (2, 1), (1, 4), (1, 8)):
                for dist in ("balanced", "power_law_1.2"):
                    lat = float(moe_ms(t, hidden, inter, topk, e, tp, ep)) * (1.0 if dist == "balanced" else 1.5)
                    for key, val in zip(mo, ("fp8", t, hidden, inter, topk, e, tp, ep, dist, lat), strict=True):
                        mo[key].append(val)
    d = data / "h200_sxm" / "moe" / "trtllm" / v
    _table(
        d / "moe_perf.parquet", {**_common(len(mo["num_tokens"]), "moe", "trtllm", v, "moe_torch_flow_cutlass"), **mo}
    )
    # all-reduce (engine) and NCCL
    ns, sizes = [], []
    for n in (2, 4, 8):
        for e in 2 ** np.arange(7, 28, 1):
            ns.append(n), sizes.append(int(e))
    lat = [float(allreduce_ms(n, s)) for n, s in zip(ns, sizes, strict=True)]
    d = data / "h200_sxm" / "comm" / "trtllm" / v
    _table(
        d / "custom_allreduce_perf.parquet",
        {
            **_common(len(ns), "all_reduce", "trtllm", v, "TRTLLM"),
            "allreduce_dtype": ["bfloat16"] * len(ns),
            "num_gpus": ns,
            "message_size": sizes,
            "latency": lat,
            "implementation": ["trtllm"] * len(ns),
        },
    )
    d = data / "h200_sxm" / "comm" / "nccl" / "2.29.2"
    _table(
        d / "nccl_perf.parquet",
        {
            **_common(len(ns), "all_reduce", "trtllm", "2.29.2", "NCCL"),
            "nccl_dtype": ["half"] * len(ns),
            "num_gpus": ns,
            "message_size": sizes,
            "latency": [x * 1.3 for x in lat],
        },
    )
    return systems


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Path:
    return write_database(tmp_path_factory.mktemp("aic"))


@pytest.fixture(scope="module")
def imported(database, tmp_path_factory) -> tuple[list[KernelRecord], list[str], Path]:
    src = ki.Source(database)
    records, notes = ki.import_records(src)
    out = tmp_path_factory.mktemp("kernels")
    ki.write_library(records, out, src.package_version)
    return records, notes, out


def _by(records, op, dtype=None):
    return next(r for r in records if r.op == op and (dtype is None or r.dtype == dtype))


# --- interpolation ----------------------------------------------------------------------------


def test_interp_reproduces_power_laws_and_extrapolates_above():
    axis = np.log(np.array([1.0, 10.0, 100.0]))
    y = np.log(np.array([2.0, 20.0, 200.0]))  # t = 2 m
    m = np.array([3.0, 50.0, 1000.0, 0.1])
    got = np.exp(interp_log_grid([axis], y, [np.log(m)]))
    np.testing.assert_allclose(got[:3], 2 * m[:3], rtol=1e-12)
    assert got[3] == pytest.approx(2.0)  # held below the first knot


def test_interp_multilinear_matches_separable_power_law():
    g = [np.array([1.0, 4.0, 16.0]), np.array([2.0, 8.0]), np.array([1.0, 3.0, 9.0, 27.0])]
    grid = np.meshgrid(*g, indexing="ij")
    t = 1e-6 * grid[0] ** 0.5 * grid[1] * grid[2] ** 2
    rec = KernelRecord(
        name="x",
        gpu="X",
        engine="trtllm",
        engine_version="1",
        op="gemm",
        dtype="bf16",
        axes=OP_AXES["gemm"],
        grid=tuple(g),
        time_s=t,
    )
    m, n, k = np.array([2.0, 10.0]), np.array([3.0, 5.0]), np.array([2.0, 20.0])
    np.testing.assert_allclose(rec.time_at(m, n, k), 1e-6 * m**0.5 * n * k**2, rtol=1e-9)
    assert rec.time_for(m=2.0, n=3.0, k=2.0) == pytest.approx(1e-6 * 2**0.5 * 3 * 4)


def test_record_rejects_bad_shapes():
    with pytest.raises(ValueError, match="axes"):
        KernelRecord(
            name="x",
            gpu="X",
            engine="e",
            engine_version="1",
            op="gemm",
            dtype="bf16",
            axes=("m", "n"),
            grid=(np.array([1.0]), np.array([1.0])),
            time_s=np.ones((1, 1)),
        )
    with pytest.raises(ValueError, match="positive"):
        KernelRecord(
            name="x",
            gpu="X",
            engine="e",
            engine_version="1",
            op="allreduce",
            dtype="bf16",
            axes=OP_AXES["allreduce"],
            grid=(np.array([2.0]), np.array([1.0, 2.0])),
            time_s=np.array([[1.0, -1.0]]),
        )


# --- importer -----------------------------------------------------------------------------------


def test_import_round_trip(imported):
    records, notes, out = imported
    assert any("b300_sxm" in n for n in notes)  # not in the catalog: skipped, and said so
    assert {r.gpu for r in records} == {"H200-SXM"}
    ops = {(r.engine, r.op, r.dtype) for r in records}
    assert ("trtllm", "gemm", "bf16") in ops and ("trtllm", "gemm", "fp8") in ops
    assert ("trtllm", "context_attention", "bf16") in ops
    assert ("trtllm", "generation_attention", "bf16-kvfp8") in ops
    assert ("trtllm", "moe", "fp8") in ops and ("trtllm", "allreduce", "bf16") in ops
    assert ("nccl", "nccl_allreduce", "fp16") in ops
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == ["H200-SXM.nccl.json", "H200-SXM.trtllm.json"]
    loaded = {r.name: r for p in out.glob("*.json") for r in read_records(p)}
    assert set(loaded) == {r.name for r in records}
    for r in records:
        back = loaded[r.name]
        np.testing.assert_allclose(back.time_s, r.time_s, rtol=1e-12)
        assert back.source == r.source and back.fit == r.fit
    gemm = _by(records, "gemm", "bf16")
    assert gemm.engine_version == "1.3.0rc20"  # the query_versions current, not 1.2.0
    assert gemm.name == "H200-SXM/trtllm-1.3.0rc20/gemm/bf16"
    assert gemm.source["package"] == "aiconfigurator-core" and gemm.source["package_version"] == "0.12.0"
    assert gemm.source["database_gpu"] == "h200_sxm" and gemm.source["device"] == "NVIDIA H200"
    assert gemm.source["table"] == "h200_sxm/gemm/trtllm/1.3.0rc20/gemm_perf.parquet"
    assert gemm.collection["provenance"] == "collected" and gemm.collection["table_status"] == "complete"
    assert gemm.basis == "kernel-db trtllm 1.3.0rc20"
    ctx = _by(records, "context_attention")
    assert ctx.fit["rows"] == 7 * 5 * 2 * 5  # the sliding-window row is left out
    moe = _by(records, "moe")
    assert "distribution=balanced" in moe.source["filters"]


def test_import_from_wheel_file(database, tmp_path):
    import zipfile

    wheel = tmp_path / "aiconfigurator_core-0.12.0-cp311-abi3-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for p in database.rglob("*"):
            if (p.is_file() and "/h200_sxm/comm/" in str(p)) or p.name == "query_versions.yaml":
                z.write(p, str(p.relative_to(database.parent.parent)))
    src = ki.Source(wheel)
    assert src.package_version == "0.12.0"
    records, _ = ki.import_records(src, gpus=["H200-SXM"], engines=["nccl"])
    assert [r.op for r in records] == ["nccl_allreduce"]


def test_surfaces_fit_synthetic_rows(imported):
    records, _, _ = imported
    for r in records:
        assert r.fit["median_abs_error"] <= 0.05, r.name
        assert r.fit["p90_abs_error"] <= 0.15, r.name
    gemm = _by(records, "gemm", "fp8")
    # off-grid shapes, between the collected ones
    m, n, k = np.array([3.0, 100.0, 3000.0]), np.array([2000.0, 600.0, 8000.0]), np.array([700.0, 5000.0, 2000.0])
    np.testing.assert_allclose(gemm.time_at(m, n, k), gemm_ms("fp8", m, n, k) * 1e-3, rtol=0.1)
    ctx = _by(records, "context_attention")
    b, isl = np.array([3.0, 24.0]), np.array([500.0, 2000.0])
    want = ctx_attention_ms(b, isl, 32, 8, 128) * 1e-3
    np.testing.assert_allclose(context_attention_time_s(ctx, b, isl, 32, 8, 128), want, rtol=0.2)
    gen = _by(records, "generation_attention")
    want = gen_attention_ms(b, np.array([300.0, 3000.0]), 32, 8, 128) * 1e-3
    np.testing.assert_allclose(
        generation_attention_time_s(gen, b, np.array([300.0, 3000.0]), 32, 8, 128), want, rtol=0.2
    )
    ar = _by(records, "allreduce")
    msg = np.array([1e5, 3e6])
    np.testing.assert_allclose(
        allreduce_time_s(ar, msg, np.array([8.0, 4.0])), allreduce_ms(np.array([8.0, 4.0]), msg / 2) * 1e-3, rtol=0.05
    )
    assert allreduce_time_s(ar, msg, np.array([1.0, 1.0])).tolist() == [0.0, 0.0]
    moe = _by(records, "moe")
    t = moe_time_s(moe, np.array([100.0]), 8, 128, 4096, 1024, 1, 1)
    assert t[0] == pytest.approx(moe_ms(100, 4096, 1024, 8, 128, 1, 1) * 1e-3, rel=0.2)


def test_fit_error_fields(imported):
    records, _, _ = imported
    for r in records:
        f = r.fit
        assert {"rows", "median_abs_error", "p90_abs_error", "max_abs_error", "shapes", "cells", "sample"} <= set(f)
        assert 0 <= f["median_abs_error"] <= f["p90_abs_error"] <= f["max_abs_error"]
        assert f["cells"] == r.time_s.size and len(f["sample"]) <= ki.SAMPLE_ROWS
        assert np.all(r.sample_errors() <= f["max_abs_error"] + 1e-3)
    # the fit fields agree with an error recomputed from the rows
    gemm = _by(records, "gemm", "bf16")
    ms = np.array([1, 16, 1024, 8192] * 4, dtype=float)
    ns = np.repeat([256.0, 1024.0, 4096.0, 16384.0], 4)
    err = np.abs(gemm.time_at(ms, ns, 1024.0) / (gemm_ms("bfloat16", ms, ns, 1024.0) * 1e-3) - 1)
    assert np.max(err) <= gemm.fit["max_abs_error"] + 1e-3


def test_fit_grid_fills_cells_without_rows():
    knots = [np.array([1.0, 2.0, 4.0, 8.0]), np.array([1.0, 2.0, 4.0])]
    x = np.array([[1, 1], [2, 1], [4, 1], [8, 1], [1, 2], [1, 4], [2, 2], [8, 4]], dtype=float)
    t = x[:, 0] * x[:, 1] ** 2
    grid = ki.fit_grid(x, t, knots)
    assert np.all(np.isfinite(grid)) and np.all(grid > 0)
    assert grid[2, 2] == pytest.approx(4 * 16, rel=0.1)  # never measured; smooth in log space


def test_plan_errors(database):
    src = ki.Source(database)
    with pytest.raises(ki.KernelImportError, match="unknown GPU"):
        ki.plan(src, gpus=["tpu_v9"])
    with pytest.raises(ki.KernelImportError, match="unknown engine"):
        ki.plan(src, engines=["tgi"])
    refs, notes = ki.plan(src, gpus=["H100-SXM"])
    assert refs == [] and any("no kernel tables for h100_sxm" in n for n in notes)


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_import_ls_show(database, tmp_path):
    out = tmp_path / "k"
    res = runner.invoke(
        app, ["kernels", "import", "--source", str(database), "--gpu", "h200_sxm", "--engine", "trtllm", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and (out / "H200-SXM.trtllm.json").exists()
    assert not (out / "H200-SXM.nccl.json").exists()
    res = runner.invoke(app, ["kernels", "ls", "--dir", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert {r["op"] for r in rows} == {"gemm", "context_attention", "generation_attention", "moe", "allreduce"}
    res = runner.invoke(app, ["kernels", "ls", "--dir", str(out)])
    assert res.exit_code == 0 and "gemm" in res.output
    res = runner.invoke(app, ["kernels", "show", "H200-SXM/trtllm-1.3.0rc20/gemm/fp8", "--dir", str(out)])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)
    assert shown["source"]["package"] == "aiconfigurator-core" and shown["basis"] == "kernel-db trtllm 1.3.0rc20"
    res = runner.invoke(app, ["kernels", "show", "H200-SXM/trtllm-1.3.0rc20/gemm/fp9", "--dir", str(out)])
    assert res.exit_code == 2 and "did you mean" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "/nonexistent/aic"], "does not exist"),
        (["--gpu", "tpu_v9"], "unknown GPU"),
    ],
)
def test_cli_import_errors(database, tmp_path, args, message):
    if "--gpu" in args:
        args = ["--source", str(database), *args]
    res = runner.invoke(app, ["kernels", "import", *args, "-o", str(tmp_path)])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_cli_import_without_pyarrow(database, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    res = runner.invoke(app, ["kernels", "import", "--source", str(database), "-o", str(tmp_path)])
    assert res.exit_code == 2 and "pyarrow" in res.output and "servesweep[kernels]" in res.output


def test_cli_installed_source_missing(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == ki.MODULE else real(name, *a))
    res = runner.invoke(app, ["kernels", "import", "-o", str(tmp_path)])
    assert res.exit_code == 2 and "not installed" in res.output


# --- committed records -----------------------------------------------------------------------------


def test_committed_records_load_and_meet_their_stated_error():
    lib = default_library()
    assert lib.records, "objectives/data/kernels/ holds no records"
    names = [r.name for r in lib.records]
    assert len(names) == len(set(names))
    for r in lib.records:
        assert r.source.get("package") == "aiconfigurator-core" and r.source.get("imported"), r.name
        assert r.fit["rows"] > 0 and 0 <= r.fit["median_abs_error"] <= r.fit["p90_abs_error"], r.name
        errors = r.sample_errors()
        assert errors.size > 0, r.name
        assert np.all(errors <= r.fit["max_abs_error"] + 2e-3), (r.name, errors.max())
    catalog_gpus = {"H100-SXM", "H200-SXM", "B200", "GB200", "A100-SXM-80GB", "L40S"}
    assert catalog_gpus <= set(lib.gpus())
    assert lib.get("H200-SXM", "trtllm", "gemm", "fp8") is not None


def test_library_from_missing_dir_is_empty(tmp_path):
    assert KernelLibrary.from_dir(tmp_path / "none").records == []


# --- the kernel model (objectives/kernel_timing.py) ---------------------------------------------------


def _kernel_batch(model: str, gpu: str, weights: str = "bf16", kv: str = "bf16", tp=(1, 2, 4, 8)):
    from objectives.accelerators import get_accelerator
    from objectives.batch import build_batch
    from objectives.efficiency import EfficiencyModel
    from objectives.models import load_model

    return build_batch(
        load_model(model),
        get_accelerator(gpu),
        weights=weights,
        kv_cache=kv,
        tp=np.array(tp),
        batch=np.array([1, 8, 64, 256])[: len(tp)],
        isl=1024,
        osl=256,
        efficiency=EfficiencyModel.kernel_default("trtllm"),
    )


def test_kernel_model_gemm_matches_the_record():
    from objectives.kernel_timing import M_LOG2, interp_rows

    b = _kernel_batch("Llama-3.1-8B", "H200-SXM", tp=(1,))
    assert b.uses_kernels
    rec = default_library().get("H200-SXM", "trtllm", "gemm", "bf16")
    hidden = 4096.0
    from objectives.memory import attention_params_per_gpu_per_layer

    n_attn = float(attention_params_per_gpu_per_layer(b)[0]) / hidden
    n_mlp = float(b.dense_mlp_params_per_layer[0]) / hidden
    m = np.array([1.0, 64.0, 1024.0])
    want = 32 * (rec.time_at(m, n_attn, hidden) + rec.time_at(m, n_mlp, hidden))
    got = interp_rows(np.repeat(b.kt_gemm_dense, 3, axis=0), M_LOG2, m)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_kernel_model_evaluates_every_gpu_kind():
    from objectives.serving import evaluate

    for model, gpu, weights, kv in (
        ("Llama-3.1-70B", "H200-SXM", "fp8", "fp8"),  # own records
        ("Llama-3.1-70B", "MI300X", "fp8", "fp8"),  # scaled from H200-SXM
        ("Mixtral-8x7B", "B200", "fp4", "fp8"),  # MoE, fp4
        ("Llama-3.1-8B", "A100-SXM-80GB", "int4", "bf16"),  # weight-only on a bf16 surface
    ):
        m = evaluate(_kernel_batch(model, gpu, weights, kv))
        ok = m.feasible
        assert ok.any(), (model, gpu)
        assert np.all(np.isfinite(m.output_tokens_per_s_per_gpu[ok]) & (m.output_tokens_per_s_per_gpu[ok] > 0))
        assert np.all(m.decode.gemm_s[ok] > 0) and np.all(m.decode.attention_s[ok] > 0)
    # the basis of each term says where it came from
    from objectives.accelerators import get_accelerator
    from objectives.efficiency import EfficiencyModel
    from objectives.kernel_timing import term_basis
    from objectives.models import load_model

    eff = EfficiencyModel.kernel_default("trtllm")
    own = term_basis(eff, load_model("Llama-3.1-70B"), get_accelerator("H200-SXM"), "fp8", "fp8")
    assert own["gemm"].startswith("kernel-db trtllm 1.3.0rc20")
    scaled = term_basis(eff, load_model("Llama-3.1-70B"), get_accelerator("MI300X"), "fp8", "fp8")
    assert scaled["gemm"].startswith("scaled from H200-SXM") and scaled["overhead"]


def test_kernel_model_decode_grows_with_batch_and_context():
    from objectives.timing import decode_step_time_s

    b = _kernel_batch("Llama-3.1-8B", "H100-SXM", tp=(1, 1, 1, 1))
    small = decode_step_time_s(b, np.array([1.0, 1.0, 64.0, 64.0]), np.array([512.0, 8192.0, 512.0, 8192.0]))
    t = small.attention_s
    assert t[1] > t[0] and t[3] > t[2] and t[2] > t[0]
    assert np.all(small.gemm_s[2:] >= small.gemm_s[:2] * 0.99)


def test_kernel_model_engine_chooses_its_records():
    from objectives.accelerators import get_accelerator
    from objectives.efficiency import EfficiencyModel
    from objectives.kernel_timing import term_basis
    from objectives.models import load_model

    model, gpu = load_model("Llama-3.1-8B"), get_accelerator("H100-SXM")
    for engine, version in (("trtllm", "1.3.0rc20"), ("vllm", "0.24.0"), ("sglang", "0.5.14")):
        eff = EfficiencyModel.kernel_default(engine)
        assert eff.kernel_engine == engine
        basis = term_basis(eff, model, gpu, "bf16", "bf16", tp=2)
        assert basis["gemm"].startswith(f"kernel-db {engine} {version}"), basis
        assert basis["communication"].startswith(f"kernel-db {engine}"), basis
    # the default model names no engine and keeps zero-width tables
    from objectives.batch import build_batch

    assert not build_batch(model, gpu).uses_kernels
