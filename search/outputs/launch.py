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

A disaggregated configuration (`disaggregated: true`) gets the two pools' servers and the router
of each runtime instead (`disaggregated_launch_commands`).

Frontier modes (objectives.modes). Attention data parallelism with expert parallelism
(`attention_dp` = N > 1 ranks of `tp` GPUs, EP over all tp x N GPUs): vLLM `--tensor-parallel-size
tp --data-parallel-size N --enable-expert-parallel` (its EP size is TP x DP); SGLang `--tp-size
tp*N --dp-size N --enable-dp-attention --ep-size tp*N` (SGLang's TP size counts every GPU, the
attention TP per rank is tp-size / dp-size); TensorRT-LLM `--tp_size tp*N --ep_size tp*N` with
`enable_attention_dp: true` in the extra options YAML. Speculative decoding / MTP with k draft
tokens: vLLM `--speculative-config '{"method": "deepseek_mtp", "num_speculative_tokens": k}'`
(`mtp` for other MTP heads); SGLang `--speculative-algorithm EAGLE --speculative-num-steps k
--speculative-eagle-topk 1 --speculative-num-draft-tokens k+1` (DeepSeek's NextN head runs as
EAGLE); TensorRT-LLM `speculative_config: {decoding_type: MTP, num_nextn_predict_layers: k}` in
the extra options YAML. A replica larger than one node notes the multi-node launch.

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

__all__ = ["CHECKPOINT", "RUNTIMES", "disaggregated_launch_commands", "launch_commands"]

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
    dp = int(c.get("attention_dp") or 1)
    if dp > 1:
        argv += ["--data-parallel-size", str(dp), "--enable-expert-parallel"]
        notes.append(
            f"attention data-parallel on {dp} ranks of TP {_i(c['tp'])}; experts expert-parallel over "
            f"TP x DP = {int(c['tp']) * dp} GPUs"
        )
    elif int(c["ep"]) > 1:
        argv.append("--enable-expert-parallel")
        notes.append(f"vLLM sets the expert-parallel size to TP x DP (= {_i(c['tp'])} here), not to EP={_i(c['ep'])}")
    k = int(c.get("mtp") or 0)
    if k > 0:
        method = "deepseek_mtp" if "deepseek" in model.lower() else "mtp"
        argv += ["--speculative-config", f'{{"method": "{method}", "num_speculative_tokens": {k}}}']
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
    dp = int(c.get("attention_dp") or 1)
    tp_size = int(c["tp"]) * dp  # SGLang's --tp-size counts every GPU of the stage
    argv = ["python", "-m", "sglang.launch_server", "--model-path", target, "--tp-size", str(tp_size)]
    notes = []
    if int(c["pp"]) > 1:
        argv += ["--pp-size", _i(c["pp"])]
    if dp > 1:
        argv += ["--dp-size", str(dp), "--enable-dp-attention", "--ep-size", str(tp_size)]
        notes.append(
            f"--tp-size {tp_size} with --dp-size {dp}: attention TP {_i(c['tp'])} per DP rank; "
            "add --moe-a2a-backend deepep for DeepEP's dispatch / combine kernels"
        )
    elif int(c["ep"]) > 1:
        argv += ["--ep-size", _i(c["ep"])]
    k = int(c.get("mtp") or 0)
    if k > 0:
        argv += [
            "--speculative-algorithm",
            "EAGLE",
            "--speculative-num-steps",
            str(k),
            "--speculative-eagle-topk",
            "1",
            "--speculative-num-draft-tokens",
            str(k + 1),
        ]
        notes.append("the model's MTP (NextN) head drafts as EAGLE; no separate draft checkpoint")
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
    dp = int(c.get("attention_dp") or 1)
    argv = ["trtllm-serve", target, "--tp_size", str(int(c["tp"]) * dp), "--pp_size", _i(c["pp"])]
    if dp > 1:
        argv += ["--ep_size", str(int(c["tp"]) * dp)]
    elif int(c["ep"]) > 1:
        argv += ["--ep_size", _i(c["ep"])]
    argv += ["--max_batch_size", _i(c["max_batch"]), "--max_num_tokens", _i(c["chunked_prefill"])]
    notes = []
    if w in _NATIVE:
        notes.append("quantization comes from the checkpoint: this one is unquantized")
    else:
        notes.append(
            "quantization comes from the checkpoint, not from a flag: " + _checkpoint_note(model, w, "TensorRT-LLM")
        )
    options = []
    if c["kv_cache"] in ("fp8", "int8"):
        options.append("kv_cache_config:\n  dtype: fp8\n")
        notes.append("extra_llm_api_options.yaml sets the fp8 KV cache (kv_cache_config: dtype: fp8)")
    if dp > 1:
        options.append("enable_attention_dp: true\n")
        notes.append(
            f"enable_attention_dp: attention data-parallel on {dp} ranks, experts over --ep_size {int(c['tp']) * dp}"
        )
    k = int(c.get("mtp") or 0)
    if k > 0:
        options.append(f"speculative_config:\n  decoding_type: MTP\n  num_nextn_predict_layers: {k}\n")
        notes.append(f"speculative_config: MTP with {k} draft token{'s' if k > 1 else ''} per step")
    extra = None
    if options:
        argv += ["--extra_llm_api_options", "extra_llm_api_options.yaml"]
        extra = "".join(options)
    return argv, notes, extra


def launch_commands(
    model: str,
    config: dict[str, Any],
    *,
    vendor: str | None = None,
    replicas: float | None = None,
    compute_dtype: str | None = None,
    pools: dict[str, Any] | None = None,
    gpus_per_node: int | None = None,
    engine: str | None = None,
    hbm_bytes: float | None = None,
    gpu_id: str = "",
) -> dict[str, dict[str, Any]]:
    """{runtime: {argv, command, notes, available[, extra_file]}} for one configuration
    (`tp`, `pp`, `ep`, `weights`, `kv_cache`, `max_batch`, `chunked_prefill`) of `model` (a
    Hugging Face id or path). `vendor` marks runtimes that cannot run on the GPU (TensorRT-LLM
    off NVIDIA) as unavailable; `compute_dtype` (the dtype the GEMMs really run in) adds a note
    when a W8A8 / W4A4 scheme falls back to weight-only on that GPU. `attention_dp` and `mtp` in
    the configuration add the frontier-mode flags (module docstring); `gpus_per_node` notes a
    replica that spans nodes."""
    if config.get("disaggregated"):  # two pools: disaggregated_launch_commands
        return disaggregated_launch_commands(model, config, vendor=vendor, pools=pools)
    c = {"pp": 1, "ep": 1, "chunked_prefill": 8192, **config}
    c["attention_dp"] = int(c.get("attention_dp") or 1)
    c["mtp"] = int(c.get("mtp") or 0)
    amd = bool(vendor) and vendor.lower() == "amd"  # type: ignore[union-attr]
    nvidia = not vendor or vendor.lower() == "nvidia"
    common = []
    gpus = int(c["tp"]) * int(c["attention_dp"]) * int(c["pp"])
    if gpus_per_node and gpus > gpus_per_node:
        nodes = -(-gpus // int(gpus_per_node))
        common.append(
            f"one replica spans {nodes} nodes of {int(gpus_per_node)} GPUs (wide EP over the scale-out network): "
            "launch it on every node (vLLM --data-parallel-size-local / --data-parallel-address, SGLang "
            "--nnodes / --node-rank / --dist-init-addr, TensorRT-LLM under mpirun or Slurm)"
        )
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


# ---------------------------------------------------------------- disaggregated prefill / decode


def _pool(config: dict[str, Any], role: str) -> dict[str, Any]:
    """The aggregated-style configuration of one pool of a disaggregated configuration."""
    c = dict(config)
    if role == "decode":
        c["tp"] = c.get("decode_tp", c["tp"])
        dp = int(c.get("attention_dp") or 1)
        if dp > 1:  # a DEP decode pool: EP over its own tp x attention_dp GPUs
            c["ep"] = int(c["tp"]) * dp
    return c


def disaggregated_launch_commands(
    model: str,
    config: dict[str, Any],
    *,
    vendor: str | None = None,
    pools: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Launch lines of a disaggregated configuration (`disaggregated`, `decode_accelerator`,
    `decode_tp` beside the usual fields; `pools`: prefill_replicas / decode_replicas):

    * SGLang PD disaggregation: prefill servers with `--disaggregation-mode prefill`, decode
      servers with `--disaggregation-mode decode` (`--disaggregation-transfer-backend mooncake`
      or nixl), and `python -m sglang_router.launch_router --pd-disaggregation --prefill URL
      --decode URL` in front;
    * vLLM disaggregated prefill: each server with `--kv-transfer-config` naming a KV connector
      (NixlConnector here) with `kv_role` kv_producer / kv_consumer, and a proxy that sends the
      prompt to a prefill server and the rest to a decode server;
    * TensorRT-LLM disaggregated serving: `trtllm-serve` context servers and generation servers
      (each with `cache_transceiver_config` in its extra options) and `trtllm-serve
      disaggregated -c disagg_config.yaml` listing them."""
    c = {"pp": 1, "ep": 1, "chunked_prefill": 8192, **config}
    p = pools or {}
    x, y = int(p.get("prefill_replicas") or 1), int(p.get("decode_replicas") or 1)
    pre, dec = _pool(c, "prefill"), _pool(c, "decode")
    ranks = int(c.get("attention_dp") or 1)
    head = (
        f"disaggregated: {x} prefill replica{'s' if x > 1 else ''} ({c['accelerator']}, "
        f"{int(pre['tp']) * ranks * int(c['pp'])} GPUs each) and {y} decode replica{'s' if y > 1 else ''} "
        f"({c.get('decode_accelerator', c['accelerator'])}, {int(dec['tp']) * ranks * int(c['pp'])} GPUs each); "
        "the KV cache of each prompt moves from prefill to decode"
    )
    nvidia = not vendor or vendor.lower() == "nvidia"
    out: dict[str, dict[str, Any]] = {}

    # SGLang
    sp, sp_notes = _sglang(model, pre)
    sd, sd_notes = _sglang(model, dec)
    sp += ["--disaggregation-mode", "prefill", "--disaggregation-transfer-backend", "mooncake", "--port", "30000"]
    sd += ["--disaggregation-mode", "decode", "--disaggregation-transfer-backend", "mooncake", "--port", "30001"]
    router = [
        "python",
        "-m",
        "sglang_router.launch_router",
        "--pd-disaggregation",
        "--prefill",
        "http://PREFILL_HOST:30000",
        "--decode",
        "http://DECODE_HOST:30001",
        "--port",
        "8000",
    ]
    out["sglang"] = {
        "argv": sp,
        "command": "# prefill server (one per prefill replica)\n"
        + _join(sp)
        + "\n# decode server (one per decode replica)\n"
        + _join(sd)
        + "\n# router (repeat --prefill / --decode for every server)\n"
        + _join(router),
        "roles": {"prefill": sp, "decode": sd, "router": router},
        "notes": [head, *dict.fromkeys(sp_notes + sd_notes)],
        "available": True,
    }

    # vLLM
    vp, vp_notes = _vllm(model, pre)
    vd, vd_notes = _vllm(model, dec)
    vp += ["--port", "8100", "--kv-transfer-config", '{"kv_connector":"NixlConnector","kv_role":"kv_producer"}']
    vd += ["--port", "8200", "--kv-transfer-config", '{"kv_connector":"NixlConnector","kv_role":"kv_consumer"}']
    out["vllm"] = {
        "argv": vp,
        "command": "# prefill server (kv_producer)\n"
        + _join(vp)
        + "\n# decode server (kv_consumer)\n"
        + _join(vd)
        + "\n# then a proxy that sends each request to a prefill server (max_tokens 1) and on to a decode server",
        "roles": {"prefill": vp, "decode": vd},
        "notes": [
            head,
            "vLLM's disaggregated prefill runs through a KV connector (NixlConnector; LMCache and Mooncake "
            "connectors also exist) and needs the proxy in front (vLLM's disaggregated-prefill examples ship one)",
            *dict.fromkeys(vp_notes + vd_notes),
        ],
        "available": True,
    }

    # TensorRT-LLM
    tp_argv, tp_notes, _ = _trtllm(model, pre)
    td_argv, td_notes, _ = _trtllm(model, dec)
    for argv in (tp_argv, td_argv):  # one extra-options file per role (it holds the KV dtype too)
        if "--extra_llm_api_options" in argv:
            k = argv.index("--extra_llm_api_options")
            del argv[k : k + 2]
    tp_notes = [n for n in tp_notes if not n.startswith("extra_llm_api_options.yaml")]
    td_notes = [n for n in td_notes if not n.startswith("extra_llm_api_options.yaml")]
    tp_argv += ["--port", "8001", "--extra_llm_api_options", "ctx_extra.yaml"]
    td_argv += ["--port", "8002", "--extra_llm_api_options", "gen_extra.yaml"]
    kv = "  dtype: fp8\n" if c["kv_cache"] in ("fp8", "int8") else ""
    extra = "cache_transceiver_config:\n  backend: DEFAULT\n" + (f"kv_cache_config:\n{kv}" if kv else "")
    disagg_cfg = (
        "hostname: localhost\nport: 8000\nbackend: pytorch\n"
        f"context_servers:\n  num_instances: {x}\n  urls:\n    - localhost:8001\n"
        f"generation_servers:\n  num_instances: {y}\n  urls:\n    - localhost:8002\n"
    )
    serve = ["trtllm-serve", "disaggregated", "-c", "disagg_config.yaml"]
    notes = [head]
    if not nvidia:
        notes.insert(0, f"TensorRT-LLM runs on NVIDIA GPUs only: not available on this {vendor} GPU")
    out["trtllm"] = {
        "argv": tp_argv,
        "command": "# context (prefill) server\n"
        + _join(tp_argv)
        + "\n# generation (decode) server\n"
        + _join(td_argv)
        + "\n# the disaggregated front end\n"
        + _join(serve),
        "roles": {"prefill": tp_argv, "decode": td_argv, "router": serve},
        "notes": notes + list(dict.fromkeys(tp_notes + td_notes)),
        "available": nvidia,
        "extra_file": {"name": "ctx_extra.yaml / gen_extra.yaml", "content": extra},
        "disagg_config": {"name": "disagg_config.yaml", "content": disagg_cfg},
    }
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
