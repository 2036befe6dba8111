"""What a command checks before it does any work: the database it opens (a read-only command never
creates one, a writer never invents its directory unless asked) and the files it will write (one
check for every `-o`, so nothing is computed or stored for an output that cannot be written)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from search.cli.console import fail


def above_zero(value: float | None) -> float | None:
    """An option's callback: a rate (requests/s) of 0 or less is no load at all."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value:g} is not above 0")
    return value


MkdirOpt = Annotated[
    bool, typer.Option("--mkdir", help="create missing parent directories of the database and output files")
]


def open_store(url: str | None, *, write: bool = False, mkdir: bool = False) -> Any:
    """The Store at `url` (default: the default database). Read-only (`write` False): a missing
    SQLite file is an error, not a new empty database; a writer may create the file, and its
    directory only with `mkdir`. Errors end the command in one line."""
    from search.store import Store, default_storage_url

    try:
        return Store(url or default_storage_url(), create=write, mkdir=mkdir)
    except ValueError as exc:
        fail(str(exc))


def check_output(path: Path | None, *, mkdir: bool = False) -> Path | None:
    """Fail at once (one line) unless `path` can be written: its directory exists (or is made,
    with `mkdir`), it is not a directory, and a file can really be opened there. An existing
    file is left as it is; a probe file is removed again."""
    if path is None:
        return None
    try:
        path = Path(path).expanduser()
    except RuntimeError:  # '~name' of a user that does not exist, or no home directory
        fail(f"cannot write {path}: its '~' names no home directory")
    if path.is_dir():
        fail(f"cannot write {path}: it is a directory")
    parent = path.parent
    if not parent.exists():
        if not mkdir:
            fail(f"cannot write {path}: directory {parent} does not exist (create it or pass --mkdir)")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"cannot create directory {parent}: {exc.strerror or exc}")
    elif not parent.is_dir():
        fail(f"cannot write {path}: {parent} is not a directory")
    try:
        if path.exists():
            with path.open("a"):
                pass
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            path.unlink()
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    return path
