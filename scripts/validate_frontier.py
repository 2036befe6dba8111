"""The frontier headline rows against the model (search/calibration/frontier.py): one table.

    python scripts/validate_frontier.py [--measurements ../shared/reference/measurements.frontier_headlines.jsonl]
        [--kernel-model [ENGINE]] [--json OUT]

Target: every predicted row within 25%; skipped rows are listed with their reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from objectives.efficiency import EfficiencyModel, default_efficiency  # noqa: E402
from search.calibration.frontier import predict_all  # noqa: E402

DEFAULT = ROOT.parent / "shared" / "reference" / "measurements.frontier_headlines.jsonl"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--measurements", type=Path, default=DEFAULT)
    p.add_argument("--kernel-model", nargs="?", const="trtllm", default=None)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    eff = EfficiencyModel.kernel_default(a.kernel_model) if a.kernel_model else default_efficiency()
    rows = predict_all(a.measurements, eff)
    print(f"{'row':52s} {'quantity':17s} {'measured':>9s} {'predicted':>9s} {'error':>7s}  note")
    within = predicted = 0
    for r in rows:
        if r.predicted is None:
            print(f"{r.id:52s} {'':17s} {'':>9s} {'':>9s} {'':>7s}  {r.note}")
            continue
        e = r.error
        predicted += 1
        within += int(e is not None and abs(e) <= 0.25)
        extra = f" (default alpha: {r.predicted_default:,.0f})" if r.predicted_default else ""
        print(f"{r.id:52s} {r.quantity:17s} {r.measured:9,.0f} {r.predicted:9,.0f} {e:+7.1%}  {r.note}{extra}")
    print(f"\n{within} of {predicted} predicted rows within 25%; {len(rows) - predicted} skipped")
    if a.json:
        a.json.write_text(json.dumps([r.__dict__ | {"error": r.error} for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
