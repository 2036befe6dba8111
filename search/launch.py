"""Launch commands for a configuration: vLLM, SGLang and TensorRT-LLM (`trtllm-serve`).

One command starts one replica (TP x PP GPUs); a recommendation with R replicas runs R of them
behind a load balancer. The flags are the runtimes' own:

* vLLM: `vllm serve MODEL --tensor-parallel-size --pipeline-parallel-size
  [--enable-expert-parallel] [--quantization fp8] [--kv-cache-dtype fp8] --max-num-seqs
  --max-num-batched-tokens`. `--quantization fp8` quantizes a bf16 checkpoint on load (on GPUs
  without fp8 tensor cores vLLM runs it weight-only); other schemes need a pre-quantized
  checkpoint whose config names the method. With expert parallelism vLLM's EP size is TP x DP.
* SGLang: `python -m sglang.launch_server --model-path MODEL --tp-size --pp-size [--ep-size]
  [--quantization fp8] [--kv-cache-dtype fp8_e4m3] --max-running-requests --chunked-prefill-size`.
* TensorRT-LLM: `trtllm-serve MODEL --tp_size --pp_size [--ep_size] --max_batch_size
  --max_num_tokens`; the quantization comes from the checkpoint (e.g. one made with NVIDIA
  ModelOpt), and an fp8 KV cache is set with `--extra_llm_api_options` pointing at a YAML file
  holding `kv_cache_config: {dtype: fp8}`. TensorRT-LLM runs on NVIDIA GPUs only.
"""

from __future__ import annotations

import shlex
from typing import Any

__all__ = ["RUNTIMES", "launch_commands"]

RUNTIMES = ("vllm", "sglang", "trtllm")

# Schemes a runtime can quantize a bf16 checkpoint to on load; any other needs a checkpoint.
_CHECKPOINT_KIND = {
    "int4": "an int4 AWQ or GPTQ checkpoint",
    "int8": "an int8 W8A8 (SmoothQuant / compressed-tensors) checkpoint",
    "int8-wo": "an int8 weight-only checkpoint",
    "fp4": "an NVFP4 checkpoint (e.g. made with NVIDIA ModelOpt)",
    "mxfp4": "an MXFP4 checkpoint",
    "fp8": "an fp8 checkpoint (e.g. made with NVIDIA ModelOpt)",
}


def _join(argv: list[str]) -> str:
    """argv as one shell line, continued over lines after the first flag pairs."""
    parts = [shlex.quote(a) for a in argv]
    lines, line = [], []
    for p in parts:
        if p.startswith("--") and line:
            lines.append(" ".join(line))
            line = []
        line.append(p)
    lines.append(" ".join(line))
    return " \\\n  ".join(lines)


def _common_notes(config: dict[str, Any], replicas: float | None) -> list[str]:
    notes = []
    if replicas and replicas > 1:
        notes.append(
            f"one replica of {int(config['tp']) * int(config['pp'])} GPUs; run {int(replicas)} behind a load balancer"
        )
    return notes


def _vllm(model: str, c: dict[str, Any]) -> tuple[list[str], list[str]]:
    argv = ["vllm", "serve", model, "--tensor-parallel-size", str(c["tp"]), "--pipeline-parallel-size", str(c["pp"])]
    notes = []
    if int(c.get("ep") or 1) > 1:
        argv.append("--enable-expert-parallel")
        notes.append(f"vLLM sets the expert-parallel size to TP x DP (= {c['tp']} here), not to EP={c['ep']}")
    w = c["weights"]
    if w == "fp8":
        argv += ["--quantization", "fp8"]
        notes.append("--quantization fp8 quantizes the bf16 checkpoint on load (weight-only on GPUs without fp8 cores)")
    elif w not in ("bf16", "fp16"):
        notes.append(
            f"{w}: serve {_CHECKPOINT_KIND.get(w, 'a pre-quantized checkpoint')} of the model; vLLM reads the method from its config"
        )
    else:
        argv += ["--dtype", "bfloat16" if w == "bf16" else "float16"]
    if c["kv_cache"] in ("fp8", "int8"):
        argv += ["--kv-cache-dtype", "fp8"]
    argv += ["--max-num-seqs", str(c["max_batch"]), "--max-num-batched-tokens", str(c["chunked_prefill"])]
    return argv, notes


def _sglang(model: str, c: dict[str, Any]) -> tuple[list[str], list[str]]:
    argv = ["python", "-m", "sglang.launch_server", "--model-path", model, "--tp-size", str(c["tp"])]
    notes = []
    if int(c.get("pp") or 1) > 1:
        argv += ["--pp-size", str(c["pp"])]
    if int(c.get("ep") or 1) > 1:
        argv += ["--ep-size", str(c["ep"])]
    w = c["weights"]
    if w == "fp8":
        argv += ["--quantization", "fp8"]
    elif w not in ("bf16", "fp16"):
        notes.append(
            f"{w}: serve {_CHECKPOINT_KIND.get(w, 'a pre-quantized checkpoint')} of the model; SGLang reads the method from its config"
        )
    else:
        argv += ["--dtype", "bfloat16" if w == "bf16" else "float16"]
    if c["kv_cache"] in ("fp8", "int8"):
        argv += ["--kv-cache-dtype", "fp8_e4m3"]
    argv += ["--max-running-requests", str(c["max_batch"]), "--chunked-prefill-size", str(c["chunked_prefill"])]
    return argv, notes


def _trtllm(model: str, c: dict[str, Any], vendor: str | None) -> tuple[list[str], list[str], str | None]:
    argv = ["trtllm-serve", model, "--tp_size", str(c["tp"]), "--pp_size", str(c["pp"])]
    if int(c.get("ep") or 1) > 1:
        argv += ["--ep_size", str(c["ep"])]
    argv += ["--max_batch_size", str(c["max_batch"]), "--max_num_tokens", str(c["chunked_prefill"])]
    notes = []
    w = c["weights"]
    if w not in ("bf16", "fp16"):
        notes.append(
            f"quantization comes from the checkpoint: point MODEL at {_CHECKPOINT_KIND.get(w, 'a pre-quantized checkpoint')}"
        )
    extra = None
    if c["kv_cache"] in ("fp8", "int8"):
        argv += ["--extra_llm_api_options", "extra_llm_api_options.yaml"]
        extra = "kv_cache_config:\n  dtype: fp8\n"
        notes.append("extra_llm_api_options.yaml sets the fp8 KV cache: kv_cache_config: {dtype: fp8}")
    if vendor and vendor.lower() != "nvidia":
        notes.insert(0, "TensorRT-LLM runs on NVIDIA GPUs only: not available for this accelerator")
    return argv, notes, extra


def launch_commands(
    model: str, config: dict[str, Any], *, vendor: str | None = None, replicas: float | None = None
) -> dict[str, dict[str, Any]]:
    """{runtime: {command, argv, notes[, extra_file]}} for one configuration (`accelerator`,
    `tp`, `pp`, `ep`, `weights`, `kv_cache`, `max_batch`, `chunked_prefill`) of `model`
    (a Hugging Face id or path). `vendor` marks runtimes that cannot run on the GPU."""
    c = {"pp": 1, "ep": 1, "chunked_prefill": 8192, **config}
    common = _common_notes(c, replicas)
    out: dict[str, dict[str, Any]] = {}
    argv, notes = _vllm(model, c)
    if vendor and vendor.lower() == "amd":
        notes.append("use vLLM's ROCm build")
    out["vllm"] = {"argv": argv, "command": _join(argv), "notes": common + notes, "available": True}
    argv, notes = _sglang(model, c)
    if vendor and vendor.lower() == "amd":
        notes.append("use SGLang's ROCm build")
    out["sglang"] = {"argv": argv, "command": _join(argv), "notes": common + notes, "available": True}
    argv, notes, extra = _trtllm(model, c, vendor)
    entry = {
        "argv": argv,
        "command": _join(argv),
        "notes": common + notes,
        "available": not (vendor and vendor.lower() != "nvidia"),
    }
    if extra:
        entry["extra_file"] = {"name": "extra_llm_api_options.yaml", "content": extra}
    out["trtllm"] = entry
    return out
