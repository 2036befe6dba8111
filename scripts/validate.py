"""Predict every row of a measurement file and report the error.

    python scripts/validate.py --measurements ../shared/reference/measurements.public.jsonl \
        [--summary-json OUT] [--calibration FILE] [--quiet]

Prints predicted vs measured per row, the error by framework version, GPU and model, then the
median and 90th-percentile absolute percentage error, the share within +-20 %, and the skipped
rows with their reasons. --summary-json writes {"n", "skipped", "median_ape", "p90_ape",
"within_20pct"} (plus the same per version under "by_version").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from objectives.efficiency import default_efficiency
from search.calibration import load_measurements, predict, summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measurements", required=True, type=Path)
    parser.add_argument("--summary-json", type=Path)
    parser.add_argument("--calibration", type=Path, help="calibration record (JSON or YAML) to apply")
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    args = parser.parse_args(argv)

    efficiency = default_efficiency()
    if args.calibration:
        import yaml

        efficiency = efficiency.with_calibration(
            yaml.safe_load(args.calibration.read_text()), name=args.calibration.stem
        )
    rows = load_measurements(args.measurements)
    predictions, skipped = predict(rows, efficiency)

    if not args.quiet:
        print(
            f"{'id':<9} {'model':<40} {'gpu':<15} {'w':<4} {'tp':>2} {'isl':>6} {'osl':>5} "
            f"{'batch':>6} {'measured':>10} {'predicted':>10} {'err%':>7}"
        )
        for p in predictions:
            r = p.row
            err = (p.predicted - p.measured) / p.measured * 100.0
            print(
                f"{r.get('id', ''):<9} {r['model'][:40]:<40} {r['gpu']:<15} {r['weights']:<4} {r.get('tp', 1):>2} "
                f"{r['isl']:>6} {r['osl']:>5} {p.batch:>6.0f} {p.measured:>10.1f} {p.predicted:>10.1f} {err:>+7.1f}"
            )
    groups: dict[str, dict[str, list]] = {
        "version": defaultdict(list),
        "gpu": defaultdict(list),
        "model": defaultdict(list),
        "weights": defaultdict(list),
    }
    for p in predictions:
        for key in groups:
            groups[key][str(p.row.get(key, "?"))].append(p)
    for key, by in groups.items():
        print(f"\nby {key}:")
        for name, preds in sorted(by.items()):
            s = summarize(preds)
            print(
                f"  {name:<48} n={s['n']:>4}  median {s['median_ape']:>6.1f}%  p90 {s['p90_ape']:>6.1f}%  "
                f"within 20% {s['within_20pct']:>5.1f}%"
            )
    summary = summarize(predictions, skipped)
    summary["by_version"] = {name: summarize(preds) for name, preds in sorted(groups["version"].items())}
    summary["efficiency_basis"] = "calibration " + args.calibration.name if args.calibration else "defaults"
    print(f"\nrows predicted: {summary['n']}   skipped: {summary['skipped']}")
    print(
        f"median absolute error: {summary['median_ape']}%   p90: {summary['p90_ape']}%   "
        f"within +-20%: {summary['within_20pct']}%"
    )
    for row, reason in skipped:
        print(f"  skipped {row.get('id', '?')} ({row.get('model')}, {row.get('gpu')}): {reason}")
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
