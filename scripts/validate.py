"""Predict every row of a measurement file and report the error.

    python scripts/validate.py --measurements ../shared/reference/measurements.public.jsonl \
        [--summary-json OUT] [--calibration FILE] [--kernel-model [ENGINE]] [--quiet]
    python scripts/validate.py --kernels [--kernel-dir DIR]
    python scripts/validate.py --intervals [--measurements FILE ...] [--write [PATH]] [--summary-json OUT]

Prints predicted vs measured per row, the error by framework version, GPU and model, then the
median and 90th-percentile absolute percentage error, the share within +-20 %, and the skipped
rows with their reasons. --summary-json writes {"n", "skipped", "median_ape", "p90_ape",
"within_20pct"} (plus the same per version under "by_version").

--kernel-model predicts with the kernel model (objectives/kernel_timing.py: GEMM, attention and
all-reduce from the kernel records of ENGINE, default trtllm) instead of the default model.

--kernels prints, for every kernel record (objectives/data/kernels/), its error against the
database rows it summarizes (median / p90 |predicted / measured - 1|, as fitted by
`servesweep kernels import`) per GPU, op and dtype, checks the rows each record keeps verbatim,
and counts the records that meet the targets (median <= 5 %, p90 <= 15 %).

--intervals fits the 80 % prediction intervals (objectives/uncertainty.py) to the residuals of
every measurement file given (default: all four files of ../shared/reference/), prints the
coverage of the intervals on leave-one-model-family-out folds — per region, per family, per file
and per metric, then overall and on the public file alone (the target: 72-88 %) — and with
--write stores the table fitted on all rows (default objectives/data/intervals.yaml) with its
source: files, residual counts, code version and date.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from objectives.efficiency import default_efficiency
from search.calibration import load_measurements, predict, summarize
from search.calibration.intervals import (
    REFERENCE_FILES,
    coverage_by,
    fit_table,
    leave_one_family_out,
    residuals,
    source_block,
)

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"
INTERVALS_FILE = ROOT / "objectives" / "data" / "intervals.yaml"
TARGET = (0.72, 0.88)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measurements", type=Path, nargs="+")
    parser.add_argument("--intervals", action="store_true", help="fit the prediction intervals, print coverage")
    parser.add_argument(
        "--write", type=Path, nargs="?", const=INTERVALS_FILE, default=None, help="store the fitted interval table"
    )
    parser.add_argument("--kernels", action="store_true", help="report the kernel surfaces' fit errors")
    parser.add_argument("--kernel-dir", type=Path, help="kernel record directory (default: the shipped one)")
    parser.add_argument(
        "--kernel-model", nargs="?", const="trtllm", default=None, help="predict with the kernel model of ENGINE"
    )
    parser.add_argument("--summary-json", type=Path)
    parser.add_argument("--calibration", type=Path, help="calibration record (JSON or YAML) to apply")
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    args = parser.parse_args(argv)
    if args.kernels:
        return kernel_report(args.kernel_dir)
    if args.intervals:
        return interval_report(
            args.measurements or [REFERENCE / f for f in REFERENCE_FILES], args.write, args.summary_json
        )
    if args.measurements is None:
        parser.error("--measurements is required (or --kernels, --intervals)")
    if len(args.measurements) > 1:
        parser.error("give one --measurements file (several only with --intervals)")
    args.measurements = args.measurements[0]

    efficiency = default_efficiency()
    if args.kernel_model:
        from objectives.efficiency import EfficiencyModel

        efficiency = EfficiencyModel.kernel_default(args.kernel_model)
    if args.calibration:
        import yaml

        efficiency = efficiency.with_calibration(
            yaml.safe_load(args.calibration.read_text()), name=args.calibration.stem
        )
    rows = load_measurements(args.measurements)
    predictions, skipped = predict(rows, efficiency)
    if rows and not predictions:  # a third-party file (AMD, NIM, frontier): its rows by metric
        return third_party_report(args.measurements, efficiency)

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
    if args.kernel_model:
        summary["efficiency_basis"] += f"; kernel model {args.kernel_model}"
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


def third_party_report(path: Path, efficiency: object) -> int:
    """Errors of a file whose rows are not in the public offline-throughput format, predicted
    as the interval fit predicts them (search.calibration.intervals.residuals: AMD max-load and
    fixed-batch rows, NIM fixed-concurrency TTFT / ITL, the frontier rows the aggregated model
    covers), by metric."""
    res, skipped = residuals([path], efficiency)  # type: ignore[arg-type]
    print(f"{'id':<60} {'metric':<10} {'measured':>10} {'predicted':>10} {'err%':>7}")
    by: dict[str, list[float]] = defaultdict(list)
    for r in res:
        err = (r.predicted - r.measured) / r.measured * 100.0
        by[r.region.metric].append(abs(err))
        print(f"{r.id[:60]:<60} {r.region.metric:<10} {r.measured:>10.2f} {r.predicted:>10.2f} {err:>+7.1f}")
    print("\nby metric:")
    for metric, errs in sorted(by.items()):
        print(
            f"  {metric:<12} n={len(errs):>4}  median {np.median(errs):>6.1f}%  p90 {np.percentile(errs, 90):>6.1f}%  "
            f"within 20% {np.mean(np.array(errs) <= 20.0) * 100:>5.1f}%"
        )
    print(f"\nrows predicted: {len(res)}   skipped: {len(skipped)}")
    for _, rid, why in skipped:
        print(f"  skipped {rid}: {why}")
    return 0


def _code_version() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def interval_report(paths: list[Path], write: Path | None, summary_json: Path | None) -> int:
    """Coverage of the 80 % intervals on leave-one-model-family-out folds; --write the table."""
    paths = [Path(p) for p in paths if Path(p).exists()]
    res, skipped = residuals(paths)
    folds = leave_one_family_out(res)
    print(f"residuals: {len(res)} from {len(paths)} files ({len(skipped)} rows skipped)")
    print("\ncoverage of the 80 % intervals, each model family held out in turn:")
    summary: dict = {}
    for key in ("region", "family", "file", "metric"):
        table = coverage_by(folds, key)
        summary["by_" + key] = table
        print(f"\nby {key}:")
        print(f"  {key:<44} {'rows':>5} {'coverage':>9} {'extrap.':>8} {'width x':>8}")
        for name, c in table.items():
            print(
                f"  {name:<44} {c['n']:>5} {c['coverage']:>9.1%} {c['extrapolated']:>8.0%} "
                f"{np.exp(c['median_width']):>8.2f}"
            )
    overall = float(np.mean([f.covered for f in folds])) if folds else float("nan")
    public = [f for f in folds if f.residual.file == "measurements.public.jsonl"]
    # the target is on the public file's own folds (its families held out of its own rows)
    public_only = leave_one_family_out([x for x in res if x.file == "measurements.public.jsonl"])
    pub = float(np.mean([f.covered for f in public_only])) if public_only else float("nan")
    summary.update(
        overall={"n": len(folds), "coverage": overall},
        public_rows_all_files={
            "n": len(public),
            "coverage": float(np.mean([f.covered for f in public])) if public else None,
        },
        public_only={"n": len(public_only), "coverage": pub},
        target=list(TARGET),
    )
    print(f"\noverall coverage (all files, {len(folds)} rows): {overall:.1%}")
    if public_only:
        ok = TARGET[0] <= pub <= TARGET[1]
        print(
            f"public file, its own leave-one-model-family-out folds ({len(public_only)} rows): {pub:.1%}   "
            f"target {TARGET[0]:.0%}-{TARGET[1]:.0%}: {'met' if ok else 'MISSED'}"
        )
    for name, rid, why in skipped:
        print(f"  skipped {name} {rid}: {why}")
    if write is not None:
        source = source_block(paths, res, _code_version())
        source["held_out_coverage"] = {
            "folds": "leave one model family out",
            "overall": round(overall, 4),
            "public_file": round(pub, 4),
            "by_region": {
                k: {"n": v["n"], "coverage": round(v["coverage"], 4)} for k, v in summary["by_region"].items()
            },
        }
        table = fit_table(res, source)
        header = (
            "# Prediction intervals of the cost model (objectives/uncertainty.py): split-conformal 80 % bounds of\n"
            "# log(measured / predicted) per region, family-exchangeable. Written by\n"
            "#   python scripts/validate.py --intervals --write\n"
            f"# Leave-one-model-family-out coverage when written: {overall:.1%} (all files), {pub:.1%} (public file).\n"
        )
        table.write(write, header)
        print(f"\nwrote {write} ({len(table.regions)} region keys)")
    if summary_json:
        summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def kernel_report(directory: Path | None) -> int:
    """Each kernel record's fit error per GPU, op and dtype, and the share meeting the targets."""
    from objectives.kernels import KernelLibrary

    lib = KernelLibrary.from_dir(directory)
    if not lib.records:
        print("no kernel records")
        return 1
    print(
        f"{'gpu':<14} {'engine':<18} {'op':<22} {'dtype':<18} {'rows':>6} {'median':>7} {'p90':>7} "
        f"{'sample':>7}  target"
    )
    met = 0
    by_op: dict[str, list] = defaultdict(list)
    for r in sorted(lib.records, key=lambda r: (r.gpu, r.engine, r.op, r.dtype)):
        f = r.fit
        ok = f["median_abs_error"] <= 0.05 and f["p90_abs_error"] <= 0.15
        met += ok
        by_op[r.op].append(ok)
        sample = r.sample_errors()
        print(
            f"{r.gpu:<14} {r.engine + '-' + r.engine_version:<18} {r.op:<22} {r.dtype:<18} {f['rows']:>6} "
            f"{f['median_abs_error']:>7.1%} {f['p90_abs_error']:>7.1%} "
            f"{(sample.max() if sample.size else float('nan')):>7.1%}  {'ok' if ok else 'MISSED'}"
        )
    print("\nby op (records meeting median <= 5 % and p90 <= 15 %):")
    for op, oks in sorted(by_op.items()):
        print(f"  {op:<22} {sum(oks):>3} / {len(oks):<3}")
    print(f"\nrecords: {len(lib.records)}   meeting the targets: {met}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
