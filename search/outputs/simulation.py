"""One deployment under load: tail latencies from the discrete-event serving simulator
(objectives.simulator) next to the analytic model's p99 under the same load, as a JSON-able dict (`simulate_deployment`,
behind `servesweep simulate`).

The workload is is a preset name, a workload YAML / JSON file (the schema of a sweep spec's
`workload:` mapping), or a CSV trace of (timestamp, input tokens, output tokens) such as the
Azure LLM inference traces (`TIMESTAMP,ContextTokens,GeneratedTokens`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ANALYTIC_PERCENTILE = 99.0  # the analytic latencies shown beside the simulated ones


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
    workload: str, rate: float | None, n: int, arrivals: str, cv: float, seed: int, offline: bool
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
    reqs = sample_requests(w, n, process=arrivals, cv=cv, seed=seed)
    how = "offline (all queued at t=0)" if w.offline else f"{arrivals} at {w.arrival_rate_per_s:g} req/s"
    if not w.offline and arrivals == "gamma":
        how += f", cv {cv:g}"
    return w, reqs, f"workload {w.name}: {how}"


def clean_json(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: clean_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [clean_json(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class SimulationError(ValueError):
    """The deployment or its workload cannot be simulated; the message says why."""


def simulate_deployment(
    *,
    model: str,
    gpu: str,
    workload: str = "chat",
    rate: float | None = None,
    offline: bool = False,
    requests: int = 10_000,
    arrivals: str = "poisson",
    cv: float = 1.0,
    seed: int = 0,
    tp: int = 1,
    pp: int = 1,
    ep: int = 1,
    attention_dp: int = 1,
    mtp: int = 0,
    weights: str = "bf16",
    kv_cache: str | None = None,
    max_num_seqs: int = 256,
    max_num_batched_tokens: int | None = None,
    block_size: int = 16,
    replicas: int = 1,
    dispatch: str = "least_loaded",
    slo: list[str] | None = None,
    gpu_file: str | Path | None = None,
    engine: str | None = None,
) -> dict[str, Any]:
    """Simulate continuous batching of one deployment (see `servesweep simulate --help` for the
    arguments; `engine` applies that engine's runtime profile, objectives/data/engines.yaml) and
    return the simulated percentiles beside the analytic model's p99 under the same
    load (its steady-state means offline)."""
    import time

    from objectives.accelerators import UnknownAcceleratorError, get_accelerator, load_accelerators
    from objectives.batch import build_batch
    from objectives.engines import UnknownEngineError, default_engine, get_profile, vendor_label
    from objectives.models import UnknownModelError, load_model
    from objectives.quantization import get_scheme
    from objectives.queueing import LengthNodes, interarrival_cv
    from objectives.serving import evaluate
    from objectives.simulator import simulate_config
    from workloads.arrivals import TraceError

    try:
        accel = get_accelerator(gpu, load_accelerators(gpu_file))
        spec = load_model(model)
        scheme = get_scheme(weights)
        slos = [_parse_slo(s) for s in slo] if slo else None
        w, reqs, described = _load_requests(workload, rate, requests, arrivals, cv, seed, offline)
        profile = get_profile(engine) if engine is not None else None
    except (UnknownAcceleratorError, UnknownModelError, TraceError, ValueError, FileNotFoundError) as exc:
        raise SimulationError(str(exc)) from None
    except UnknownEngineError as exc:
        raise SimulationError(str(exc)) from None
    if profile is not None and not profile.supports(accel.vendor):
        raise SimulationError(f"{profile.name} does not run on {vendor_label(accel.vendor)} GPUs ({accel.id})")
    if slos is None:
        slos = list(w.slos) if w is not None else []
    kv = kv_cache or ("fp8" if scheme.compute_dtype in ("fp8", "fp4") else "bf16")
    isl = float(np.mean(reqs.input_tokens))
    osl = float(np.mean(reqs.output_tokens))
    try:
        b = build_batch(
            spec,
            accel,
            weights=scheme.name,
            kv_cache=kv,
            tp=tp,
            pp=pp,
            ep=ep,
            batch=max_num_seqs,
            isl=isl,
            osl=osl,
            attention_dp=attention_dp,
            mtp=mtp,
            engine=profile.id if profile is not None else None,
        )
    except ValueError as exc:
        raise SimulationError(str(exc)) from None
    if max_num_batched_tokens is not None:
        b = b.replace(max_num_tokens=max_num_batched_tokens)
    load: dict[str, Any] = {}
    if not offline:  # the analytic model under the same load: this fleet, these lengths and arrivals
        load = {
            "replicas": np.array([float(replicas)]),
            "latency_percentile": ANALYTIC_PERCENTILE,
            "input_lengths": w.input_tokens if w is not None else LengthNodes.empirical(reqs.input_tokens),
            "output_lengths": w.output_tokens if w is not None else LengthNodes.empirical(reqs.output_tokens),
            "arrival_cv": interarrival_cv(reqs.arrival_s),
            "dispatch": dispatch,
        }
    analytic = evaluate(
        b,
        arrival_rate_per_s=reqs.mean_rate_per_s if not offline else None,
        max_position_embeddings=spec.max_position_embeddings,
        **load,
    ).row(0)
    if not analytic["feasible"]:
        raise SimulationError(f"{spec.id} on {tp * pp}x {accel.id} (TP{tp} PP{pp}): {analytic['reason']}") from None
    started = time.perf_counter()
    try:
        result = simulate_config(
            b,
            reqs.arrival_s,
            reqs.input_tokens,
            reqs.output_tokens,
            replicas=replicas,
            dispatch=dispatch,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            block_size=block_size,
        )
    except ValueError as exc:
        raise SimulationError(str(exc)) from None
    wall = time.perf_counter() - started
    summary = result.summary(slos=slos)
    return {
        "model": spec.id,
        "gpu": accel.id,
        "engine": profile.id if profile is not None else default_engine(),
        "tp": tp,
        "pp": pp,
        "ep": ep,
        "attention_dp": attention_dp,
        "mtp": mtp,
        "weights": scheme.name,
        "kv_cache": kv,
        "replicas": replicas,
        "dispatch": dispatch,
        "source": described,
        "seed": seed,
        "mean_input_tokens": isl,
        "mean_output_tokens": osl,
        "simulation": summary,
        "analytic": {
            # under load: at `latency_percentile` for this fleet; offline: the steady-state means
            "latency_percentile": ANALYTIC_PERCENTILE if load else None,
            "utilization": analytic["utilization"] if load else None,
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
