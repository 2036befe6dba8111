"""Prediction intervals (issue 15): the conformal math on synthetic residuals, the fallback
hierarchy and its extrapolated flag, coverage of the shipped method on the public file's
leave-one-model-family-out folds, intervals in every JSON output (estimate --json, front --format
json, GET /sweeps/NAME/front), `risk: p90`, and the report's error bars in headless Chromium."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from objectives.uncertainty import (
    MIN_ROWS,
    WIDEN_PER_LEVEL,
    IntervalTable,
    Region,
    conformal_quantiles,
    metric_intervals,
)
from search.cli import app

DATA = Path(__file__).parent / "data"
REQUIRED = ("output_tokens_per_s_per_gpu", "ttft_s", "tpot_s", "usd_per_million_output_tokens")
SPEC = {
    "name": "intervals-8b",
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "workload": "chat",
    "accelerators": ["H100-SXM", "A100-SXM-80GB"],
    "space": {
        "tp": [1, 2],
        "weights": ["bf16", "fp8"],
        "kv_cache": ["fp8"],
        "max_batch": [8, 64, 256],
        "chunked_prefill": [8192],
    },
    "sampler": "exhaustive",
    "seed": 0,
}


# ------------------------------------------------------------------------------ the math


def test_conformal_interval_covers_80_percent_of_held_out_synthetic_rows() -> None:
    rng = np.random.default_rng(0)
    region = Region("hopper", "dense", "fp8", "trtllm", "throughput")
    for n in (30, 200, 2000):
        covered = []
        for _ in range(40):
            fit = rng.normal(0.1, 0.2, n)
            table = IntervalTable.fit([region] * n, fit)
            iv = table.lookup(region)
            held = rng.normal(0.1, 0.2, 500)
            covered.append(np.mean((held >= iv.lo) & (held <= iv.hi)))
        # split conformal: at least 80 % in expectation, and not much more
        assert 0.78 <= float(np.mean(covered)) <= 0.86, (n, np.mean(covered))
        assert not iv.extrapolated and iv.level == 0


def test_conformal_quantiles_are_order_statistics_and_need_nine_rows() -> None:
    r = np.arange(1, 20, dtype=float)  # n = 19: ranks floor(20 * .1) = 2 and ceil(20 * .9) = 18
    assert conformal_quantiles(r) == (2.0, 18.0)
    assert conformal_quantiles(np.arange(8.0)) == (-math.inf, math.inf)


def test_sparse_region_falls_back_to_its_parent_widened_and_flagged() -> None:
    rng = np.random.default_rng(1)
    sparse = Region("blackwell", "dense", "fp4", "trtllm", "throughput")
    rich = Region("blackwell", "dense", "fp8", "trtllm", "throughput")
    regions = [sparse] * 3 + [rich] * 60
    residuals = list(rng.normal(0.0, 0.1, 63))
    table = IntervalTable.fit(regions, residuals)
    own = table.lookup(rich)
    iv = table.lookup(sparse)
    assert own.extrapolated is False and own.level == 0
    assert iv.extrapolated is True and iv.region_rows == 3 < MIN_ROWS
    assert iv.used == "blackwell/dense/*/*/throughput" and iv.level == 2
    assert iv.widen == pytest.approx(1 + 2 * WIDEN_PER_LEVEL)
    parent = table.regions[iv.used]
    assert iv.hi - iv.lo == pytest.approx((parent["hi"] - parent["lo"]) * iv.widen)
    # an unseen GPU family and metric with no rows of its own: the pooled symmetric level
    far = table.lookup(Region("cdna3", "mla", "bf16", "vllm", "ttft"))
    assert far.extrapolated and far.level == 5 and far.lo == pytest.approx(-far.hi)


def test_costs_follow_throughput_inversely() -> None:
    region = Region("hopper", "dense", "fp8", "trtllm", "throughput")
    table = IntervalTable.fit([region] * 50, list(np.linspace(-0.2, 0.1, 50)))
    got = metric_intervals(
        table,
        {"output_tokens_per_s_per_gpu": 1000.0, "usd_per_million_output_tokens": 2.0},
        gpu_family="hopper",
        model_class="dense",
        weights="fp8",
    )
    thr, usd = got["intervals"]["output_tokens_per_s_per_gpu"], got["intervals"]["usd_per_million_output_tokens"]
    assert thr["p10"] < 1000.0 < thr["p90"]
    assert usd["p10"] == pytest.approx(2.0 * 1000.0 / thr["p90"])
    assert usd["p90"] == pytest.approx(2.0 * 1000.0 / thr["p10"])
    assert got["evidence"]["throughput"]["region_rows"] == 50
    assert got["extrapolated"] and set(got["extrapolated_metrics"]) == {"ttft", "tpot"}


def test_table_round_trips_through_yaml(tmp_path: Path) -> None:
    table = IntervalTable.load()
    assert table.source["files"] and table.source["code_version"] and table.source["date"]
    table.write(tmp_path / "t.yaml")
    again = IntervalTable.load(tmp_path / "t.yaml")
    region = Region("hopper", "dense", "fp8", "trtllm", "throughput")
    assert again.lookup(region) == table.lookup(region)


def test_leave_one_model_family_out_coverage_of_the_public_file_is_in_the_target_band() -> None:
    from search.calibration.intervals import coverage_by, leave_one_family_out, residuals

    res, _ = residuals([DATA / "measurements.public.jsonl"])
    assert len(res) == 556
    folds = leave_one_family_out(res)
    coverage = float(np.mean([f.covered for f in folds]))
    assert 0.72 <= coverage <= 0.88, coverage
    assert len(coverage_by(folds, "family")) >= 5


# ------------------------------------------------------------------------------ every JSON output


def _walk(node: Any, path: str = "$") -> list[str]:
    """Paths of dicts holding a predicted metric without its interval (nested `intervals` or
    flat `<metric>_p10` / `_p90`)."""
    missing = []
    if isinstance(node, dict):
        for key in REQUIRED:
            if node.get(key) is None:
                continue
            nested = (node.get("intervals") or {}).get(key)
            ok = nested is not None or (f"{key}_p10" in node and f"{key}_p90" in node)
            if not ok:
                missing.append(f"{path}.{key}")
            lo, hi = (nested["p10"], nested["p90"]) if nested else (node.get(f"{key}_p10"), node.get(f"{key}_p90"))
            if ok and not (lo <= hi):
                missing.append(f"{path}.{key} (p10 > p90)")
        if any(node.get(k) is not None for k in REQUIRED) and "extrapolated" not in node:
            missing.append(f"{path}.extrapolated")
        for k, v in node.items():
            if k != "intervals":
                missing += _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            missing += _walk(v, f"{path}[{i}]")
    return missing


def test_estimate_json_and_text_carry_intervals() -> None:
    runner = CliRunner()
    args = ["estimate", "--model", "llama-3.1-70b", "--gpu", "h100", "--tp", "4", "--weights", "fp8", "--batch", "64"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert _walk(data) == []
    assert set(REQUIRED) <= set(data["intervals"])
    assert data["evidence"]["throughput"]["region"] == "hopper/dense/fp8/trtllm/throughput"
    assert data["evidence"]["throughput"]["region_rows"] >= MIN_ROWS
    assert isinstance(data["extrapolated"], bool)
    text = runner.invoke(app, args, env={"COLUMNS": "200"}).stdout
    assert "80%:" in text and "evidence: throughput:" in text


@pytest.fixture(scope="module")
def sweep(local_ray, tmp_path_factory):
    from search.store import Store
    from search.sweeps import parse_spec, run_sweep, start_sweep

    root = tmp_path_factory.mktemp("intervals")
    url = f"sqlite:///{root / 'servesweep.db'}"
    store = Store(url)
    name = start_sweep(store, parse_spec(SPEC), yaml.safe_dump(SPEC), None, workers=2)
    run_sweep(store, name, workers=2)
    return url, name, root


def test_front_json_and_service_front_carry_intervals(sweep) -> None:
    from fastapi.testclient import TestClient

    from search.service import ServiceSettings, create_app

    url, name, root = sweep
    r = CliRunner().invoke(app, ["front", name, "--format", "json", "--storage", url])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["front"] and _walk(data) == []
    assert all("evidence" in p and "extrapolated" in p for p in data["front"])
    rec = data["recommendations"]["cheapest"]
    assert set(REQUIRED) <= set(rec["intervals"]) and "within_error" in rec
    csv = CliRunner().invoke(app, ["front", name, "--format", "csv", "--storage", url]).stdout
    assert "tpot_s_p10" in csv.splitlines()[0]

    token = "alice-secret-token-0123456789"
    settings = ServiceSettings(storage_url=url, tokens={"alice": token}, report_dir=root / "reports", workers=1)
    with TestClient(create_app(settings)) as client:
        got = client.get(f"/sweeps/{name}/front", headers={"Authorization": f"Bearer {token}"})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["front"] and _walk(body) == []
        assert set(REQUIRED) <= set(body["recommendations"]["knee"]["intervals"])


def test_risk_p90_optimizes_the_pessimistic_bound() -> None:
    from search.sweeps import AnalyticEvaluator, parse_spec

    point = AnalyticEvaluator(parse_spec(SPEC))
    risky = AnalyticEvaluator(parse_spec({**SPEC, "risk": "p90"}))
    ids = np.arange(point.space.size)
    a, b = point.evaluate(ids), risky.evaluate(ids)
    ok = np.isfinite(a.objectives).all(axis=1)
    assert ok.any()
    assert (b.objectives[ok] >= a.objectives[ok] - 1e-12).all()
    assert (b.objectives[ok] > a.objectives[ok]).any()
    np.testing.assert_array_equal(a.feasible, b.feasible)  # constraints stay on the point values


# ------------------------------------------------------------------------------ the report


def test_report_renders_intervals_in_chromium(sweep, tmp_path) -> None:
    from tests.test_report import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():  # pragma: no cover - .ci/run installs it
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    import playwright.sync_api as playwright

    url, name, _ = sweep
    out = tmp_path / "report.html"
    r = CliRunner().invoke(app, ["report", name, "-o", str(out), "--storage", url])
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert "How accurate is this?" in html
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(out.as_uri())
            page.wait_for_selector("#pareto-chart .main-svg", timeout=30_000)
            bars = page.evaluate(
                "document.getElementById('pareto-chart').data"
                ".filter(t => t.name.startsWith('recommended: '))"
                ".map(t => [t.error_x && t.error_x.array[0], t.error_y && t.error_y.array[0]])"
            )
            assert bars and all(x is not None and y is not None and x >= 0 and y >= 0 for x, y in bars), bars
            # plotly drew the error bars
            assert page.locator("#pareto-chart g.errorbar").count() >= len(bars)
            head = page.locator("#recommendations thead th").all_text_contents()
            assert "TPOT p10 – p90" in head and "$/Mtok p10 – p90" in head
            cells = page.locator("#recommendations tbody tr").first.locator("td").all_text_contents()
            assert " – " in cells[head.index("TPOT p10 – p90")] and "$" in cells[head.index("$/Mtok p10 – p90")]
            assert page.locator("#accuracy").count() == 1
            assert page.locator("#validation-table tbody tr").count() >= 5
            assert page.locator("#pick-evidence tbody tr").count() == 3
            assert page.locator("#within-error").count() == 1
            shot = tmp_path / "report-intervals.png"
            page.locator("#pareto-chart").scroll_into_view_if_needed()
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 50_000
            artefacts = os.environ.get("SERVESWEEP_TEST_ARTEFACTS")
            if artefacts:
                Path(artefacts).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(artefacts) / shot.name)
            assert errors == [], errors
        finally:
            browser.close()
