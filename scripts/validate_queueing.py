"""Check the queueing-aware analytic latencies (objectives.queueing) against the simulator.

    python scripts/validate_queueing.py [--requests N] [--seed S] [--quick] [--cv CV]
                                        [--workloads chat,rag,...] [--json OUT]

For every case of the grid — models (dense 8B, dense 70B, MoE) x GPUs x workloads x
utilizations 0.3 ... 0.9 of the replica's capacity — one replica serves a seeded Poisson
request stream in `objectives.simulator` (same step-time functions, same scheduler limits),
and the analytic model predicts p50 / p99 TTFT and TPOT at the same per-replica rate. Printed:
per utilization band, the median and max relative error of p99 TTFT and p99 TPOT, the worst
optimistic error (analytic below the simulator), and whether the targets of issue 13 hold
(within 15% up to utilization 0.8, never optimistic by more than 25%); then every case.
Then the fleet check of issue 13's question (Llama-3.3-70B, RAG lengths, 20 requests/s, p99
TTFT <= 2 s; H100 / H200 / B200 / MI300X, fp8, TP 1-8, batch cap 32-256): per GPU, the
cheapest configuration whose replicas `objectives.serving.evaluate` sizes for the SLO (headroom,
least-loaded dispatch), replayed as that fleet in the simulator (`--no-fleet` skips it).
`--quick` runs a smaller grid (one GPU per model); `--cv` replaces Poisson arrivals with gamma
inter-arrival times of that coefficient of variation (in the simulator and in the model).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from objectives.accelerators import get_accelerator  # noqa: E402
from objectives.batch import build_batch  # noqa: E402
from objectives.models import load_model  # noqa: E402
from objectives.queueing import ReplicaTable, latency_at_load  # noqa: E402
from objectives.serving import evaluate  # noqa: E402
from objectives.simulator import simulate_config  # noqa: E402
from workloads.arrivals import sample_requests  # noqa: E402
from workloads.presets import get_preset  # noqa: E402

# (label, model, weights, kv cache, {gpu: tp})
MODELS = (
    ("dense-8B", "meta-llama/Llama-3.1-8B-Instruct", "bf16", "bf16", {"H100-SXM": 1, "H200-SXM": 1, "MI300X": 1}),
    ("dense-70B", "meta-llama/Llama-3.1-70B-Instruct", "fp8", "fp8", {"H100-SXM": 4, "H200-SXM": 2, "MI300X": 2}),
    ("moe-8x7B", "mistralai/Mixtral-8x7B-Instruct-v0.1", "fp8", "fp8", {"H100-SXM": 2, "H200-SXM": 1, "MI300X": 1}),
)
WORKLOADS = ("chat", "rag", "code-completion")
UTILIZATIONS = (0.3, 0.5, 0.7, 0.8, 0.9)
MAX_NUM_SEQS = 256
TARGET_REL = 0.15
TARGET_OPTIMISTIC = 0.25


def run_case(
    model: str,
    gpu: str,
    weights: str,
    kv: str,
    tp: int,
    workload: str,
    utilization: float,
    requests: int,
    seed: int,
    cv: float = 1.0,
) -> dict:
    """One replica at `utilization` of its capacity: the analytic and simulated percentiles."""
    w = get_preset(workload)
    b = build_batch(
        load_model(model),
        get_accelerator(gpu),
        weights=weights,
        kv_cache=kv,
        tp=tp,
        batch=MAX_NUM_SEQS,
        isl=w.isl,
        osl=w.osl,
    )
    table = ReplicaTable.build(b, w.input_tokens, w.output_tokens)
    rate = utilization * float(table.capacity_per_s[0])
    a = latency_at_load(table, rate, percentiles=(50.0, 99.0), arrival_cv=cv)
    process = "poisson" if cv == 1.0 else "gamma"
    reqs = sample_requests(w, requests, rate_per_s=rate, process=process, cv=cv, seed=seed)
    res = simulate_config(b, reqs.arrival_s, reqs.input_tokens, reqs.output_tokens)
    return {
        "model": model,
        "gpu": gpu,
        "tp": tp,
        "workload": workload,
        "utilization": utilization,
        "rate_per_s": rate,
        "batch": float(a.batch[0]),
        "rho_prefill": float(a.prefill_utilization[0]),
        "analytic": {
            "ttft_p50": float(a.ttft_s[50.0][0]),
            "ttft_p99": float(a.ttft_s[99.0][0]),
            "tpot_p50": float(a.tpot_s[50.0][0]),
            "tpot_p99": float(a.tpot_s[99.0][0]),
        },
        "simulated": {
            "ttft_p50": res.percentile("ttft", 50),
            "ttft_p99": res.percentile("ttft", 99),
            "tpot_p50": res.percentile("tpot", 50),
            "tpot_p99": res.percentile("tpot", 99),
            "preemptions": int(np.sum(res.preemptions)),
        },
    }


def rel_error(case: dict, key: str) -> float:
    """(analytic - simulated) / simulated: negative is optimistic."""
    a, s = case["analytic"][key], case["simulated"][key]
    if not np.isfinite(s):
        return 0.0 if not np.isfinite(a) else -1.0
    return (a / s - 1.0) if np.isfinite(a) else np.inf


def band_table(cases: list[dict]) -> tuple[list[str], bool]:
    lines = [
        f"{'utilization':>11} {'cases':>5} | {'p99 TTFT err: median':>20} {'max':>7} {'worst optimistic':>16} |"
        f" {'p99 TPOT err: median':>20} {'max':>7} {'worst optimistic':>16}"
    ]
    ok = True
    for u in sorted({c["utilization"] for c in cases}):
        group = [c for c in cases if c["utilization"] == u]
        row = f"{u:>11.1f} {len(group):>5} |"
        for key in ("ttft_p99", "tpot_p99"):
            e = np.array([rel_error(c, key) for c in group])
            worst_opt = float(np.min(e))
            row += f" {np.median(np.abs(e)):>19.1%} {np.max(np.abs(e)):>8.1%} {min(worst_opt, 0.0):>16.1%} |"
            if u <= 0.8 + 1e-9 and np.max(np.abs(e)) > TARGET_REL:
                ok = False
            if worst_opt < -TARGET_OPTIMISTIC:
                ok = False
        lines.append(row.rstrip("|").rstrip())
    return lines, ok


def fleet_check(requests: int, seed: int) -> tuple[list[str], bool]:
    """The issue's RAG question: per GPU, the cheapest modelled fleet meeting p99 TTFT <= 2 s,
    simulated with least-loaded dispatch."""
    w = get_preset("rag")
    rate, target = 20.0, 2.0
    slos = [("ttft", target, 99.0)]
    model = load_model("meta-llama/Llama-3.3-70B-Instruct")
    reqs = sample_requests(w, requests, rate_per_s=rate, seed=seed)
    lines, ok = [], True
    for gpu in ("H100-SXM", "H200-SXM", "B200", "MI300X"):
        b = build_batch(
            model,
            get_accelerator(gpu),
            weights="fp8",
            kv_cache="fp8",
            tp=np.repeat([1, 2, 4, 8], 4),
            batch=np.tile([32, 64, 128, 256], 4),
            isl=w.isl,
            osl=w.osl,
        )
        m = evaluate(
            b,
            arrival_rate_per_s=rate,
            slos=slos,
            input_lengths=w.input_tokens,
            output_lengths=w.output_tokens,
            max_position_embeddings=model.max_position_embeddings,
        )
        meets = m.feasible & (m.ttft_s <= target)
        if not meets.any():
            lines.append(f"{gpu:<9} no configuration meets p99 TTFT <= {target} s")
            continue
        i = int(np.argmin(np.where(meets, m.usd_per_hour, np.inf)))
        replicas = int(m.replicas[i])
        res = simulate_config(b, reqs.arrival_s, reqs.input_tokens, reqs.output_tokens, row=i, replicas=replicas)
        sim = res.percentile("ttft", 99)
        ok &= sim <= target
        lines.append(
            f"{gpu:<9} TP{int(b.tp[i])} batch<={int(b.batch[i]):<4} {replicas:>3} replicas "
            f"({replicas * int(b.tp[i]):>3} GPUs, ${m.usd_per_hour[i]:>5.0f}/h) utilization {m.utilization[i]:.2f} | "
            f"p99 TTFT model {m.ttft_s[i]:.2f} s, simulated {sim:.2f} s {'meets' if sim <= target else 'MISSES'}"
        )
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="one GPU per model")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--cv", type=float, default=1.0, help="inter-arrival cv (1: Poisson; else gamma)")
    ap.add_argument("--no-fleet", action="store_true", help="skip the fleet check")
    ap.add_argument("--json", type=Path, default=None, help="also write every case to this file")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cases = []
    for _label, model, weights, kv, gpus in MODELS:
        items = list(gpus.items())[:1] if args.quick else list(gpus.items())
        for gpu, tp in items:
            for workload in args.workloads.split(","):
                for u in UTILIZATIONS:
                    cases.append(run_case(model, gpu, weights, kv, tp, workload, u, args.requests, args.seed, args.cv))
    lines, ok = band_table(cases)
    print(
        f"queueing model vs simulator: {len(cases)} cases, {args.requests} requests each "
        f"({'Poisson' if args.cv == 1.0 else f'gamma arrivals, cv {args.cv:g}'}), "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print("relative error (analytic / simulated - 1) of p99 latencies; optimistic = analytic below the simulator")
    print("\n".join(lines))
    print(
        f"targets (|err| <= {TARGET_REL:.0%} up to utilization 0.8, never optimistic by more than "
        f"{TARGET_OPTIMISTIC:.0%}): {'met' if ok else 'NOT met'}"
    )
    print()
    print(
        f"{'model':<38} {'gpu':<9} {'tp':>2} {'workload':<16} {'u':>4} {'batch':>6} {'rho_p':>5} | "
        f"{'TTFT p99 a/s':>17} {'err':>7} | {'TPOT p99 a/s (ms)':>19} {'err':>7}"
    )
    for c in cases:
        a, s = c["analytic"], c["simulated"]
        print(
            f"{c['model']:<38} {c['gpu']:<9} {c['tp']:>2} {c['workload']:<16} {c['utilization']:>4.1f} "
            f"{c['batch']:>6.1f} {c['rho_prefill']:>5.2f} | {a['ttft_p99']:>8.3f}/{s['ttft_p99']:<8.3f} "
            f"{rel_error(c, 'ttft_p99'):>+7.1%} | {1e3 * a['tpot_p99']:>9.2f}/{1e3 * s['tpot_p99']:<9.2f} "
            f"{rel_error(c, 'tpot_p99'):>+7.1%}"
        )
    if not args.no_fleet:
        fleet, fleet_ok = fleet_check(args.requests, args.seed)
        print()
        print(
            "fleet check: Llama-3.3-70B, RAG lengths, 20 requests/s, p99 TTFT <= 2 s; cheapest modelled fleet per GPU,"
        )
        print("replayed in the simulator with least-loaded dispatch")
        print("\n".join(fleet))
        print(f"every modelled pick meets the SLO in the simulator: {'yes' if fleet_ok else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({"cases": cases, "targets_met": ok}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
