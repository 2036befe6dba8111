"""`servesweep simulate`: tail latencies of one deployment under load, from the discrete-event
serving simulator (objectives.simulator), next to the analytic model's p99 under the same load.

    servesweep simulate --model llama-3.1-70b --gpu H100-SXM --tp 4 --weights fp8 \\
        --workload chat --rate 10 [--requests 10000] [--arrivals gamma --cv 2] [--json]

`--workload` is a preset name, a workload YAML / JSON file (the schema of a sweep spec's
`workload:` mapping), or a CSV trace of (timestamp, input tokens, output tokens) such as the
Azure LLM inference traces (`TIMESTAMP,ContextTokens,GeneratedTokens`).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from search.cli.checks import above_zero
from search.cli.console import console, fail
from search.outputs import clean_json


class ArrivalKind(StrEnum):
    poisson = "poisson"
    gamma = "gamma"


class DispatchKind(StrEnum):
    least_loaded = "least_loaded"
    round_robin = "round_robin"


def simulate(
    model: Annotated[str, typer.Option(help="catalog id or alias, or a config.json / model directory")],
    gpu: Annotated[str, typer.Option(help="accelerator id or alias")],
    workload: Annotated[str, typer.Option(help="preset name, workload YAML/JSON file, or CSV trace")] = "chat",
    rate: Annotated[
        float | None,
        typer.Option(callback=above_zero, help="arrival rate, requests/s, above 0 (default: the workload's)"),
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="queue every request at t=0")] = False,
    requests: Annotated[int, typer.Option(min=1, help="requests to simulate")] = 10_000,
    arrivals: Annotated[ArrivalKind, typer.Option(help="arrival process for presets")] = ArrivalKind.poisson,
    cv: Annotated[float, typer.Option(min=0.0, help="coefficient of variation of gamma inter-arrivals")] = 1.0,
    seed: Annotated[int, typer.Option(help="random seed (a seeded run replays identically)")] = 0,
    tp: Annotated[int, typer.Option(min=1, help="tensor parallel size")] = 1,
    pp: Annotated[int, typer.Option(min=1, help="pipeline parallel size")] = 1,
    ep: Annotated[int, typer.Option(min=1, help="expert parallel size (divides TP; tp x attention-dp with DEP)")] = 1,
    attention_dp: Annotated[
        int, typer.Option(min=1, help="attention data-parallel ranks of tp GPUs each (DEP, MoE models)")
    ] = 1,
    mtp: Annotated[int, typer.Option(min=0, max=8, help="draft tokens of speculative decoding / MTP")] = 0,
    weights: Annotated[str, typer.Option(help="bf16, fp8, int8, int8-wo, int4, fp4, mxfp4")] = "bf16",
    kv_cache: Annotated[
        str | None, typer.Option(help="KV-cache dtype bf16 or fp8 (default: fp8 with fp8/fp4 weights)")
    ] = None,
    max_num_seqs: Annotated[
        int, typer.Option("--max-num-seqs", "--batch", min=1, help="running sequences per replica at most")
    ] = 256,
    max_num_batched_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-num-batched-tokens", "--chunked-prefill", min=1, help="tokens per step (default: runtime's 8192)"
        ),
    ] = None,
    block_size: Annotated[int, typer.Option(min=1, help="KV-cache block size, tokens")] = 16,
    replicas: Annotated[int, typer.Option(min=1, help="replicas behind the load balancer")] = 1,
    dispatch: Annotated[DispatchKind, typer.Option(help="load balancing")] = DispatchKind.least_loaded,
    slo: Annotated[
        list[str] | None,
        typer.Option(help="METRIC:MAX_S[:PERCENTILE], e.g. ttft:1.0:p99 (repeat; replaces the workload's)"),
    ] = None,
    gpu_file: Annotated[Path | None, typer.Option(help="YAML file adding / overriding GPUs")] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="serving engine trtllm, vllm or sglang: its memory fraction and token budget"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Simulate continuous batching under load: TTFT / TPOT / end-to-end percentiles, queueing,
    throughput, KV use, preemptions and SLO attainment of one deployment."""
    from search.outputs import SimulationError, simulate_deployment

    try:
        out = simulate_deployment(
            model=model,
            gpu=gpu,
            workload=workload,
            rate=rate,
            offline=offline,
            requests=requests,
            arrivals=arrivals.value,
            cv=cv,
            seed=seed,
            tp=tp,
            pp=pp,
            ep=ep,
            attention_dp=attention_dp,
            mtp=mtp,
            weights=weights,
            kv_cache=kv_cache,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            block_size=block_size,
            replicas=replicas,
            dispatch=dispatch.value,
            slo=slo,
            gpu_file=gpu_file,
            engine=engine,
        )
    except SimulationError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(clean_json(out), indent=2))
        return
    _print(out)


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"


def _print(r: dict[str, Any]) -> None:
    s = r["simulation"]
    a = r["analytic"]
    console.print(
        f"[bold]{r['model']} on {r['replicas']} x {r['tp'] * r['pp']} {r['gpu']} (TP{r['tp']} PP{r['pp']} "
        f"EP{r['ep']}), {r['weights']} weights, {r['kv_cache']} KV, engine {r.get('engine')}[/]"
    )
    console.print(
        f"{r['source']}; mean {r['mean_input_tokens']:.0f} in / {r['mean_output_tokens']:.0f} out tokens; "
        f"max {s['max_num_seqs']} seqs, {s['max_num_batched_tokens']} tokens per step"
    )
    t = Table(title=f"latency over {s['requests']} requests")
    model_col = (
        f"analytic p{a['latency_percentile']:g}"
        if a.get("latency_percentile") is not None
        else f"analytic mean @ batch {a['batch']:.0f}"
    )
    for col in ("metric", "p50", "p90", "p99", "mean", model_col):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end-to-end"), ("queue_s", "queueing")):
        v = s[key]
        t.add_row(label, _ms(v.get("p50")), _ms(v.get("p90")), _ms(v.get("p99")), _ms(v.get("mean")), _ms(a.get(key)))
    console.print(t)
    o = Table(show_header=False, title="load")
    o.add_row("output tokens/s (simulated)", f"{s['output_tokens_per_s'] or 0:.1f}")
    cap = a["max_output_tokens_per_s_per_replica"] * r["replicas"]
    o.add_row("analytic capacity at the batch", f"{cap:.1f} tokens/s ({r['replicas']} replica(s))")
    o.add_row("requests/s served", f"{s['requests_per_s'] or 0:.2f}")
    o.add_row("KV cache in use", f"{s['kv_utilization']:.1%} mean, {s['peak_kv_utilization']:.1%} peak")
    o.add_row("preemptions", f"{s['preemptions']} ({s['preempted_requests']} requests)")
    if s["rejected"]:
        o.add_row("rejected (prompt exceeds the KV cache)", str(s["rejected"]))
    if s["slo_attainment"] is not None:
        o.add_row("SLO attainment (requests meeting every target)", f"{s['slo_attainment']:.1%}")
    console.print(o)
    for row in s["slos"]:
        mark = "[green]met[/]" if row["met"] else "[red]missed[/]"
        console.print(
            f"SLO {row['metric']} p{row['percentile']:g} <= {_ms(row['max_s'])}: {_ms(row['value_s'])} {mark}"
        )
    rate = r.get("simulated_requests_per_wall_s")
    console.print(f"[dim]simulated in {r['wall_s']:.2f} s ({rate or 0:,.0f} requests/s of wall time)[/]")


def register(app: typer.Typer) -> None:
    app.command()(simulate)
