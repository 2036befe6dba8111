"""Fit the global serving parameters of the cost model and write them into the data file.

    python scripts/fit_efficiency.py --measurements ../shared/reference/measurements.public.jsonl \
        [--train-version "TensorRT-LLM v0.14.0"] [--write]

Fits only on the rows of one framework version (default v0.14.0) and reports the error on
those rows (in sample) and on every other row (held out), before and after. With --write, the
fitted values, the date and the errors replace the `serving` / `fit` sections at the end of
objectives/data/efficiency.yaml.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from objectives.efficiency import EfficiencyModel  # noqa: E402
from search.calibration import BOUNDS, fit_serving_params, load_measurements, predict, summarize  # noqa: E402

FIXED = {
    "kv_memory_fraction": (
        "TensorRT-LLM perf-overview kv_cache_free_gpu_mem_fraction 0.95 (shared/reference/SERVING_FACTS.md)"
    ),
    "max_num_tokens": "TensorRT-LLM default max_num_tokens 8192 (trtllm-bench)",
    "max_batch_size": "trtllm-bench tuning caps concurrent requests at 4096 per rank (SERVING_FACTS.md)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measurements", required=True, type=Path)
    parser.add_argument("--train-version", default="TensorRT-LLM v0.14.0")
    parser.add_argument("--max-evals", type=int, default=1200)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)

    rows = load_measurements(args.measurements)
    train = [r for r in rows if r.get("version") == args.train_version]
    held = [r for r in rows if r.get("version") != args.train_version]
    if not train:
        raise SystemExit(f"no rows with version {args.train_version!r}")
    base = EfficiencyModel.default()

    def report(model: EfficiencyModel, label: str) -> dict:
        out = {}
        for name, part in (("train", train), ("held_out", held), ("all", rows)):
            preds, skipped = predict(part, model)
            out[name] = summarize(preds, skipped)
            s = out[name]
            print(
                f"{label:>7} {name:<9} n={s['n']:>4} skipped={s['skipped']:>3} median {s['median_ape']}%  "
                f"p90 {s['p90_ape']}%  within20 {s['within_20pct']}%"
            )
        return out

    before = report(base, "before")
    fitted, result = fit_serving_params(train, base, names=tuple(BOUNDS), max_evals=args.max_evals)
    after = report(fitted, "after")
    print(f"loss {result.loss_before:.4f} -> {result.loss_after:.4f} in {result.evaluations} evaluations")
    for k, v in result.params.items():
        print(f"  {k:<26} {v:.6g}")
    if args.write:
        path = ROOT / "objectives" / "data" / "efficiency.yaml"
        text = path.read_text()
        head = text[: text.index("\nserving:\n") + 1]
        today = dt.date.today().isoformat()
        src = f"fitted by scripts/fit_efficiency.py on the {len(train)} {args.train_version} rows, {today}"
        lines = ["serving:"]
        for k, v in result.params.items():
            lines.append(f'  {k}: {{value: {v:.6g}, source: "{src}"}}')
        for k, source in FIXED.items():
            lines.append(f'  {k}: {{value: {base.serving[k]:.6g}, source: "{source}"}}')
        lines.append("fit:")
        lines.append(f'  date: "{today}"')
        lines.append(f'  train: "{args.train_version} rows of shared/reference/measurements.public.jsonl"')
        for name in ("train", "held_out", "all"):
            for label, rep in (("before", before), ("after", after)):
                s = rep[name]
                lines.append(
                    f"  {name}_{label}: {{n: {s['n']}, median_ape: {s['median_ape']}, "
                    f"p90_ape: {s['p90_ape']}, within_20pct: {s['within_20pct']}}}"
                )
        path.write_text(head + "\n".join(lines) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
