"""DeepSeek-R1 fp8 on 8xH200 (chat preset, interactive SLOs): the analytic front with and without
the frontier modes, and whether DEP / MTP points win over the best TP / EP layout.

    python scripts/frontier_modes.py [--spec examples/deepseek-r1-h200-chat.yaml]

Evaluates every configuration of the spec with the analytic evaluator (no database, no Ray),
keeps the feasible ones (SLOs met), and prints the Pareto front of (p99 TPOT, $/Mtok) with each
point's mode, then the cheapest feasible TP/EP layout against the cheapest DEP and MTP ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.sweeps.analytic import AnalyticEvaluator  # noqa: E402
from search.sweeps.pareto import pareto_mask  # noqa: E402
from search.sweeps.spec import parse_spec  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", type=Path, default=ROOT / "examples" / "deepseek-r1-h200-chat.yaml")
    a = p.parse_args(argv)
    spec = parse_spec(yaml.safe_load(a.spec.read_text()))
    ev = AnalyticEvaluator(spec)
    ids = np.arange(ev.space.size)
    res = ev.evaluate(ids)
    cfg = [ev.space.config(int(i)) for i in ids]
    obj = np.where(res.feasible[:, None], res.objectives, np.nan)
    front = np.flatnonzero(pareto_mask(obj))
    front = front[np.argsort(obj[front, 0])]
    print(f"{ev.space.size} configurations, {int(res.feasible.sum())} feasible (SLOs met)")
    print(f"{'TPOT p99 ms':>11s} {'$/Mtok':>8s} {'tok/s/GPU':>9s} {'GPUs':>5s}  layout")

    def layout(c: dict) -> str:
        s = f"TP{c['tp']} EP{c['ep']}"
        if int(c.get("attention_dp", 1)) > 1:
            s = f"DEP{int(c['tp']) * int(c['attention_dp'])} (TP{c['tp']} x ADP{c['attention_dp']})"
        if int(c.get("mtp", 0)) > 0:
            s += f" MTP{c['mtp']}"
        return s + f" batch<={c['max_batch']}"

    m = res.metrics
    for i in front:
        print(
            f"{obj[i, 0] * 1e3:11.1f} {obj[i, 1]:8.3f} {m['output_tokens_per_s_per_gpu'][i]:9,.0f} "
            f"{m['total_gpus'][i]:5.0f}  {layout(cfg[i])}"
        )
    dep = np.array([int(c.get("attention_dp", 1)) > 1 for c in cfg])
    mtp = np.array([int(c.get("mtp", 0)) > 0 for c in cfg])
    cost = np.where(res.feasible, obj[:, 1], np.inf)
    groups = {
        "best TP/EP (no DEP, no MTP)": ~dep & ~mtp,
        "best DEP (no MTP)": dep & ~mtp,
        "best TP/EP + MTP": ~dep & mtp,
        "best DEP + MTP": dep & mtp,
    }
    base = None
    print()
    for name, mask in groups.items():
        c = np.where(mask, cost, np.inf)
        i = int(np.argmin(c))
        if not np.isfinite(c[i]):
            print(f"{name:30s} none feasible")
            continue
        base = c[i] if base is None else base
        print(
            f"{name:30s} ${c[i]:.3f}/Mtok ({c[i] / base - 1.0:+.0%} vs TP/EP) at p99 TPOT {obj[i, 0] * 1e3:.1f} ms: "
            f"{layout(cfg[i])}"
        )
    n_dep = int(np.sum(dep[front]))
    print(f"\nfront: {front.size} points, {n_dep} with DEP, {int(np.sum(mtp[front]))} with MTP")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
