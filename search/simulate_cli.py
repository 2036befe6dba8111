"""`servesweep simulate`: tail latencies of one deployment under load, from the discrete-event
serving simulator (objectives.simulator), next to the analytic model's means.

    servesweep simulate --model llama-3.1-70b --gpu H100-SXM --tp 4 --weights fp8 \\
        --workload chat --rate 10 [--requests 10000] [--arrivals gamma --cv 2] [--json]

`--workload` is a preset name, a workload YAML / JSON file (the schema of a sweep spec's
`workload:` mapping), or a CSV trace of (timestamp, input tokens, output tokens) such as the
Azure LLM inference traces (`TIMESTAMP,ContextTokens,GeneratedTokens`).
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import yaml
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True, soft_wrap=True)


class ArrivalKind(StrEnum):
    poisson = "poisson"
    gamma = "gamma"


class DispatchKind(StrEnum):
    least_loaded = "least_loaded"
    round_robin = "round_robin"


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def _parse_slo(text: str) -> Any:
    """METRIC:MAX_S[:PERCENTILE] (percentile as 99 or p99) -> an SLO."""
    from workloads.workload import SLO

    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"--slo {text!r}: use METRIC:MAX_SECONDS[:PERCENTILE], e.g. ttft:1.0:p99")
    try:
        pct = float(parts[2].lower().lstrip("p")) if len(parts) == 3 else 50.0
        return SLO(metric=parts[0].strip().lower(), max_s=float(parts[1]), percentile=pct)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"--slo {text!r}: {exc}") from None


def _load_requests(
    workload: str, rate: float | None, n: int, arrivals: ArrivalKind, cv: float, seed: int, offline: bool
) -> tuple[Any, Any, str]:
    """(Workload or None, Requests, description)."""
    from pydantic import ValidationError

    from workloads.arrivals import TraceError, sample_requests, trace_requests
    from workloads.presets import get_preset
    from workloads.workload import Workload

    path = Path(workload)
    if path.suffix.lower() in (".csv", ".txt") or (
        path.is_file() and path.suffix.lower() not in (".yaml", ".yml", ".json")
    ):
        try:
            reqs = trace_requests(path, n=n, rate_per_s=rate, offline=offline)
        except TraceError as exc:
            raise ValueError(str(exc)) from None
        span = "offline" if offline else (f"rescaled to {rate:g} req/s" if rate else "at its own times")
        return None, reqs, f"trace {path.name} ({len(reqs)} requests, {span})"
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        try:
            w = Workload.model_validate(yaml.safe_load(path.read_text()))
        except OSError as exc:
            raise ValueError(f"cannot read workload {path}: {exc.strerror}") from None
        except (ValidationError, yaml.YAMLError) as exc:
            raise ValueError(f"workload {path}: {exc}") from None
    else:
        w = get_preset(workload)
    if offline:
        w = w.model_copy(update={"arrival_rate_per_s": None})
    elif rate is not None:
        w = w.model_copy(update={"arrival_rate_per_s": rate})
    reqs = sample_requests(w, n, process=arrivals.value, cv=cv, seed=seed)
    how = "offline (all queued at t=0)" if w.offline else f"{arrivals.value} at {w.arrival_rate_per_s:g} req/s"
    if not w.offline and arrivals is ArrivalKind.gamma:
        how += f", cv {cv:g}"
    return w, reqs, f"workload {w.name}: {how}"


def simulate(
    model: Annotated[str, typer.Option(help="catalog id or alias, or a config.json / model directory")],
    gpu: Annotated[str, typer.Option(help="accelerator id or alias")],
    workload: Annotated[str, typer.Option(help="preset name, workload YAML/JSON file, or CSV trace")] = "chat",
    rate: Annotated[
        float | None, typer.Option(min=0.0, help="arrival rate, requests/s (default: the workload's)")
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="queue every request at t=0")] = False,
    requests: Annotated[int, typer.Option(min=1, help="requests to simulate")] = 10_000,
    arrivals: Annotated[ArrivalKind, typer.Option(help="arrival process for presets")] = ArrivalKind.poisson,
    cv: Annotated[float, typer.Option(min=0.0, help="coefficient of variation of gamma inter-arrivals")] = 1.0,
    seed: Annotated[int, typer.Option(help="random seed (a seeded run replays identically)")] = 0,
    tp: Annotated[int, typer.Option(min=1, help="tensor parallel size")] = 1,
    pp: Annotated[int, typer.Option(min=1, help="pipeline parallel size")] = 1,
    ep: Annotated[int, typer.Option(min=1, help="expert parallel size (divides TP)")] = 1,
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
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Simulate continuous batching under load: TTFT / TPOT / end-to-end percentiles, queueing,
    throughput, KV use, preemptions and SLO attainment of one deployment."""
    import time

    from objectives.accelerators import UnknownAcceleratorError, get_accelerator, load_accelerators
    from objectives.batch import build_batch
    from objectives.models import UnknownModelError, load_model
    from objectives.quantization import get_scheme
    from objectives.serving import evaluate
    from objectives.simulator import simulate_config
    from workloads.arrivals import TraceError

    try:
        accel = get_accelerator(gpu, load_accelerators(gpu_file))
        spec = load_model(model)
        scheme = get_scheme(weights)
        slos = [_parse_slo(s) for s in slo] if slo else None
        w, reqs, described = _load_requests(workload, rate, requests, arrivals, cv, seed, offline)
    except (UnknownAcceleratorError, UnknownModelError, TraceError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    if slos is None:
        slos = list(w.slos) if w is not None else []
    kv = kv_cache or ("fp8" if scheme.compute_dtype in ("fp8", "fp4") else "bf16")
    isl = float(np.mean(reqs.input_tokens))
    osl = float(np.mean(reqs.output_tokens))
    try:
        b = build_batch(
            spec, accel, weights=scheme.name, kv_cache=kv, tp=tp, pp=pp, ep=ep, batch=max_num_seqs, isl=isl, osl=osl
        )
    except ValueError as exc:
        _fail(str(exc))
        return
    if max_num_batched_tokens is not None:
        b = b.replace(max_num_tokens=max_num_batched_tokens)
    analytic = evaluate(
        b,
        arrival_rate_per_s=reqs.mean_rate_per_s if not offline else None,
        max_position_embeddings=spec.max_position_embeddings,
    ).row(0)
    if not analytic["feasible"]:
        _fail(f"{spec.id} on {tp * pp}x {accel.id} (TP{tp} PP{pp}): {analytic['reason']}")
        return
    started = time.perf_counter()
    try:
        result = simulate_config(
            b,
            reqs.arrival_s,
            reqs.input_tokens,
            reqs.output_tokens,
            replicas=replicas,
            dispatch=dispatch.value,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            block_size=block_size,
        )
    except ValueError as exc:
        _fail(str(exc))
        return
    wall = time.perf_counter() - started
    summary = result.summary(slos=slos)
    out = {
        "model": spec.id,
        "gpu": accel.id,
        "tp": tp,
        "pp": pp,
        "ep": ep,
        "weights": scheme.name,
        "kv_cache": kv,
        "replicas": replicas,
        "dispatch": dispatch.value,
        "source": described,
        "seed": seed,
        "mean_input_tokens": isl,
        "mean_output_tokens": osl,
        "simulation": summary,
        "analytic": {
            "ttft_s": analytic["ttft_s"],
            "tpot_s": analytic["tpot_s"],
            "e2e_s": analytic["e2e_s"],
            "max_output_tokens_per_s_per_replica": analytic["output_tokens_per_s"],
            "batch": analytic["batch"],
            "replicas_for_rate": analytic["replicas"],
        },
        "wall_s": wall,
        "simulated_requests_per_wall_s": len(reqs) / wall if wall > 0 else None,
    }
    if as_json:
        print(json.dumps(_clean(out), indent=2))
        return
    _print(out)


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"


def _print(r: dict[str, Any]) -> None:
    s = r["simulation"]
    a = r["analytic"]
    console.print(
        f"[bold]{r['model']} on {r['replicas']} x {r['tp'] * r['pp']} {r['gpu']} (TP{r['tp']} PP{r['pp']} "
        f"EP{r['ep']}), {r['weights']} weights, {r['kv_cache']} KV[/]"
    )
    console.print(
        f"{r['source']}; mean {r['mean_input_tokens']:.0f} in / {r['mean_output_tokens']:.0f} out tokens; "
        f"max {s['max_num_seqs']} seqs, {s['max_num_batched_tokens']} tokens per step"
    )
    t = Table(title=f"latency over {s['requests']} requests")
    for col in ("metric", "p50", "p90", "p99", "mean", f"analytic @ batch {a['batch']:.0f}"):
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
