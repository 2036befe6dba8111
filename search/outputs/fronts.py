"""A stored sweep's final front as flat rows: what `front`, `export` and `GET /sweeps/NAME/front` show."""

from __future__ import annotations

from typing import Any

from search.sweeps import stage_of


class FrontError(LookupError):
    """The sweep does not exist or has no final front yet; the message says which."""


def front_rows(store: Any, name: str) -> tuple[list[str], list[dict]]:
    """(column names, flat rows) of a sweep's final front, sorted by the first objective; each
    row says which `stage` produced its latencies (analytic, simulated or measured)."""
    s = store.get_sweep(name)
    if s is None:
        raise FrontError(f"no sweep named {name!r} in {store.url}")
    f = store.latest_front(name, kind="final")
    if f is None:
        raise FrontError(f"sweep {name!r} has no final front yet (status {s['status']}); run or resume it first")
    objectives = [o["metric"] for o in s["spec"]["objectives"]]
    rows = []
    for p in f["points"]:
        row = {k: v for k, v in p.items() if k not in ("objectives", "metrics", "id")}
        row["stage"] = stage_of(p.get("metrics"))
        row.update({f"objective_{m}": v for m, v in zip(objectives, p["objectives"], strict=True)})
        row.update(_metric_columns(p["metrics"]))
        rows.append(row)
    _add_intervals(rows, s["spec"])
    rows.sort(key=lambda r: (r[f"objective_{objectives[0]}"] is None, r[f"objective_{objectives[0]}"]))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return columns, rows


def _add_intervals(rows: list[dict], spec: dict[str, Any]) -> None:
    """Each row's 80 % interval columns (`<metric>_p10` / `_p90`), `extrapolated` and `evidence`
    (search.outputs.intervals), from its accelerator, weights and the sweep's model."""
    from search.outputs.intervals import DEFAULT_ENGINE, flat

    for row in rows:
        row.update(flat(row, model=str(spec.get("model")), engine=DEFAULT_ENGINE))


def _metric_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """A point's metrics as columns: the metric `max_batch` (the largest batch whose KV cache
    fits) becomes `batch_that_fits`, so it never hides the configured limit `max_batch`."""
    return {("batch_that_fits" if k == "max_batch" else k): v for k, v in metrics.items() if k != "constraints"}


def evaluation_rows(store: Any, name: str) -> tuple[list[str], list[dict]]:
    """(column names, flat rows) of every stored evaluation of a sweep (`export --what evaluations`)."""
    if store.get_sweep(name) is None:
        raise FrontError(f"no sweep named {name!r} in {store.url}")
    rows = []
    for e in store.get_evaluations(name):
        row = {k: v for k, v in e["config"].items() if k != "id"}
        row.update(feasible=e["feasible"], reason=e.get("reason"), stage=stage_of(e.get("metrics"), e.get("evaluator")))
        row.update(_metric_columns(e.get("metrics") or {}))
        rows.append(row)
    return list(dict.fromkeys(k for r in rows for k in r)), rows
