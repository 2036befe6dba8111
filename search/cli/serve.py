"""`servesweep serve`: the HTTP service on uvicorn (search.service)."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from search.cli.console import say


class LogLevel(StrEnum):
    """uvicorn's levels but 'trace', which would log request headers (the tokens)."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


def serve(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port")] = 8000,
    storage: Annotated[
        str | None,
        typer.Option(envvar="SERVESWEEP_STORAGE", help="database URL (default: sqlite:///servesweep.db here)"),
    ] = None,
    ray_address: Annotated[str | None, typer.Option(envvar="RAY_ADDRESS", help="join this Ray cluster")] = None,
    tokens_file: Annotated[
        Path | None,
        typer.Option(help="API tokens, 'token' or 'name:token' per line (default: $SERVESWEEP_API_TOKENS)"),
    ] = None,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="largest request body accepted")] = 1 << 20,
    body_timeout: Annotated[
        float, typer.Option(min=0.001, help="seconds a request body may take to arrive (else 408)")
    ] = 10.0,
    max_sweeps_per_token: Annotated[int, typer.Option(min=1, help="sweeps one token may run at once")] = 2,
    workers: Annotated[int | None, typer.Option(min=1, help="Ray tasks in flight per sweep (default: CPUs)")] = None,
    report_dir: Annotated[Path, typer.Option(help="folder the HTML reports are written to")] = Path(
        "servesweep-reports"
    ),
    status_cache_s: Annotated[
        float, typer.Option(min=0.0, help="how stale a sweep's stored status may be when polled (0: read every time)")
    ] = 0.5,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="do not resume the service's unfinished sweeps at start")
    ] = False,
    log_level: Annotated[LogLevel, typer.Option(help="log level of uvicorn and the service")] = LogLevel.info,
) -> None:
    """Run the HTTP service: submit sweeps, watch them, fetch fronts, reports and estimates."""
    import uvicorn

    from search.service import ServiceSettings, TokenConfigError, create_app, load_tokens, uvicorn_log_config
    from search.store import default_storage_url, parse_url

    url = storage or default_storage_url()
    try:
        tokens = load_tokens(tokens_file)
        parse_url(url)
    except (TokenConfigError, ValueError) as exc:
        say(str(exc), "error: ", "bold red", stderr=True)
        raise typer.Exit(code=2) from None
    settings = ServiceSettings(
        storage_url=url,
        tokens=tokens,
        ray_address=ray_address,
        max_body_bytes=max_body_bytes,
        body_timeout_s=body_timeout,
        max_sweeps_per_token=max_sweeps_per_token,
        report_dir=report_dir,
        workers=workers,
        resume=not no_resume,
        status_cache_s=status_cache_s,
    )
    from search.cluster import ensure_ray

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     servesweep: %(message)s"))
    service_log = logging.getLogger("servesweep")
    service_log.addHandler(handler)
    service_log.setLevel(log_level.value.upper())
    service_log.propagate = False

    # Ray first: uvicorn's signal handlers, installed after Ray's, then own SIGINT / SIGTERM,
    # so a stopped service shuts down gracefully (its sweeps are stored as 'interrupted').
    ensure_ray(ray_address, workers)
    # uvicorn is the ASGI server; its access log has the request line only (never headers),
    # query-string values redacted (search.service.logs).
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=uvicorn_log_config(),
        log_level=log_level.value,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.shutdown_wait_s),
    )


def register(app: typer.Typer) -> None:
    app.command()(serve)
