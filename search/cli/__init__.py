"""The `servesweep` command line (search.cli.app); each command module parses, calls one function of
a lower room, and prints."""

from search.cli.app import app, main

__all__ = ["app", "main"]
