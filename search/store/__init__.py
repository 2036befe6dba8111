"""The database: the service's own `svc_*` tables (sweeps and evaluations, fronts, calibrations,
leases) and Optuna's RDB storage beside them, upgraded by the Alembic migrations in `migrations/`.
"""

from search._exports import lazy_exports

_EXPORTS = {
    "add_trials": "optuna_storage",
    "alembic_config": "engine",
    "Base": "schema",
    "CALIBRATION_KINDS": "schema",
    "default_storage_url": "engine",
    "FRONT_KINDS": "schema",
    "include_name": "schema",
    "include_object": "schema",
    "LeaseLostError": "leases",
    "make_engine": "engine",
    "make_optuna_storage": "optuna_storage",
    "parse_url": "engine",
    "Store": "store",
    "StoreUnavailableError": "engine",
    "SUPPORTED_SCHEMES": "engine",
    "SWEEP_STATUSES": "schema",
    "SweepBusyError": "leases",
    "SweepNotFoundError": "sweeps",
    "VERSION_TABLE": "schema",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
