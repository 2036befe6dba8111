"""Issue 16, the output findings (7, 8, 9, 11, 12, 13, 14, 16, 17, 18): what a user reads is
whole, right and explained. Real local Ray, real SQLite files."""

from __future__ import annotations

import csv
import json
import re
import threading
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from search.cli import app
from search.store import Store
from search.sweeps import SearchSpace, parse_spec, run_sweep, start_sweep

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"

# A comment line longer than 80 columns and bracketed lists: what `show` must print as is.
SPEC_YAML = """\
# A small chat sweep for Llama-3.1-8B on H100: which parallelism, quantization and batch limit serve chat cheapest?
name: small-out
model: meta-llama/Llama-3.1-8B-Instruct
workload: chat
accelerators: [H100-SXM]
space:
  tp: [1, 2]
  weights: [bf16, fp8]
  kv_cache: [bf16, fp8]
  max_batch: [1, 16, 64]
  chunked_prefill: [8192]
sampler: exhaustive
seed: 0
"""

# Nothing fits: 405B in bf16 on one L4.
NOTHING_FITS = {
    "name": "nothing-fits",
    "model": "meta-llama/Llama-3.1-405B-Instruct",
    "workload": "chat",
    "accelerators": ["L4"],
    "space": {"tp": [1], "weights": ["bf16"], "kv_cache": ["bf16"], "max_batch": [1, 8], "chunked_prefill": [8192]},
    "sampler": "exhaustive",
    "seed": 0,
}


@pytest.fixture(scope="module")
def small(local_ray, tmp_path_factory):
    """(storage URL, store) holding the finished sweeps `small-out` and `nothing-fits`."""
    root = tmp_path_factory.mktemp("outputs")
    url = f"sqlite:///{root / 'servesweep.db'}"
    store = Store(url)
    spec = parse_spec(yaml.safe_load(SPEC_YAML))
    run_sweep(store, start_sweep(store, spec, SPEC_YAML, None, workers=2), workers=2)
    bad = parse_spec(NOTHING_FITS)
    run_sweep(store, start_sweep(store, bad, yaml.safe_dump(NOTHING_FITS), None, workers=2), workers=2)
    return url, store


def _invoke(*args: str, columns: int = 80):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})


# ---------------------------------------------------------------- 7: markup-safe, unwrapped


def test_7_show_prints_the_spec_whole_and_it_parses(small):
    url, _ = small
    result = _invoke("show", "small-out", "--storage", url)
    assert result.exit_code == 0, result.output
    marker = "spec (YAML):\n"
    assert marker in result.stdout
    text = result.stdout.split(marker, 1)[1]
    assert text.strip() == SPEC_YAML.strip()  # not wrapped at 80 columns
    assert yaml.safe_load(text) == yaml.safe_load(SPEC_YAML)
    assert "weights: [bf16, fp8]" in text and "kv_cache: [bf16, fp8]" in text


def test_7_errors_keep_bracketed_install_hints():
    from search.cli.console import fail

    tiny = typer.Typer()

    @tiny.command()
    def hint() -> None:
        fail("probing needs PyTorch: pip install 'servesweep[probe]' (or [gp])")

    result = CliRunner().invoke(tiny, [], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "pip install 'servesweep[probe]' (or [gp])" in result.output


# ---------------------------------------------------------------- 8: max_batch is the limit


def test_8_export_evaluations_keeps_the_configured_batch_limit(small, tmp_path):
    url, _ = small
    out = tmp_path / "evals.csv"
    result = _invoke("export", "small-out", "--what", "evaluations", "-o", str(out), "--storage", url)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 24
    assert {int(r["max_batch"]) for r in rows} == {1, 16, 64}
    assert all(r["batch_that_fits"] for r in rows if r["feasible"] == "True")
    assert any(int(float(r["batch_that_fits"])) > 64 for r in rows if r["batch_that_fits"])


# ---------------------------------------------------------------- 9: cancel an exhaustive sweep

SIM = {
    "name": "sim-cancel",
    "model": LLAMA_8B,
    "workload": "chat",
    "accelerators": ["H100-SXM", "A100-SXM-80GB"],
    "space": {
        "tp": [1, 2],
        "weights": ["bf16", "fp8"],
        "kv_cache": ["bf16", "fp8"],
        "max_batch": [8, 32, 64, 128],
        "chunked_prefill": [2048, 8192],
    },
    "evaluator": "simulator",
    "simulation": {"requests": 60},
    "sampler": "exhaustive",
    "budget": {"trials": 20},
    "seed": 0,
}


def test_9_an_exhaustive_simulator_sweep_is_cancelled_between_shards(local_ray, tmp_path):
    from search.service.jobs import SweepManager

    store = Store(f"sqlite:///{tmp_path / 'sim.db'}")
    spec = parse_spec(SIM)
    size = SearchSpace(spec).size
    name = start_sweep(store, spec, yaml.safe_dump(SIM), None, workers=2, service=True)
    manager = SweepManager(store, workers=2)
    job = manager.start(name, "alice")
    seen = threading.Event()
    for _ in range(1200):
        if job.progress is not None or job.done.is_set():
            seen.set()
            break
        job.done.wait(0.05)
    assert seen.is_set()
    first = dict(job.progress or {})
    assert first["total"] == size and first["evaluated"] is not None  # not budget.trials, not None
    manager.cancel(name, wait_s=120)
    assert job.done.is_set() and job.error is None
    record = store.get_sweep(name)
    assert record["status"] == "cancelled"
    assert store.count_evaluations(name)["total"] < size


# ---------------------------------------------------------------- 11: nothing fits, say why


def test_11_run_front_and_report_say_why_nothing_qualifies(small, tmp_path):
    url, store = small
    summary = store.get_sweep("nothing-fits")["summary"]
    assert summary["feasible"] == 0
    front = _invoke("front", "nothing-fits", "--storage", url, columns=200)
    assert front.exit_code == 0, front.output
    assert "no feasible configuration" in front.stdout
    assert re.search(r"weights need ≥ \d+ GPUs", front.stdout), front.stdout
    again = _invoke("run", str(_write(tmp_path, NOTHING_FITS)), "--storage", url, columns=200)
    assert again.exit_code == 0, again.output
    assert re.search(r"weights need ≥ \d+ GPUs", again.stdout), again.stdout
    out = tmp_path / "r.html"
    rep = _invoke("report", "nothing-fits", "-o", str(out), "--storage", url)
    assert rep.exit_code == 0, rep.output
    html = out.read_text()
    assert "No configuration of this sweep fits" in html
    assert re.search(r"weights need ≥ \d+ GPUs", html)


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------- 12: guided counts agree


def test_12_duplicate_suggestions_do_not_consume_the_budget(local_ray, tmp_path):
    data = {**yaml.safe_load(SPEC_YAML), "name": "guided-dups", "sampler": "tpe", "budget": {"trials": 18}}
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    spec = parse_spec(data)
    seen = []
    summary = run_sweep(
        store,
        start_sweep(store, spec, yaml.safe_dump(data), None, workers=2),
        workers=2,
        progress=lambda p: seen.append((p.evaluated, p.feasible, p.total)),
    )
    stored = store.count_evaluations("guided-dups")["total"]
    assert summary["evaluated"] == stored == 18  # 18 distinct configurations of 24
    assert seen[-1][0] == summary["evaluated"] and seen[-1][1] == summary["feasible"]
    assert seen[-1][2] == 18


def test_12_a_budget_beyond_the_space_stops_at_the_space(local_ray, tmp_path):
    data = {**yaml.safe_load(SPEC_YAML), "name": "guided-all", "sampler": "tpe", "budget": {"trials": 60}}
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    spec = parse_spec(data)
    summary = run_sweep(store, start_sweep(store, spec, yaml.safe_dump(data), None, workers=2), workers=2)
    assert summary["evaluated"] <= 24
    assert store.count_evaluations("guided-all")["total"] == summary["evaluated"]


# ---------------------------------------------------------------- 13: decode and prefill bounds


def test_13_estimate_reports_the_decode_and_prefill_bounds():
    args = ["estimate", "--model", LLAMA_8B, "--gpu", "h100", "--weights", "fp8", "--batch", "64"]
    r = json.loads(_invoke(*args, "--json").stdout)
    d = r["decode_step_s"]
    assert d["weights_memory_s"] + d["kv_memory_s"] > d["gemm_compute_s"] + d["attention_compute_s"]
    assert r["decode_bound"] == "bandwidth"
    assert r["prefill_bound"] in ("compute", "bandwidth", "interconnect", "overhead")
    text = " ".join(_invoke(*args, columns=200).stdout.split())
    assert "decode step bound: bandwidth" in text
    assert f"prefill bound: {r['prefill_bound']}" in text
    assert "whole cycle (prefill included)" in text


def test_13_report_card_names_both_bounds(small, tmp_path):
    url, _ = small
    out = tmp_path / "r.html"
    assert _invoke("report", "small-out", "-o", str(out), "--storage", url).exit_code == 0
    html = out.read_text()
    assert "decode step bound" in html and "prefill bound" in html


# ---------------------------------------------------------------- 14: tables


def test_14_front_table_has_units_and_whole_ids(small):
    url, _ = small
    result = _invoke("front", "small-out", "--storage", url, columns=100)
    assert result.exit_code == 0, result.output
    assert "TPOT p99 (ms)" in result.stdout
    assert "$/Mtok" in result.stdout
    assert "H100-SXM" in result.stdout  # not cut to H100…
    assert "…" not in result.stdout


def test_14_catalog_models_shows_aliases_and_wide_ids():
    result = _invoke("catalog", "models", "--wide", columns=80)
    assert result.exit_code == 0, result.output
    assert "aliases" in result.stdout
    assert "llama-3.1-8b" in result.stdout.lower()
    assert LLAMA_8B in result.stdout
    gpus = _invoke("catalog", "gpus", columns=80)
    assert "A100-SXM-80GB" in gpus.stdout and "…" not in gpus.stdout


# ---------------------------------------------------------------- 16: progress on calibrate


def test_16_calibrate_shows_progress(tmp_path):
    from search.calibration import calibrate_from_measurements, load_measurements

    data = Path(__file__).resolve().parent / "data" / "measurements.public.jsonl"
    rows = load_measurements(data)[:40]
    ticks: list[tuple[int, int]] = []
    calibrate_from_measurements(rows, name="p", max_evals=40, progress=lambda n, total: ticks.append((n, total)))
    assert ticks and ticks[-1][0] == ticks[-1][1] and all(t == ticks[0][1] for _, t in ticks)
    small = tmp_path / "m.jsonl"
    small.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(
        app,
        ["calibrate", "--measurements", str(small), "--max-evals", "20", "--storage", f"sqlite:///{tmp_path / 'c.db'}"],
        env={"COLUMNS": "120"},
    )
    assert result.exit_code == 0, result.output
    assert "fitting" in result.stderr and "loss evaluations" in result.stderr


# ---------------------------------------------------------------- 17: presets with overrides


def test_17_a_preset_with_overrides():
    from workloads import get_preset

    spec = parse_spec({**yaml.safe_load(SPEC_YAML), "workload": {"preset": "rag", "arrival_rate_per_s": 20}})
    w = spec.resolved_workload()
    rag = get_preset("rag")
    assert w.arrival_rate_per_s == 20
    assert w.input_tokens == rag.input_tokens and w.slos == rag.slos
    assert "rag" in w.name


def test_17_an_unknown_override_is_named():
    from search.sweeps import SpecError

    with pytest.raises(SpecError) as exc:
        parse_spec({**yaml.safe_load(SPEC_YAML), "workload": {"preset": "rag", "arrival_rate": 20}})
    assert "arrival_rate" in str(exc.value)
    assert "union" not in str(exc.value).lower() and "Workload" not in str(exc.value)


# ---------------------------------------------------------------- 18: the report


def test_18_report_reads_cleanly(small, tmp_path):
    url, _ = small
    out = tmp_path / "r.html"
    assert _invoke("report", "small-out", "-o", str(out), "--storage", url).exit_code == 0
    html = out.read_text()
    assert "[1, 2]" not in html and "[&#x27;bf16&#x27;, &#x27;fp8&#x27;]" not in html  # no Python lists
    assert "TP 1, 2 · PP 1" in html and "weights bf16, fp8" in html
    assert not re.search(r"\d\.\d\d s\b", html)  # latencies in ms throughout, none in s
    assert "1,000 ms" in html  # the chat preset's 1 s TTFT SLO, in ms like the rest
    assert html.count('"tickvals"') >= 2  # the log axes carry full-number ticks
    bad = _invoke("report", "nothing-fits", "-o", str(tmp_path / "bad.html"), "--storage", url)
    assert bad.exit_code == 0
    assert "No chart" in (tmp_path / "bad.html").read_text()


def test_18_log_axes_label_every_tick_in_full():
    from search.outputs.report_figures import _log_ticks

    t = _log_ticks(3.2, 4500)
    assert t["tickvals"] == [5, 10, 20, 50, 100, 200, 500, 1000, 2000]
    assert t["ticktext"] == ["5", "10", "20", "50", "100", "200", "500", "1,000", "2,000"]
    assert _log_ticks(0.01, 1e5)["ticktext"] == ["0.01", "0.1", "1", "10", "100", "1,000", "10,000", "100,000"]
    assert _log_ticks(5.1, 6.2)["ticktext"] == ["5.1", "6.2"]


# ---------------------------------------------------------------- 15: what the numbers mean


def test_15_the_resume_eta_is_at_this_drivers_own_pace():
    """A resumed driver that finds 50 of 300 done and then evaluates 10 in 10 s has 240 left at
    1/s: 240 s, not the 40 s that counting the inherited 50 as its own work gave."""
    import time

    from search.sweeps import Progress

    p = Progress(total=300, evaluated=50, resumed=50)
    p.started = time.monotonic() - 10.0
    assert p.eta_s is None  # nothing of its own done yet
    p.evaluated = 60
    assert p.eta_s == pytest.approx(240.0, rel=0.05)


def test_15_ls_counts_the_stored_evaluations_of_an_interrupted_sweep(small):
    url, store = small
    name = start_sweep(store, parse_spec(yaml.safe_load(SPEC_YAML)), SPEC_YAML, "cut-short", workers=1)
    rows = [r for r in store.get_evaluations("small-out")][:7]
    store.add_evaluations(name, [{k: v for k, v in r.items() if k not in ("id", "created_at")} for r in rows])
    store.update_sweep(name, status="interrupted")
    result = _invoke("ls", "--storage", url, columns=200)
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if "cut-short" in ln)
    assert "interrupted" in line and re.search(r"\b7\b", line), line


def test_15_the_all_reduce_alpha_says_it_is_measured_times_a_fitted_scale():
    args = ["estimate", "--model", "llama-3.1-8b", "--gpu", "h100", "--tp", "8", "--batch", "1"]
    out = json.loads(_invoke(*args, "--json").output)["efficiency"]
    assert out["allreduce_latency_s"] == pytest.approx(
        out["allreduce_latency_measured_s"] * out["allreduce_latency_scale"]
    )
    text = " ".join(_invoke(*args, columns=300).output.split())
    assert f"({out['allreduce_latency_measured_s'] * 1e6:.1f} µs" in text and "× fitted scale" in text


def test_15_flags_are_not_shown_as_taking_values():
    for command in (["estimate", "--help"], ["front", "--help"], ["--help"]):
        out = _invoke(*command, columns=200).output
        assert "--help" in out and "<bool>" not in out, out
    assert "<str>" in _invoke("estimate", "--help", columns=200).output  # options with values keep their type
