"""Load test of the HTTP service, every figure measured in one run.

    python scripts/bench_service.py [--requests 300] [--bursts 3] [--pg-url ADMIN_URL] [--json OUT]

Starts the real service (`servesweep serve`, a subprocess) on loopback against a database — a
temporary SQLite file, or a fresh PostgreSQL database made through --pg-url (an admin URL such
as postgresql+psycopg://postgres@127.0.0.1:5432/test; it is dropped afterwards) — submits a
guided sweep that keeps running, then fires `--requests` concurrent GET /sweeps/{name} (each on
its own connection, from an asyncio load generator in this process) in each of `--bursts`
bursts, and prints the latency percentiles (connect to last byte, as the client sees it), the
throughput, and how far the sweep progressed meanwhile (it must keep going) — with the
service's short status cache (`serve --status-cache-s`, default 0.5 s) and without it (0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SERVESWEEP = str(Path(sys.executable).with_name("servesweep"))
TOKEN = "bench-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = {
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "workload": "chat",
    "accelerators": ["H100-SXM", "A100-SXM-80GB", "L40S"],
    "space": {
        "tp": [1, 2, 4],
        "weights": ["bf16", "fp8", "int4"],
        "kv_cache": ["bf16", "fp8"],
        "max_batch": [1, 4, 16, 64, 256],
        "chunked_prefill": [2048, 8192],
    },
    "sampler": "tpe",
    "budget": {"trials": 1_000_000},  # runs until cancelled
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def _get(port: int, path: str) -> tuple[float, int, bytes]:
    """One request on a new connection, written and read with asyncio streams (a load generator
    that costs far less CPU than an HTTP client library, so the service's time is measured)."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    await writer.drain()
    data = await reader.read()  # to EOF: the whole response
    elapsed = time.perf_counter() - t0
    writer.close()
    return elapsed, int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2]


async def _burst(port: int, path: str, n: int) -> dict:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_get(port, path) for _ in range(n)))
    wall = time.perf_counter() - t0
    latencies = [lat for lat, _, _ in results]
    ok = 0
    for _, status, body in results:  # complete, parseable status documents
        ok += status == 200 and json.loads(body)["name"] == path.rsplit("/", 1)[1]
    return {
        "requests": n,
        "ok": ok,
        "p50_ms": _percentile(latencies, 0.50) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "max_ms": max(latencies) * 1e3,
        "mean_ms": statistics.fmean(latencies) * 1e3,
        "wall_s": wall,
        "requests_per_s": n / wall,
    }


def run(storage: str, requests: int, bursts: int, workers: int, cache_s: float) -> dict:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, RAY_AUTH_MODE="disabled", SERVESWEEP_API_TOKENS=f"bench:{TOKEN}")
    with tempfile.TemporaryDirectory() as reports:
        proc = subprocess.Popen(
            [
                *(SERVESWEEP, "serve", "--storage", storage, "--port", str(port), "--workers", str(workers)),
                *("--report-dir", reports, "--log-level", "warning", "--no-resume", "--status-cache-s", str(cache_s)),
            ],
            env=env,
        )
        try:
            with httpx.Client(base_url=base, headers=AUTH, timeout=60) as client:
                deadline = time.monotonic() + 180
                while True:
                    try:
                        if client.get("/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the service did not start")
                    time.sleep(0.2)
                r = client.post("/sweeps", params={"name": "bench-load"}, json=SPEC)
                r.raise_for_status()
                path = "/sweeps/bench-load"
                while client.get(path).json()["counts"]["total"] < 20:  # the sweep is under way
                    time.sleep(0.2)
                asyncio.run(_burst(port, path, min(20, requests)))  # warm-up (connections, caches)
                before = client.get(path).json()
                rounds = [asyncio.run(_burst(port, path, requests)) for _ in range(bursts)]
                after = client.get(path).json()
                client.delete(path)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    window = sum(r["wall_s"] for r in rounds)
    return {
        "bursts": rounds,
        "sweep_status_during": after["status"],
        "trials_before": before["progress"]["evaluated"],
        "trials_after": after["progress"]["evaluated"],
        "stored_before": before["counts"]["total"],
        "stored_after": after["counts"]["total"],
        "load_window_s": window,
    }


def _report(label: str, result: dict) -> None:
    print(f"\nstorage: {label}")
    for i, r in enumerate(result["bursts"], start=1):
        print(
            f"  burst {i}: {r['ok']}/{r['requests']} OK  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
            f"max {r['max_ms']:.1f} ms  {r['requests_per_s']:.0f} req/s"
        )
    print(
        f"  sweep kept running ({result['sweep_status_during']}): trials {result['trials_before']} -> "
        f"{result['trials_after']}, stored evaluations {result['stored_before']} -> {result['stored_after']} "
        f"over {result['load_window_s']:.2f} s of load"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="concurrent status requests per burst")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="Ray tasks in flight for the running sweep")
    parser.add_argument(
        "--status-cache-s", type=float, nargs="+", default=[0.5, 0.0], help="serve --status-cache-s values to compare"
    )
    parser.add_argument("--storage", help="database URL to use as it is (default: a temporary SQLite file)")
    parser.add_argument("--pg-url", help="also run on a fresh PostgreSQL database made through this admin URL")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    import platform

    print(f"servesweep service load test: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    results: dict[str, dict] = {}
    for cache_s in args.status_cache_s:
        tag = f"status cache {cache_s:g} s"
        with tempfile.TemporaryDirectory() as tmp:
            url = args.storage or f"sqlite:///{tmp}/bench.db"
            label = ("given URL" if args.storage else "SQLite file") + f", {tag}"
            results[label] = res = run(url, args.requests, args.bursts, args.workers, cache_s)
            _report(label, res)
        if args.pg_url:
            import sqlalchemy as sa

            admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
            db = f"servesweep_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as c:
                c.execute(sa.text(f'CREATE DATABASE "{db}"'))
            try:
                label = f"PostgreSQL (fresh database), {tag}"
                pg = args.pg_url.rsplit("/", 1)[0] + "/" + db
                results[label] = res = run(pg, args.requests, args.bursts, args.workers, cache_s)
                _report(label, res)
            finally:
                with admin.connect() as c:
                    c.execute(
                        sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": db}
                    )
                    c.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}"'))
                admin.dispose()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
