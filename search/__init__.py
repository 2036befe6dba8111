"""servesweep's service: sweeps, storage, calibration, outputs, the HTTP API and the CLI.

Rooms, and the one way imports point (a room imports only the rooms below it; `store` and
`cluster` are independent of each other; `tests/test_layout.py` keeps it so)::

    cli ──> service ──> outputs ──> sweeps ──> calibration ──> store
                                                          └──> cluster
    (every room may also use objectives/ and workloads/, which import nothing of search/)

- cli/          the typer app; one thin module per command group (parse, call, print)
- service/      the FastAPI app, its bearer tokens and request limits, its sweep jobs
- outputs/      fronts, recommendations, procurement, the HTML report, launch lines,
                single-deployment estimates and simulations
- sweeps/       spec, search space, evaluators, the driver (exhaustive and guided tiers),
                Ray tasks, Pareto fronts
- calibration/  GPU probes, fitting, calibration records, validation against measurements
- store/        the SQLAlchemy store (sweeps and evaluations, calibrations, leases), Optuna's
                RDB storage, Alembic migrations
- cluster/      joining or starting Ray, and what GPUs it has

A room's public names are what its `__init__` exports (loaded lazily, search._exports); other
rooms import those, never a module inside the room or a private helper.
"""
