"""Disaggregated prefill / decode against published headlines, and two comparisons.

1. The disaggregated rows of ../shared/reference/measurements.frontier_headlines.jsonl, each
   predicted once, at the layout the row states (DEP32 prefill, DEP72 / DEP48 decode), by
   search.calibration.frontier.predict_row — the code path and the rows of
   scripts/validate_frontier.py (which prints the whole file): a prefill-only row (decode
   assumed unlimited) against the prefill pool's input tokens/s per GPU, a decode-only row
   (prefill unlimited) against the decode pool's output tokens/s per GPU at the row's batch and
   KV length (objectives.disaggregation.prefill_pool_tokens_per_s_per_gpu /
   decode_pool_tokens_per_s_per_gpu).
2. DeepSeek-R1 fp8 on 8 x H200, chat preset: the best aggregated and disaggregated candidates.
3. Llama-3.3-70B on 8 x H100: aggregated vs disaggregated output tokens/s per GPU (the peer's
   answer: 500.7 disaggregated vs 443.6 aggregated).

    python scripts/validate_disaggregation.py [--measurements FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from objectives.accelerators import get_accelerator
from objectives.batch import build_batch
from objectives.disaggregation import (
    balanced_tokens_per_s_per_gpu,
    decode_pool_tokens_per_s_per_gpu,
    prefill_pool_tokens_per_s_per_gpu,
)
from objectives.models import load_model
from objectives.serving import offline_max_throughput
from search.calibration.frontier import is_disaggregated, load_rows, predict_row
from search.sweeps import make_evaluator, parse_spec

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "measurements.frontier_headlines.jsonl"


def prefill_tokens_per_s_per_gpu(b, isl: float, chunk: float = 16384.0) -> float:
    return float(prefill_pool_tokens_per_s_per_gpu(b, isl, chunk)[0])


def decode_tokens_per_s_per_gpu(b, batch: float, context: float) -> float:
    return float(decode_pool_tokens_per_s_per_gpu(b, batch, context)[0][0])


def headline_rows(path: Path) -> None:
    """The disaggregated rows of the headline file, each predicted once by
    search.calibration.frontier.predict_row (the code path and table of validate_frontier.py)."""
    print("1. disaggregated headline rows (search.calibration.frontier: the rows of validate_frontier.py)")
    print(f"{'id':52s} {'quantity':17s} {'measured':>9s} {'predicted':>9s} {'error':>7s}  layout / caveat")
    errors = []
    for row in load_rows(path):
        if not is_disaggregated(row):
            continue
        r = predict_row(row)
        if r.predicted is None:
            print(f"{r.id:52s} {r.note}")
            continue
        errors.append(abs(r.error))
        flag = "" if abs(r.error) <= 0.25 else "  >25%"
        print(f"{r.id:52s} {r.quantity:17s} {r.measured:9,.0f} {r.predicted:9,.0f} {r.error:+7.1%}{flag}  {r.note}")
    if errors:
        print(
            f"   {len(errors)} rows: median |error| {np.median(errors):.1%}, "
            f"within 25%: {sum(e <= 0.25 for e in errors)}"
        )


def sweep_question(spec: dict, title: str) -> None:
    ev = make_evaluator(parse_spec(spec))
    r = ev.evaluate(np.arange(ev.space.size))
    cost = r.metrics["usd_per_million_output_tokens"]
    dis = r.metrics["disaggregated"] > 0.5
    print(f"\n{title} ({ev.space.size} configurations)")
    best = {}
    for mode, sel in (("aggregated", ~dis), ("disaggregated", dis)):
        ok = np.flatnonzero(r.feasible & sel)
        if ok.size == 0:
            print(f"  {mode}: nothing meets the SLOs")
            continue
        i = ok[np.argmin(cost[ok])]
        c = ev.space.config(int(i))
        m = {k: float(r.metrics[k][i]) for k in r.metrics}
        best[mode] = m
        dp = int(c.get("attention_dp", 1))
        lay_p, lay_d = (
            (f"DEP{c['tp'] * dp}", f"DEP{c['decode_tp'] * dp}") if dp > 1 else (f"TP{c['tp']} EP{c['ep']}",) * 2
        )
        pools = (
            f" prefill {m['prefill_replicas']:.0f}x {lay_p} + decode {m['decode_replicas']:.0f}x {lay_d}"
            if mode == "disaggregated"
            else f" {m['replicas']:.0f}x {lay_p}"
        )
        mtp = f" MTP{c['mtp']}" if c.get("mtp") else ""
        print(
            f"  best {mode:13s}: {c['accelerator']}{pools}{mtp} {c['weights']} batch<={c['max_batch']}: "
            f"${m['usd_per_million_output_tokens']:.3f}/Mtok, {m['total_gpus']:.0f} GPUs, "
            f"p99 TTFT {m['ttft_s']:.3f} s, p99 TPOT {m['tpot_s'] * 1e3:.1f} ms, "
            f"{m['output_tokens_per_s_per_gpu']:.0f} tok/s/GPU capacity"
        )
    if len(best) == 2:
        g = (
            1.0
            - best["disaggregated"]["usd_per_million_output_tokens"]
            / best["aggregated"]["usd_per_million_output_tokens"]
        )
        print(f"  disaggregated {'wins' if g > 0 else 'loses'} on $/Mtok by {abs(g):.1%}")


def seventy_b() -> None:
    print("\n3. Llama-3.3-70B fp8 on 8 x H100 (1k in / 1k out, offline max throughput)")
    m = load_model("meta-llama/Llama-3.3-70B-Instruct")
    g = get_accelerator("H100-SXM")
    isl, osl = 1024.0, 1024.0
    best_agg = 0.0
    for tp in (1, 2, 4, 8):
        b = build_batch(m, g, weights="fp8", kv_cache="fp8", tp=tp, isl=isl, osl=osl, batch=1)
        v = float(np.nan_to_num(offline_max_throughput(b).output_tokens_per_s_per_gpu[0]))
        best_agg = max(best_agg, v)
    best_dis = (0.0, None)
    for tp_p in (1, 2, 4, 8):
        bp = build_batch(m, g, weights="fp8", kv_cache="fp8", tp=tp_p, isl=isl, osl=1, batch=1)
        p = prefill_tokens_per_s_per_gpu(bp, isl, 8192.0)
        for tp_d in (1, 2, 4, 8):
            if tp_p + tp_d > 8:
                continue
            bd = build_batch(m, g, weights="fp8", kv_cache="fp8", tp=tp_d, isl=isl, osl=osl, batch=1)
            d = decode_tokens_per_s_per_gpu(bd, 4096.0, isl + osl / 2)
            v = float(balanced_tokens_per_s_per_gpu(p, d, isl, osl))
            if v > best_dis[0]:
                best_dis = (v, (tp_p, tp_d))
    print(f"  best aggregated:    {best_agg:7.1f} output tokens/s/GPU")
    print(
        f"  best disaggregated: {best_dis[0]:7.1f} output tokens/s/GPU (prefill TP{best_dis[1][0]}, "
        f"decode TP{best_dis[1][1]}, ideal pool ratio)"
    )
    print("  peer: 500.7 disaggregated vs 443.6 aggregated")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--measurements", default=str(REF))
    args = ap.parse_args()
    headline_rows(Path(args.measurements))
    sweep_question(
        {
            "model": "deepseek-ai/DeepSeek-R1",
            "workload": "chat",
            "accelerators": ["H200-SXM"],
            "space": {
                "tp": [1, 4, 8],
                "ep": [1, 4, 8],
                "attention_dp": [1, 8],
                "mtp": [0, 1],
                "weights": ["fp8"],
                "kv_cache": ["fp8", "bf16"],
                "max_batch": [16, 32, 64, 128, 256],
                "disaggregation": {},
            },
        },
        "2. DeepSeek-R1 fp8 on H200 (8-GPU replicas), chat preset, interactive SLOs",
    )
    seventy_b()


if __name__ == "__main__":
    main()
