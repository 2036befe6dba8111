"""Benchmark the vectorized cost model: configurations/s, per-row baseline and peak memory.

    python scripts/bench_model.py [--n N] [--chunk C] [--loop-sample S] [--json OUT] [--profile]
        [--kernel-model [ENGINE]]

Generates random configurations (several catalog models x GPUs x weight formats, random
tp / pp / batch / isl / osl) block by block, so the generator never holds more than one block,
and measures in one process, single-threaded:

  (a) vectorized configurations/s of `objectives.serving.evaluate` over N rows in chunks,
  (b) configurations/s of the same evaluation one row at a time in a Python loop (sample),
  (c) the speedup (a) / (b),
  (d) peak resident memory (ru_maxrss, MB) after N rows and after 5 x N further rows, to show
      that chunked evaluation keeps memory bounded.

With --kernel-model, (e) the same vectorized pass with the kernel model (objectives/kernel_timing.py,
kernel records of ENGINE, default trtllm) and its rate as a ratio of (a), measured in the same run.

Targets: >= 1,000,000 configurations/s on one core and peak RSS < 1 GB. The rate is judged on
CPU seconds of the single evaluating thread (the core's own time), which a busy shared machine
does not inflate; wall-clock rates are printed beside it.
"""

from __future__ import annotations

import os

# single-threaded numpy: must be set before numpy is imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from objectives.accelerators import get_accelerator  # noqa: E402
from objectives.batch import ConfigBatch, build_batch, concat  # noqa: E402
from objectives.models import load_model  # noqa: E402
from objectives.serving import evaluate  # noqa: E402
from objectives.sweep_eval import SweepSummary, evaluate_in_chunks  # noqa: E402

MODELS = ("Llama-3.1-8B", "Llama-3.1-70B", "Mixtral-8x7B", "Qwen3-235B-A22B", "DeepSeek-V3")
GPUS = ("H100-SXM", "H200-SXM", "A100-SXM-80GB", "B200", "MI300X", "L40S")
WEIGHTS = ("bf16", "fp8", "int4", "fp4")
TP = (1, 2, 4, 8)
PP = (1, 2)

TARGET_RATE = 1_000_000.0  # configurations/s on one core
TARGET_RSS_MB = 1024.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (ru_maxrss is kB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def templates(efficiency: object | None = None) -> ConfigBatch:
    """One row per (model, GPU, weights, tp, pp): every field except the load (batch/isl/osl).

    Built with `build_batch` per (model, GPU, weights) group and concatenated; combinations the
    catalog rejects are skipped.
    """
    tp, pp = (a.ravel() for a in np.meshgrid(np.array(TP, dtype=float), np.array(PP, dtype=float)))
    groups = []
    for m in MODELS:
        spec = load_model(m)
        for g in GPUS:
            gpu = get_accelerator(g)
            for w in WEIGHTS:
                try:
                    groups.append(build_batch(spec, gpu, weights=w, tp=tp, pp=pp, efficiency=efficiency))  # type: ignore[arg-type]
                except ValueError:
                    continue
    return concat(groups)


def random_blocks(table: ConfigBatch, n: int, block: int, seed: int) -> Iterator[ConfigBatch]:
    """Yield random configurations in blocks of at most `block` rows, n rows in all.

    Each row is a random template row with log-uniform batch (1..1024 sequences), isl
    (64..32768 tokens) and osl (16..4096 tokens), rounded to integers.
    """
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        k = min(block, n - done)
        rows = table.take(rng.integers(0, len(table), k))
        yield rows.replace(
            batch=np.round(np.exp(rng.uniform(np.log(1.0), np.log(1024.0), k))),
            isl=np.round(np.exp(rng.uniform(np.log(64.0), np.log(32768.0), k))),
            osl=np.round(np.exp(rng.uniform(np.log(16.0), np.log(4096.0), k))),
        )
        done += k


def vectorized_pass(
    table: ConfigBatch, n: int, chunk: int, block: int, seed: int, summary: SweepSummary
) -> dict[str, float]:
    """Evaluate n random configurations chunk by chunk; wall and CPU seconds of `evaluate` only,
    and of the whole pass (generation and summary included)."""
    eval_wall = eval_cpu = 0.0
    w0, c0 = time.perf_counter(), time.process_time()
    offset = 0
    for blk in random_blocks(table, n, block, seed):
        stream = evaluate_in_chunks(blk, chunk)
        while True:
            tw, tc = time.perf_counter(), time.process_time()
            item = next(stream, None)
            eval_wall += time.perf_counter() - tw
            eval_cpu += time.process_time() - tc
            if item is None:
                break
            rows, metrics = item
            summary.update(metrics, offset + rows.start)
            del item, metrics
        offset += len(blk)
        del blk, stream
    return {
        "n": n,
        "eval_wall_s": eval_wall,
        "eval_cpu_s": eval_cpu,
        "total_wall_s": time.perf_counter() - w0,
        "total_cpu_s": time.process_time() - c0,
    }


def loop_pass(sample: ConfigBatch) -> dict[str, float]:
    """Evaluate `sample` one row at a time: take(slice(i, i+1)) then evaluate."""
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(len(sample)):
        evaluate(sample.take(slice(i, i + 1)))
    return {"n": len(sample), "wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}


def profile_chunk(chunk_batch: ConfigBatch, top: int = 20) -> str:
    """cProfile of `evaluate` on one chunk (repeated 5 times), top functions by own time."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        evaluate(chunk_batch)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2_000_000, help="configurations for the vectorized rate")
    parser.add_argument("--chunk", type=int, default=16384, help="rows per evaluate() call")
    parser.add_argument("--block-chunks", type=int, default=8, help="chunks per generated block")
    parser.add_argument("--loop-sample", type=int, default=2000, help="rows for the one-at-a-time loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one chunk")
    parser.add_argument(
        "--kernel-model",
        nargs="?",
        const="trtllm",
        default=None,
        help="also time the kernel model of ENGINE and print its rate / the default's",
    )
    args = parser.parse_args(argv)
    block = args.chunk * args.block_chunks

    table = templates()
    rss_start = peak_rss_mb()

    # warm-up (first-call caches, allocator) on one chunk, then the per-row loop on a sample
    first = next(random_blocks(table, args.chunk, args.chunk, args.seed + 1))
    evaluate(first)
    loop = loop_pass(next(random_blocks(table, args.loop_sample, args.loop_sample, args.seed + 2)))

    summary_n = SweepSummary()
    vec = vectorized_pass(table, args.n, args.chunk, block, args.seed, summary_n)
    rss_n = peak_rss_mb()
    summary_5n = SweepSummary()
    vec5 = vectorized_pass(table, 5 * args.n, args.chunk, block, args.seed + 3, summary_5n)
    rss_5n = peak_rss_mb()

    rate = vec["n"] / vec["eval_wall_s"]
    rate_cpu = vec["n"] / vec["eval_cpu_s"]
    rate5 = vec5["n"] / vec5["eval_wall_s"]
    rate_total = vec["n"] / vec["total_wall_s"]
    loop_rate = loop["n"] / loop["wall_s"]
    loop_rate_cpu = loop["n"] / loop["cpu_s"]
    speedup = rate_cpu / loop_rate_cpu
    bounded = rss_5n <= rss_n * 1.05 + 8.0

    rows = [
        ("templates (model x GPU x weights x tp x pp)", f"{len(table):,}"),
        ("chunk / block rows", f"{args.chunk:,} / {block:,}"),
        (f"(a) vectorized evaluate, N={args.n:,}", f"{rate:,.0f} cfg/s wall  ({rate_cpu:,.0f} cfg/s CPU)"),
        (f"    same, 5N={5 * args.n:,}", f"{rate5:,.0f} cfg/s wall"),
        ("    incl. generation + summary", f"{rate_total:,.0f} cfg/s wall"),
        (f"(b) one row at a time, n={loop['n']:,}", f"{loop_rate:,.0f} cfg/s wall  ({loop_rate_cpu:,.0f} cfg/s CPU)"),
        ("(c) speedup (a)/(b)", f"{speedup:,.0f}x"),
        ("(d) peak RSS after setup", f"{rss_start:,.1f} MB"),
        ("    peak RSS after N", f"{rss_n:,.1f} MB"),
        ("    peak RSS after further 5N", f"{rss_5n:,.1f} MB"),
        ("feasible after N", f"{summary_n.feasible:,} / {summary_n.evaluated:,}"),
        (
            "min $/Mtok, max tok/s/GPU",
            f"{summary_n.min_usd_per_million_tokens:.4g}, {summary_n.max_tokens_per_s_per_gpu:,.0f}",
        ),
    ]
    kernel_figures = None
    if args.kernel_model:
        from objectives.efficiency import EfficiencyModel

        ktable = templates(EfficiencyModel.kernel_default(args.kernel_model))
        evaluate(next(random_blocks(ktable, args.chunk, args.chunk, args.seed + 1)))
        kvec = vectorized_pass(ktable, args.n, args.chunk, block, args.seed, SweepSummary())
        krate_cpu = kvec["n"] / kvec["eval_cpu_s"]
        kernel_figures = {**kvec, "rate_cpu": krate_cpu, "ratio_to_default": krate_cpu / rate_cpu}
        rows.append(
            (
                f"(e) kernel model ({args.kernel_model}), N={args.n:,}",
                f"{krate_cpu:,.0f} cfg/s CPU = {krate_cpu / rate_cpu:.2f} x the default model in this run",
            )
        )
        rows.append(("    peak RSS after (e)", f"{peak_rss_mb():,.1f} MB"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")

    ok_rate = rate_cpu >= TARGET_RATE
    ok_rss = rss_5n < TARGET_RSS_MB and bounded
    verdict = "PASS" if ok_rate and ok_rss else "FAIL"
    print(
        f"{verdict}: rate {rate_cpu:,.0f} cfg/s (CPU) {'>=' if ok_rate else '<'} {TARGET_RATE:,.0f}; "
        f"peak RSS {rss_5n:,.0f} MB {'<' if rss_5n < TARGET_RSS_MB else '>='} {TARGET_RSS_MB:,.0f} MB, "
        f"{'bounded' if bounded else 'GROWS'} from N to 5N ({rss_n:,.0f} -> {rss_5n:,.0f} MB)"
    )

    if args.profile:
        print(profile_chunk(first))

    if args.json:
        figures = {
            "n": args.n,
            "chunk": args.chunk,
            "block": block,
            "templates": len(table),
            "vectorized": {**vec, "rate_wall": rate, "rate_cpu": rate_cpu},
            "vectorized_5n": {**vec5, "rate_wall": rate5},
            "loop": {**loop, "rate_wall": loop_rate, "rate_cpu": loop_rate_cpu},
            "speedup": speedup,
            "peak_rss_mb": {"setup": rss_start, "after_n": rss_n, "after_5n": rss_5n},
            "bounded": bounded,
            "summary_n": summary_n.as_dict(),
            "summary_5n": summary_5n.as_dict(),
            "targets": {"rate": TARGET_RATE, "rss_mb": TARGET_RSS_MB},
            "kernel_model": kernel_figures,
            "pass": verdict == "PASS",
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
