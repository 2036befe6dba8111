"""GPU probes: the micro-benchmark suite that calibrates the cost model for the GPU it runs on.

`run_suite` times, on one device through PyTorch (the optional extra `servesweep[probe]`; torch is
imported inside the functions only):

- GEMM throughput by dtype (bf16; fp8 where the GPU has it) for M = 1 .. 8192 tokens against
  the N x K of a model's linear layers;
- HBM bandwidth: a large device-to-device copy and a read-only reduction;
- decode attention (SDPA, one query per sequence) against batch and context, KV cache in HBM,
  and a causal prefill attention forward (FLOP/s, the `attention_fraction` of the data file);
- all-reduce bus bandwidth against message size when the run has more than one GPU
  (`gpus` > 1: one process per GPU, NCCL, `python -m search.calibration.probe_allreduce`; on
  the CPU, gloo between processes), fitted as t = alpha + bus bytes / bus bandwidth
  (objectives.probe_fit).

`build_record` turns the samples into a calibration record (efficiency.yaml layout, kind
"probe"): the device as the driver names it, mapped to the catalog id, driver / CUDA / torch
versions, the raw samples and the fitted fractions. A CPU run is labelled gpu "CPU", device
"cpu"; its fractions sit under `gpus: {CPU: ...}` and no `serving` section, so it never changes
a GPU's prediction. `run_probe` runs the suite as a Ray task asking for one GPU (and an
accelerator type when given; `gpus` GPUs of one node for the all-reduce) after checking the
cluster has them (`search.cluster.check_gpu_resource`). One real decoder layer is timed by
`search.calibration.layer_probe`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from objectives.accelerators import Accelerator, UnknownAcceleratorError, get_accelerator, load_accelerators
from objectives.models import ModelSpec, load_model
from objectives.probe_fit import efficiency_sections, fit_fractions
from search.cluster import ProbeUnavailableError, check_gpu_resource, has_gpu_type, ray_accelerator_type

CPU_ID = "CPU"
DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
GPU_M = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
CPU_M = (1, 4, 16, 64, 256)


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ProbeUnavailableError("probes need PyTorch: pip install 'servesweep[probe]'") from None
    return torch


def _device(device: str) -> Any:
    torch = _torch()
    if device == "cuda" and not torch.cuda.is_available():
        raise ProbeUnavailableError("--device cuda, but PyTorch sees no CUDA device here")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    return torch.device(device)


def _timer(dev: Any, fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` on `dev` (CUDA: synchronized around each call)."""
    torch = _torch()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


# ------------------------------------------------------------------ device identity


def catalog_id(device_name: str, catalog: Mapping[str, Accelerator] | None = None) -> str | None:
    """The catalog id of a GPU as its driver names it ("NVIDIA H100 80GB HBM3" -> H100-SXM), or
    None when no catalog entry matches."""
    catalog = catalog or load_accelerators()
    name = device_name
    for prefix in ("NVIDIA ", "AMD Instinct ", "AMD "):
        if name.upper().startswith(prefix.upper()):
            name = name[len(prefix) :]
    words = name.replace("-", " ").split()
    for n in range(len(words), 0, -1):  # longest prefix of the name that is an id or alias
        try:
            return get_accelerator("-".join(words[:n]), catalog).id
        except UnknownAcceleratorError:
            continue
    return None


def device_info(device: str) -> dict[str, Any]:
    """Device name, catalog id, driver / CUDA / torch versions."""
    torch = _torch()
    info: dict[str, Any] = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda}
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        info.update(
            device_name=name,
            gpu=catalog_id(name),
            capability=".".join(map(str, torch.cuda.get_device_capability(0))),
            gpus_visible=torch.cuda.device_count(),
            driver=_driver_version(),
        )
    else:
        info.update(device_name=platform.processor() or platform.machine(), gpu=CPU_ID, driver=None)
        info["threads"] = torch.get_num_threads()
    return info


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


# ------------------------------------------------------------------ kernels


def linear_shapes(model: ModelSpec) -> list[tuple[str, int, int]]:
    """(name, N, K) of a model's linear layers at TP 1 (gated MLP assumed)."""
    h = model.hidden_size
    q = model.n_heads * model.head_dim
    kv = 2 * model.n_kv_heads * model.head_dim
    shapes = [("qkv", q + kv, h), ("o", h, model.n_heads * model.v_head_dim)]
    inter = _mlp_inter(model)
    if inter:
        shapes += [("gate_up", 2 * inter, h), ("down", h, inter)]
    return shapes


def _mlp_inter(model: ModelSpec) -> int:
    if model.n_dense_layers and model.dense_mlp_params_per_layer:
        return max(1, model.dense_mlp_params_per_layer // (3 * model.hidden_size))
    if model.params_per_expert:
        return max(1, model.params_per_expert // (3 * model.hidden_size))
    return 0


def _fp8_ok(torch: Any, dev: Any) -> bool:
    return dev.type == "cuda" and torch.cuda.get_device_capability(0) >= (8, 9) and hasattr(torch, "_scaled_mm")


def gemm_samples(dev: Any, shapes: list[tuple[str, int, int]], ms: tuple[int, ...], repeats: int) -> list[dict]:
    """Achieved FLOP/s of x[M, K] @ W[K, N] per dtype and shape."""
    torch = _torch()
    out = []
    dtypes = ["bf16"] + (["fp8"] if _fp8_ok(torch, dev) else [])
    for dtype in dtypes:
        for name, n, k in shapes:
            w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
            if dtype == "fp8":
                w8 = w.to(torch.float8_e4m3fn)
                one = torch.ones((), device=dev, dtype=torch.float32)
            for m in ms:
                x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
                if dtype == "fp8":
                    x8 = x.to(torch.float8_e4m3fn)
                    mp = max(16, -(-m // 16) * 16)  # _scaled_mm wants M a multiple of 16
                    if mp != m:
                        x8 = torch.zeros(mp, k, device=dev, dtype=torch.float8_e4m3fn)
                    fn = lambda x8=x8, w8=w8, one=one: torch._scaled_mm(  # noqa: E731
                        x8, w8.t(), one, one, out_dtype=torch.bfloat16
                    )
                else:
                    fn = lambda x=x, w=w: x @ w.t()  # noqa: E731
                s = _timer(dev, fn, repeats)
                out.append(
                    {
                        "kind": "gemm",
                        "dtype": dtype,
                        "layer": name,
                        "m": m,
                        "n": n,
                        "k": k,
                        "seconds": s,
                        "flops_per_s": 2.0 * m * n * k / s,
                    }
                )
    return out


def hbm_samples(dev: Any, nbytes: int, repeats: int) -> list[dict]:
    """A device-to-device copy (read + write) and a read-only reduction of `nbytes`."""
    torch = _torch()
    n = nbytes // 2
    src = torch.ones(n, device=dev, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    t_copy = _timer(dev, lambda: dst.copy_(src), repeats)
    t_sum = _timer(dev, lambda: src.sum(dtype=torch.float32), repeats)
    return [
        {"kind": "copy", "bytes": 2 * n * 2, "seconds": t_copy, "bytes_per_s": 2 * n * 2 / t_copy},
        {"kind": "reduce", "bytes": n * 2, "seconds": t_sum, "bytes_per_s": n * 2 / t_sum},
    ]


def attention_samples(
    dev: Any,
    model: ModelSpec,
    batches: tuple[int, ...],
    contexts: tuple[int, ...],
    prefill_tokens: tuple[int, ...],
    repeats: int,
) -> list[dict]:
    """Decode attention (one query per sequence over a bf16 KV cache) and causal prefill."""
    torch = _torch()
    f = torch.nn.functional
    hq, hkv, d = model.n_heads, model.n_kv_heads, model.head_dim
    out = []
    for b in batches:
        for ctx in contexts:
            q = torch.randn(b, hq, 1, d, device=dev, dtype=torch.bfloat16)
            k = torch.randn(b, hkv, ctx, d, device=dev, dtype=torch.bfloat16)
            v = torch.randn_like(k)
            s = _timer(dev, lambda q=q, k=k, v=v: f.scaled_dot_product_attention(q, k, v, enable_gqa=True), repeats)
            kv_bytes = 2 * b * hkv * ctx * d * 2
            out.append(
                {
                    "kind": "decode_attention",
                    "batch": b,
                    "context": ctx,
                    "seconds": s,
                    "bytes_per_s": kv_bytes / s,
                    "flops_per_s": 4.0 * b * hq * ctx * d / s,
                }
            )
    for t in prefill_tokens:
        q = torch.randn(1, hq, t, d, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, hkv, t, d, device=dev, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        fn = lambda q=q, k=k, v=v: f.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # noqa: E731
        s = _timer(dev, fn, repeats)
        flops = 4.0 * hq * d * t * (t + 1) / 2.0  # causal: QK^T and PV over half the pairs
        out.append({"kind": "prefill_attention", "tokens": t, "seconds": s, "flops_per_s": flops / s})
    return out


GPU_ALLREDUCE_BYTES = tuple(2**e for e in range(12, 31, 2))  # 4 KiB .. 1 GiB
CPU_ALLREDUCE_BYTES = tuple(2**e for e in range(12, 23, 2))  # 4 KiB .. 4 MiB
ALLREDUCE_TIMEOUT_S = 300.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def allreduce_samples(device: str, gpus: int, sizes: tuple[int, ...], repeats: int) -> list[dict]:
    """All-reduce of each message size across `gpus` processes (`python -m
    search.probe_allreduce`, one per GPU with NCCL, or gloo between CPU processes): samples
    {"kind": "allreduce", "bytes", "seconds", "gpus", "bus_bytes_per_s"} with the slowest
    rank's median time; bus bytes of a ring all-reduce are 2 (n - 1) / n of the message."""
    if gpus < 2:
        return []
    if device == "cuda":
        have = _torch().cuda.device_count()
        if have < gpus:
            raise ProbeUnavailableError(f"the all-reduce probe asks for {gpus} GPUs, but PyTorch sees {have} here")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # CPU ranks share this machine's cores
    args = [",".join(map(str, sizes)), str(repeats), str(port), str(gpus), device]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "search.calibration.probe_allreduce", str(rank), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in range(gpus)
    ]
    deadline = time.monotonic() + ALLREDUCE_TIMEOUT_S
    outputs: list[tuple[int, str, str]] = []
    try:
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise ProbeUnavailableError(
                    f"the all-reduce probe on {gpus} {device} ranks did not finish in {ALLREDUCE_TIMEOUT_S:.0f} s"
                ) from None
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, (code, _out, err) in enumerate(outputs):
        if code != 0:
            last = (err.strip().splitlines() or ["no message"])[-1]
            raise ProbeUnavailableError(f"the all-reduce probe failed on rank {rank} (exit {code}): {last}")
    bus = 2.0 * (gpus - 1) / gpus
    return [
        {"kind": "allreduce", "bytes": b, "seconds": t, "gpus": gpus, "bus_bytes_per_s": b * bus / t}
        for b, t in json.loads(outputs[0][1])
    ]


def run_suite(
    device: str = "cuda", model: str = DEFAULT_MODEL, repeats: int | None = None, gpus: int = 1
) -> dict[str, Any]:
    """Run every probe on `device`; returns {"info", "samples"}. The CPU suite uses small
    sizes (it exists to exercise the code path, not to measure a GPU). With `gpus` > 1 the
    all-reduce probe runs across that many GPUs (CPU: that many gloo processes)."""
    torch = _torch()
    dev = _device(device)
    spec = load_model(model)
    info = device_info(device)
    info["model_shapes"] = spec.id
    gpu = dev.type == "cuda"
    reps = repeats or (10 if gpu else 3)
    with torch.inference_mode():
        shapes = linear_shapes(spec)
        if not gpu:  # a quarter of each dimension keeps the CPU run to seconds
            shapes = [(n, max(64, a // 4), max(64, b // 4)) for n, a, b in shapes]
        samples = gemm_samples(dev, shapes, GPU_M if gpu else CPU_M, reps)
        samples += hbm_samples(dev, (2 << 30) if gpu else (32 << 20), reps)
        samples += attention_samples(
            dev,
            spec,
            batches=(1, 8, 64) if gpu else (1, 4),
            contexts=(1024, 4096, 16384) if gpu else (128, 512),
            prefill_tokens=(1024, 4096) if gpu else (128, 256),
            repeats=reps,
        )
    samples += allreduce_samples(device, gpus, GPU_ALLREDUCE_BYTES if gpu else CPU_ALLREDUCE_BYTES, reps)
    info["allreduce_gpus"] = gpus if gpus > 1 else None
    return {"info": info, "samples": samples}


# ------------------------------------------------------------------ record


def _peaks(info: Mapping[str, Any], samples: list[dict]) -> dict[str, Any]:
    """Datasheet peaks of the catalog GPU; for the CPU (no datasheet) the best measured rates."""
    gpu_id = info.get("gpu")
    if info.get("device") == "cuda" and gpu_id:
        acc = load_accelerators()[gpu_id]
        return {
            "hbm_bw_bytes_per_s": acc.hbm_bw_bytes_per_s,
            "flops": dict(acc.peak_flops),
            "link_bw_bytes_per_s": acc.scaleup_bw_bytes_per_s,
            "source": f"catalog {gpu_id}",
        }
    bw = [s["bytes_per_s"] for s in samples if s["kind"] in ("copy", "reduce", "decode_attention")]
    bus = [s["bus_bytes_per_s"] for s in samples if s["kind"] == "allreduce"]
    flops: dict[str, float] = {}
    for s in samples:
        if s["kind"] == "gemm":
            flops[s["dtype"]] = max(flops.get(s["dtype"], 0.0), s["flops_per_s"])
    return {
        "hbm_bw_bytes_per_s": max(bw) if bw else None,
        "flops": flops,
        "link_bw_bytes_per_s": max(bus) if bus else None,
        "source": "best measured rates (the CPU has no datasheet peak here)",
    }


def build_record(result: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """A calibration record (kind "probe") from `run_suite`'s result."""
    info = dict(result["info"])
    samples = list(result["samples"])
    is_gpu = info.get("device") == "cuda"
    if is_gpu and not info.get("gpu"):
        raise ValueError(
            f"GPU {info.get('device_name')!r} is not in the accelerator catalog; add it (--gpu-file) before probing"
        )
    gpu_id = info["gpu"] if is_gpu else CPU_ID
    today = dt.date.today().isoformat()
    name = name or f"probe-{gpu_id.lower()}-{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}"
    peaks = _peaks(info, samples)
    fitted = fit_fractions(samples, peaks)
    source = f"probe {name} on {info.get('device_name')} ({today})"
    sections = efficiency_sections(fitted, gpu_id, source, is_gpu=is_gpu)
    return {
        "name": name,
        "kind": "probe",
        "gpu": gpu_id,
        "device": "cuda" if is_gpu else "cpu",
        "device_name": info.get("device_name"),
        "versions": {"driver": info.get("driver"), "cuda": info.get("cuda"), "torch": info.get("torch")},
        "info": info,
        **sections,
        "fit": {"date": today, "peaks": peaks, "fitted": fitted},
        "samples": samples,
    }


def probe_coverage(accelerators: list[str], device: str) -> dict[str, str]:
    """{catalog GPU id: why its candidates stay analytic} for a probe sweep on the connected
    cluster (empty when every accelerator can be probed, or when probing on the CPU)."""
    if device == "cpu":
        return {}
    import ray

    out = {}
    for gpu_id in accelerators:
        kind = ray_accelerator_type(gpu_id)
        if not ray.is_initialized():
            out[gpu_id] = "no Ray cluster is connected"
        elif not has_gpu_type(kind):
            out[gpu_id] = f"the Ray cluster has no {kind} GPU"
    return out


def run_probe(
    device: str = "cuda",
    *,
    accelerator_type: str | None = None,
    model: str = DEFAULT_MODEL,
    repeats: int | None = None,
    ray_address: str | None = None,
    gpus: int = 1,
) -> dict[str, Any]:
    """Run the suite as a Ray task (num_gpus=`gpus` for cuda, on one node) and return its raw
    result; with `gpus` > 1 it includes the all-reduce probe."""
    import ray

    from search.cluster import ensure_ray

    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, got {gpus}")
    ensure_ray(ray_address, workers=None)
    if device == "cuda":
        check_gpu_resource(accelerator_type, gpus)
        opts: dict[str, Any] = {"num_gpus": gpus, "num_cpus": 1}
        if accelerator_type:
            opts["accelerator_type"] = accelerator_type
    else:
        opts = {"num_gpus": 0, "num_cpus": 1}
    task = ray.remote(max_retries=0)(run_suite).options(**opts)
    try:
        return ray.get(task.remote(device, model, repeats, gpus))
    except ray.exceptions.RayTaskError as exc:
        # The task's own error (no torch on the worker, no CUDA there, ...) is the message; the
        # remote traceback Ray wraps around it is noise to a user.
        cause = exc.cause if isinstance(exc.cause, ProbeUnavailableError | ValueError) else None
        if cause is None:
            raise
        raise type(cause)(*cause.args) from None
