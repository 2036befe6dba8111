"""The `servesweep` command line: one typer app, each command group in a module of its own."""

from __future__ import annotations

import typer

from search.cli import calibrate, catalog, kernels, probe, serve, simulate, sweeps

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Find the cheapest fast ways to serve a large language model."
)
for _group in (catalog, calibrate, sweeps, simulate, probe, kernels, serve):
    _group.register(app)


def main() -> None:  # pragma: no cover - console script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
