"""The HTTP service (`servesweep serve`): the FastAPI app, its bearer tokens and request limits, and
the sweep jobs it drives.
"""

from search._exports import lazy_exports

_EXPORTS = {
    "ServiceSettings": "app",
    "TokenChecker": "auth",
    "TokenConfigError": "auth",
    "create_app": "app",
    "load_tokens": "auth",
    "parse_tokens": "auth",
    "uvicorn_log_config": "logs",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
