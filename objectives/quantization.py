"""Quantization schemes: bytes per weight, compute dtype, KV-cache bytes.

A scheme says how weights are stored and which tensor cores do the math. Where a GPU lacks
the tensor cores a scheme asks for, servesweep models what serving runtimes actually do
rather than rejecting the configuration: the weights stay compressed in HBM (so bytes read
are the scheme's) and the GEMMs run in bf16 after dequantization ("weight-only" fallback —
vLLM's Marlin kernels for fp8 / fp4 / int4 on Ampere and Ada, for instance). `resolve_compute_dtype`
is the one place that decides this, and `fallback_note` says it in words.

Bits per weight include scale overheads:
- fp8 (W8A8): per-tensor / per-channel scales, negligible -> 8.0 bits.
- int8 W8A8 (SmoothQuant style) and int8 weight-only: per-channel scales -> 8.0 bits.
- int4 weight-only (AWQ / GPTQ, group size 128, fp16 scale + zero point per group): 4 + 32/128 = 4.25 bits.
- nvfp4: 4-bit values + one fp8 scale per 16 values -> 4.5 bits (NVIDIA NVFP4 format description).
- mxfp4: 4-bit values + one 8-bit shared exponent per 32 values -> 4.25 bits (OCP MX spec v1.0).
Embedding tables and the LM head stay in bf16 in quantized checkpoints (ModelOpt, AWQ), so
`EMBEDDING_BYTES_PER_PARAM` is 2 whatever the scheme.
"""

from __future__ import annotations

from dataclasses import dataclass

EMBEDDING_BYTES_PER_PARAM = 2.0


@dataclass(frozen=True)
class QuantScheme:
    """How one weight-quantization scheme stores and computes."""

    name: str
    bits_per_weight: float
    compute_dtype: str  # tensor-core dtype of the GEMMs when the hardware has it
    activation_bytes: float  # bytes per activation element moved between kernels
    weight_only: bool  # True: dequantize to bf16 and compute in bf16
    description: str

    @property
    def bytes_per_weight(self) -> float:
        return self.bits_per_weight / 8.0


SCHEMES: dict[str, QuantScheme] = {
    s.name: s
    for s in (
        QuantScheme("bf16", 16.0, "bf16", 2.0, False, "bf16 weights and compute"),
        QuantScheme("fp16", 16.0, "bf16", 2.0, False, "fp16 weights and compute (same rate as bf16)"),
        QuantScheme("fp8", 8.0, "fp8", 1.0, False, "fp8 W8A8 (e4m3), fp8 tensor cores"),
        QuantScheme("int8", 8.0, "int8", 1.0, False, "int8 W8A8 (SmoothQuant style)"),
        QuantScheme("int8-wo", 8.0, "bf16", 2.0, True, "int8 weight-only, bf16 compute"),
        QuantScheme("int4", 4.25, "bf16", 2.0, True, "int4 weight-only (AWQ/GPTQ, group 128), bf16 compute"),
        QuantScheme("fp4", 4.5, "fp4", 0.5625, False, "NVFP4 W4A4 (fp8 scale per 16 values)"),
        QuantScheme("mxfp4", 4.25, "fp4", 0.53125, False, "MXFP4 W4A4 (8-bit exponent per 32 values)"),
    )
}

ALIASES = {
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "nvfp4": "fp4",
    "w8a8": "int8",
    "awq": "int4",
    "gptq": "int4",
    "int4-wo": "int4",
    "fp8-e4m3": "fp8",
}

KV_CACHE_BYTES: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0}


def get_scheme(name: str) -> QuantScheme:
    """Scheme by name or alias (case-insensitive); ValueError lists the known names."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in SCHEMES:
        known = ", ".join(sorted(SCHEMES))
        raise ValueError(f"unknown weight quantization {name!r}; known: {known}")
    return SCHEMES[key]


def kv_cache_bytes_per_element(dtype: str) -> float:
    """Bytes per KV-cache element for a KV dtype (bf16, fp16, fp8, int8)."""
    key = dtype.strip().lower()
    key = ALIASES.get(key, key)
    if key not in KV_CACHE_BYTES:
        raise ValueError(f"unknown KV-cache dtype {dtype!r}; known: {', '.join(KV_CACHE_BYTES)}")
    return KV_CACHE_BYTES[key]


def resolve_compute_dtype(scheme: QuantScheme, supported_dtypes: set[str] | frozenset[str]) -> str:
    """The tensor-core dtype the GEMMs really run in on a GPU supporting `supported_dtypes`.

    A W8A8 / W4A4 scheme without matching tensor cores falls back to weight-only with bf16
    compute (weights stay compressed in memory); fp16/bf16 need bf16 tensor cores.
    """
    if scheme.weight_only:
        return "bf16"
    if scheme.compute_dtype in supported_dtypes:
        return scheme.compute_dtype
    return "bf16"


def activation_bytes(scheme: QuantScheme, compute_dtype: str) -> float:
    """Bytes per activation element given the dtype actually used for compute."""
    return scheme.activation_bytes if compute_dtype == scheme.compute_dtype else 2.0


def fallback_note(scheme: QuantScheme, compute_dtype: str) -> str | None:
    """Words for a fallback, or None when the scheme runs natively."""
    if scheme.weight_only or compute_dtype == scheme.compute_dtype:
        return None
    return (
        f"{scheme.name}: no {scheme.compute_dtype} tensor cores on this GPU; modelled as "
        f"weight-only {scheme.name} with {compute_dtype} compute (what vLLM/TensorRT-LLM do)"
    )
