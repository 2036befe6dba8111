"""What a request to the service may carry, checked before any endpoint runs: the bearer token
(search.service.auth), the body limit (Content-Length and streamed), YAML or JSON bodies (no
aliases), sweep names that stay inside the report folder, and specs that name no file on the
server. Errors are JSON `{"detail": ...}`.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import yaml
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.requests import ClientDisconnect

from search.service.auth import TokenChecker
from search.sweeps import SWEEP_NAME_PATTERN


async def _send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz"})
USER_KEY = "servesweep.user"
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain", "")
_NAME_RE = re.compile(SWEEP_NAME_PATTERN)
_NAME_RULE = "use letters, digits, '.', '_' and '-' (at most 100, starting with a letter or digit, no '..')"


# ------------------------------------------------------------------------------ plumbing


class BodyTooLarge(HTTPException):
    """The request body passed the size limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the limit of {limit} bytes")


class BodyTimeout(HTTPException):
    """The request body did not arrive in time (a slow or stalled upload)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"request body not received within {timeout_s:g} s", headers={"Connection": "close"})


def _plain(value: Any) -> Any:
    """JSON-able: numpy unwrapped, non-finite floats to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(_plain(content), status_code=status_code, headers=headers)


log = logging.getLogger("servesweep.service")


class Guard:
    """ASGI middleware: bearer-token check (all paths but OPEN_PATHS) and the body size limit,
    by Content-Length up front and by counting what is streamed (chunked bodies); the whole
    body must arrive within `body_timeout_s` of the request (else 408: slow uploads hold no
    slot for long). A client that goes away before its body arrived is one quiet log line."""

    def __init__(self, app: Any, checker: TokenChecker, max_body_bytes: int, body_timeout_s: float = 10.0) -> None:
        self.app = app
        self.checker = checker
        self.limit = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = None
        length = None
        for key, value in scope["headers"]:
            if key == b"authorization" and authorization is None:
                authorization = value
            elif key == b"content-length":
                length = value
        if scope["path"] not in OPEN_PATHS:
            user = self.checker.identify(authorization)
            if user is None:
                detail = "missing bearer token" if authorization is None else "invalid bearer token"
                await _send_json(send, 401, detail, [(b"www-authenticate", b'Bearer realm="servesweep"')])
                return
            scope[USER_KEY] = user
        if length is not None:
            try:
                declared = int(length)
                if declared < 0:
                    raise ValueError
            except ValueError:
                await _send_json(send, 400, "invalid Content-Length header")
                return
            if declared > self.limit:
                await _send_json(send, 413, f"request body larger than the limit of {self.limit} bytes")
                return
        seen = 0
        started = False
        body_done = False
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        where = f"{scope.get('method', '?')} {scope['path']}"

        async def counted_receive() -> Message:
            nonlocal seen, body_done
            if body_done:  # later receives wait for a disconnect while a response streams: untimed
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.0))
            except TimeoutError:
                log.info("%s: request body not received within %g s (408)", where, self.body_timeout_s)
                raise BodyTimeout(self.body_timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
                body_done = not message.get("more_body", False)
            else:
                body_done = True  # http.disconnect
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except (BodyTooLarge, BodyTimeout) as exc:
            if started:
                raise
            await _send_json(send, exc.status_code, str(exc.detail), [(b"connection", b"close")])
        except ClientDisconnect:  # the client went away mid-upload: nobody to answer
            log.info("%s: client disconnected before its request body arrived", where)


bearer = HTTPBearer(auto_error=False, description="a token from --tokens-file or $SERVESWEEP_API_TOKENS")


def _user(request: Request) -> str:
    return request.scope[USER_KEY]


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name) or ".." in name:
        raise HTTPException(422, f"invalid sweep name {name[:120]!r}: {_NAME_RULE}")
    return name


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors / aliases (no exponential 'billion laughs' documents)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted", event.start_mark)
        return super().compose_node(parent, index)


def _parse_body(body: bytes, content_type: str) -> tuple[Any, str]:
    """(parsed document, its YAML text) of a submitted spec; HTTPException for bad bodies."""
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(422, f"the request body is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if media == "application/json" or media.endswith("+json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HTTPException(422, f"the request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise HTTPException(422, "the request body is nested too deeply") from None
        except ValueError as exc:  # an integer past Python's 4,300-digit limit (not a JSONDecodeError)
            raise HTTPException(422, f"the request body has a number with too many digits ({exc})") from None
        if not isinstance(data, dict):
            raise HTTPException(422, "invalid sweep spec: the top level must be an object of fields")
        try:
            text = yaml.safe_dump(data, sort_keys=False)
        except (yaml.YAMLError, RecursionError):
            raise HTTPException(422, "the request body is nested too deeply") from None
        return data, text
    if media in YAML_TYPES:
        try:
            data = yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader without aliases
        except yaml.YAMLError as exc:
            raise HTTPException(422, f"the request body is not valid YAML: {exc}") from None
        except RecursionError:
            raise HTTPException(422, "the request body is nested too deeply") from None
        except ValueError as exc:  # an integer past Python's 4,300-digit limit
            raise HTTPException(422, f"the request body has a number with too many digits ({exc})") from None
        return data, text
    raise HTTPException(
        415, f"unsupported Content-Type {media!r}: send the spec as application/json or application/yaml"
    )


def _catalog_model_names() -> set[str]:
    from objectives.models import list_models

    return {n.lower() for e in list_models() for n in (e.id, *e.aliases)}


def _catalog_model_error(value: str) -> str | None:
    """None if `value` names a shipped model; else why not (the service reads no server files)."""
    names = _catalog_model_names()
    if value.lower() in names:
        return None
    close = difflib.get_close_matches(value.lower(), sorted(names), n=5, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else "no close matches in the catalog (GET /catalog/models)"
    return f"unknown model {value[:200]!r}: the service takes catalog ids and aliases only; {hint}"


def _server_file_fields(data: dict[str, Any]) -> str | None:
    """Why a spec may not run here when it names files on the server, else None."""
    model = data.get("model")
    if isinstance(model, str):
        problem = _catalog_model_error(model)
        if problem:
            return f"invalid sweep spec:\n  model: {problem}"
    pricing = data.get("pricing")
    if isinstance(pricing, dict) and pricing.get("price_file") is not None:
        return "invalid sweep spec:\n  pricing.price_file: files on the server are not accepted by the service"
    simulation = data.get("simulation")
    if isinstance(simulation, dict) and simulation.get("trace") is not None:
        return "invalid sweep spec:\n  simulation.trace: files on the server are not accepted by the service"
    calibration = data.get("calibration", "none")
    if calibration not in ("none", "latest"):
        return (
            "invalid sweep spec:\n  calibration: the service takes 'none' or 'latest' (files on the server are "
            "not accepted; give the record itself as calibration_record)"
        )
    return None
