"""The procurement report end to end: a small exhaustive sweep on a real local Ray and SQLite,
`servesweep report`, and the page rendered in headless Chromium with the network disabled.

The browser is Debian's `chromium` driven by Python Playwright (`executable_path`, so Playwright
never downloads a browser). Install: `apt-get install -y chromium` and `pip install playwright`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from search.cli import app
from search.outputs import KINDS, for_store
from search.store import Store
from search.sweeps import parse_spec, run_sweep, start_sweep

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: nothing can be fetched
]
GPUS = ["H100-SXM", "A100-SXM-80GB", "MI300X"]
SPEC = {
    "name": "report-8b",
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "workload": "chat",
    "accelerators": GPUS,
    "space": {
        "tp": [1, 2],
        "weights": ["bf16", "fp8"],
        "kv_cache": ["bf16", "fp8"],
        "max_batch": [1, 8, 32, 128, 512],
        "chunked_prefill": [2048, 8192],
    },
    "constraints": {"max_gpus": 4},  # fleets sized with headroom: some exceed it (drawn faint)
    "sampler": "exhaustive",
    "seed": 0,
}


@pytest.fixture(scope="session")
def sweep(local_ray, tmp_path_factory):
    """(store, sweep name, report path, analysis) of a finished small exhaustive sweep."""
    root = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{root / 'servesweep.db'}"
    store = Store(url)
    spec = parse_spec(SPEC)
    name = start_sweep(store, spec, yaml.safe_dump(SPEC), None, workers=2)
    run_sweep(store, name, workers=2)
    out = root / "report.html"
    result = CliRunner().invoke(app, ["report", name, "-o", str(out), "--storage", url])
    assert result.exit_code == 0, result.output
    return store, name, out, for_store(store, name)


@pytest.fixture(scope="session")
def browser():
    import playwright.sync_api as playwright  # a dev dependency: missing it is an error

    if not Path(CHROMIUM).exists():  # pragma: no cover - .ci/run installs Debian's chromium
        message = f"no Chromium at {CHROMIUM}: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI the browser check must run, never be skipped
        pytest.skip(message)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


# ------------------------------------------------------------------------------ the file


def test_report_is_self_contained(sweep):
    _, _, path, _ = sweep
    text = path.read_text(encoding="utf-8")
    # the page's own markup (script bodies emptied: plotly.js carries URL strings it never fetches)
    markup = re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", text, flags=re.S | re.I)
    assert markup.count("<script") >= 2
    # no script, stylesheet, image or link fetched from anywhere
    assert not re.search(r"""<script[^>]*\bsrc\s*=""", markup, re.I)
    assert not re.search(r"""<link\b""", markup, re.I)
    assert not re.search(r"""\b(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", markup, re.I)
    assert not re.search(r"""@import|url\(""", markup, re.I)
    assert "http://" not in markup and "https://" not in markup
    # plotly.js is inlined exactly once, however many figures the page has
    assert text.count("Plotly=") + text.count("window.Plotly") >= 1
    assert text.count("/** @license") <= 2 and len(text) > 1_000_000
    assert text.count('class="plotly-graph-div"') >= 2


def test_report_holds_every_section(sweep):
    _, _, path, _ = sweep
    text = path.read_text(encoding="utf-8")
    for anchor in ("summary", "question", "pareto", "rent-own", "sensitivity", "roofline", "per-accelerator", "launch"):
        assert f"id={anchor}" in text
    for gpu in GPUS:
        assert gpu in text
    assert "vllm serve" in text and "python -m sglang.launch_server" in text and "trtllm-serve" in text
    assert "--max-num-seqs" in text and "--max-running-requests" in text and "--max_batch_size" in text
    assert "defaults (no probe calibration)" in text
    assert "Uptime Institute" in text  # the ownership terms carry their sources


def test_report_of_a_per_request_sweep_uses_its_cost_axis(tmp_path):
    """A sweep whose cost objective is $ per request: the figure, the picks and the method say
    so, and the method states the fastest pick's tolerance (guided, in process: no Ray)."""
    data = {
        **SPEC,
        "name": "per-request",
        "space": {**SPEC["space"], "weights": ["fp8"], "kv_cache": ["fp8"], "chunked_prefill": [8192]},
        "objectives": [{"metric": "tpot"}, {"metric": "usd_per_request"}],
        "sampler": "tpe",
        "budget": {"trials": 12},
        "report": {"fastest_tolerance": 0.1},
    }
    url = f"sqlite:///{tmp_path / 'servesweep.db'}"
    store = Store(url)
    name = start_sweep(store, parse_spec(data), yaml.safe_dump(data), None, workers=1)
    run_sweep(store, name, workers=1, local=True)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", name, "-o", str(out), "--storage", url])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "TPOT against $ per request" in text  # the Pareto figure's title
    assert "within 10% of the fastest latency, the cheapest ($ per request" in text
    assert "<th>$/request</th>" in text or "$/request</th>" in text
    assert "Lowest $ per request" in text


def test_report_of_an_unknown_sweep_fails_cleanly(sweep, tmp_path):
    store, _, _, _ = sweep
    result = CliRunner().invoke(app, ["report", "nope", "-o", str(tmp_path / "x.html"), "--storage", store.url])
    assert result.exit_code == 2
    assert "no sweep named 'nope'" in " ".join(result.output.split())


# ------------------------------------------------------------------------------ in a browser


def _open(browser, path: Path, blocked: list[str]):
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 1000})
    page = context.new_page()

    def route(r):
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector("#pareto-chart .main-svg", timeout=30_000)
    return context, page, errors


def test_report_renders_offline_in_chromium(sweep, browser, tmp_path):
    store, name, path, analysis = sweep
    mixed = set(store.get_sweep(name)["price_table"].get("mixed") or [])
    blocked: list[str] = []
    context, page, errors = _open(browser, path, blocked)
    try:
        # the Pareto chart drew: Plotly's SVG, one trace per accelerator and kind, points in it
        names = page.evaluate("Array.from(document.getElementById('pareto-chart').data, t => t.name)")
        for gpu in GPUS:
            assert gpu in names
        assert "Pareto front" in names
        assert {f"recommended: {k}" for k in KINDS} <= set(names)
        assert page.locator("#pareto-chart g.trace.scatter").count() == len(names)
        assert page.locator("#pareto-chart g.trace.scatter path.point").count() > 20
        legend = page.locator("#pareto-chart .legendtext").all_text_contents()
        assert set(GPUS) <= set(legend)
        # infeasible points are drawn faint
        faint = page.evaluate(
            "document.getElementById('pareto-chart').data.filter(t => t.name.endsWith('(infeasible)'))"
            ".map(t => t.marker.opacity)"
        )
        assert faint and all(o < 0.5 for o in faint)
        # hovering a point shows its configuration
        cheapest = analysis["recommendations"]["cheapest"]
        curve = names.index("recommended: cheapest")
        page.evaluate(f"Plotly.Fx.hover('pareto-chart', [{{curveNumber: {curve}, pointNumber: 0}}])")
        page.wait_for_selector("#pareto-chart .hoverlayer .hovertext", timeout=5_000)
        hover = page.locator("#pareto-chart .hoverlayer .hovertext").first.text_content()
        assert cheapest["accelerator"] in hover and "TPOT" in hover
        # a roofline per recommended GPU drew too
        gpus = {analysis["recommendations"][k]["accelerator"] for k in KINDS}
        roofs = page.locator("div.js-plotly-plot[id^='roofline-']")
        assert roofs.count() == len(gpus)
        for i in range(roofs.count()):
            assert roofs.nth(i).locator("g.trace.scatter").count() >= 4  # two roofs, decode and prefill
        # the recommendation table holds the three expected rows
        rows = page.locator("#recommendations tbody tr")
        assert rows.count() == 3
        for i, kind in enumerate(KINDS):
            row = rows.nth(i)
            rec = analysis["recommendations"][kind]
            assert row.get_attribute("data-kind") == kind
            assert row.get_attribute("data-config-id") == str(rec["id"])
            cells = row.locator("td").all_text_contents()
            # a GPU priced from another provider's list than the rest is marked †
            assert cells[1] == rec["accelerator"] + ("†" if rec["accelerator"] in mixed else "")
            assert cells[5] == str(rec["max_batch"])
            assert cells[7] == f"${rec['usd_per_million_output_tokens']:.3g}"
        assert page.locator("#rent-vs-own tbody tr").count() == 3
        assert page.locator("#per-accelerator-table tbody tr").count() == len(GPUS)
        assert page.locator("#sensitivity-table tbody tr").count() == 2 * len(GPUS)
        assert page.locator("pre[data-runtime='vllm']").count() == 3
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 50_000
        assert blocked == [], f"the page tried to fetch {blocked}"
        assert errors == [], errors
    finally:
        context.close()


def test_report_log_axes_label_ticks_in_full_in_chromium(sweep, browser):
    """Issue 16, finding 18: the Pareto chart's log axes show the 1-2-5 ticks servesweep sets,
    each in full, not plotly's minor labels ('5', '2', '1000 2')."""
    _, _, path, _ = sweep
    context, page, errors = _open(browser, path, [])
    try:
        for axis in ("xtick", "ytick"):
            labels = page.locator(f"#pareto-chart .{axis} text").all_text_contents()
            assert len(labels) >= 2, labels
            want = page.evaluate(f"document.getElementById('pareto-chart').layout.{axis[0]}axis.ticktext")
            assert set(labels) <= set(want), (labels, want)
        assert not errors
    finally:
        context.close()


def test_report_of_a_sweep_where_nothing_fits_renders_in_chromium(local_ray, browser, tmp_path):
    """Issue 16, findings 11 and 18: nothing fits — the report says why, draws no empty chart,
    and the page has no script errors."""
    spec = {
        "name": "nothing-fits",
        "model": "meta-llama/Llama-3.1-405B-Instruct",
        "workload": "chat",
        "accelerators": ["L4"],
        "space": {"tp": [1], "weights": ["bf16"], "kv_cache": ["bf16"], "max_batch": [1], "chunked_prefill": [8192]},
        "sampler": "exhaustive",
    }
    url = f"sqlite:///{tmp_path / 'nf.db'}"
    store = Store(url)
    run_sweep(store, start_sweep(store, parse_spec(spec), yaml.safe_dump(spec), None, workers=1), workers=1)
    out = tmp_path / "nf.html"
    result = CliRunner().invoke(app, ["report", "nothing-fits", "-o", str(out), "--storage", url])
    assert result.exit_code == 0, result.output
    context = browser.new_context(offline=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(out.as_uri())
        text = page.locator("#nothing-fits").text_content()
        assert "No configuration of this sweep fits" in text and "GPUs of this type (L4" in text
        assert page.locator("#pareto-chart").count() == 0
        assert not errors
    finally:
        context.close()
