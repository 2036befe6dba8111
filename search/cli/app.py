"""The `servesweep` command line: one typer app, each command group in a module of its own; errors
of every command go through one layer (search.cli.errors)."""

from __future__ import annotations

from typing import Annotated

import typer

from search.cli import calibrate, catalog, kernels, probe, serve, simulate, sweeps
from search.cli.errors import CliGroup


def _flags_take_no_value() -> None:
    """Typer (0.29) prints a flag's type in help (`--json  <bool>`), which reads as if the flag
    took a value; show no type for flags. Only the help rendering changes."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_servesweep", False):
        return

    def display_type_rich(self: TyperOption, ctx: typer.Context) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._servesweep = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()
app = typer.Typer(
    cls=CliGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Find the cheapest fast ways to serve a large language model.",
)
for _group in (catalog, calibrate, sweeps, simulate, probe, kernels, serve):
    _group.register(app)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"servesweep {version('servesweep')}")
        except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
            print("servesweep (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_version, help="print the version and exit")
    ] = False,
) -> None:
    """Find the cheapest fast ways to serve a large language model."""


def main() -> None:  # pragma: no cover - console script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
