"""Values into and out of the `svc_*` tables: validation of every field before a write (names,
finite floats, aware datetimes, JSON-able payloads) and the plain dicts the store returns."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from search.store.schema import _MAX_KEY, _MAX_NAME

_SWEEP_UPDATABLE = {
    "status",
    "summary",
    "optuna_study_name",
    "started_at",
    "finished_at",
    "submitter",
    "code_version",
    "price_table",
    "error",
}


# --------------------------------------------------------------------------------------------
# Validation and conversion
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON value: numpy scalars/arrays unwrapped, tuples to lists, NaN/inf to None."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str | int | float | bool):
                raise ValueError(f"{where}: key {k!r} is not a string")
            out[str(k)] = _jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist(), where)
    if isinstance(value, datetime):
        return _iso(_aware(value, where))
    raise ValueError(f"{where}: {type(value).__name__} value {value!r} is not JSON-serializable")


def _name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"sweep name must be a non-empty string, got {name!r}")
    if len(name) > _MAX_NAME:
        raise ValueError(f"sweep name {name[:40]!r}... is longer than {_MAX_NAME} characters")
    return name


def _opt_str(value: Any, field: str, max_len: int | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string or None, got {type(value).__name__}")
    if max_len is not None and len(value) > max_len:
        raise ValueError(f"{field} is longer than {max_len} characters")
    return value


def _aware(value: Any, field: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{field}: {value!r} is not an ISO 8601 datetime") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{field} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise ValueError(f"{field}: naive datetime {value.isoformat()}; pass a timezone-aware one")
    return value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _finite_float(value: Any, field: str) -> float:
    if isinstance(value, bool) or (not isinstance(value, int | float) and not hasattr(value, "__float__")):
        raise ValueError(f"{field} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{field} must be finite, got {out}")
    return out


def _float_list(value: Any, field: str) -> list[float | None] | None:
    """A list of finite numbers; an element may be None where the model has no value (an
    infeasible configuration has no latency), but never NaN or infinity."""
    if value is None:
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise ValueError(f"{field} must be a list of numbers or None, got {type(value).__name__}")
    return [None if v is None else _finite_float(v, f"{field}[{i}]") for i, v in enumerate(value)]


_EVALUATION_FIELDS = {
    "config_key",
    "config",
    "feasible",
    "reason",
    "metrics",
    "objectives",
    "trial_number",
    "evaluator",
    "measured",
}


def _evaluation_row(row: Mapping[str, Any], i: int, sweep_id: int, now: datetime) -> dict[str, Any]:
    where = f"evaluation row {i}"
    if not isinstance(row, Mapping):
        raise ValueError(f"{where} must be a dict, got {type(row).__name__}")
    unknown = set(row) - _EVALUATION_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_EVALUATION_FIELDS)}")
    key = row.get("config_key")
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: config_key must be a non-empty string, got {key!r}")
    if len(key) > _MAX_KEY:
        raise ValueError(f"{where}: config_key is longer than {_MAX_KEY} characters")
    if not isinstance(row.get("config"), Mapping):
        raise ValueError(f"{where} ({key}): config must be a dict")
    feasible = row.get("feasible")
    if hasattr(feasible, "item"):
        feasible = feasible.item()
    if not isinstance(feasible, bool):
        raise ValueError(f"{where} ({key}): feasible must be a bool, got {feasible!r}")
    trial = row.get("trial_number")
    if trial is not None:
        if hasattr(trial, "item"):
            trial = trial.item()
        if isinstance(trial, bool) or not isinstance(trial, int):
            raise ValueError(f"{where} ({key}): trial_number must be an int or None, got {trial!r}")
    measured = row.get("measured", False)
    if hasattr(measured, "item"):
        measured = measured.item()
    if not isinstance(measured, bool):
        raise ValueError(f"{where} ({key}): measured must be a bool, got {measured!r}")
    return {
        "sweep_id": sweep_id,
        "config_key": key,
        "config": _jsonable(row["config"], f"{where}.config"),
        "feasible": feasible,
        "reason": _opt_str(row.get("reason"), f"{where}.reason"),
        "metrics": _jsonable(row.get("metrics"), f"{where}.metrics"),
        "objectives": _float_list(row.get("objectives"), f"{where}.objectives"),
        "trial_number": trial,
        "evaluator": _opt_str(row.get("evaluator"), f"{where}.evaluator", 64),
        "measured": measured,
        "created_at": now,
    }


def _sweep_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "status": r.status,
        "spec_yaml": r.spec_yaml,
        "spec": r.spec,
        "submitter": r.submitter,
        "code_version": r.code_version,
        "price_table": r.price_table,
        "summary": r.summary,
        "optuna_study_name": r.optuna_study_name,
        "created_at": _iso(r.created_at),
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
        "updated_at": _iso(r.updated_at),
        "error": getattr(r, "error", None),
    }


def _evaluation_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "config_key": r.config_key,
        "config": r.config,
        "feasible": bool(r.feasible),
        "reason": r.reason,
        "metrics": r.metrics,
        "objectives": r.objectives,
        "trial_number": r.trial_number,
        "evaluator": r.evaluator,
        "measured": bool(r.measured),
        "created_at": _iso(r.created_at),
    }


def _calibration_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "gpu": r.gpu,
        "device": r.device,
        "record": r.record,
        "created_at": _iso(r.created_at),
    }


def _front_dict(r: Any, sweep: str) -> dict[str, Any]:
    return {
        "id": r.id,
        "sweep": sweep,
        "kind": r.kind,
        "created_at": _iso(r.created_at),
        "hypervolume": r.hypervolume,
        "reference_point": r.reference_point,
        "points": r.points,
    }
