"""Benchmark the serving simulator: simulated requests per second of wall time.

    python scripts/bench_sim.py [--requests N] [--model M] [--gpu G] [--tp TP] [--weights W]
                                [--workload chat] [--rate R] [--replicas R] [--repeat K] [--json OUT]

Default case (the target): Llama-3.1-70B-Instruct on 4x H100-SXM, fp8 weights and KV cache,
vLLM-like limits (256 sequences, 8192 tokens per step), the `chat` workload at its 10 req/s,
one replica, 10,000 requests. The wall time includes building the step-time table from
`forward_time_s`. Target: >= 50,000 simulated requests per second of wall time, so a guided
sweep of a few hundred configurations finishes in minutes on a laptop. The best of `--repeat`
runs is reported (a shared machine only ever slows a run down); every run must replay the
first one exactly.
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
from objectives.simulator import simulate_config  # noqa: E402
from workloads.arrivals import sample_requests  # noqa: E402
from workloads.presets import get_preset  # noqa: E402

TARGET = 50_000.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--model", default="meta-llama/Llama-3.1-70B-Instruct")
    ap.add_argument("--gpu", default="H100-SXM")
    ap.add_argument("--tp", type=int, default=4)
    ap.add_argument("--weights", default="fp8")
    ap.add_argument("--kv-cache", default="fp8")
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--workload", default="chat")
    ap.add_argument("--rate", type=float, default=None, help="requests/s (default: the workload's)")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    workload = get_preset(args.workload)
    reqs = sample_requests(workload, args.requests, rate_per_s=args.rate, seed=args.seed)
    b = build_batch(
        load_model(args.model),
        get_accelerator(args.gpu),
        weights=args.weights,
        kv_cache=args.kv_cache,
        tp=args.tp,
        batch=args.max_num_seqs,
        isl=workload.isl,
        osl=workload.osl,
    )
    walls = []
    reference = None
    for _ in range(max(args.repeat, 1)):
        t0 = time.perf_counter()
        res = simulate_config(b, reqs.arrival_s, reqs.input_tokens, reqs.output_tokens, replicas=args.replicas)
        walls.append(time.perf_counter() - t0)
        if reference is None:
            reference = res
        elif not (
            np.array_equal(res.finish_s, reference.finish_s, equal_nan=True)
            and np.array_equal(res.first_token_s, reference.first_token_s, equal_nan=True)
        ):
            print("error: a repeated run did not replay the first one", file=sys.stderr)
            return 1
    assert reference is not None
    best = min(walls)
    rate = args.requests / best
    s = reference.summary(slos=workload.slos)
    print(
        f"{args.model} on {args.tp}x {args.gpu} ({args.weights}), {args.workload} at "
        f"{args.rate or workload.arrival_rate_per_s} req/s, {args.replicas} replica(s), {args.requests} requests"
    )
    print(
        f"  simulated {s['duration_s']:.0f} s of serving in {best:.3f} s of wall time "
        f"(best of {len(walls)}; all: {', '.join(f'{w:.3f}' for w in walls)})"
    )
    print(
        f"  TTFT p50/p99 {s['ttft_s']['p50'] * 1e3:.0f}/{s['ttft_s']['p99'] * 1e3:.0f} ms, "
        f"TPOT p50/p99 {s['tpot_s']['p50'] * 1e3:.1f}/{s['tpot_s']['p99'] * 1e3:.1f} ms, "
        f"{s['steps']} steps, {s['preemptions']} preemptions"
    )
    print(f"simulated requests per second of wall time: {rate:,.0f} (target >= {TARGET:,.0f})")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"requests": args.requests, "wall_s": walls, "requests_per_wall_s": rate, "summary": s}, indent=2
            )
        )
    return 0 if rate >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
