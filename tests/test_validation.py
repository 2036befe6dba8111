"""Validation against published measurements, and the validate.py script end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search.calibration import load_measurements, predict, summarize

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = ROOT / "tests" / "data" / "measurements.public.jsonl"


@pytest.fixture(scope="module")
def public_predictions():
    return predict(load_measurements(PUBLIC))


def test_public_file_meets_the_error_targets(public_predictions):
    preds, skipped = public_predictions
    s = summarize(preds, skipped)
    assert s["skipped"] == 0, [reason for _, reason in skipped]
    assert s["n"] == 556
    assert s["median_ape"] <= 15.0, s
    assert s["p90_ape"] <= 35.0, s


def test_held_out_rows_stay_close(public_predictions):
    """The serving factors were fitted on v0.14.0 rows only; v0.20 rows are held out."""
    preds, _ = public_predictions
    held = [p for p in preds if p.row["version"] != "TensorRT-LLM v0.14.0"]
    s = summarize(held)
    assert s["n"] == 180
    assert s["median_ape"] <= 25.0, s


def test_every_row_picks_a_batch_that_fits(public_predictions):
    preds, _ = public_predictions
    assert all(1 <= p.batch <= 4096 for p in preds)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_validate_script_end_to_end(tmp_path):
    rows = load_measurements(PUBLIC)[:5]
    bad_model = dict(rows[0], id="x1", model="acme/NoSuchModel-7B")
    bad_gpu = dict(rows[0], id="x2", gpu="H1000")
    ttft = dict(rows[0], id="x3", scenario="batch1_ttft", metric="ttft_ms", value=50.0)
    f = _write(tmp_path / "m.jsonl", [*rows, bad_model, bad_gpu, ttft])
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "validate.py"), "--measurements", str(f), "--summary-json", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(out.read_text())
    assert {"n", "skipped", "median_ape", "p90_ape", "within_20pct"} <= set(summary)
    assert summary["n"] == 6
    assert summary["skipped"] == 2
    assert "acme/NoSuchModel-7B" in proc.stdout and "H1000" in proc.stdout
    assert "median absolute error" in proc.stdout


def test_malformed_measurement_line_names_the_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"model": "x"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_measurements(f)
