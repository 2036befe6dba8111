"""Calibration records: fitting the cost model's global efficiency parameters to end-to-end
measurements, and choosing which record an estimate or a sweep uses.

A record has the layout of objectives/data/efficiency.yaml (`serving`, optionally `gpus`) plus
`name`, `kind` and `fit` (what it was fitted on and the errors before and after, in-sample and
held out). It is stored in `svc_calibrations` and exported as JSON, which `--calibration FILE`
reads back. Only the global serving parameters are fitted — never per-model terms.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from objectives.efficiency import EfficiencyModel, default_efficiency
from search.calibration.fitting import BOUNDS, fit_serving_params
from search.calibration.validation import predict, summarize

if TYPE_CHECKING:
    from search.store import Store


def split_rows(rows: Sequence[dict], holdout_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(fit rows, held-out rows), a seeded random split."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {holdout_fraction}")
    order = np.random.default_rng(seed).permutation(len(rows))
    n_hold = round(holdout_fraction * len(rows))
    held = {int(i) for i in order[:n_hold]}
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def _errors(rows: Sequence[dict], model: EfficiencyModel) -> dict[str, Any]:
    preds, skipped = predict(rows, model)
    return summarize(preds, skipped)


def calibrate_from_measurements(
    rows: Sequence[dict],
    *,
    name: str,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    params: Sequence[str] = tuple(BOUNDS),
    max_evals: int = 800,
    base: EfficiencyModel | None = None,
    source: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Fit `params` on a random (1 - holdout_fraction) of `rows` and return the record, with
    the errors before and after on the fitted and the held-out rows. `progress(done, total)`
    follows the fit's loss evaluations (the long part)."""
    base = base or default_efficiency()
    fit_rows, held_rows = split_rows(rows, holdout_fraction, seed)
    if not fit_rows:
        raise ValueError("no rows left to fit after the hold-out split")
    fitted, result = fit_serving_params(fit_rows, base, names=params, max_evals=max_evals, progress=progress)
    errors = {
        "fit_before": _errors(fit_rows, base),
        "fit_after": _errors(fit_rows, fitted),
    }
    if held_rows:
        errors["held_out_before"] = _errors(held_rows, base)
        errors["held_out_after"] = _errors(held_rows, fitted)
    return {
        "name": name,
        "kind": "measurements",
        "serving": {k: {"value": v, "source": f"calibration {name}"} for k, v in result.params.items()},
        "fit": {
            "date": dt.date.today().isoformat(),
            "source": source,
            "rows": len(rows),
            "fit_rows": len(fit_rows),
            "held_out_rows": len(held_rows),
            "holdout_fraction": holdout_fraction,
            "seed": seed,
            "loss_before": result.loss_before,
            "loss_after": result.loss_after,
            "evaluations": result.evaluations,
            "errors": errors,
        },
    }


def efficiency_from_record(record: dict[str, Any], base: EfficiencyModel | None = None) -> EfficiencyModel:
    """The efficiency model a calibration record describes (over the shipped defaults)."""
    base = base or default_efficiency()
    body = {k: v for k, v in record.items() if k in ("gpus", "serving", "defaults", "aliases", "pcie_gpus")}
    return base.with_calibration(body, name=str(record.get("name", "calibration")))


def load_record(path: str | Path) -> dict[str, Any]:
    """A calibration record from a JSON or YAML file; ValueError names the problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read calibration {p}: {exc.strerror}") from None
    try:
        record = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"calibration {p} is not valid JSON/YAML: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError(f"calibration {p} must hold a mapping")
    record.setdefault("name", p.stem)
    return record


def worse_than_defaults(record: dict[str, Any]) -> str | None:
    """Why a measurement fit must not be used (its held-out median error is worse than the
    shipped defaults' on the same rows), or None: probes and fits without held-out rows pass."""
    errors = (record.get("fit") or {}).get("errors") or {}
    before, after = errors.get("held_out_before") or {}, errors.get("held_out_after") or {}
    b, a = before.get("median_ape"), after.get("median_ape")
    if b is None or a is None or a <= b:
        return None
    return f"its held-out median error {a}% is worse than the defaults' {b}%"


def latest_usable_calibration(store: Store, gpus: Sequence[str] | None = None) -> tuple[dict | None, list[str]]:
    """(the newest stored calibration that applies to one of `gpus` and is not worse than the
    defaults, or None; 'NAME (why)' for each newer one passed over as worse)."""
    skipped = []
    for found in store.list_calibrations():  # newest first
        if gpus is not None and found["gpu"] is not None and found["gpu"] not in gpus:
            continue
        why = worse_than_defaults(found["record"])
        if why is None:
            return found, skipped
        skipped.append(f"{found['name']} ({why})")
    return None, skipped


def resolve_calibration(
    choice: str | None, storage: str | Store | None = None, gpus: Sequence[str] | None = None
) -> tuple[EfficiencyModel, str]:
    """(efficiency model, label) for `--calibration`: 'none' (or None) = shipped defaults,
    'latest' = the newest record in the database (with `gpus`, the newest that applies to one
    of them: a probe of that GPU or a fit to measurements, so a CPU or another GPU's probe is
    passed over; a fit whose held-out error is worse than the defaults' is passed over too, and
    the label says so), anything else = a record file. `storage`: a database URL (default: the
    default database, which must exist) or an open Store (kept open)."""
    if choice is None or choice == "none":
        return default_efficiency(), "defaults"
    if choice == "latest":
        from search.store import Store, default_storage_url

        store = storage if isinstance(storage, Store) else Store(storage or default_storage_url(), create=False)
        try:
            found, skipped = latest_usable_calibration(store, gpus)
        finally:
            if store is not storage:
                store.close()
        passed_over = f"skipped {'; '.join(skipped)}" if skipped else ""
        if found is None:
            which = f" that applies to {', '.join(gpus)}" if gpus else ""
            raise ValueError(
                f"no usable calibration{which} stored in {store.url}"
                + (f" ({passed_over})" if passed_over else "")
                + "; run 'servesweep calibrate' or 'servesweep probe' first, or pass a file"
            )
        label = f"calibration {found['name']}" + (f" ({passed_over})" if passed_over else "")
        return efficiency_from_record(found["record"]), label
    record = load_record(choice)
    return efficiency_from_record(record), f"calibration {record['name']}"
