"""Errors a user sees (issue 16): every failure of a command is one line on stderr and exit 2 — no
traceback, no state left behind (no database, directory, sweep row or calibration record created
by a command that fails), and a fuzz test over every command's arguments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from search.cli import app
from search.store import Store

ROOT = Path(__file__).resolve().parent.parent
MEASUREMENTS = ROOT / "tests" / "data" / "measurements.public.jsonl"
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
ESTIMATE = ["estimate", "--model", LLAMA_8B, "--gpu", "h100", "--weights", "fp8"]
SPEC = {
    "name": "errs",
    "model": LLAMA_8B,
    "workload": "chat",
    "accelerators": ["H100-SXM", "L40S"],
    "space": {"tp": [1, 2], "weights": ["bf16", "fp8"], "max_batch": [1, 16, 64]},
    "sampler": "exhaustive",
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def one_line_error(result, *needles: str) -> str:
    """Assert `result` is a clean failure: exit 2, no exception escaped, one `error:` line on
    stderr naming every needle; returns the line."""
    assert not result.exception or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output and "\x1b[" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _spec_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **changes}))
    return path


def _measurement_record(name: str, before: float, after: float) -> dict:
    errors = {
        "held_out_before": {"n": 10, "median_ape": before, "p90_ape": before * 2},
        "held_out_after": {"n": 10, "median_ape": after, "p90_ape": after * 2},
    }
    return {"name": name, "kind": "measurements", "serving": {}, "fit": {"errors": errors}}


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT), **extra)
    env.pop("RAY_ADDRESS", None)
    return env


CLI = [sys.executable, "-c", "from search.cli import main; main()"]


# ------------------------------------------------------------------ 1. unreachable database


def test_unreachable_postgres_is_one_line_naming_host_port_and_database(runner: CliRunner) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:5999/test"
    for args in (["ls"], ["show", "x"], ["calibrations"], ["report", "x", "-o", "r.html"]):
        one_line_error(runner.invoke(app, [*args, "--storage", url]), "127.0.0.1", "5999", "test")


def test_missing_postgres_database_is_one_line(runner: CliRunner, pg_url: str) -> None:
    url = pg_url.rsplit("/", 1)[0] + "/servesweep_no_such_db"
    one_line_error(runner.invoke(app, ["ls", "--storage", url]), "servesweep_no_such_db", "5432")


def test_postgres_url_without_database_is_one_line(runner: CliRunner) -> None:
    one_line_error(runner.invoke(app, ["ls", "--storage", "postgresql+psycopg://postgres@127.0.0.1:5432"]))


# ------------------------------------------------------------------ 2. output paths


@pytest.mark.parametrize("bad", ["/proc/servesweep-out.json", "{tmp}/no/such/dir/out.json", "{tmp}"])
def test_unwritable_outputs_fail_first_in_one_line(runner: CliRunner, tmp_path: Path, bad: str) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = Store(url)
    store.save_calibration("cal", "measurements", _measurement_record("cal", 10, 5))
    store.close()
    out = bad.format(tmp=tmp_path)
    html = out.replace(".json", ".html")
    for args in (
        ["report", "nosuch", "-o", html],
        ["export", "nosuch", "-o", out],
        ["calibrations", "cal", "-o", out],
    ):
        one_line_error(runner.invoke(app, [*args, "--storage", url]))
    assert not (tmp_path / "no").exists()


def test_calibrate_with_an_unwritable_output_stores_nothing(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    started = time.monotonic()
    result = runner.invoke(
        app,
        [
            "calibrate",
            "--measurements",
            str(MEASUREMENTS),
            "--max-evals",
            "10",
            "-o",
            "/proc/c1.json",
            "--storage",
            url,
        ],
    )
    one_line_error(result, "/proc/c1.json")
    assert time.monotonic() - started < 20  # checked before the fit, not after
    assert Store(url).list_calibrations() == []


def test_probe_with_an_unwritable_output_stores_nothing(runner: CliRunner, tmp_path: Path, monkeypatch) -> None:
    import search.calibration

    def never(*_a, **_k):
        raise AssertionError("the probe ran although its output cannot be written")

    monkeypatch.setattr(search.calibration, "run_probe", never, raising=False)
    url = f"sqlite:///{tmp_path}/s.db"
    result = runner.invoke(app, ["probe", "--device", "cpu", "-o", "/proc/p.json", "--storage", url])
    one_line_error(result, "/proc/p.json")
    assert Store(url).list_calibrations() == []


def test_calibration_latest_skips_a_fit_worse_than_the_defaults(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = Store(url)
    store.save_calibration("good", "measurements", _measurement_record("good", 10, 5))
    store.save_calibration("worse", "measurements", _measurement_record("worse", 10, 40))
    store.close()
    result = runner.invoke(app, [*ESTIMATE, "--calibration", "latest", "--storage", url, "--json"])
    assert result.exit_code == 0, result.output
    label = json.loads(result.stdout)["calibration"]
    assert "good" in label and "skipped worse" in label, label


def test_calibration_latest_with_only_a_worse_fit_says_so(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = Store(url)
    store.save_calibration("worse", "measurements", _measurement_record("worse", 10, 40))
    store.close()
    result = runner.invoke(app, [*ESTIMATE, "--calibration", "latest", "--storage", url])
    one_line_error(result, "worse", "held-out")


# ------------------------------------------------------------------ 3. no state invented


@pytest.mark.parametrize(
    "args",
    [
        ["ls"],
        ["show", "x"],
        ["front", "x"],
        ["export", "x", "-o", "x.csv"],
        ["report", "x"],
        ["calibrations"],
        ["calibrations", "x"],
        ["dashboard"],
        [*ESTIMATE, "--calibration", "latest"],
    ],
)
def test_read_only_commands_refuse_a_missing_sqlite_database(
    runner: CliRunner, tmp_path: Path, monkeypatch, args
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    one_line_error(runner.invoke(app, [*args, "--storage", f"sqlite:///{missing}"]), str(missing))
    assert not (tmp_path / "nonexistent").exists()
    flat = tmp_path / "x.db"
    one_line_error(runner.invoke(app, [*args, "--storage", f"sqlite:///{flat}"]), str(flat))
    assert not flat.exists()


def test_writers_do_not_invent_directories_unless_asked(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "new" / "dir" / "x.db"
    result = runner.invoke(app, ["run", str(_spec_file(tmp_path)), "--storage", f"sqlite:///{missing}"])
    one_line_error(result, "--mkdir")
    assert not (tmp_path / "new").exists()
    result = runner.invoke(app, ["calibrate", "--measurements", str(MEASUREMENTS), "--storage", f"sqlite:///{missing}"])
    one_line_error(result, "--mkdir")
    assert not (tmp_path / "new").exists()


def test_outputs_in_missing_directories_need_mkdir(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    store = Store(url)
    store.save_calibration("cal", "measurements", _measurement_record("cal", 10, 5))
    store.close()
    out = tmp_path / "a" / "b" / "cal.json"
    one_line_error(runner.invoke(app, ["calibrations", "cal", "-o", str(out), "--storage", url]), "--mkdir")
    result = runner.invoke(app, ["calibrations", "cal", "-o", str(out), "--mkdir", "--storage", url])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["name"] == "cal"


# ------------------------------------------------------------------ 4. an unreachable Ray


def test_run_with_an_unreachable_ray_fails_fast_and_stores_no_sweep(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    Store(url).close()
    started = time.monotonic()
    proc = subprocess.run(
        [*CLI, "run", str(_spec_file(tmp_path)), "--storage", url, "--ray-address", "127.0.0.1:1", "--quiet"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert time.monotonic() - started < 45
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0], proc.stderr
    assert Store(url).list_sweeps() == []


# ------------------------------------------------------------------ 5. rate 0


@pytest.mark.parametrize("cmd", [ESTIMATE, ["simulate", "--model", LLAMA_8B, "--gpu", "h100", "--requests", "50"]])
def test_rate_zero_is_rejected_in_one_line(runner: CliRunner, cmd) -> None:
    one_line_error(runner.invoke(app, [*cmd, "--rate", "0"]), "--rate")


# ------------------------------------------------------------------ 6. probe without torch


def test_probe_without_torch_on_the_worker_is_one_line_with_the_install_hint(
    runner: CliRunner, tmp_path: Path, monkeypatch, local_ray
) -> None:
    import search.calibration.probes as probes

    def no_torch(*_a, **_k):
        from search.cluster import ProbeUnavailableError

        raise ProbeUnavailableError("probes need PyTorch: pip install 'servesweep[probe]'")

    monkeypatch.setattr(probes, "run_suite", no_torch)
    result = runner.invoke(app, ["probe", "--device", "cpu", "--storage", f"sqlite:///{tmp_path}/s.db"])
    line = one_line_error(result, "pip install 'servesweep[probe]'")
    assert "ray::" not in line and "RayTaskError" not in line


# ------------------------------------------------------------------ 10. stopping a run


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_is_interrupted_and_says_how_to_resume(tmp_path: Path, sig, code) -> None:
    spec = _spec_file(
        tmp_path,
        name="stopme",
        sampler="tpe",
        budget={"trials": 5000},
        space={"tp": [1, 2, 4, 8], "weights": ["bf16", "fp8"], "max_batch": list(range(1, 400))},
    )
    url = f"sqlite:///{tmp_path}/s.db"
    store = Store(url)
    proc = subprocess.Popen(
        [*CLI, "run", str(spec), "--storage", url, "--workers", "2", "--quiet"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            s = store.get_sweep("stopme")
            if s and s["status"] == "running" and store.count_evaluations("stopme")["total"] > 0:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the sweep never started")
        proc.send_signal(sig)
        out, errs = proc.communicate(timeout=180)  # Ray shuts down at exit: slow on a loaded machine
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, (proc.returncode, errs)
    assert "interrupted; resume with `servesweep run --resume stopme`" in out + errs, out + errs
    assert "Traceback" not in errs and "SIGTERM received" not in errs, errs
    assert store.get_sweep("stopme")["status"] == "interrupted"


# ------------------------------------------------------------------ 15. version, readable messages


def test_version(runner: CliRunner) -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"servesweep {version('servesweep')}"


def test_spec_errors_read_plainly(runner: CliRunner, tmp_path: Path) -> None:
    spec = _spec_file(tmp_path, accelerators=["NoSuchGPU"])
    line = one_line_error(runner.invoke(app, ["run", str(spec), "--storage", f"sqlite:///{tmp_path}/s.db"]))
    assert "Value error" not in line and "(spec)" not in line, line
    assert "NoSuchGPU" in line


def test_usage_errors_are_one_line(runner: CliRunner) -> None:
    one_line_error(runner.invoke(app, ["estimate", "--model", LLAMA_8B, "--gpu", "h100", "--tp", "x"]), "--tp")
    one_line_error(runner.invoke(app, ["no-such-command"]), "no-such-command")


# ------------------------------------------------------------------ the fuzz test

FUZZ_DB = "fuzz.db"  # in the fuzz folder: one calibration record, no sweeps
BAD_URLS = [
    "sqlite:///missing/dir/x.db",
    "sqlite:///absent.db",
    "sqlite:////proc/servesweep.db",
    "postgresql+psycopg://postgres@127.0.0.1:5999/test",
    "postgresql+psycopg://postgres@127.0.0.1:5432",
    "postgresql+psycopg://postgres@127.0.0.1:5432/servesweep_no_such_db",
    "mysql://u@h/db",
    "not a url",
    " ",
]
PATHS = [
    "missing.json",
    "missing/dir/out.json",
    "/proc/servesweep.json",
    ".",
    "out.json",
    "out.csv",
    "out.txt",
    "out.parquet",
    "bad.yaml",
    "spec-invalid.yaml",
    "bad.jsonl",
    "",
]
NAMES = ["cal", "nosuch", "x" * 150, "../up", "a b", "[bold]x[/]", "-", "é"]
NUMBERS = ["0", "1", "-1", "2", "64", "1e9", "nan", "inf", "-0.5", "x", "", "99999999999999999999"]


def _text(options: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(options), st.text(max_size=12))


def _option(flag: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.one_of(st.just([]), values.map(lambda v: [flag, v]))


def _flag(flag: str) -> st.SearchStrategy[list[str]]:
    return st.sampled_from([[], [flag]])


def _args(name: str, *parts: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    return st.tuples(*parts).map(lambda groups: [name, *(a for g in groups for a in g)])


GOOD = f"sqlite:///{FUZZ_DB}"
urls = _text([GOOD, *BAD_URLS])
bad_urls = st.sampled_from(BAD_URLS)
uncreatable_urls = st.sampled_from([u for u in BAD_URLS if u != "sqlite:///absent.db"])  # a writer may create that
paths = _text(PATHS)
names = _text(NAMES)
numbers = _text(NUMBERS)
models = _text([LLAMA_8B, "llama-3.1-8b", "no/such-model"])
gpus = _text(["h100", "H100-SXM", "L4", "no-gpu"])
weights = _text(["bf16", "fp8", "int4", "fp99"])
SMALL_INTS = st.integers(-2, 300).map(str)

COMMANDS = {
    "catalog": _args(
        "catalog", st.sampled_from([["gpus"], ["models"], ["tpus"], []]), _flag("--json"), _option("--gpu-file", paths)
    ),
    "estimate": _args(
        "estimate",
        _option("--model", models),
        _option("--gpu", gpus),
        _option("--tp", numbers),
        _option("--weights", weights),
        _option("--batch", numbers),
        _option("--isl", numbers),
        _option("--rate", numbers),
        _option("--pricing", _text(["cloud", "owned"])),
        _option("--calibration", _text(["none", "latest", "missing.json", "bad.yaml"])),
        _option("--storage", urls),
        _option("--gpu-file", paths),
        _flag("--json"),
    ),
    "simulate": _args(
        "simulate",
        _option("--model", models),
        _option("--gpu", gpus),
        st.sampled_from([["--requests", "40"], []]).map(lambda a: a or ["--requests", "20"]),
        _option("--workload", _text(["chat", "rag", "missing.csv", "bad.yaml"])),
        _option("--rate", numbers),
        _option("--tp", numbers),
        _option("--max-num-seqs", SMALL_INTS),
        _option("--slo", _text(["ttft:1.0:p99", "tpot:x", "nope"])),
        _flag("--json"),
    ),
    "calibrate": _args(
        "calibrate",
        _option("--measurements", paths),
        _option("--holdout-fraction", numbers),
        _option("--params", _text(["bw", "nope,x"])),
        _option("--name", names),
        _option("-o", paths),
        _option("--storage", urls),
    ),
    "calibrations": _args(
        "calibrations",
        st.one_of(st.just([]), names.map(lambda n: [n])),
        _option("-o", paths),
        _flag("--json"),
        _option("--storage", urls),
    ),
    "run": _args(
        "run",
        st.one_of(st.just([]), paths.map(lambda p: [p])),
        _option("--resume", names),
        _option("--name", names),
        _option("--workers", numbers),
        _option("--ray-address", _text(["127.0.0.1:1", "ray://nohost:10001", "auto"])),
        _option("--storage", urls),
        _flag("--quiet"),
    ),
    "ls": _args("ls", _option("--storage", urls)),
    "show": _args("show", names.map(lambda n: [n]), _option("--storage", urls)),
    "front": _args(
        "front",
        names.map(lambda n: [n]),
        _option("--format", _text(["table", "csv", "json"])),
        _option("--storage", urls),
    ),
    "export": _args(
        "export",
        names.map(lambda n: [n]),
        _option("-o", paths),
        _option("--what", _text(["front", "evaluations"])),
        _option("--storage", urls),
    ),
    "report": _args("report", names.map(lambda n: [n]), _option("-o", paths), _option("--storage", urls)),
    # would serve on a good database: only bad ones
    "dashboard": _args("dashboard", bad_urls.map(lambda u: ["--storage", u]), _option("--port", numbers)),
    # would probe on a good database: only bad ones (checked before the probe runs)
    "probe": _args(
        "probe",
        _option("--device", _text(["cpu", "cuda", "tpu"])),
        _option("--model", models),
        _option("--gpus", numbers),
        _option("--name", names),
        _option("-o", paths),
        uncreatable_urls.map(lambda u: ["--storage", u]),
    ),
    # would serve with readable tokens: only unreadable ones
    "serve": _args(
        "serve",
        st.sampled_from(["missing-tokens", ".", "empty-tokens"]).map(lambda p: ["--tokens-file", p]),
        _option("--port", numbers),
        _option("--storage", urls),
        _option("--max-body-bytes", numbers),
    ),
}


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    store = Store(f"sqlite:///{folder / FUZZ_DB}")
    store.save_calibration("cal", "measurements", _measurement_record("cal", 10, 5))
    store.close()
    (folder / "bad.yaml").write_text("model: [unclosed\n")
    (folder / "spec-invalid.yaml").write_text(yaml.safe_dump({**SPEC, "accelerators": ["NoSuchGPU"]}))
    (folder / "bad.jsonl").write_text("{not json\n")
    (folder / "empty-tokens").write_text("# no tokens\n")
    return folder


@pytest.mark.parametrize("command", sorted(COMMANDS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_every_command_fails_in_one_line(command: str, data, fuzz_dir: Path, monkeypatch) -> None:
    args = data.draw(COMMANDS[command], label="args")
    monkeypatch.chdir(fuzz_dir)
    monkeypatch.delenv("SERVESWEEP_STORAGE", raising=False)
    monkeypatch.delenv("SERVESWEEP_API_TOKENS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = CliRunner().invoke(app, args, env={"COLUMNS": "100"})
    where = f"servesweep {' '.join(map(repr, args))}"
    assert not result.exception or isinstance(result.exception, SystemExit), (where, repr(result.exception))
    assert "Traceback" not in result.output, (where, result.output)
    if command == "estimate" and result.exit_code == 1:  # an infeasible deployment: a result, not an error
        assert "infeasible" in result.stdout and not result.stderr.strip(), (where, result.output)
        return
    assert result.exit_code in (0, 2), (where, result.exit_code, result.output)
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (where, result.stderr)
    assert not (fuzz_dir / "missing").exists(), where
    assert not (fuzz_dir / "absent.db").exists(), where


def test_an_output_path_naming_an_unknown_home_is_one_line(runner, tmp_path):
    """`-o ~nosuchuser/x` (found by the fuzz test): Path.expanduser raises RuntimeError."""
    result = runner.invoke(app, ["report", "x", "-o", "~servesweep-no-such-user/r.html"])
    one_line_error(result, "names no home directory")


@pytest.mark.parametrize("args", [["run", "missing.yaml"], ["run", "--resume", "x"]])
def test_run_creates_no_database_for_a_bad_spec_or_a_missing_resume(args, runner, tmp_path, monkeypatch):
    """Found by the fuzz test: `run` created the database before reading the spec, and
    `--resume` created an empty one to find no sweep in it."""
    monkeypatch.chdir(tmp_path)
    one_line_error(runner.invoke(app, [*args, "--storage", "sqlite:///absent.db"]))
    assert not (tmp_path / "absent.db").exists()
