"""What every command prints through: the consoles and the one way a command fails."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

console = Console()
err = Console(stderr=True, soft_wrap=True)


def say(text: str, prefix: str = "", style: str = "", *, stderr: bool = False) -> None:
    """Print user text as it is — no Rich markup, no wrapping (`[probe]`, YAML lists and long
    lines survive) — after an optional styled `prefix`."""
    line = Text(prefix, style=style) + Text(text) if prefix else Text(text, style=style)
    (err if stderr else console).print(line, soft_wrap=True, highlight=False)


def fail(message: str) -> NoReturn:
    """Print `error: message` on stderr and exit with status 2."""
    say(message, "error: ", "bold red", stderr=True)
    raise typer.Exit(code=2)
