"""`servesweep catalog | estimate`: the shipped catalogs, and one deployment's estimate."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from objectives.accelerators import PRICE_PROVIDERS
from search.calibration import resolve_calibration
from search.cli.checks import above_zero
from search.cli.console import console, fail, print_table, say
from search.outputs import EstimateError, gpu_catalog, model_catalog
from search.outputs import estimate as estimate_deployment

GB = 1e9


class CatalogKind(StrEnum):
    gpus = "gpus"
    models = "models"


class Pricing(StrEnum):
    cloud = "cloud"
    owned = "owned"


def catalog(
    kind: Annotated[CatalogKind, typer.Argument(help="gpus or models")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    gpu_file: Annotated[Path | None, typer.Option(help="YAML file adding / overriding GPUs")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="print the table at full width (no wrapping)")] = False,
    provider: Annotated[
        str | None,
        typer.Option(
            help="only GPUs this provider lists, at its price: " + ", ".join(PRICE_PROVIDERS), show_default=False
        ),
    ] = None,
) -> None:
    """List the accelerators or models servesweep knows (units in the headers: TFLOP/s dense, GB,
    TB/s, GB/s per direction, W, $ per GPU-hour). `providers` lists whose price lists have each
    GPU, the default price's provider first (*)."""
    if kind is CatalogKind.gpus:
        rows = gpu_catalog(gpu_file)
        if provider is not None:
            provider = provider.strip().lower()
            if provider not in PRICE_PROVIDERS:
                fail(f"unknown price provider {provider!r}; allowed: {', '.join(PRICE_PROVIDERS)}")
            rows = [r for r in rows if provider in r["prices"]]
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        title = "accelerators (TF: dense TFLOP/s; link: scale-up GB/s per direction)"
        if provider is not None:
            title += f", priced from {provider}'s list"
        table = Table(title=title)
        table.add_column("id")
        for col in (
            "bf16 TF",
            "fp8 TF",
            "fp4 TF",
            "HBM GB",
            "HBM TB/s",
            "link GB/s",
            "domain GPUs",
            "TDP W",
            "$/GPU-h",
        ):
            table.add_column(col, justify="right")
        table.add_column("providers")
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
                f"{(r['prices'][provider] if provider else r['usd_per_gpu_hour']):.2f}",
                _providers(r),
            )
        print_table(table, wide, wrap=("aliases",))
        return
    models = model_catalog()
    if as_json:
        print(json.dumps(models, indent=2))
        return
    table = Table(title="models (params in billions; --model takes the id or an alias)")
    table.add_column("id")
    table.add_column("aliases", overflow="fold")
    for col in ("arch", "total B", "active B", "layers", "heads/kv", "experts"):
        table.add_column(col, justify="left" if col == "arch" else "right")
    for m in models:
        experts = f"{m['experts_per_token']}/{m['experts']}" if m["experts"] else "-"
        table.add_row(
            m["id"],
            ", ".join(m.get("aliases") or []) or "-",
            m["architecture"],
            f"{m['total_params_b']:.1f}",
            f"{m['active_params_b']:.1f}",
            str(m["layers"]),
            f"{m['heads']}/{m['kv_heads']}",
            experts,
        )
    print_table(table, wide, wrap=("aliases",))


def _providers(row: dict) -> str:
    """'aws*, oracle' or 'neocloud (Lambda)*': the providers listing the GPU, the default price's first and starred."""
    default = row["price_provider"]
    others = [p for p in PRICE_PROVIDERS if p in row["prices"] and p != default]

    def name(p: str) -> str:  # a GPU cloud by its name: neocloud (Lambda)
        return f"{p} ({row['price_lists'][p]})" if p == "neocloud" else p

    return ", ".join([f"{name(default)}*", *map(name, others)])


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
    rate: Annotated[
        float | None,
        typer.Option(
            callback=above_zero, help="arrival rate, requests/s, above 0: latencies under load, replicas with headroom"
        ),
    ] = None,
    percentile: Annotated[
        float, typer.Option(min=0.1, max=99.99, help="latency percentile under --rate (default p99)")
    ] = 99.0,
    target_utilization: Annotated[
        float | None,
        typer.Option(min=0.01, max=1.0, help="largest share of a replica's capacity in use under --rate (default 0.8)"),
    ] = None,
    pricing: Annotated[Pricing, typer.Option(help="cloud on-demand or owned TCO")] = Pricing.cloud,
    gpu_file: Annotated[Path | None, typer.Option(help="YAML file adding / overriding GPUs")] = None,
    calibration: Annotated[
        str, typer.Option(help="efficiencies: none (shipped defaults), latest (newest stored) or a record FILE")
    ] = "none",
    storage: Annotated[
        str | None, typer.Option(envvar="SERVESWEEP_STORAGE", help="database for --calibration latest")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="serving engine trtllm, vllm or sglang: its runtime profile (default: efficiency model's)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Estimate memory, latency, throughput and cost of one deployment."""
    if batch is not None and max_throughput:
        fail("give either --batch or --max-throughput, not both")
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
            percentile=percentile,
            target_utilization=target_utilization,
            pricing=pricing.value,
            gpu_file=gpu_file,
            engine=engine,
        )
    except EstimateError as exc:
        fail(str(exc))
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
    say(title, style="bold")
    if not r["feasible"]:
        say(str(r["reason"]), "infeasible: ", "bold red")
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
        if r.get("latency_percentile") is not None:
            s = Table(
                title=f"serving at {r['rate_per_s']:g} requests/s: p{r['latency_percentile']:g} latencies, "
                f"each replica at {r['utilization']:.0%} of its capacity",
                show_header=False,
            )
            at = f" p{r['latency_percentile']:g}"
        else:
            s, at = Table(title="serving (steady state at the batch)", show_header=False), ""
        s.add_row("TTFT" + at, _fmt_s(r["ttft_s"]) + _iv(r, "ttft_s", _fmt_s))
        s.add_row("TPOT" + at, _fmt_s(r["tpot_s"]) + _iv(r, "tpot_s", _fmt_s))
        s.add_row("end-to-end" + at, _fmt_s(r["e2e_s"]) + _iv(r, "e2e_s", _fmt_s))
        s.add_row(
            "output tokens/s per GPU",
            f"{r['output_tokens_per_s_per_gpu']:.1f}" + _iv(r, "output_tokens_per_s_per_gpu", lambda v: f"{v:.1f}"),
        )
        s.add_row("output tokens/s per user", f"{r['output_tokens_per_s_per_user']:.1f}")
        s.add_row("energy per output token", f"{r['energy_j_per_output_token']:.2f} J (at TDP)")
        s.add_row(
            f"cost ({r['pricing']})",
            f"${r['usd_per_hour']:.2f}/h for {r['replicas']} replica(s), "
            f"${r['usd_per_million_output_tokens']:.3f} per million output tokens"
            + _iv(r, "usd_per_million_output_tokens", lambda v: f"${v:.3f}"),
        )
        s.add_row(
            "cost per request / per total token",
            f"${r['usd_per_request']:.3g} per request, "
            f"${r['usd_per_million_total_tokens']:.3f} per million input + output tokens",
        )
        console.print(s)
        _print_evidence(r)
        say(
            f"decode step bound: {r['decode_bound']}; prefill bound: {r['prefill_bound']}; "
            f"whole cycle (prefill included): {r['bound']} — the cycle is {r['osl']} decode steps plus one "
            "prefill per request, so a compute-heavy prefill can bound it while each decode step reads memory"
        )
    e = r["efficiency"]
    console.print(
        f"efficiency: bandwidth {e['bw']:.2f}, GEMM {e['gemm']:.2f}, attention {e['attention']:.2f}, "
        f"all-reduce alpha {e['allreduce_latency_s'] * 1e6:.1f} µs ({e['allreduce_latency_measured_s'] * 1e6:.1f} µs "
        f"[{e['basis']}] × fitted scale {e['allreduce_latency_scale']:.3g}); calibration: {r['calibration']}",
        markup=False,
    )
    p = r.get("engine_profile") or {}
    if p:
        say(
            f"engine {p['name']} ({r['engine']}): {p['memory_basis']} memory fraction {p['memory_fraction']:.3g}, "
            f"max {p['max_batch_size']:.0f} sequences / {p['max_num_tokens']:.0f} tokens per step"
            + ("" if p.get("applied", True) else " (profile not applied: no --engine)"),
        )
    basis = r.get("basis") or {}
    if basis:
        say("; ".join(f"{k} {v}" for k, v in basis.items()), "basis: ")
    for note in r["notes"]:
        say(note, "note: ", "yellow")


def _iv(r: dict, key: str, fmt: Any) -> str:
    """' (80%: a - b)' beside a predicted value, from its region's validation residuals."""
    iv = (r.get("intervals") or {}).get(key)
    return f" (80%: {fmt(iv['p10'])} – {fmt(iv['p90'])})" if iv else ""


def _print_evidence(r: dict) -> None:
    """Which validation rows stand behind the intervals, and which metrics are extrapolated."""
    for metric, e in (r.get("evidence") or {}).items():
        text = f"{metric}: {e['region_rows']} validation rows in {e['region'].rsplit('/', 1)[0]}"
        if e["extrapolated"]:
            text += (
                f" — extrapolated: interval from {e['used'].rsplit('/', 1)[0]} ({e['used_rows']} rows), "
                f"{e['widen']:g}x wider"
            )
        say(text, "evidence: ", "yellow" if e["extrapolated"] else "")


def register(app: typer.Typer) -> None:
    for fn in (
        catalog,
        estimate,
    ):
        app.command()(fn)
