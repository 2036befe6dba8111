"""What every command prints through: the consoles and the one way a command fails."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table
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


def say(text: str, prefix: str = "", style: str = "", *, stderr: bool = False) -> None:
    """Print user text as it is — no Rich markup, no wrapping (`[probe]`, YAML lists and long
    lines survive) — after an optional styled `prefix`."""
    line = Text(prefix, style=style) + Text(text) if prefix else Text(text, style=style)
    (err if stderr else console).print(line, soft_wrap=True, highlight=False)


def print_table(table: Table, wide: bool = False, wrap: tuple[str, ...] = ()) -> None:
    """Print a table without cutting a value: every column but those named in `wrap` is as wide as
    its longest cell and its header (a header over 16 columns may wrap); when that is wider than the terminal, or
    with `wide` (the commands' --wide), the table prints at its natural width instead of cut to
    the terminal's (`H100…`, `10…`)."""
    from rich.cells import cell_len

    need = 1
    for col in table.columns:
        cells = [cell_len(str(c)) for c in col._cells]
        longest_word = max((cell_len(w) for w in str(col.header).split()), default=0)
        if str(col.header) not in wrap:
            header = cell_len(str(col.header))
            col.min_width = max([header if header <= 16 else longest_word, *cells])
        need += (col.min_width or max(longest_word, 12)) + 3
    too_wide = need > console.width
    console.print(table, width=10_000 if wide or too_wide else None, soft_wrap=False, crop=False)


def fail(message: str) -> NoReturn:
    """Print `error: message` on stderr, on one line and markup-free, and exit with status 2."""
    say(one_line(message), "error: ", "bold red", stderr=True)
    raise typer.Exit(code=2)
