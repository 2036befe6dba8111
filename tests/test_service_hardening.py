"""The service under abuse (issue 17, findings 13-15): query strings never reach the access log,
slow or aborted uploads are bounded and quiet, and the OpenAPI schema says what the service
answers (schemathesis conformance checks). A real uvicorn on loopback and a real SQLite store."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from search.service import ServiceSettings, create_app

SERVESWEEP = str(Path(sys.executable).with_name("servesweep"))
TOKEN = "alice-secret-token-0123456789"
ALICE = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout_s} s")


@contextmanager
def _serve(tmp_path: Path, **overrides: Any) -> Iterator[tuple[str, int]]:
    """A real uvicorn server in a thread on a SQLite store; yields (base URL, port)."""
    import uvicorn

    settings = ServiceSettings(
        storage_url=f"sqlite:///{tmp_path}/service.db",
        tokens={"alice": TOKEN},
        report_dir=tmp_path / "reports",
        workers=1,
        **overrides,
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_for(lambda: server.started or not thread.is_alive(), 60, "server start")
    assert server.started, "the service did not start"
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        thread.join(60)


# ------------------------------------------------------------------ 13. access log


def test_query_strings_are_redacted_in_the_access_log(tmp_path: Path) -> None:
    """`servesweep serve` as users run it: a token sent as ?token=... (a client's mistake) is
    not in the access log; the path and the parameter names are."""
    from search.service.logs import redact_query

    assert redact_query("/sweeps?token=s3cret&name=x") == "/sweeps?token=REDACTED&name=REDACTED"
    assert redact_query("/sweeps?s3cret&a=") == "/sweeps?REDACTED&a=REDACTED"
    assert redact_query("/sweeps") == "/sweeps"

    secret = "query-secret-token-5551234"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", SERVESWEEP_API_TOKENS=f"alice:{TOKEN}")
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    log_path = tmp_path / "service.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                *(SERVESWEEP, "serve", "--storage", f"sqlite:///{tmp_path}/s.db", "--port", str(port)),
                *("--workers", "1", "--no-resume", "--report-dir", str(tmp_path / "reports")),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the service exited: {log_path.read_text()[-2000:]}")
            try:
                return client.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(up, 120, "service start")
        assert client.get("/sweeps", params={"token": secret}).status_code == 401
        assert client.get("/sweeps", params={"access_token": secret, "x": "1"}, headers=ALICE).status_code == 200
        assert client.get(f"/healthz?{secret}").status_code == 200
        _wait_for(lambda: log_path.read_text().count('"GET /') >= 4, 10, "access log lines")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        client.close()
    text = log_path.read_text()
    assert secret not in text, text[-3000:]
    assert TOKEN not in text
    assert '"GET /sweeps?token=REDACTED HTTP/1.1" 401' in text, text[-3000:]
    assert '"GET /sweeps?access_token=REDACTED&x=REDACTED HTTP/1.1" 200' in text, text[-3000:]


# ------------------------------------------------------------------ 14. slow and aborted uploads


def _partial_upload(port: int, declared: int, sent: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /sweeps HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/yaml\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def test_slow_uploads_get_408_within_the_body_timeout(tmp_path: Path, local_ray) -> None:
    """Ten uploads that trickle (a byte every 0.3 s of a declared 1,000) are each answered 408
    once the body timeout (1 s) passed, instead of holding the server for as long as they like."""
    with _serve(tmp_path, body_timeout_s=1.0) as (base, port):
        socks = [_partial_upload(port, 1000, b"model: ") for _ in range(10)]
        began = time.monotonic()
        answers: list[bytes] = []
        try:
            for _ in range(12):  # keep trickling for up to ~3.6 s
                for sock in socks:
                    try:
                        sock.sendall(b"x")
                    except OSError:
                        pass  # the server answered and closed
                time.sleep(0.3)
            for sock in socks:
                sock.settimeout(10)
                answers.append(sock.recv(4096))
        finally:
            for sock in socks:
                sock.close()
        elapsed = time.monotonic() - began
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
        assert b"request body not received within 1 s" in answers[0]
        assert elapsed < 15
        assert httpx.get(f"{base}/healthz").status_code == 200


def test_an_aborted_upload_is_one_quiet_log_line(tmp_path: Path, local_ray, caplog) -> None:
    """A client that sends half its body and hangs up: an INFO line, no 'unexpected error'."""
    caplog.set_level(logging.INFO, logger="servesweep")
    with _serve(tmp_path, body_timeout_s=30.0) as (base, port):
        sock = _partial_upload(port, 1000, b"model: llama-3.1-8b\n")
        time.sleep(0.5)
        sock.close()
        _wait_for(lambda: any("disconnected" in r.getMessage() for r in caplog.records), 10, "the disconnect log line")
        assert httpx.get(f"{base}/healthz").status_code == 200
    errors = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("servesweep")
    ]
    assert not errors, errors
    quiet = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(quiet) == 1 and quiet[0].levelno == logging.INFO and quiet[0].exc_info is None
    assert quiet[0].getMessage() == "POST /sweeps: client disconnected before its request body arrived"


# ------------------------------------------------------------------ 15. OpenAPI conformance

EXAMPLES = 25  # per operation and generation mode


def test_the_openapi_schema_is_true(tmp_path: Path, local_ray) -> None:
    """Schemathesis against the live /openapi.json with the conformance checks on: every status
    code, content type and response body the service gives is the one the schema documents, with
    the token (positive and negative generation) and without it (401)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    with _serve(tmp_path, max_sweeps_per_token=1) as (base, _):
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers=ALICE)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 10
        calls = 0

        def run(operation: Any, mode: Any, headers: dict[str, str], examples: int) -> None:
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(base_url=base, headers=headers, checks=checks, timeout=60)

            try:
                check()
            except Unsatisfiable:  # nothing to break in an operation without parameters or body
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.path

        for operation in operations:
            run(operation, schemathesis.GenerationMode.POSITIVE, ALICE, EXAMPLES)
            run(operation, schemathesis.GenerationMode.NEGATIVE, ALICE, EXAMPLES)
            run(operation, schemathesis.GenerationMode.POSITIVE, {"Authorization": "Bearer not-a-token"}, 3)
        assert calls >= len(operations) * EXAMPLES
