"""Fit the global serving parameters of the cost model and write them into the data file.

    python scripts/fit_efficiency.py --measurements ../shared/reference/measurements.public.jsonl \
        [--train-version "TensorRT-LLM v0.14.0"] [--write] [--kernels [ENGINE]]

Fits only on the rows of one framework version (default v0.14.0) and reports the error on
those rows (in sample) and on every other row (held out), before and after. With --write, the
fitted values, the date and the errors replace the `serving` / `fit` sections at the end of
objectives/data/efficiency.yaml.

With --kernels, fits instead the five end-to-end parameters of the kernel model
(objectives/kernel_timing.py: kernel_time_scale, layer/step/seq overheads, runtime reserve) for
ENGINE (default trtllm) and, with --write, writes them to objectives/data/kernel_serving.yaml.
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
    parser.add_argument("--kernels", nargs="?", const="trtllm", default=None, help="fit the kernel model of ENGINE")
    args = parser.parse_args(argv)
    if args.kernels:
        return fit_kernel_model(args)

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
        lines += _fit_section("", today, args.train_version, before, after)
        path.write_text(head + "\n".join(lines) + "\n")
        print(f"wrote {path}")
    return 0


KERNEL_BOUNDS = {
    "kernel_time_scale": (0.5, 1.5),
    "allreduce_overhead_s": (1e-7, 2e-4),
    "layer_overhead_s": (1e-7, 2e-4),
    "step_overhead_s": (1e-5, 2e-2),
    "seq_overhead_s": (1e-8, 2e-5),
}
KERNEL_NOTES = {
    "kernel_time_scale": "kernel times of the release predicted vs the collection release (TensorRT-LLM 1.3.0rc20)",
    "layer_overhead_s": "seconds per layer per step (launches, norms, rotary); not a fraction",
    "step_overhead_s": "seconds per step on the host (scheduling, sampling launch); not a fraction",
    "seq_overhead_s": "seconds per sequence per step on the host (sampling, detokenization); not a fraction",
    "allreduce_overhead_s": "seconds per TP all-reduce / EP all-to-all beyond the measured kernel (sync, launch)",
}


def fit_kernel_model(args: argparse.Namespace) -> int:
    """Fit the kernel model's five parameters on the training version's rows only."""
    import copy

    import numpy as np

    from search.calibration import build_rows, log_error, nelder_mead, predict_batch

    rows = load_measurements(args.measurements)
    train = [r for r in rows if r.get("version") == args.train_version]
    held = [r for r in rows if r.get("version") != args.train_version]
    base = EfficiencyModel.kernel_default(args.kernels)
    names = tuple(KERNEL_BOUNDS)

    def model_with(values: dict[str, float]) -> EfficiencyModel:
        data = copy.deepcopy(base.data)
        for k, v in values.items():
            data["kernels"]["params"][k] = {"value": float(v), "source": "fitted"}
        return EfficiencyModel(data)

    def report(model: EfficiencyModel, label: str) -> dict:
        out = {}
        for name, part in (("train", train), ("held_out", held), ("all", rows)):
            preds, skipped = predict(part, model)
            out[name] = s = summarize(preds, skipped)
            print(
                f"{label:>7} {name:<9} n={s['n']:>4} median {s['median_ape']}%  p90 {s['p90_ape']}%  "
                f"within20 {s['within_20pct']}%"
            )
        return out

    before = report(base, "before")
    used, _, _ = build_rows(train, base)
    measured = np.array([float(r["value"]) for r in used])
    lo = np.log([KERNEL_BOUNDS[n][0] for n in names])
    hi = np.log([KERNEL_BOUNDS[n][1] for n in names])

    def values_of(x: np.ndarray) -> dict[str, float]:
        return dict(zip(names, np.exp(np.clip(x, lo, hi)).tolist(), strict=True))

    def loss(x: np.ndarray) -> float:
        penalty = float(np.sum(np.maximum(x - hi, 0) + np.maximum(lo - x, 0)))
        _, batch, _ = build_rows(used, model_with(values_of(x)))
        pred, _ = predict_batch(used, batch)  # type: ignore[arg-type]
        return log_error(pred, measured) + penalty

    x0 = np.log([base.kernel_params[n] for n in names])
    l0 = loss(x0)
    x, fx = nelder_mead(loss, x0, max_evals=args.max_evals // 2)
    x, fx = nelder_mead(loss, x, step=0.1, max_evals=args.max_evals // 2)
    fitted = values_of(x)
    after = report(model_with(fitted), "after")
    print(f"loss {l0:.4f} -> {fx:.4f}")
    for k, v in fitted.items():
        print(f"  {k:<24} {v:.6g}")
    if args.write:
        today = dt.date.today().isoformat()
        src = f"fitted by scripts/fit_efficiency.py --kernels on the {len(train)} {args.train_version} rows, {today}"
        path = ROOT / "objectives" / "data" / "kernel_serving.yaml"
        text = path.read_text()
        head = text[: text.index("kernels:\n")]
        lines = ["kernels:", f"  engine: {args.kernels}", "  params:"]
        for k, v in fitted.items():
            lines.append(f'    {k}: {{value: {v:.6g}, source: "{src}", note: "{KERNEL_NOTES[k]}"}}')
        for k, entry in base.data["kernels"]["params"].items():
            if k not in fitted:  # kept as it was, with its own source
                lines.append(f'    {k}: {{value: {entry["value"]:.6g}, source: "{entry["source"]}"}}')
        lines += _fit_section("  ", today, args.train_version, before, after)
        path.write_text(head + "\n".join(lines) + "\n")
        print(f"wrote {path}")
    return 0


def _fit_section(indent: str, today: str, train_version: str, before: dict, after: dict) -> list[str]:
    """The `fit:` block of a fitted data file: date, training rows, errors before and after."""
    lines = [f"{indent}fit:", f'{indent}  date: "{today}"']
    lines.append(f'{indent}  train: "{train_version} rows of shared/reference/measurements.public.jsonl"')
    for name in ("train", "held_out", "all"):
        for label, rep in (("before", before), ("after", after)):
            e = rep[name]
            lines.append(
                f"{indent}  {name}_{label}: {{n: {e['n']}, median_ape: {e['median_ape']}, "
                f"p90_ape: {e['p90_ape']}, within_20pct: {e['within_20pct']}}}"
            )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
