"""The physics of LLM serving: catalogs and a cost model vectorized over configurations.

Pure functions over numpy arrays (struct of arrays, `ConfigBatch`); units are in the names.
Nothing here imports Ray, Optuna or a database.
"""

from objectives.accelerators import Accelerator, UnknownAcceleratorError, get_accelerator, load_accelerators
from objectives.batch import ConfigBatch, build_batch, concat
from objectives.cost import OwnershipTerms, tco_usd_per_gpu_hour, usd_per_million_tokens
from objectives.efficiency import EfficiencyModel, GpuEfficiency, default_efficiency
from objectives.models import ModelSpec, UnknownModelError, list_models, load_model
from objectives.quantization import SCHEMES, QuantScheme, get_scheme
from objectives.serving import BOUNDS, REASONS, ServingMetrics, evaluate, offline_max_throughput
from objectives.timing import StepTime, decode_step_time_s, forward_time_s, prefill_time_s

__all__ = [
    "BOUNDS",
    "REASONS",
    "SCHEMES",
    "Accelerator",
    "ConfigBatch",
    "EfficiencyModel",
    "GpuEfficiency",
    "ModelSpec",
    "OwnershipTerms",
    "QuantScheme",
    "ServingMetrics",
    "StepTime",
    "UnknownAcceleratorError",
    "UnknownModelError",
    "build_batch",
    "concat",
    "decode_step_time_s",
    "default_efficiency",
    "evaluate",
    "forward_time_s",
    "get_accelerator",
    "get_scheme",
    "list_models",
    "load_accelerators",
    "load_model",
    "offline_max_throughput",
    "prefill_time_s",
    "tco_usd_per_gpu_hour",
    "usd_per_million_tokens",
]
