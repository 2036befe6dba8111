"""Launch commands for a configuration: vLLM, SGLang and TensorRT-LLM (`trtllm-serve`).

One command starts one replica (TP x PP GPUs); a recommendation with R replicas runs R of them
behind a load balancer. The flags are the runtimes' own:

* vLLM: `vllm serve MODEL --tensor-parallel-size --pipeline-parallel-size
  [--enable-expert-parallel] [--quantization fp8] [--kv-cache-dtype fp8] --max-num-seqs
  --max-num-batched-tokens`. `--quantization fp8` quantizes a bf16 checkpoint on load (on GPUs
  without fp8 tensor cores vLLM runs it weight-only); other schemes need a pre-quantized
  checkpoint whose config names the method. With expert parallelism vLLM's EP size is TP x DP.
* SGLang: `python -m sglang.launch_server --model-path MODEL --tp-size [--pp-size] [--ep-size]
  [--quantization fp8] [--kv-cache-dtype fp8_e4m3] --max-running-requests --chunked-prefill-size`.
* TensorRT-LLM: `trtllm-serve MODEL --tp_size --pp_size [--ep_size] --max_batch_size
  --max_num_tokens`; the quantization comes from the checkpoint (e.g. one made with NVIDIA
  ModelOpt), and an fp8 KV cache is set with `--extra_llm_api_options` pointing at a YAML file
  holding `kv_cache_config: {dtype: fp8}`. TensorRT-LLM runs on NVIDIA GPUs only.

Where a runtime needs a pre-quantized checkpoint, the model argument is `$CHECKPOINT` and a note
says what it must hold.

A configuration that names its `engine` (a sweep with `space.engine`, or `engine=`) was modelled
for that engine's runtime profile (objectives/data/engines.yaml): its line comes first, marked
`chosen`, and also sets the memory fraction the model assumed (`--gpu-memory-utilization`,
`--mem-fraction-static`, `--kv_cache_free_gpu_memory_fraction`) and, for TensorRT-LLM, chunked
prefill (off by default there); the other runtimes' lines follow, marked not chosen.
"""

from __future__ import annotations

import shlex
from typing import Any

__all__ = ["CHECKPOINT", "RUNTIMES", "launch_commands"]

RUNTIMES = ("vllm", "sglang", "trtllm")
CHECKPOINT = "$CHECKPOINT"

# What a pre-quantized checkpoint of each scheme is.
_CHECKPOINT_KIND = {
    "fp8": "an fp8 checkpoint (e.g. made with NVIDIA ModelOpt)",
    "int8": "an int8 W8A8 checkpoint (SmoothQuant / compressed-tensors)",
    "int8-wo": "an int8 weight-only checkpoint",
    "int4": "an int4 AWQ or GPTQ checkpoint",
    "fp4": "an NVFP4 checkpoint (e.g. made with NVIDIA ModelOpt)",
    "mxfp4": "an MXFP4 checkpoint",
}
_NATIVE = ("bf16", "fp16")


def _i(v: Any) -> str:
    return str(int(v))


def _join(argv: list[str]) -> str:
    """argv as one shell command, one flag (and its value) per continued line."""
    parts = [a if a == CHECKPOINT else shlex.quote(a) for a in argv]
    lines: list[list[str]] = [[]]
    for p in parts:
        if p.startswith("--") and lines[-1]:
            lines.append([])
        lines[-1].append(p)
    return " \\\n  ".join(" ".join(line) for line in lines)


def _checkpoint_note(model: str, weights: str, runtime: str) -> str:
    kind = _CHECKPOINT_KIND.get(weights, f"a pre-quantized {weights} checkpoint")
    return f"set CHECKPOINT to {kind} of {model}; {runtime} reads the quantization from its config"


def _vllm(model: str, c: dict[str, Any]) -> tuple[list[str], list[str]]:
    w = c["weights"]
    target = model if w in (*_NATIVE, "fp8") else CHECKPOINT
    argv = ["vllm", "serve", target, "--tensor-parallel-size", _i(c["tp"]), "--pipeline-parallel-size", _i(c["pp"])]
    notes = []
    if int(c["ep"]) > 1:
        argv.append("--enable-expert-parallel")
        notes.append(f"vLLM sets the expert-parallel size to TP x DP (= {_i(c['tp'])} here), not to EP={_i(c['ep'])}")
    if w in _NATIVE:
        argv += ["--dtype", "bfloat16" if w == "bf16" else "float16"]
    elif w == "fp8":
        argv += ["--quantization", "fp8"]
        notes.append("--quantization fp8 quantizes the bf16 checkpoint on load")
    else:
        notes.append(_checkpoint_note(model, w, "vLLM"))
    if c["kv_cache"] in ("fp8", "int8"):
        argv += ["--kv-cache-dtype", "fp8"]
    argv += ["--max-num-seqs", _i(c["max_batch"]), "--max-num-batched-tokens", _i(c["chunked_prefill"])]
    return argv, notes


def _sglang(model: str, c: dict[str, Any]) -> tuple[list[str], list[str]]:
    w = c["weights"]
    target = model if w in (*_NATIVE, "fp8") else CHECKPOINT
    argv = ["python", "-m", "sglang.launch_server", "--model-path", target, "--tp-size", _i(c["tp"])]
    notes = []
    if int(c["pp"]) > 1:
        argv += ["--pp-size", _i(c["pp"])]
    if int(c["ep"]) > 1:
        argv += ["--ep-size", _i(c["ep"])]
    if w in _NATIVE:
        argv += ["--dtype", "bfloat16" if w == "bf16" else "float16"]
    elif w == "fp8":
        argv += ["--quantization", "fp8"]
    else:
        notes.append(_checkpoint_note(model, w, "SGLang"))
    if c["kv_cache"] in ("fp8", "int8"):
        argv += ["--kv-cache-dtype", "fp8_e4m3"]
    argv += ["--max-running-requests", _i(c["max_batch"]), "--chunked-prefill-size", _i(c["chunked_prefill"])]
    return argv, notes


def _trtllm(model: str, c: dict[str, Any]) -> tuple[list[str], list[str], str | None]:
    w = c["weights"]
    target = model if w in _NATIVE else CHECKPOINT
    argv = ["trtllm-serve", target, "--tp_size", _i(c["tp"]), "--pp_size", _i(c["pp"])]
    if int(c["ep"]) > 1:
        argv += ["--ep_size", _i(c["ep"])]
    argv += ["--max_batch_size", _i(c["max_batch"]), "--max_num_tokens", _i(c["chunked_prefill"])]
    notes = []
    if w in _NATIVE:
        notes.append("quantization comes from the checkpoint: this one is unquantized")
    else:
        notes.append(
            "quantization comes from the checkpoint, not from a flag: " + _checkpoint_note(model, w, "TensorRT-LLM")
        )
    extra = None
    if c["kv_cache"] in ("fp8", "int8"):
        argv += ["--extra_llm_api_options", "extra_llm_api_options.yaml"]
        extra = "kv_cache_config:\n  dtype: fp8\n"
        notes.append("extra_llm_api_options.yaml sets the fp8 KV cache (kv_cache_config: dtype: fp8)")
    return argv, notes, extra


def launch_commands(
    model: str,
    config: dict[str, Any],
    *,
    vendor: str | None = None,
    replicas: float | None = None,
    compute_dtype: str | None = None,
    engine: str | None = None,
    hbm_bytes: float | None = None,
    gpu_id: str = "",
) -> dict[str, dict[str, Any]]:
    """{runtime: {argv, command, notes, available[, extra_file]}} for one configuration
    (`tp`, `pp`, `ep`, `weights`, `kv_cache`, `max_batch`, `chunked_prefill`) of `model` (a
    Hugging Face id or path). `vendor` marks runtimes that cannot run on the GPU (TensorRT-LLM
    off NVIDIA) as unavailable; `compute_dtype` (the dtype the GEMMs really run in) adds a note
    when a W8A8 / W4A4 scheme falls back to weight-only on that GPU."""
    c = {"pp": 1, "ep": 1, "chunked_prefill": 8192, **config}
    amd = bool(vendor) and vendor.lower() == "amd"  # type: ignore[union-attr]
    nvidia = not vendor or vendor.lower() == "nvidia"
    common = []
    gpus = int(c["tp"]) * int(c["pp"])
    if replicas and replicas > 1:
        common.append(f"one replica of {gpus} GPU{'s' if gpus > 1 else ''}; run {int(replicas)} behind a load balancer")
    if compute_dtype and c["weights"] not in _NATIVE and compute_dtype == "bf16" and c["weights"] in ("fp8", "int8"):
        common.append(
            f"no {c['weights']} tensor cores on this GPU: the weights stay {c['weights']}, the math runs in bf16"
        )
    out: dict[str, dict[str, Any]] = {}
    argv, notes = _vllm(model, c)
    notes += ["use vLLM's ROCm build"] if amd else []
    out["vllm"] = {"argv": argv, "command": _join(argv), "notes": common + notes, "available": True}
    argv, notes = _sglang(model, c)
    notes += ["use SGLang's ROCm build"] if amd else []
    out["sglang"] = {"argv": argv, "command": _join(argv), "notes": common + notes, "available": True}
    argv, notes, extra = _trtllm(model, c)
    if not nvidia:
        notes.insert(0, f"TensorRT-LLM runs on NVIDIA GPUs only: not available on this {vendor} GPU")
    entry: dict[str, Any] = {"argv": argv, "command": _join(argv), "notes": common + notes, "available": nvidia}
    if extra:
        entry["extra_file"] = {"name": "extra_llm_api_options.yaml", "content": extra}
    out["trtllm"] = entry
    engine = engine or c.get("engine")
    if engine:
        out = _choose(out, str(engine), c, hbm_bytes, gpu_id)
    return out


def _choose(
    out: dict[str, dict[str, Any]], engine: str, c: dict[str, Any], hbm_bytes: float | None, gpu_id: str
) -> dict[str, dict[str, Any]]:
    """`out` with the modelled engine's line first (its memory fraction and chunked-prefill
    setting from the engine profile) and the others marked as not chosen."""
    from objectives.engines import get_profile

    prof = get_profile(engine)
    hbm = float(hbm_bytes) if hbm_bytes else 80e9
    settings = prof.launch_settings(gpu_id, hbm, int(c["tp"]), int(c["pp"]))
    chosen = dict(out[prof.id])
    argv = list(chosen["argv"])
    flag, value = settings["memory_flag"], f"{settings['memory_fraction']:.3g}"
    argv += [flag, value]
    notes = list(chosen["notes"])
    notes.append(f"{flag} {value}: the memory fraction the estimate assumed ({prof.name} profile)")
    if settings["enable_chunked_prefill"]:
        extra = chosen.get("extra_file")
        content = (extra["content"] if extra else "") + "enable_chunked_prefill: true\n"
        if not extra:
            argv += ["--extra_llm_api_options", "extra_llm_api_options.yaml"]
        chosen["extra_file"] = {"name": "extra_llm_api_options.yaml", "content": content}
        notes.append("extra_llm_api_options.yaml turns on chunked prefill (prompts split at --max_num_tokens)")
    chosen.update(argv=argv, command=_join(argv), notes=notes, chosen=True)
    result = {prof.id: chosen}
    for runtime, entry in out.items():
        if runtime != prof.id:
            other = dict(entry, chosen=False)
            other["notes"] = [
                *entry["notes"],
                f"not the engine modelled: the numbers are {prof.name}'s ({runtime}'s memory fraction and "
                "defaults differ)",
            ]
            result[runtime] = other
    return result
