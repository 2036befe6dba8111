"""What every command prints through: the consoles and the one way a command fails."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

console = Console()
err = Console(stderr=True, soft_wrap=True)


def one_line(message: str) -> str:
    """`message` on one line: its lines joined with '; ' (after a trailing ':' with a space)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    out = ""
    for line in lines:
        out += line if not out else (" " if out.endswith(":") else "; ") + line
    return out


def fail(message: str) -> NoReturn:
    """Print `error: message` on stderr, on one line and markup-free, and exit with status 2."""
    err.print(Text.assemble(("error:", "bold red"), " ", one_line(message)), highlight=False)
    raise typer.Exit(code=2)
