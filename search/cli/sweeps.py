"""`servesweep run | ls | show | front | export | dashboard`: sweeps from the command line."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from search.cli.checks import MkdirOpt, check_output, open_store
from search.cli.console import console, fail, one_line, print_table, say
from search.outputs import FrontError, evaluation_rows, front_rows
from search.sweeps import SpecError, load_spec

StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        envvar="SERVESWEEP_STORAGE",
        help="database URL (default: sqlite:///servesweep.db in the working directory)",
    ),
]


def _store(url: str | None, *, write: bool = False, mkdir: bool = False) -> Any:
    """The sweep database; read-only unless `write` (search.cli.checks.open_store)."""
    return open_store(url, write=write, mkdir=mkdir)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def run(
    spec_path: Annotated[Path | None, typer.Argument(help="sweep spec YAML", show_default=False)] = None,
    storage: StorageOpt = None,
    ray_address: Annotated[str | None, typer.Option(envvar="RAY_ADDRESS", help="join this Ray cluster")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Ray tasks in flight (default: CPUs)")] = None,
    name: Annotated[str | None, typer.Option(help="name of the sweep (default: from the spec)")] = None,
    resume: Annotated[str | None, typer.Option(help="finish the stored sweep of this name")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
    mkdir: MkdirOpt = False,
) -> None:
    """Run a sweep (or --resume one) and store every evaluation."""
    from search.cluster import ensure_ray
    from search.store import LeaseLostError
    from search.sweeps import Progress as RunProgress
    from search.sweeps import mixed_basis_warning, run_sweep, start_sweep

    if (spec_path is None) == (resume is None):
        fail("give a spec file to start a sweep, or --resume NAME to finish one (not both)")
    if resume is None:
        try:
            spec, text = load_spec(spec_path)  # type: ignore[arg-type]
        except SpecError as exc:
            fail(str(exc))
            return
    # a resume needs the database it names; a new sweep may create it — once its spec is good
    store = _store(storage, write=resume is None, mkdir=mkdir)
    if resume is None:
        existing = store.get_sweep(name or spec.name) if (name or spec.name) else None
        if existing is not None:
            skip = ("_workers", "_service", "calibration_record")  # filled in when the sweep started
            same = {k: v for k, v in existing["spec"].items() if k not in skip} == {
                k: v for k, v in spec.model_dump(mode="json").items() if k not in skip
            }
            if same and existing["status"] == "finished":
                say(f"sweep {existing['name']} already finished in {store.url}")
                say(_summary_line(existing.get("summary") or {}))
                if (existing.get("summary") or {}).get("feasible") == 0:
                    _say_why_nothing_fits(store, existing["name"])
                return
            hint = f"resume it with --resume {existing['name']}" if same else "its spec differs; choose another --name"
            fail(f"a sweep named {existing['name']!r} exists in {store.url} (status {existing['status']}); {hint}")
        ensure_ray(ray_address, workers or _cpus())  # fails in seconds, before a sweep row exists
        try:
            sweep_name = start_sweep(store, spec, text, name, workers or _cpus())
        except ValueError as exc:
            fail(str(exc))
            return
        warning = mixed_basis_warning((store.get_sweep(sweep_name) or {}).get("price_table") or {})
        if warning:
            say(one_line(warning), "warning: ", "yellow", stderr=True)
    else:
        sweep_name = resume
        record = store.get_sweep(resume)
        if record is None:
            fail(f"no sweep named {resume!r} in {store.url}")
            return
        ensure_ray(ray_address, record["spec"].get("_workers") or workers or _cpus())
    say(f" -> {store.url}", f"sweep {sweep_name}", "bold")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    ) as bar:
        task = bar.add_task("evaluating", total=None, info="")

        def on_progress(p: RunProgress) -> None:
            eta = p.eta_s
            hv = "-" if p.hypervolume is None else f"{p.hypervolume:.4f}"
            info = (
                f"evaluated {p.evaluated:,}  feasible {p.feasible:,}  front {p.front_size}  "
                f"HV {hv}  left {'-' if eta is None else f'{eta:,.0f} s'}"
            )
            bar.update(task, total=p.total, completed=min(p.evaluated, p.total), info=info)

        try:
            with _sigterm_interrupts() as stopped_by:
                summary = run_sweep(store, sweep_name, ray_address=ray_address, workers=workers, progress=on_progress)
        except KeyboardInterrupt:
            summary = {"stopped": "interrupted"}
        except (ValueError, LeaseLostError) as exc:
            fail(str(exc))
            return
    if summary.get("stopped"):
        _stopped(store, sweep_name, summary["stopped"], stopped_by)
    say(_summary_line(summary))
    if summary.get("feasible") == 0 and "stopped" not in summary:
        _say_why_nothing_fits(store, sweep_name)


class _StoppedBy:
    signal: int | None = None


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[_StoppedBy]:
    """SIGTERM and SIGINT raise KeyboardInterrupt while the sweep runs (the driver stores the
    sweep as 'interrupted'); installed after Ray started, so Ray's own SIGTERM handler (which
    only prints) is replaced; the handlers before are restored afterwards."""
    import signal as sig

    stopped = _StoppedBy()

    def handler(signum: int, _frame: Any) -> None:
        stopped.signal = signum
        raise KeyboardInterrupt

    try:
        previous = {s: sig.signal(s, handler) for s in (sig.SIGTERM, sig.SIGINT)}
    except ValueError:  # not the main thread: leave the signals alone
        previous = {}
    try:
        yield stopped
    finally:
        for s, h in previous.items():
            sig.signal(s, h)


def _stopped(store: Any, name: str, status: str, stopped_by: _StoppedBy) -> None:
    """Report a stopped run (and make sure it is stored as stopped), then exit 130 (SIGINT) or
    128 + the signal's number."""
    import signal as sig

    record = store.get_sweep(name)
    if record is not None and record["status"] in ("pending", "running"):
        store.update_sweep(name, status=status)
    console.print(f"{status}; resume with `servesweep run --resume {name}`", markup=False, highlight=False)
    raise typer.Exit(code=128 + (stopped_by.signal or sig.SIGINT))


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def _say_why_nothing_fits(store: Any, name: str) -> None:
    from search.outputs import why_nothing_fits

    say(f"no feasible configuration in sweep {name}: nothing it tried fits.", style="bold yellow")
    for line in why_nothing_fits(store, name):
        say(f"  {line}")


def _summary_line(s: dict) -> str:
    parts = [
        f"{k}={_fmt(s.get(k))}"
        for k in ("kind", "space_size", "evaluated", "feasible", "front_size", "hypervolume", "hypervolume_ratio")
        if k in s
    ]
    if "measured" in s:
        parts.append(f"measured={s['measured']}")
    for status, n in (s.get("probe_candidates") or {}).items():
        if status != "measured":
            parts.append(f"\n  {n} probe candidate(s) stayed analytic: {status}")
    for gpu, why in (s.get("probe_analytic") or {}).items():
        parts.append(f"\n  {gpu} candidates stayed analytic: {why}")
    parts += [f"\n  {_stage_line(st)}" for st in s.get("stages") or []]
    return "done: " + "  ".join(parts)


def _stage_line(st: dict) -> str:
    """One stage of a multi-fidelity sweep: its counts, seconds and hypervolume, or why it was skipped."""
    if st.get("status") == "skipped":
        return f"{st['stage']}: skipped: {st.get('reason')}"
    keys = (
        "tier",
        "sampler",
        "seeds",
        "evaluated",
        "feasible",
        "measured",
        "front_size",
        "hypervolume",
        "hypervolume_ratio",
    )
    fields = "  ".join(f"{k}={_fmt(st[k])}" for k in keys if st.get(k) is not None)
    return f"{st['stage']} ({st.get('status')}, {_fmt(st.get('seconds'))} s): {fields}"


def ls(storage: StorageOpt = None) -> None:
    """List the sweeps in the database."""
    store = _store(storage)
    table = Table(title=f"sweeps in {store.url}")
    sweeps = store.list_sweeps()
    errors = any(s.get("error") for s in sweeps)  # the error column only when some sweep failed
    for col in ("name", "status", "model", "sampler", "evaluated", "front", "created", "submitter"):
        table.add_column(col)
    if errors:
        table.add_column("error")
    for s in sweeps:
        summary = s.get("summary") or {}
        table.add_row(
            s["name"],
            s["status"],
            s["spec"].get("model", ""),
            s["spec"].get("sampler", ""),
            _fmt(summary.get("evaluated") if summary.get("evaluated") is not None else _stored(store, s["name"])),
            _fmt(summary.get("front_size")),
            _fmt(s.get("created_at")),
            _fmt(s.get("submitter")),
            *([_short_error(s.get("error"))] if errors else []),
        )
    print_table(table)


def _stored(store: Any, name: str) -> int | None:
    """Evaluations stored for a sweep whose summary has no count yet (interrupted, running)."""
    return store.count_evaluations(name)["total"] or None


def _short_error(error: str | None, width: int = 60) -> str:
    if not error:
        return ""
    line = error.splitlines()[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def show(name: str, storage: StorageOpt = None) -> None:
    """Show one sweep: its spec, status, times and summary."""
    store = _store(storage)
    s = store.get_sweep(name)
    if s is None:
        fail(f"no sweep named {name!r} in {store.url}")
        return
    counts = store.count_evaluations(name)
    say(f"  status {s['status']}  submitter {s.get('submitter')}  code {s.get('code_version')}", s["name"], "bold")
    say(f"created {s.get('created_at')}  started {s.get('started_at')}  finished {s.get('finished_at')}")
    say(f"stored evaluations: {counts}")
    if s.get("error"):
        say(s["error"], "failed: ", "bold red")
    console.print_json(json.dumps({"summary": _short(s.get("summary") or {}), "price_table": s.get("price_table")}))
    say("spec (YAML):")
    # the stored text exactly as written: plain print, so no markup, no wrapping, and it parses
    print(s.get("spec_yaml") or "", end="" if (s.get("spec_yaml") or "").endswith("\n") else "\n")


def _short(summary: dict) -> dict:
    out = dict(summary)
    if "done_shards" in out:
        out["done_shards"] = len(out["done_shards"])
    return out


def front(
    name: str,
    storage: StorageOpt = None,
    format: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    wide: Annotated[bool, typer.Option("--wide", help="print the table at full width (no wrapping)")] = False,
) -> None:
    """Print the Pareto front of a sweep (the table in ms, $ and GPUs; csv and json as stored, in s)."""
    if format not in ("table", "csv", "json"):
        fail(f"unknown format {format!r}; use table, csv or json")
    store = _store(storage)
    try:
        columns, rows = front_rows(store, name)
    except FrontError as exc:
        fail(str(exc))
    if format == "json":
        from search.outputs import for_store

        try:
            recommendations = for_store(store, name)["recommendations"]
        except ValueError as exc:
            fail(str(exc))
            return
        print(json.dumps({"sweep": name, "front": rows, "recommendations": recommendations}, indent=2))
    elif format == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
        print(buf.getvalue(), end="")
    elif not rows:
        _say_why_nothing_fits(store, name)
    else:
        config = ("accelerator", "tp", "pp", "ep", "weights", "kv_cache", "max_batch", "chunked_prefill")
        shown = [c for c in columns if c in config or c.startswith("objective_")]
        shown += [c for c in ("replicas", "total_gpus", "usd_per_hour", "stage") if c in columns]
        percentiles = {
            f"objective_{o['metric']}": o.get("percentile", 50.0) for o in store.get_sweep(name)["spec"]["objectives"]
        }
        table = Table(title=f"Pareto front of {name} ({len(rows)} points)")
        cells = []
        for c in shown:
            header, fmt = _front_column(c, percentiles.get(c))
            words = c in ("accelerator", "weights", "kv_cache", "stage")
            table.add_column(header, justify="left" if words else "right")
            cells.append(fmt)
        for r in rows:
            table.add_row(*[fmt(r.get(c)) for c, fmt in zip(shown, cells, strict=True)])
        print_table(table, wide)


_LATENCY = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "end-to-end"}
_FRONT_HEADERS = {
    "accelerator": "GPU",
    "tp": "TP",
    "pp": "PP",
    "ep": "EP",
    "weights": "weights",
    "kv_cache": "KV",
    "max_batch": "batch ≤",
    "chunked_prefill": "chunk (tokens)",
    "replicas": "replicas",
    "total_gpus": "GPUs",
    "usd_per_hour": "$/h",
    "objective_usd_per_million_output_tokens": "$/Mtok",
    "objective_usd_per_request": "$/request",
    "objective_usd_per_million_total_tokens": "$/Mtok in+out",
    "objective_usd_per_hour": "$/h",
    "objective_energy_j_per_output_token": "J/token",
    "objective_gpus": "GPUs",
    "objective_output_tokens_per_s_per_gpu": "tokens/s per GPU",
}


def _front_column(column: str, percentile: float | None) -> tuple[str, Any]:
    """(short header with its unit, cell formatter) of a front table column: latencies in ms."""
    metric = column.removeprefix("objective_")
    if column.startswith("objective_") and metric in _LATENCY:
        return f"{_LATENCY[metric]} p{percentile or 50:g} (ms)", lambda v: "-" if v is None else f"{v * 1e3:,.1f}"
    if column in ("usd_per_hour", "objective_usd_per_hour", "objective_usd_per_million_output_tokens"):
        return _FRONT_HEADERS[column], lambda v: "-" if v is None else f"{v:,.3f}"
    if column in ("objective_usd_per_request", "objective_usd_per_million_total_tokens"):
        return _FRONT_HEADERS[column], lambda v: "-" if v is None else f"{v:,.3g}"  # cents per request
    return _FRONT_HEADERS.get(column, column), _fmt


def export(
    name: str,
    output: Annotated[Path, typer.Option("-o", "--output", help="file: .csv, .json or .parquet")],
    storage: StorageOpt = None,
    what: Annotated[str, typer.Option(help="front or evaluations")] = "front",
    mkdir: MkdirOpt = False,
) -> None:
    """Write a sweep's front (or every stored evaluation) to a file."""
    if output.suffix.lower() not in (".csv", ".json", ".parquet"):
        fail(f"unknown export format {output.suffix or output.name!r}; use .csv, .json or .parquet")
    check_output(output, mkdir=mkdir)
    store = _store(storage)
    if what == "front":
        try:
            columns, rows = front_rows(store, name)
        except FrontError as exc:
            fail(str(exc))
    elif what == "evaluations":
        try:
            columns, rows = evaluation_rows(store, name)
        except FrontError as exc:
            fail(str(exc))
    else:
        fail(f"--what must be front or evaluations, not {what!r}")
        return
    suffix = output.suffix.lower()
    if suffix == ".json":
        output.write_text(json.dumps(rows, indent=2) + "\n")
    elif suffix == ".csv":
        with output.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
    elif suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            fail("writing .parquet needs pyarrow: pip install 'servesweep[parquet]'")
            return
        pq.write_table(pa.Table.from_pylist(rows), output)
    else:
        fail(f"unknown export format {suffix or output.name!r}; use .csv, .json or .parquet")
    say(f"wrote {len(rows)} rows to {output}")


def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8080,
) -> None:
    """Serve optuna-dashboard on the sweep database (guided sweeps are Optuna studies)."""
    from search.store import default_storage_url, make_optuna_storage

    try:
        from optuna_dashboard import run_server
    except ImportError:
        fail("optuna-dashboard is not installed: pip install 'servesweep[dashboard]'")
        return
    url = storage or default_storage_url()
    _store(url).close()  # read-only: a missing or unreachable database is an error here
    say(f"optuna-dashboard on {url} at http://{host}:{port}")
    run_server(make_optuna_storage(url), host=host, port=port)


def report(
    name: str,
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write")] = Path("report.html"),
    storage: StorageOpt = None,
    mkdir: MkdirOpt = False,
) -> None:
    """Write the procurement report of a sweep: one self-contained HTML page (opens offline)."""
    from search.outputs import write_report

    check_output(output, mkdir=mkdir)
    store = _store(storage)
    s = store.get_sweep(name)
    if s is None:
        fail(f"no sweep named {name!r} in {store.url}")
        return
    try:
        path = write_report(store, name, output)
    except ValueError as exc:
        fail(str(exc))
        return
    say(f"wrote the report of sweep {name} to {path}")


def register(app: typer.Typer) -> None:
    for fn in (run, ls, show, front, export, report, dashboard):
        app.command()(fn)
