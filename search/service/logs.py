"""What the service's logs may show: uvicorn's access log with every query-string value
redacted (a client that puts its token in the URL, `?token=...`, leaves no token in the log).
`uvicorn_log_config` is uvicorn's own logging configuration with the filter on its access
logger; `servesweep serve` passes it to uvicorn."""

from __future__ import annotations

import copy
import logging
from typing import Any

REDACTED = "REDACTED"


def redact_query(target: str) -> str:
    """`/path?a=1&token=s&bare` -> `/path?a=REDACTED&token=REDACTED&REDACTED`: the names of
    `name=value` fields are kept (as sent), every value and every bare field is not."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    fields = [f"{part.partition('=')[0]}={REDACTED}" if "=" in part else REDACTED for part in query.split("&")]
    return f"{path}?{'&'.join(fields)}"


class RedactQueryStrings(logging.Filter):
    """On uvicorn.access: its record's arguments are (client, method, path with query, HTTP
    version, status); the path's query values are replaced by REDACTED."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's LOGGING_CONFIG with RedactQueryStrings on the access logger."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query_strings"] = {"()": RedactQueryStrings}
    access = config["loggers"].setdefault("uvicorn.access", {})
    access["filters"] = [*access.get("filters", []), "redact_query_strings"]
    return config
