"""Ray: joining a cluster or starting the embedded local one, and what GPUs it has.

`ray.init(address="local")` starts a private local Ray (plain `ray.init()` could attach to a
stranger's cluster); `--ray-address` / `RAY_ADDRESS` join an existing one. `check_gpu_resource`
fails at once, naming what the cluster has, instead of leaving a task waiting forever for a GPU
type that is not there; Ray's accelerator-type names differ from the catalog's in a few places
(`ray_accelerator_type`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import ray


class ProbeUnavailableError(RuntimeError):
    """PyTorch or the requested device / cluster resource is missing; the message says which."""


class ClusterUnavailableError(RuntimeError):
    """The Ray cluster named by --ray-address / $RAY_ADDRESS cannot be reached (checked in
    seconds, before Ray would retry for minutes)."""


KILL_ONCE_ENV = "SERVESWEEP_TEST_KILL_WORKER_ONCE"
# Fault accounting (scripts/bench_faults.py): a file every evaluation task appends what it
# evaluated to (search.sweeps.remote), so a benchmark can count what a resumed driver redid.
EVAL_LOG_ENV = "SERVESWEEP_EVAL_LOG"


# Catalog ids whose Ray accelerator_type is not simply the first token of the id.
RAY_ACCELERATOR_TYPES = {"A100-SXM-80GB": "A100-80G", "A100-PCIe-80GB": "A100-80G", "GH200-96GB": "GH200"}


def ray_accelerator_type(gpu_id: str) -> str:
    """Ray's accelerator_type label for a catalog id (H100-SXM -> H100)."""
    return RAY_ACCELERATOR_TYPES.get(gpu_id, gpu_id.split("-")[0])


# ------------------------------------------------------------------ Ray


def cluster_gpu_types() -> dict[str, float]:
    """{"GPU": count, "accelerator_type:X": count, ...} of the connected Ray cluster."""
    import ray

    res = ray.cluster_resources()
    return {k: float(v) for k, v in res.items() if k == "GPU" or k.startswith("accelerator_type:")}


def check_gpu_resource(accelerator_type: str | None = None, gpus: int = 1) -> None:
    """Raise ProbeUnavailableError (at once, naming what the cluster has) unless the connected
    Ray cluster has a GPU, one of `accelerator_type` when given, and `gpus` of them on one node:
    Ray would wait forever."""
    have = cluster_gpu_types()
    if have.get("GPU", 0.0) < 1.0:
        raise ProbeUnavailableError(
            f"the Ray cluster has no GPU resource (num_gpus={gpus} would wait forever); "
            "join a cluster with GPUs (--ray-address) or use --device cpu"
        )
    if accelerator_type and f"accelerator_type:{accelerator_type}" not in have:
        types = sorted(k.split(":", 1)[1] for k in have if k.startswith("accelerator_type:")) or ["none labelled"]
        raise ProbeUnavailableError(
            f"the Ray cluster has no GPU of accelerator_type {accelerator_type!r} (it has: {', '.join(types)})"
        )
    if gpus > 1:
        per_node = _gpus_per_node(accelerator_type)
        if max(per_node, default=0.0) < gpus:
            raise ProbeUnavailableError(
                f"the all-reduce probe needs {gpus} GPUs{' of ' + accelerator_type if accelerator_type else ''} on one "
                f"node; the cluster's nodes have {sorted(per_node, reverse=True) or [0]} (num_gpus={gpus} would wait "
                "forever)"
            )


def _gpus_per_node(accelerator_type: str | None) -> list[float]:
    """GPUs of each alive node of the connected cluster (of `accelerator_type` when given)."""
    import ray

    out = []
    for node in ray.nodes():
        res = node.get("Resources", {})
        if node.get("Alive") and (not accelerator_type or f"accelerator_type:{accelerator_type}" in res):
            out.append(float(res.get("GPU", 0.0)))
    return out


def has_gpu_type(accelerator_type: str) -> bool:
    """True when the connected Ray cluster has a GPU labelled `accelerator_type`."""
    try:
        check_gpu_resource(accelerator_type)
    except ProbeUnavailableError:
        return False
    return True


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """ClusterUnavailableError unless something accepts TCP connections at `address`
    (`host:port` or `ray://host:port`; 'auto' and 'local' are Ray's to resolve)."""
    import socket

    target = address.removeprefix("ray://").strip()
    if target in ("auto", "local") or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise ClusterUnavailableError(f"bad Ray address {address!r}: use host:port or ray://host:port") from None
    try:
        with socket.create_connection((host.strip("[]"), number), timeout=timeout_s):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        raise ClusterUnavailableError(
            f"cannot reach the Ray cluster at {address}: {why} (check --ray-address or $RAY_ADDRESS)"
        ) from None


RAY_START_TIMEOUT_ENV = "SERVESWEEP_RAY_START_TIMEOUT_S"
DEFAULT_RAY_START_TIMEOUT_S = 120.0


def _start_timeout_s() -> float:
    raw = os.environ.get(RAY_START_TIMEOUT_ENV)
    try:
        value = float(raw) if raw else DEFAULT_RAY_START_TIMEOUT_S
    except ValueError:
        raise ClusterUnavailableError(f"${RAY_START_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    return value if value > 0 else DEFAULT_RAY_START_TIMEOUT_S


def ensure_ray(address: str | None = None, workers: int | None = None) -> None:
    """Connect to Ray once per process: `address` (or $RAY_ADDRESS), else a local instance.
    An address nothing answers at is ClusterUnavailableError within seconds; a Ray that fails
    to start (a process of it killed during start-up) or does not start within
    $SERVESWEEP_RAY_START_TIMEOUT_S (default 120 s) is ClusterUnavailableError with one line
    saying so, instead of a traceback or a hang.

    The embedded Ray starts without the dashboard (include_dashboard=False): nothing serves it,
    and its processes would outlive a killed driver."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_reachable(address)
    env = {k: v for k, v in os.environ.items() if k in (KILL_ONCE_ENV, EVAL_LOG_ENV)}
    runtime_env = {"env_vars": env} if env else None
    if address:
        kwargs: dict = {"address": address, "runtime_env": runtime_env, "log_to_driver": False}
    else:
        kwargs = {
            "address": "local",
            "num_cpus": workers or os.cpu_count() or 1,
            "include_dashboard": False,
            "log_to_driver": False,
            "runtime_env": runtime_env,
        }
    where = f"the Ray cluster at {address}" if address else "the local Ray"
    timeout_s = _start_timeout_s()
    try:
        with _deadline(timeout_s):
            ray.init(**kwargs)
    except _StartTimeout:
        raise ClusterUnavailableError(
            f"{where} did not start within {timeout_s:g} s (${RAY_START_TIMEOUT_ENV}); check `ray status` "
            "and the Ray logs (/tmp/ray/session_latest/logs), then run again"
        ) from None
    except Exception as exc:  # a Ray process killed during start-up, a refused connection, ...
        why = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ClusterUnavailableError(f"{where} failed to start: {type(exc).__name__}: {why}") from None
    if not address:
        _reap_when_gone()


# Run by _reap_when_gone in a child process: wait for the driver's end (EOF on stdin), give its
# Ray processes a grace period to stop, then SIGKILL the ones left (same pid and start time).
_REAPER = """
import sys, time
sys.stdin.buffer.read()
import psutil
procs = []
for item in sys.argv[1:]:
    pid, created = item.split(":")
    try:
        p = psutil.Process(int(pid))
        if abs(p.create_time() - float(created)) < 0.01:
            procs.append(p)
    except psutil.Error:
        pass
time.sleep(3.0)
for p in procs:
    try:
        if p.is_running():  # psutil compares the start time too: never a reused pid
            p.kill()
    except psutil.Error:
        pass
"""


def _reap_when_gone() -> None:
    """The embedded Ray's processes go when the driver does, even when it is SIGKILLed: its
    dashboard and runtime-env agents would otherwise wait 60 s on the dead GCS (they report the
    raylet's death to it) before exiting. A small watcher process holds a pipe from this one and,
    once it reads EOF, kills whichever of them are still there after 3 s."""
    import subprocess
    import sys

    try:
        import psutil  # bundled with Ray (importable once ray is imported)

        procs = psutil.Process().children(recursive=True)
        pairs = [f"{p.pid}:{p.create_time()}" for p in procs]
    except Exception:  # no psutil: Ray's own fate-sharing is all there is
        return
    if not pairs:
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    watcher = subprocess.Popen(
        [sys.executable, "-c", _REAPER, *pairs],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # not in the driver's process group: a Ctrl-C does not reach it
    )
    _WATCHERS.append(watcher)  # the pipe stays open as long as this process lives


_WATCHERS: list = []


class _StartTimeout(BaseException):
    """Raised in the main thread by _deadline's alarm (a BaseException: Ray catches Exception)."""


@contextlib.contextmanager
def _deadline(timeout_s: float) -> Iterator[None]:
    """_StartTimeout in the main thread after `timeout_s` (SIGALRM). ray.init cannot run in a
    helper thread instead: the processes it starts die with the thread that started them
    (PR_SET_PDEATHSIG). Off the main thread (a server's worker thread) there is no deadline."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise _StartTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
