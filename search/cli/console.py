"""What every command prints through: the consoles and the one way a command fails."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> NoReturn:
    """Print `error: message` on stderr and exit with status 2."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code=2)
