"""The `servesweep` command line."""

from __future__ import annotations

import difflib
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from search.calibration import calibrate_from_measurements, resolve_calibration
from search.estimates import EstimateError, gpu_catalog, model_catalog
from search.estimates import estimate as estimate_deployment
from search.kernels_cli import register as _register_kernels_command
from search.probe_cli import register as _register_probe_command
from search.service_cli import register as _register_service_command
from search.simulate_cli import register as _register_simulate_command
from search.sweep_commands import register as _register_sweep_commands

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Find the cheapest fast ways to serve a large language model."
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)

GB = 1e9


class CatalogKind(StrEnum):
    gpus = "gpus"
    models = "models"


class Pricing(StrEnum):
    cloud = "cloud"
    owned = "owned"


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@app.command()
def catalog(
    kind: Annotated[CatalogKind, typer.Argument(help="gpus or models")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    gpu_file: Annotated[Path | None, typer.Option(help="YAML file adding / overriding GPUs")] = None,
) -> None:
    """List the accelerators or models servesweep knows."""
    if kind is CatalogKind.gpus:
        rows = gpu_catalog(gpu_file)
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        table = Table(title="accelerators")
        for col in ("id", "bf16 TF", "fp8 TF", "fp4 TF", "HBM GB", "TB/s", "link GB/s", "domain", "TDP W", "$/h"):
            table.add_column(col, justify="right" if col != "id" else "left")
        for r in rows:
            tf = r["peak_tflops"]
            table.add_row(
                r["id"],
                f"{tf.get('bf16', 0):.0f}",
                f"{tf['fp8']:.0f}" if "fp8" in tf else "-",
                f"{tf['fp4']:.0f}" if "fp4" in tf else "-",
                f"{r['hbm_gb']:.0f}",
                f"{r['hbm_tb_per_s']:.2f}",
                f"{r['scaleup_gb_per_s_per_direction']:.0f}",
                str(r["scaleup_domain"]),
                f"{r['tdp_w']:.0f}",
                f"{r['usd_per_gpu_hour']:.2f}",
            )
        console.print(table)
        return
    models = model_catalog()
    if as_json:
        print(json.dumps(models, indent=2))
        return
    table = Table(title="models")
    for col in ("id", "arch", "total B", "active B", "layers", "heads/kv", "experts"):
        table.add_column(col, justify="left" if col in ("id", "arch") else "right")
    for m in models:
        experts = f"{m['experts_per_token']}/{m['experts']}" if m["experts"] else "-"
        table.add_row(
            m["id"],
            m["architecture"],
            f"{m['total_params_b']:.1f}",
            f"{m['active_params_b']:.1f}",
            str(m["layers"]),
            f"{m['heads']}/{m['kv_heads']}",
            experts,
        )
    console.print(table)


@app.command()
def estimate(
    model: Annotated[str, typer.Option(help="catalog id or alias, or a config.json / model directory")],
    gpu: Annotated[str, typer.Option(help="accelerator id or alias")],
    tp: Annotated[int, typer.Option(min=1, help="tensor parallel size")] = 1,
    pp: Annotated[int, typer.Option(min=1, help="pipeline parallel size")] = 1,
    ep: Annotated[int, typer.Option(min=1, help="expert parallel size (divides TP)")] = 1,
    weights: Annotated[str, typer.Option(help="bf16, fp8, int8, int8-wo, int4, fp4, mxfp4")] = "bf16",
    kv_cache: Annotated[
        str | None, typer.Option(help="KV-cache dtype bf16 or fp8 (default: fp8 with fp8/fp4 weights)")
    ] = None,
    isl: Annotated[int, typer.Option(min=1, help="input tokens per request")] = 1024,
    osl: Annotated[int, typer.Option(min=1, help="output tokens per request")] = 256,
    batch: Annotated[int | None, typer.Option(min=1, help="concurrent sequences per replica")] = None,
    max_throughput: Annotated[
        bool, typer.Option("--max-throughput", help="pick the batch giving the most tokens/s per GPU")
    ] = False,
    rate: Annotated[float | None, typer.Option(min=0.0, help="arrival rate, requests/s (sets replicas)")] = None,
    pricing: Annotated[Pricing, typer.Option(help="cloud on-demand or owned TCO")] = Pricing.cloud,
    gpu_file: Annotated[Path | None, typer.Option(help="YAML file adding / overriding GPUs")] = None,
    calibration: Annotated[
        str, typer.Option(help="efficiencies: none (shipped defaults), latest (newest stored) or a record FILE")
    ] = "none",
    storage: Annotated[
        str | None, typer.Option(envvar="SERVESWEEP_STORAGE", help="database for --calibration latest")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Estimate memory, latency, throughput and cost of one deployment."""
    if batch is not None and max_throughput:
        _fail("give either --batch or --max-throughput, not both")
    try:
        result = estimate_deployment(
            model=model,
            gpu=gpu,
            calibration=lambda gpu_id: resolve_calibration(calibration, storage, gpus=[gpu_id]),
            tp=tp,
            pp=pp,
            ep=ep,
            weights=weights,
            kv_cache=kv_cache,
            isl=isl,
            osl=osl,
            batch=batch,
            rate=rate,
            pricing=pricing.value,
            gpu_file=gpu_file,
        )
    except EstimateError as exc:
        _fail(str(exc))
        return
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_estimate(result)
    if not result["feasible"]:
        raise typer.Exit(code=1)


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.2f} s"


def _print_estimate(r: dict) -> None:
    title = (
        f"{r['model']} on {r['gpus']}x {r['gpu']} (TP{r['tp']} PP{r['pp']} EP{r['ep']}), "
        f"{r['weights']} weights ({r['compute_dtype']} compute), {r['kv_cache']} KV, isl {r['isl']} osl {r['osl']}"
    )
    console.print(f"[bold]{title}[/]")
    if not r["feasible"]:
        console.print(f"[bold red]infeasible:[/] {r['reason']}")
    mem = Table(title="memory per GPU", show_header=False)
    mem.add_row("weights", f"{r['weights_per_gpu_gb']:.1f} GB of {r['hbm_gb']:.1f} GB")
    if r["kv_budget_per_gpu_gb"] > 0:
        mem.add_row("KV-cache budget", f"{r['kv_budget_per_gpu_gb']:.1f} GB")
        mem.add_row("in use at batch", f"{r['memory_per_gpu_gb']:.1f} GB of {r['hbm_gb']:.1f} GB")
        mem.add_row("batch / largest that fits", f"{r['batch']} / {r['max_batch']}")
    else:
        mem.add_row("short by", f"{-r['kv_budget_per_gpu_gb']:.1f} GB (weights + workspace + reserve)")
    console.print(mem)
    if r["feasible"]:
        t = Table(title="decode step (per token round)", show_header=True)
        for col in ("component", "time"):
            t.add_column(col)
        d = r["decode_step_s"]
        for key in (
            "weights_memory_s",
            "gemm_compute_s",
            "gemm_s",
            "kv_memory_s",
            "attention_compute_s",
            "attention_s",
            "communication_s",
            "overhead_s",
            "total_s",
        ):
            t.add_row(key.removesuffix("_s").replace("_", " "), _fmt_s(d[key]))
        console.print(t)
        s = Table(title="serving", show_header=False)
        s.add_row("TTFT", _fmt_s(r["ttft_s"]))
        s.add_row("TPOT", _fmt_s(r["tpot_s"]))
        s.add_row("end-to-end", _fmt_s(r["e2e_s"]))
        s.add_row("output tokens/s per GPU", f"{r['output_tokens_per_s_per_gpu']:.1f}")
        s.add_row("output tokens/s per user", f"{r['output_tokens_per_s_per_user']:.1f}")
        s.add_row("bound", r["bound"])
        s.add_row("energy per output token", f"{r['energy_j_per_output_token']:.2f} J (at TDP)")
        s.add_row(
            f"cost ({r['pricing']})",
            f"${r['usd_per_hour']:.2f}/h for {r['replicas']} replica(s), "
            f"${r['usd_per_million_output_tokens']:.3f} per million output tokens",
        )
        console.print(s)
    e = r["efficiency"]
    console.print(
        f"efficiency: bandwidth {e['bw']:.2f}, GEMM {e['gemm']:.2f}, attention {e['attention']:.2f}, "
        f"all-reduce alpha {e['allreduce_latency_s'] * 1e6:.0f} us ({e['basis']}); calibration: {r['calibration']}"
    )
    for note in r["notes"]:
        console.print(f"[yellow]note:[/] {note}")


@app.command()
def calibrate(
    measurements: Annotated[Path, typer.Option(help="measurement rows (JSON lines, the public file's format)")],
    holdout_fraction: Annotated[float, typer.Option(min=0.0, max=0.95, help="share of rows held out")] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the hold-out split")] = 0,
    params: Annotated[str | None, typer.Option(help="comma-separated serving parameters to fit (default: all)")] = None,
    max_evals: Annotated[int, typer.Option(min=10, help="loss evaluations of the optimizer")] = 800,
    name: Annotated[str | None, typer.Option(help="name of the stored calibration")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="also write the record here (JSON)")] = None,
    storage: Annotated[str | None, typer.Option(envvar="SERVESWEEP_STORAGE", help="database URL")] = None,
) -> None:
    """Fit the cost model's global efficiency parameters to end-to-end measurements."""
    import datetime as dt

    from search.fitting import BOUNDS
    from search.storage import Store, default_storage_url
    from search.validation import load_measurements

    try:
        rows = load_measurements(measurements)
    except (OSError, ValueError) as exc:
        _fail(f"measurements {measurements}: {exc}")
        return
    names = tuple(p.strip() for p in params.split(",")) if params else tuple(BOUNDS)
    unknown = [p for p in names if p not in BOUNDS]
    if unknown:
        _fail(f"unknown parameters {unknown}; fittable: {', '.join(BOUNDS)}")
    name = name or f"measurements-{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}"
    try:
        store = Store(storage or default_storage_url())
        if store.get_calibration(name) is not None:
            _fail(f"a calibration named {name!r} already exists in {store.url}")
        record = calibrate_from_measurements(
            rows,
            name=name,
            holdout_fraction=holdout_fraction,
            seed=seed,
            params=names,
            max_evals=max_evals,
            source=str(measurements),
        )
        store.save_calibration(name, "measurements", record)
    except ValueError as exc:
        _fail(str(exc))
        return
    errors = record["fit"]["errors"]
    table = Table(title=f"calibration {name}: absolute percentage error")
    for col in ("rows", "n", "median before", "median after", "p90 before", "p90 after"):
        table.add_column(col)
    for part in ("fit", "held_out"):
        if f"{part}_before" in errors:
            b, a = errors[f"{part}_before"], errors[f"{part}_after"]
            table.add_row(
                part.replace("_", "-"),
                str(a["n"]),
                f"{b['median_ape']}%",
                f"{a['median_ape']}%",
                f"{b['p90_ape']}%",
                f"{a['p90_ape']}%",
            )
    console.print(table)
    for k, v in record["serving"].items():
        console.print(f"  {k:<26} {v['value']:.6g}")
    if output is not None:
        output.write_text(json.dumps(record, indent=2) + "\n")
        console.print(f"wrote {output}")
    console.print(f"stored as calibration {name!r} in {store.url}; use it with --calibration latest or the file")


@app.command()
def calibrations(
    name: Annotated[str | None, typer.Argument(help="export this calibration (default: list them all)")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write the record here (JSON)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    storage: Annotated[str | None, typer.Option(envvar="SERVESWEEP_STORAGE", help="database URL")] = None,
) -> None:
    """List the stored calibrations, or export one as JSON (to commit under calibrations/)."""
    from search.storage import Store, default_storage_url

    store = Store(storage or default_storage_url())
    if name is None:
        if output is not None:
            _fail("name the calibration to export with -o")
        rows = store.list_calibrations()
        summary = [
            {
                "name": c["name"],
                "kind": c["kind"],
                "gpu": c["gpu"],
                "device": c["device"],
                "created_at": c["created_at"],
                "applies_to": c["gpu"] or "all GPUs",
                **_held_out(c["record"]),
            }
            for c in rows
        ]
        if as_json:
            console.print_json(json.dumps(summary))
            return
        if not summary:
            console.print(f"no calibrations in {store.url}: run 'servesweep calibrate' or 'servesweep probe'")
            return
        table = Table(title=f"calibrations in {store.url} (newest first)")
        for col in ("name", "kind", "applies to", "created", "held-out median/p90: before -> after"):
            table.add_column(col)
        for c in summary:
            err = c.get("held_out")
            table.add_row(
                c["name"],
                c["kind"],
                c["applies_to"],
                str(c["created_at"])[:19].replace("T", " "),
                "-" if not err else f"{err[0]}% / {err[1]}% -> {err[2]}% / {err[3]}%",
            )
        console.print(table)
        return
    found = store.get_calibration(name)
    if found is None:
        known = [c["name"] for c in store.list_calibrations()]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        _fail(f"no calibration named {name!r} in {store.url}{hint}")
        return
    text = json.dumps(found["record"], indent=2) + "\n"
    if output is None:
        print(text, end="")
    else:
        output.write_text(text)
        err_console.print(f"wrote {output} (use it with --calibration {output})")


def _held_out(record: dict) -> dict:
    """{'held_out': [median before, p90 before, median after, p90 after]} of a measurement fit."""
    errors = (record.get("fit") or {}).get("errors") or {}
    before, after = errors.get("held_out_before"), errors.get("held_out_after")
    if not before or not after:
        return {}
    return {"held_out": [before["median_ape"], before["p90_ape"], after["median_ape"], after["p90_ape"]]}


_register_sweep_commands(app)
_register_simulate_command(app)
_register_probe_command(app)
_register_service_command(app)
_register_kernels_command(app)


def main() -> None:  # pragma: no cover - console script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
