"""The sweep driver: create a sweep record (`start_sweep`) and run it (`run_sweep`) under its lease,
in stages of rising fidelity (`sampler: auto`, search.sweeps.staged), exhaustive
(search.sweeps.exhaustive) or guided (search.sweeps.guided), storing as it goes; a killed
driver's sweep resumes from the database and nothing is evaluated twice."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

import optuna

from search.cluster import ClusterUnavailableError, ensure_ray
from search.store import LeaseLostError, Store
from search.sweeps.control import ProgressCallback, StopCheck, SweepStopped, _now, code_version
from search.sweeps.evaluators import make_evaluator
from search.sweeps.exhaustive import _run_exhaustive
from search.sweeps.guided import _run_guided
from search.sweeps.pricing import price_table
from search.sweeps.spec import SWEEP_NAME_PATTERN, SweepSpec
from search.sweeps.staged import _run_staged

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger("servesweep.driver")


def start_sweep(
    store: Store,
    spec: SweepSpec,
    spec_yaml: str,
    name: str | None,
    workers: int,
    submitter: str | None = None,
    service: bool = False,
) -> str:
    """Create the sweep record (a name is generated when none is given); returns the name.
    `submitter` defaults to $USER; `service` marks a sweep the HTTP service owns (and resumes)."""
    name = name or spec.name or f"{spec.model.split('/')[-1].lower()}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not re.match(SWEEP_NAME_PATTERN, name) or ".." in name:
        raise ValueError(
            f"invalid sweep name {name!r}: use letters, digits, '.', '_' and '-' (at most 100, "
            "starting with a letter or digit)"
        )
    if spec.calibration != "none" and spec.calibration_record is None:
        from search.calibration import load_record

        if spec.calibration == "latest":
            from search.calibration import latest_usable_calibration

            found, skipped = latest_usable_calibration(store, spec.accelerators)
            if found is None:
                raise ValueError(
                    f"calibration: latest, but no usable calibration that applies to "
                    f"{', '.join(spec.accelerators)} is stored in {store.url}"
                    + (f" (skipped {'; '.join(skipped)})" if skipped else "")
                )
            record = found["record"]
        else:
            record = load_record(spec.calibration)
        spec = spec.model_copy(update={"calibration_record": record})
    evaluator = make_evaluator(spec)
    prices = {g: evaluator.price_per_gpu_hour(g) for g in spec.accelerators}  # type: ignore[attr-defined]
    store.create_sweep(
        name,
        spec_yaml=spec_yaml,
        spec={**spec.model_dump(mode="json"), "_workers": workers, **({"_service": True} if service else {})},
        submitter=submitter or os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown",
        code_version=code_version(),
        price_table=price_table(
            spec.pricing.basis,
            spec.pricing.provider,
            evaluator.catalog,  # type: ignore[attr-defined]
            spec.accelerators,
            prices,
        ),
    )
    return name


def run_sweep(
    store: Store,
    name: str,
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    local: bool = False,
    optuna_storage: optuna.storages.BaseStorage | None = None,
    should_stop: StopCheck | None = None,
) -> dict[str, Any]:
    """Run (or resume) the stored sweep `name` to completion; returns its summary.

    `local` evaluates guided trials in this process instead of on Ray, and `optuna_storage`
    replaces the study's storage (the benchmark compares persistence with Optuna's in-memory
    storage this way); neither is needed in normal use. `should_stop` is polled between
    shard results and between waves: when it returns a status ('cancelled' or 'interrupted'),
    the work done so far is stored, the sweep gets that status and `{"stopped": status}` is
    returned; a later run_sweep resumes it.

    One driver per sweep: the sweep's lease (Store.sweep_lease) is held throughout, so a second
    process asked to run it (a resume, another service instance) gets SweepBusyError at once
    instead of evaluating it twice."""
    if store.get_sweep(name) is None:
        raise ValueError(f"no sweep named {name!r} in {store.url}")
    with store.sweep_lease(name):
        return _drive(store, name, ray_address, workers, progress, local, optuna_storage, should_stop)


def _drive(
    store: Store,
    name: str,
    ray_address: str | None,
    workers: int | None,
    progress: ProgressCallback | None,
    local: bool,
    optuna_storage: optuna.storages.BaseStorage | None,
    should_stop: StopCheck | None,
) -> dict[str, Any]:
    """run_sweep's work, under the sweep's lease."""
    record = store.get_sweep(name)
    if record is None:  # deleted meanwhile
        raise ValueError(f"no sweep named {name!r} in {store.url}")
    if record["status"] == "finished":
        return record["summary"] or {}
    stored = dict(record["spec"])
    workers = int(stored.pop("_workers", None) or workers or os.cpu_count() or 1)
    stored.pop("_service", None)
    spec = SweepSpec.model_validate(stored)
    if not local:
        try:
            ensure_ray(ray_address, workers)
        except ClusterUnavailableError as exc:  # resumable once Ray is back, never left pending
            _record_end(store, name, "interrupted", str(exc))
            raise
    store.update_sweep(name, status="running", started_at=record.get("started_at") or _now(), error=None)
    try:
        if spec.staged:
            summary = _run_staged(store, name, spec, workers, progress, local, optuna_storage, should_stop)
        elif spec.sampler == "exhaustive":
            summary = _run_exhaustive(store, name, spec, workers, progress, record.get("summary") or {}, should_stop)
        else:
            summary = _run_guided(store, name, spec, workers, progress, local, optuna_storage, should_stop)
    except SweepStopped as stop:
        store.update_sweep(name, status=stop.status)
        return {"stopped": stop.status}
    except LeaseLostError:
        raise  # the sweep is no longer ours: write nothing more (its status is another driver's)
    except KeyboardInterrupt:
        _record_end(store, name, "interrupted", None)
        raise
    except Exception as exc:
        _record_end(store, name, "failed", f"{type(exc).__name__}: {exc}")
        raise
    if spec.evaluator == "probe":
        summary = {**summary, **_probe_summary(store, name, spec)}
    store.update_sweep(name, status="finished", finished_at=_now(), summary=summary)
    return summary


def _record_end(store: Store, name: str, status: str, error: str | None) -> None:
    """Store how the sweep ended; when the database itself is what failed, log that instead of
    raising over the real error (the lease's heartbeat stops, so readers see `interrupted`)."""
    try:
        store.update_sweep(name, status=status, error=error)
    except Exception as exc:
        log.error("sweep %s: could not record status %r (%s: %s)", name, status, type(exc).__name__, exc)


def _probe_summary(store: Store, name: str, spec: SweepSpec) -> dict[str, Any]:
    """What a probe sweep measured: stored rows by probe status (candidates not measured say
    why), and which accelerators the cluster lacks."""
    from search.calibration import probe_coverage
    from search.sweeps.evaluation import PROBE_STATUS

    counts: dict[str, int] = {}
    for row in store.get_evaluations(name):
        code = (row.get("metrics") or {}).get("probe_status")
        if code:
            status = PROBE_STATUS[int(code)]
            counts[status] = counts.get(status, 0) + 1
    return {
        "measured": store.count_evaluations(name)["measured"],
        "probe_candidates": counts,
        "probe_analytic": probe_coverage(list(spec.accelerators), spec.probe.device),
    }
