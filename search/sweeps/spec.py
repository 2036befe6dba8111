"""The sweep spec: one YAML file, validated by one pydantic schema.

    name: llama-70b-chat
    model: meta-llama/Llama-3.1-70B-Instruct
    workload: chat                      # a preset name, an explicit workload, or a preset with
                                        # overrides: {preset: rag, arrival_rate_per_s: 20}
    accelerators: [H100-SXM, MI300X]    # or "all"
    space: {tp: [1, 2, 4, 8], weights: [bf16, fp8], max_batch: [8, 32, 128]}
    objectives: [{metric: tpot, percentile: 99}, {metric: usd_per_million_output_tokens}]
    constraints: {max_gpus: 64, max_usd_per_hour: 400, target_utilization: 0.8}
    pricing: {basis: cloud}
    evaluator: analytic                 # or simulator (tail latencies; see `simulation`)
    simulation: {requests: 2000, arrivals: poisson}
    sampler: auto                       # the default: multi-fidelity stages (below); or exhaustive,
                                        # tpe, nsga2, gp: one tier with `evaluator`
    budget: {trials: 500}
    report: {fastest_tolerance: 0.05}   # "fastest": the cheapest within 5% of the fastest latency
    seed: 0

Errors name the field and the allowed values (`load_spec` wraps pydantic's).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from objectives.accelerators import (
    PRICE_PROVIDERS,
    UnknownAcceleratorError,
    get_accelerator,
    load_accelerators,
)
from objectives.models import UnknownModelError, load_model
from objectives.quantization import KV_CACHE_BYTES, get_scheme
from workloads import Workload, get_preset, preset_with

SWEEP_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # safe as a file or URL path segment
LATENCY_METRICS = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s"}
OBJECTIVE_METRICS = {
    **LATENCY_METRICS,
    "usd_per_million_output_tokens": "usd_per_million_output_tokens",
    "usd_per_request": "usd_per_request",
    "usd_per_million_total_tokens": "usd_per_million_total_tokens",
    "usd_per_hour": "usd_per_hour",
    "energy_j_per_output_token": "energy_j_per_output_token",
    "gpus": "total_gpus",
    "output_tokens_per_s_per_gpu": "output_tokens_per_s_per_gpu",
}
MAXIMIZED = {"output_tokens_per_s_per_gpu"}
# The largest spaces each tier covers: configuration ids are int64 (every tier), and the
# exhaustive tier evaluates every configuration (a billion takes hours on a cluster).
MAX_SPACE_SIZE = 2**62
MAX_EXHAUSTIVE_SPACE_SIZE = 10**9
# `sampler: auto` evaluates the whole space analytically up to this size (a TPE search beyond).
AUTO_EXHAUSTIVE_LIMIT = 10**8
# Simulator work per configuration (Simulation): requests served, replicas of a group simulated.
MAX_SIMULATED_REQUESTS = 100_000
MAX_SIMULATED_REPLICAS = 64
# Gamma inter-arrival coefficient of variation (shape 1 / cv^2: 10^-4 .. 10^4) and seeds (int64).
MIN_ARRIVAL_CV, MAX_ARRIVAL_CV = 0.01, 100.0
MAX_SEED = 2**63 - 1


class SpecError(ValueError):
    """A sweep spec that cannot be used; the message names the field."""


def _shown(value: str, limit: int = 120) -> str:
    """A value for a message: repr, cut to `limit` characters."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"


def _is_file(path: str) -> bool:
    """Path(path).is_file(), False for names the file system refuses (too long, NUL bytes)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrefillPool(_Strict):
    """Which prefill pools a disaggregated configuration may have: its GPU type and TP are the
    space's `accelerator` and `tp` dimensions, kept to these values (default: all of them)."""

    accelerators: list[str] | None = None
    tp: list[int] | None = None


class DecodePool(_Strict):
    """The decode pool's own dimensions: GPU type (default: the sweep's accelerators) and TP
    (default: the space's tp); its batch limit is the space's `max_batch`."""

    accelerators: list[str] | None = None
    tp: list[int] | None = None

    @field_validator("tp")
    @classmethod
    def _tp(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and (not values or any(v < 1 for v in values)):
            raise ValueError(f"tp values must be >= 1, got {values}")
        return None if values is None else sorted(set(values))


class Disaggregation(_Strict):
    """Disaggregated prefill / decode (objectives.disaggregation): `enabled` [false, true] adds
    the mode as a dimension. A disaggregated configuration has prefill replicas on the space's
    accelerator / tp (pp, ep, weights, KV dtype and prefill chunk shared) and decode replicas on
    `decode` accelerator / tp with the space's max_batch as their batch limit; the replicas of
    each pool are sized for the rate. `kv_link`: auto (NVLink when both pools fit one scale-up
    domain of one GPU type, else the catalog's per-GPU scale-out NIC), nvlink, infiniband (RDMA
    over the NIC), ethernet (TCP); `kv_link_gbps` replaces the NIC line rate per GPU."""

    enabled: list[bool] = Field(default_factory=lambda: [False, True])
    prefill: PrefillPool = Field(default_factory=PrefillPool)
    decode: DecodePool = Field(default_factory=DecodePool)
    kv_link: Literal["auto", "nvlink", "infiniband", "ethernet"] = "auto"
    kv_link_gbps: float | None = Field(default=None, gt=0)

    @field_validator("enabled")
    @classmethod
    def _enabled(cls, values: list[bool]) -> list[bool]:
        if not values:
            raise ValueError("needs at least one value")
        return sorted(set(values))


class Space(_Strict):
    """Values each dimension of the search space may take."""

    tp: list[int] = Field(default_factory=lambda: [1, 2, 4, 8])
    pp: list[int] = Field(default_factory=lambda: [1])
    ep: list[int] = Field(default_factory=lambda: [1])
    weights: list[str] = Field(default_factory=lambda: ["bf16", "fp8"])
    kv_cache: list[str] = Field(default_factory=lambda: ["bf16", "fp8"])
    max_batch: list[int] = Field(default_factory=lambda: [1, 4, 16, 64, 256])
    chunked_prefill: list[int] = Field(default_factory=lambda: [8192])
    replicas: Literal["auto"] | list[int] = "auto"
    disaggregation: Disaggregation | None = None
    # attention data-parallel ranks of tp GPUs each (DEP: ep must be tp x attention_dp) and draft
    # tokens of speculative decoding / MTP (objectives.modes); the defaults leave both off
    attention_dp: list[int] = Field(default_factory=lambda: [1])
    mtp: list[int] = Field(default_factory=lambda: [0])
    # serving engines (objectives/data/engines.yaml: trtllm, vllm, sglang). None: no engine
    # dimension, every configuration runs the default engine with the efficiency model's serving
    # values, and configuration ids are those of a spec without engines.
    engine: list[str] | None = None

    @field_validator("engine")
    @classmethod
    def _engine(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        if not values:
            raise ValueError("needs at least one value")
        from objectives.engines import UnknownEngineError, engine_id

        try:
            return list(dict.fromkeys(engine_id(v) for v in values))
        except UnknownEngineError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("mtp")
    @classmethod
    def _draft_tokens(cls, values: list[int]) -> list[int]:
        if not values:
            raise ValueError("needs at least one value")
        if any(v < 0 or v > 8 for v in values):
            raise ValueError(f"draft tokens must be 0..8, got {values}")
        return sorted(set(values))

    @field_validator("tp", "pp", "ep", "max_batch", "chunked_prefill", "attention_dp")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if not values:
            raise ValueError("needs at least one value")
        if any(v < 1 for v in values):
            raise ValueError(f"values must be >= 1, got {values}")
        return sorted(set(values))

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: Literal["auto"] | list[int]) -> Literal["auto"] | list[int]:
        if isinstance(value, list) and (not value or any(v < 1 for v in value)):
            raise ValueError("replicas must be 'auto' or a non-empty list of integers >= 1")
        return sorted(set(value)) if isinstance(value, list) else value

    @field_validator("weights")
    @classmethod
    def _weights(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("needs at least one value")
        return list(dict.fromkeys(get_scheme(v).name for v in values))  # aliases named once

    @field_validator("kv_cache")
    @classmethod
    def _kv(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("needs at least one value")
        bad = [v for v in values if v.lower() not in KV_CACHE_BYTES]
        if bad:
            raise ValueError(f"unknown KV-cache dtype {bad}; allowed: {', '.join(KV_CACHE_BYTES)}")
        return list(dict.fromkeys(v.lower() for v in values))


class Objective(_Strict):
    """One objective: a metric, minimized (or maximized for throughput), at a percentile for
    latencies (under the workload's arrival rate; offline workloads have steady-state means)."""

    metric: str
    percentile: float = Field(default=50.0, gt=0, le=100)

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in OBJECTIVE_METRICS:
            raise ValueError(f"unknown objective metric {value!r}; allowed: {', '.join(OBJECTIVE_METRICS)}")
        return value

    @property
    def column(self) -> str:
        return OBJECTIVE_METRICS[self.metric]

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return "maximize" if self.metric in MAXIMIZED else "minimize"


class Constraints(_Strict):
    """Feasibility limits beyond fitting in memory: the workload's SLOs (on by default), the
    fleet size and the hourly budget; and the headroom replicas are sized with:
    `target_utilization`, the largest share of each replica's capacity the workload's rate may
    use (default: 0.8, lowered per configuration to what the SLO percentiles allow)."""

    slos: bool = True
    max_gpus: int | None = Field(default=None, ge=1)
    max_usd_per_hour: float | None = Field(default=None, gt=0)
    target_utilization: float | None = Field(default=None, gt=0, le=1)


class Pricing(_Strict):
    """Cloud on-demand prices from the catalog (or `price_file`), or owned TCO.

    `provider` is the one price list the cloud prices come from (aws, azure, gcp, oracle,
    neocloud, or custom: a price file's own prices); None picks the provider that lists the most
    of the sweep's accelerators, ties going to the earlier in that order. A GPU the provider does
    not list is priced from its default and marked as priced from another basis."""

    basis: Literal["cloud", "owned"] = "cloud"
    price_file: str | None = None  # GPU YAML overriding prices / specs
    provider: str | None = None
    years: float | None = Field(default=None, gt=0)
    usd_per_kwh: float | None = Field(default=None, ge=0)
    pue: float | None = Field(default=None, ge=1)
    hosting_usd_per_kw_month: float | None = Field(default=None, ge=0)

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key = value.strip().lower()
        if key not in PRICE_PROVIDERS:
            raise ValueError(f"unknown price provider {value!r}; allowed: {', '.join(PRICE_PROVIDERS)}")
        return key


class Budget(_Strict):
    """When a guided search stops: after `trials` trials or `wall_time_s` seconds."""

    trials: int | None = Field(default=200, ge=1)
    wall_time_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _some_limit(self) -> Budget:
        if self.trials is None and self.wall_time_s is None:
            raise ValueError("give `trials` or `wall_time_s` (or both)")
        return self


class Simulation(_Strict):
    """Settings of `evaluator: simulator` (objectives.simulator): how many requests each
    configuration serves, from which seed, arriving how (Poisson, gamma with a burstiness
    coefficient of variation, or a CSV trace), and how a group of replicas shares them.

    The work per configuration grows with `requests` and `max_replicas`, and any token holder of
    the service can send a spec, so both are bounded: `requests` 10 to 100,000 and
    `max_replicas` 1 to 64 (a spec beyond is refused naming the field; HTTP 422)."""

    requests: int = Field(default=2000, ge=10, le=MAX_SIMULATED_REQUESTS)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)  # default: the spec's seed
    arrivals: Literal["poisson", "gamma"] = "poisson"
    # of gamma inter-arrival times (1 = Poisson); the gamma's shape is 1 / cv^2, so bounded
    cv: float = Field(default=1.0, ge=MIN_ARRIVAL_CV, le=MAX_ARRIVAL_CV)
    trace: str | None = None  # CSV of timestamp, input tokens, output tokens (Azure format)
    dispatch: Literal["least_loaded", "round_robin"] = "least_loaded"
    # larger groups: this many, at their share of the rate
    max_replicas: int = Field(default=4, ge=1, le=MAX_SIMULATED_REPLICAS)
    block_size: int = Field(default=16, ge=1, le=1024)

    @field_validator("trace")
    @classmethod
    def _trace(cls, value: str | None) -> str | None:
        if value is not None and not _is_file(value):
            raise ValueError(f"trace file {_shown(value)} does not exist")
        return value


class Probe(_Strict):
    """Settings of `evaluator: probe` (search.probes / ProbeEvaluator): one real decoder layer
    per candidate, timed on `device` (cuda: a Ray task on a GPU of the candidate's type; cpu:
    in the evaluating process, for tests). Only the first `max_candidates` configurations of the
    analytic front (best first objective first) are probed; the rest stay analytic."""

    device: Literal["cuda", "cpu"] = "cuda"
    max_candidates: int = Field(default=8, ge=0)
    repeats: int = Field(default=5, ge=1, le=1000)
    prefill_tokens: int | None = Field(default=None, ge=1)  # prefill chunk probed (default: the chunk)


class Report(_Strict):
    """How the report and `front` pick among the stored candidates (search.outputs.candidates).

    `fastest_tolerance`: "fastest within the budget" is the cheapest candidate whose latency is
    within this fraction of the fastest candidate's (0.05: at most 5% slower), so a 2% faster
    point never wins on a fleet many times the size; 0 picks the lowest latency outright."""

    fastest_tolerance: float = Field(default=0.05, ge=0, lt=1)


class SweepSpec(_Strict):
    """A whole sweep."""

    name: str | None = Field(default=None, pattern=SWEEP_NAME_PATTERN)
    model: str
    workload: str | Workload = "chat"
    accelerators: Literal["all"] | list[str] = "all"
    space: Space = Field(default_factory=Space)
    objectives: list[Objective] = Field(
        default_factory=lambda: [
            Objective(metric="tpot", percentile=99),
            Objective(metric="usd_per_million_output_tokens"),
        ]
    )
    constraints: Constraints = Field(default_factory=Constraints)
    pricing: Pricing = Field(default_factory=Pricing)
    evaluator: Literal["analytic", "simulator", "probe"] = "analytic"
    # Efficiencies: "none" (shipped defaults), "latest" (newest stored calibration) or a record
    # file. Resolved when the sweep starts and kept in `calibration_record`, so every worker and
    # a resumed driver use the same numbers.
    calibration: str = "none"
    calibration_record: dict[str, Any] | None = None
    simulation: Simulation = Field(default_factory=Simulation)
    probe: Probe = Field(default_factory=Probe)
    report: Report = Field(default_factory=Report)
    # "point": optimize the predicted values; "p90": the pessimistic bound of each objective
    # (latencies and costs at their 80 % interval's p90, throughputs at p10; objectives.uncertainty)
    risk: Literal["point", "p90"] = "point"
    # auto (search.sweeps.staged): with the analytic evaluator (the default), a multi-fidelity
    # sweep — the analytic model over the whole space (exhaustive up to AUTO_EXHAUSTIVE_LIMIT,
    # else TPE), the simulator on that front, its neighbourhood and a TPE search seeded with
    # them (workloads with an arrival rate), probes of the finalists where the cluster has their
    # GPUs. With evaluator simulator or probe, auto is tpe on that evaluator. The explicit
    # samplers run one tier with `evaluator`.
    sampler: Literal["auto", "tpe", "nsga2", "gp", "exhaustive"] = "auto"
    budget: Budget = Field(default_factory=Budget)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        """A catalog name becomes its id; a path stays as given, once its config.json loads."""
        try:
            loaded = load_model(value)  # UnknownModelError / ModelConfigError name what is wrong
        except UnknownModelError as exc:
            raise ValueError(str(exc)) from None
        except ValueError as exc:  # a config.json the model counter cannot use
            raise ValueError(f"model config {_shown(value)}: {exc}") from None
        return value if Path(value).exists() else loaded.id  # load_model checked the path

    @field_validator("workload", mode="before")
    @classmethod
    def _preset_with_overrides(cls, value: Any) -> Any:
        """`{preset: rag, arrival_rate_per_s: 20}`: the preset with those fields replaced."""
        if isinstance(value, dict) and "preset" in value:
            rest = {k: v for k, v in value.items() if k != "preset"}
            try:
                return preset_with(str(value["preset"]), rest)
            except ValidationError as exc:
                where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"workload preset {value['preset']!r} with overrides: {where}") from None
        return value

    @field_validator("workload")
    @classmethod
    def _workload(cls, value: str | Workload) -> str | Workload:
        if isinstance(value, str):
            get_preset(value)  # raises with the preset names
        return value

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, values: list[Objective]) -> list[Objective]:
        if not 1 <= len(values) <= 3:
            raise ValueError("give one to three objectives")
        if len({v.metric for v in values}) != len(values):
            raise ValueError("objectives must be distinct")
        return values

    @model_validator(mode="after")
    def _accelerators(self) -> SweepSpec:
        try:
            catalog = load_accelerators(self.pricing.price_file)
        except ValueError as exc:  # unreadable, not UTF-8, or not a catalog document
            raise ValueError(f"pricing.price_file: {exc}") from None
        if self.accelerators == "all":
            self.accelerators = sorted(catalog)
        else:
            try:
                # aliases and repeats of one accelerator count once, in the order first given
                self.accelerators = list(dict.fromkeys(get_accelerator(a, catalog).id for a in self.accelerators))
            except UnknownAcceleratorError as exc:
                raise ValueError(f"accelerators: {exc}") from None
            if not self.accelerators:
                raise ValueError("accelerators: give at least one, or 'all'")
        if self.space.disaggregation is not None:
            self._resolve_disaggregation(catalog)
        size = self.space_size()
        limit, tier = (
            (MAX_EXHAUSTIVE_SPACE_SIZE, "the exhaustive sampler evaluates every configuration")
            if self.sampler == "exhaustive"
            else (MAX_SPACE_SIZE, "configuration ids are 64-bit")
        )
        if size > limit:
            raise ValueError(
                f"space: {size:.3g} configurations ({len(self.accelerators)} accelerators x "
                + " x ".join(f"{len(v)} {k}" for k, v in self._space_values().items())
                + f") is more than the {limit:,} a {self.sampler} sweep can cover ({tier}); narrow the space"
                + (" or use a guided sampler (tpe, nsga2, gp)" if self.sampler == "exhaustive" else "")
            )
        return self

    def _resolve_disaggregation(self, catalog: dict) -> None:
        """Resolve the pools' accelerators (aliases, defaults) and check the section."""
        d = self.space.disaggregation
        assert d is not None
        if isinstance(self.space.replicas, list) and True in d.enabled:
            raise ValueError("space.disaggregation: a fixed replicas list cannot be used (each pool is sized)")
        try:
            d.decode.accelerators = list(
                dict.fromkeys(get_accelerator(a, catalog).id for a in (d.decode.accelerators or self.accelerators))
            )
            if d.prefill.accelerators is not None:
                d.prefill.accelerators = list(
                    dict.fromkeys(get_accelerator(a, catalog).id for a in d.prefill.accelerators)
                )
        except UnknownAcceleratorError as exc:
            raise ValueError(f"space.disaggregation: {exc}") from None
        if d.decode.tp is None:
            d.decode.tp = list(self.space.tp)

    @property
    def staged(self) -> bool:
        """Whether this sweep runs in stages (search.sweeps.staged): sampler auto with the
        analytic evaluator."""
        return self.sampler == "auto" and self.evaluator == "analytic"

    @property
    def tier_sampler(self) -> str:
        """The sampler a single-tier sweep runs: auto with evaluator simulator or probe is tpe."""
        return "tpe" if self.sampler == "auto" else self.sampler

    def _space_values(self) -> dict[str, list]:
        values = {k: getattr(self.space, k) for k in ("tp", "pp", "ep", "weights", "kv_cache", "max_batch")}
        values["chunked_prefill"] = self.space.chunked_prefill
        if isinstance(self.space.replicas, list):
            values["replicas"] = self.space.replicas
        d = self.space.disaggregation
        if d is not None:
            values["disaggregated"] = d.enabled
            values["decode_accelerator"] = d.decode.accelerators or list(self.accelerators)
            values["decode_tp"] = d.decode.tp or self.space.tp
        if list(self.space.attention_dp) != [1]:
            values["attention_dp"] = self.space.attention_dp
        if list(self.space.mtp) != [0]:
            values["mtp"] = self.space.mtp
        if self.space.engine is not None:
            values["engine"] = self.space.engine
        return values

    def space_size(self) -> int:
        """How many configurations the space has (a Python int: never overflows)."""
        return math.prod([len(self.accelerators), *(len(v) for v in self._space_values().values())])

    def resolved_workload(self) -> Workload:
        return get_preset(self.workload) if isinstance(self.workload, str) else self.workload


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")  # pydantic's prefix of a validator's message
        where = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {where}: {msg}" if where else f"  {msg}")  # whole-spec checks name their field
    return "invalid sweep spec:\n" + "\n".join(lines)


def parse_spec(data: Any) -> SweepSpec:
    """A SweepSpec from parsed YAML; SpecError names every bad field."""
    if not isinstance(data, dict):
        raise SpecError("invalid sweep spec: the top level must be a mapping of fields")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc)) from None


def load_spec(path: str | Path) -> tuple[SweepSpec, str]:
    """(spec, the YAML text) from a file; SpecError for unreadable or invalid files."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read sweep spec {_shown(str(p))}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"sweep spec {p} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise SpecError(f"sweep spec {p} is nested too deeply") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"sweep spec {p} is not valid YAML: {exc}") from None
    except ValueError as exc:  # an integer past Python's 4,300-digit limit
        raise SpecError(f"sweep spec {p} has a number with too many digits ({exc})") from None
    return parse_spec(data), text
