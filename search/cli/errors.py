"""The command line's one error-handling layer: the typer app's click group (`CliGroup`) turns the
errors a user can cause — a bad argument, an unreachable database or Ray cluster, a missing file,
an invalid spec — into one `error:` line on stderr and exit status 2, for every command alike.
Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from search.cli.console import err, fail, one_line


def describe(exc: BaseException) -> str | None:
    """The one-line message for an error a user can cause, or None (a bug: let it through)."""
    from sqlalchemy.exc import DBAPIError

    from search.cluster import ClusterUnavailableError, ProbeUnavailableError
    from search.store import StoreUnavailableError

    cause = getattr(exc, "cause", None)  # a Ray task's error carries the task's own
    if cause is not None and type(exc).__name__.startswith("RayTaskError") and isinstance(cause, Exception):
        return describe(cause)
    if isinstance(exc, StoreUnavailableError | ClusterUnavailableError | ProbeUnavailableError):
        return str(exc)
    if isinstance(exc, DBAPIError):
        orig = getattr(exc, "orig", None) or exc
        return f"database error: {one_line(str(orig))}"
    if isinstance(exc, OSError):  # the machine's answer (a file, a socket), not a bug
        return f"{exc.filename}: {exc.strerror or exc}" if exc.filename is not None else one_line(str(exc))
    if isinstance(exc, ValueError) or (isinstance(exc, LookupError) and not isinstance(exc, IndexError)):
        if type(exc) is KeyError:  # a bare KeyError is a bug, not a user's mistake
            return None
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return one_line(text) or type(exc).__name__
    return None


class CliGroup(TyperGroup):
    """The servesweep group: known errors of any command become `fail()` lines, and usage errors
    (a bad option value, an unknown command) are one line too instead of a boxed panel."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort, KeyboardInterrupt):  # typer's own (usage, exit)
            raise
        except Exception as exc:
            message = describe(exc)
            if message is None:
                raise
            fail(message)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # click's usage errors, as typer vendors them
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            err.print(f"error: {one_line(text)}{hint}", markup=False, highlight=False)
            sys.exit(2)
        except typer.Abort:
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)
