"""Serving metrics of a configuration under a workload.

Steady state of continuous batching with fixed lengths: `batch` sequences are in flight; each
request is prefilled once (isl tokens) and decoded osl times at a mean context of
isl + osl / 2. Over one cycle, the time for `batch` requests to complete, the replica spends

    cycle_s = osl * t_decode(batch, isl + osl/2) + t_prefill(batch prompts of isl)

so it emits  tokens_per_s = batch * osl / cycle_s  and a user sees  TPOT = cycle_s / osl
(prefill chunks stall the decode steps they share). TTFT is the prefill of one prompt in
chunks that share their steps with the other batch - 1 running sequences.

Under load (`evaluate` with `latency_percentile`, `slos` or `target_utilization`) latencies come
from `objectives.queueing` instead: TTFT / TPOT / end-to-end at the SLO's percentile for the
rate each replica serves, with queueing, prefill interference and the length distributions'
tails, and replicas sized with headroom (`queueing.size_replicas`). Without those arguments the
outputs are the steady state above, unchanged.

`offline_max_throughput` picks the batch — as trtllm-bench's all-requests-queued runs do — as
the one giving the most tokens/s per GPU among batch sizes that fit up to the runtime cap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from objectives import queueing
from objectives.batch import ConfigBatch
from objectives.cost import energy_j_per_token, usd_per_million_tokens, usd_per_million_total_tokens, usd_per_request
from objectives.memory import kv_budget_bytes, max_batch_that_fits, memory_per_gpu_bytes, weight_bytes_per_gpu
from objectives.timing import StepTime, decode_step_time_s, prefill_time_s

REASONS = (
    "",
    "weights do not fit in GPU memory",
    "KV cache of the batch does not fit",
    "TP must divide the attention heads",
    "EP must divide TP and the number of experts",
    "PP exceeds the number of layers",
    "context exceeds the model's maximum position embeddings",
    "the GPUs of a replica exceed the scale-up domain and the catalog has no scale-out bandwidth",
    "attention DP needs a MoE model with EP = tp x attention_dp",
    "speculative decoding needs a published draft acceptance rate for the model (objectives/data/modes.yaml)",
)
BOUNDS = ("bandwidth", "compute", "interconnect", "overhead", "capacity")


@dataclass(frozen=True)
class ServingMetrics:
    """Metrics per configuration (arrays). Times in seconds, memory in bytes."""

    feasible: np.ndarray  # bool
    reason_code: np.ndarray  # index into REASONS (0 = feasible)
    batch: np.ndarray
    max_batch: np.ndarray  # largest batch whose KV cache fits at isl + osl
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    e2e_s: np.ndarray
    decode_step_s: np.ndarray
    output_tokens_per_s: np.ndarray  # per replica
    output_tokens_per_s_per_gpu: np.ndarray
    output_tokens_per_s_per_user: np.ndarray
    gpus: np.ndarray  # per replica
    replicas: np.ndarray
    weight_bytes_per_gpu: np.ndarray
    kv_budget_bytes: np.ndarray
    memory_per_gpu_bytes: np.ndarray
    bound_code: np.ndarray  # index into BOUNDS
    usd_per_hour: np.ndarray  # all replicas
    usd_per_million_output_tokens: np.ndarray
    usd_per_request: np.ndarray  # of the requests served
    usd_per_million_total_tokens: np.ndarray  # input + output tokens served
    energy_j_per_output_token: np.ndarray
    decode: StepTime
    prefill: StepTime
    # each replica's arrival rate / its capacity (1: a single replica at full load, no rate)
    utilization: np.ndarray
    # time-average sequences decoding per replica: `batch` in the steady state, the batch the
    # load forms under `objectives.queueing`
    load_batch: np.ndarray

    @property
    def reason(self) -> list[str]:
        return [REASONS[int(c)] for c in self.reason_code]

    @property
    def bound(self) -> list[str]:
        return [BOUNDS[int(c)] for c in self.bound_code]

    def row(self, i: int) -> dict[str, object]:
        """One configuration's metrics as plain Python values."""
        out: dict[str, object] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, StepTime):
                out[key] = {k: float(v[i]) for k, v in value.__dict__.items()}
            else:
                out[key] = value[i].item()
        out["feasible"] = bool(self.feasible[i])
        out["reason"] = REASONS[int(self.reason_code[i])]
        out["bound"] = BOUNDS[int(self.bound_code[i])]
        return out


def structural_reason(b: ConfigBatch) -> np.ndarray:
    """Reason code for configurations that cannot be built at all (0 where they can)."""
    code = np.zeros(len(b), dtype=np.int64)
    bad_pp = b.pp > b.n_layers
    bad_ep = (b.ep > 1) & ((np.mod(b.tp, b.ep) != 0) | (b.n_experts == 0) | (np.mod(b.n_experts, b.ep) != 0))
    bad_tp = np.mod(b.n_heads, b.tp) != 0
    code = np.where(~np.isfinite(b.link_bw_bytes_per_s), 7, code)
    if b.has_mtp:
        code = np.where((b.mtp_tokens > 0) & ~np.isfinite(b.mtp_acceptance), 9, code)
    if b.has_attention_dp:
        # DEP: experts over every GPU of the stage (EPLB's redundant slots allow ep not dividing
        # n_experts); the non-DEP rule (EP divides TP and the experts) stays for attention_dp 1
        dep = b.attention_dp > 1
        bad_dep = dep & ((b.n_experts == 0) | (b.ep != b.tp * b.attention_dp) | (b.ep > b.n_experts))
        code = np.where(bad_dep, 8, code)
        bad_ep = bad_ep & ~dep
    code = np.where(bad_pp, 5, code)
    code = np.where(bad_ep, 4, code)
    code = np.where(bad_tp, 3, code)
    return code


def _bound(decode: StepTime, prefill: StepTime, osl: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    bandwidth = osl * (decode.weights_memory_s + decode.kv_memory_s) + prefill.weights_memory_s
    compute = (
        osl * (decode.gemm_compute_s + decode.attention_compute_s)
        + prefill.gemm_compute_s
        + prefill.attention_compute_s
    )
    interconnect = osl * decode.communication_s + prefill.communication_s
    overhead = osl * decode.overhead_s + prefill.overhead_s
    code = np.argmax(np.stack([bandwidth, compute, interconnect, overhead]), axis=0)
    return np.where(capacity, 4, code)


@dataclass(frozen=True)
class SteadyState:
    """Rates and cost of a fleet of replicas in the steady state of the module docstring."""

    tpot_s: np.ndarray
    e2e_s: np.ndarray
    output_tokens_per_s: np.ndarray  # per replica
    output_tokens_per_s_per_gpu: np.ndarray
    output_tokens_per_s_per_user: np.ndarray
    replicas: np.ndarray
    usd_per_hour: np.ndarray  # all replicas
    usd_per_million_output_tokens: np.ndarray  # of the tokens served
    usd_per_request: np.ndarray  # of the requests served (served output tokens/s / osl)
    usd_per_million_total_tokens: np.ndarray  # of the input + output tokens served
    energy_j_per_output_token: np.ndarray


def steady_state(
    *,
    isl: np.ndarray | float,
    osl: np.ndarray | float,
    batch: np.ndarray,
    decode_step_s: np.ndarray,
    prefill_all_s: np.ndarray,
    ttft_s: np.ndarray,
    gpus: np.ndarray,
    tdp_w: np.ndarray,
    usd_per_gpu_hour: np.ndarray,
    arrival_rate_per_s: np.ndarray | float | None = None,
    replicas: np.ndarray | None = None,
) -> SteadyState:
    """cycle_s = osl * decode_step_s + prefill_all_s (the batch's prompts), tokens/s per replica
    = batch * osl / cycle_s, TPOT = cycle_s / osl, end-to-end = TTFT + (osl - 1) * TPOT.

    Replicas: given (`replicas`), or ceil(rate * osl / tokens_per_s) with an arrival rate, or one.
    The fleet serves min(rate * osl, replicas * tokens_per_s) tokens/s (all it can without a
    rate); $/hour is replicas * gpus * price, and $ per million output tokens, $ per request
    (served output tokens/s / osl) and $ per million input + output tokens are of what is
    served (`objectives.cost`)."""
    cycle = osl * decode_step_s + prefill_all_s
    tpot = cycle / osl
    tokens_per_s = batch * osl / cycle
    if replicas is not None:
        replicas = np.asarray(replicas, dtype=np.float64)
    elif arrival_rate_per_s is not None:
        replicas = np.maximum(np.ceil(np.asarray(arrival_rate_per_s, dtype=np.float64) * osl / tokens_per_s), 1.0)
    else:
        replicas = np.ones_like(tokens_per_s)
    served = replicas * tokens_per_s
    if arrival_rate_per_s is not None:
        served = np.minimum(np.asarray(arrival_rate_per_s, dtype=np.float64) * osl, served)
    usd_per_hour = replicas * gpus * usd_per_gpu_hour
    return SteadyState(
        tpot_s=tpot,
        e2e_s=ttft_s + (osl - 1.0) * tpot,
        output_tokens_per_s=tokens_per_s,
        output_tokens_per_s_per_gpu=tokens_per_s / gpus,
        output_tokens_per_s_per_user=1.0 / tpot,
        replicas=replicas,
        usd_per_hour=usd_per_hour,
        usd_per_million_output_tokens=usd_per_million_tokens(usd_per_hour, served),
        usd_per_request=usd_per_request(usd_per_hour, served, osl),
        usd_per_million_total_tokens=usd_per_million_total_tokens(usd_per_hour, served, isl, osl),
        energy_j_per_output_token=energy_j_per_token(gpus, tdp_w, tokens_per_s),
    )


def evaluate(
    b: ConfigBatch,
    *,
    arrival_rate_per_s: np.ndarray | float | None = None,
    max_position_embeddings: np.ndarray | float = np.inf,
    usd_per_gpu_hour: np.ndarray | None = None,
    replicas: np.ndarray | None = None,
    latency_percentile: float | Mapping[str, float] | None = None,
    slos: Sequence[Any] | None = None,
    target_utilization: float | None = None,
    input_lengths: Any = None,
    output_lengths: Any = None,
    arrival_cv: float = 1.0,
    dispatch: queueing.Dispatch = queueing.DEFAULT_DISPATCH,
    dispatch_group: float | None = None,
) -> ServingMetrics:
    """Metrics of each configuration at its own `b.batch` concurrency.

    A batch larger than what fits is clipped to the largest that fits (bound: capacity).
    Replicas and cost follow `steady_state`: a fixed number of `replicas`, or with an arrival
    rate the fleet that serves it, else a single replica at full load.

    Under load — any of `latency_percentile`, `slos`, `target_utilization` given, with an
    arrival rate — `b.batch` is the scheduler's cap (max_num_seqs) and `objectives.queueing`
    gives the latencies: ttft_s / tpot_s / e2e_s at `latency_percentile` (one for all, or per
    metric; default: each SLO's percentile, else 50), for lengths `input_lengths` /
    `output_lengths` (workloads.LengthDistribution or anything `queueing.LengthNodes.of` takes;
    default fixed at b.isl / b.osl) arriving with inter-arrival cv `arrival_cv`, split over the
    replicas by `dispatch` over groups of `dispatch_group` replicas (`queueing.replica_arrival_cv`;
    default least-loaded over the whole fleet). Without fixed
    `replicas` the fleet is `queueing.size_replicas`: the fewest replicas whose per-replica
    rate meets every SLO percentile and stays at or under `target_utilization` of capacity
    (default `queueing.default_target_utilization()`, 0.8). Costs follow from those replicas.
    """
    isl, osl = b.isl, b.osl
    context_max = isl + osl
    fit = max_batch_that_fits(b, context_max)
    code = structural_reason(b)
    code = np.where((code == 0) & (context_max > max_position_embeddings), 6, code)
    weights = weight_bytes_per_gpu(b)
    budget = kv_budget_bytes(b)
    code = np.where((code == 0) & (budget <= 0), 1, code)
    code = np.where((code == 0) & (fit < 1), 2, code)
    batch = np.clip(np.minimum(b.batch, fit), 1.0, None)
    capacity = b.batch > fit
    mean_ctx = isl + osl / 2.0

    decode = decode_step_time_s(b, batch, mean_ctx)
    prefill_all = prefill_time_s(b, isl, batch)
    ttft = prefill_time_s(b, isl, 1.0, running_seqs=batch - 1.0, running_context=mean_ctx)
    price = b.usd_per_gpu_hour if usd_per_gpu_hour is None else np.asarray(usd_per_gpu_hour, dtype=np.float64)

    def steady(fleet: np.ndarray | None) -> SteadyState:
        return steady_state(
            isl=isl,
            osl=osl,
            batch=batch,
            decode_step_s=decode.total_s,
            prefill_all_s=prefill_all.total_s,
            ttft_s=ttft.total_s,
            gpus=b.gpus,
            tdp_w=b.tdp_w,
            usd_per_gpu_hour=price,
            arrival_rate_per_s=arrival_rate_per_s,
            replicas=fleet,
        )

    st = steady(replicas)
    feasible = code == 0
    rate = (
        None if arrival_rate_per_s is None else np.broadcast_to(np.asarray(arrival_rate_per_s, np.float64), (len(b),))
    )
    under_load = rate is not None and (
        latency_percentile is not None or slos is not None or target_utilization is not None
    )
    ttft_s, tpot_s, e2e_s = ttft.total_s, st.tpot_s, st.e2e_s
    requests_per_s = st.output_tokens_per_s / osl  # capacity of one replica
    utilization = np.ones(len(b)) if rate is None else rate / (st.replicas * requests_per_s)
    load_batch = batch
    per_user = st.output_tokens_per_s_per_user
    if under_load:
        q = _under_load(
            b.replace(
                batch=np.clip(
                    np.minimum(b.batch, b.max_batch_size * (b.attention_dp if b.has_attention_dp else 1.0)), 1.0, None
                )
            ),
            feasible,
            rate,  # type: ignore[arg-type]
            replicas=replicas,
            latency_percentile=latency_percentile,
            slos=list(slos or []),
            target_utilization=target_utilization,
            inputs=input_lengths if input_lengths is not None else queueing.LengthNodes.of(float(np.mean(isl))),
            outputs=output_lengths if output_lengths is not None else queueing.LengthNodes.of(float(np.mean(osl))),
            arrival_cv=arrival_cv,
            dispatch=dispatch,
            dispatch_group=dispatch_group,
        )
        ttft_s, tpot_s, e2e_s, utilization, load_batch, tpot_mean, fleet = q
        per_user = 1.0 / tpot_mean  # a user's token rate at the batch the load forms (mean TPOT)
        if replicas is None:
            st = steady(fleet)  # the fleet sized with headroom
    nan = np.where(feasible, 1.0, np.nan)
    return ServingMetrics(
        feasible=feasible,
        reason_code=code,
        batch=batch,
        max_batch=fit,
        ttft_s=ttft_s * nan,
        tpot_s=tpot_s * nan,
        e2e_s=e2e_s * nan,
        decode_step_s=decode.total_s * nan,
        output_tokens_per_s=st.output_tokens_per_s * nan,
        output_tokens_per_s_per_gpu=st.output_tokens_per_s_per_gpu * nan,
        output_tokens_per_s_per_user=per_user * nan,
        gpus=b.gpus,
        replicas=st.replicas,
        weight_bytes_per_gpu=weights,
        kv_budget_bytes=budget,
        memory_per_gpu_bytes=memory_per_gpu_bytes(b.replace(batch=batch), context_max),
        bound_code=_bound(decode, prefill_all, osl, capacity),
        usd_per_hour=st.usd_per_hour,
        usd_per_million_output_tokens=st.usd_per_million_output_tokens * nan,
        usd_per_request=st.usd_per_request * nan,
        usd_per_million_total_tokens=st.usd_per_million_total_tokens * nan,
        energy_j_per_output_token=st.energy_j_per_output_token * nan,
        decode=decode,
        prefill=ttft,
        utilization=utilization * nan,
        load_batch=load_batch * nan,
    )


def _under_load(
    b: ConfigBatch,
    feasible: np.ndarray,
    rate: np.ndarray,
    *,
    replicas: np.ndarray | None,
    latency_percentile: float | Mapping[str, float] | None,
    slos: list[Any],
    target_utilization: float | None,
    inputs: Any,
    outputs: Any,
    arrival_cv: float,
    dispatch: queueing.Dispatch,
    dispatch_group: float | None,
) -> tuple[np.ndarray, ...]:
    """Queueing-aware (ttft, tpot, e2e, utilization, load batch, mean TPOT, replicas) of the feasible rows
    of `b` (b.batch: the scheduler's cap); the other rows get NaN latencies and one replica."""
    pct: dict[str, float] = {}
    for metric in ("ttft", "tpot", "e2e"):
        if isinstance(latency_percentile, Mapping):
            pct[metric] = float(latency_percentile.get(metric, 50.0))
        elif latency_percentile is not None:
            pct[metric] = float(latency_percentile)
        else:
            own = [queueing.slo_triple(s)[2] for s in slos if queueing.slo_triple(s)[0] == metric]
            pct[metric] = own[0] if own else 50.0
    n = len(b)
    out = [np.full(n, np.nan) for _ in range(6)] + [np.ones(n)]
    rows = np.flatnonzero(feasible)
    if rows.size == 0:
        return tuple(out)
    sub = b.take(rows)
    if replicas is not None:
        fleet = np.broadcast_to(np.asarray(replicas, dtype=np.float64), (n,))[rows]
        cv = queueing.replica_arrival_cv(arrival_cv, fleet, dispatch, dispatch_group)
        lat = queueing.queueing_latency(
            sub,
            rate[rows] / fleet,
            inputs,
            outputs,
            percentiles=set(pct.values()),
            arrival_cv=cv,
            pooled=queueing.pool_size(fleet, dispatch, dispatch_group),
        )
    else:
        room = queueing.size_replicas(
            sub,
            rate[rows],
            inputs,
            outputs,
            slos=slos,
            target_utilization=target_utilization,
            arrival_cv=arrival_cv,
            dispatch=dispatch,
            dispatch_group=dispatch_group,
            percentiles=set(pct.values()),
        )
        fleet, lat = room.replicas, room.latency
    for k, metric in enumerate(("ttft", "tpot", "e2e")):
        out[k][rows] = lat.at(metric, pct[metric])
    out[3][rows] = lat.utilization
    out[4][rows] = lat.batch
    out[5][rows] = lat.tpot_mean_s
    out[6][rows] = fleet
    return tuple(out)


def offline_max_throughput(b: ConfigBatch, candidates: int = 16, **kwargs: object) -> ServingMetrics:
    """Best output tokens/s per GPU over batch sizes that fit, up to `max_batch_size`.

    Evaluates `candidates` batch sizes spaced geometrically from 1 to the largest that fits
    (always including that largest) and keeps the best for each configuration.
    """
    fit = max_batch_that_fits(b, b.isl + b.osl)
    cap = b.max_batch_size * b.attention_dp if b.has_attention_dp else b.max_batch_size  # per attention rank
    top = np.clip(np.minimum(fit, cap), 1.0, None)
    fractions = np.geomspace(1.0 / 4096.0, 1.0, candidates)
    best: ServingMetrics | None = None
    best_tps = np.full(len(b), -np.inf)
    choice = np.zeros(len(b), dtype=np.int64)
    trials = []
    for j, f in enumerate(fractions):
        trial_batch = np.maximum(np.floor(top * f), 1.0)
        m = evaluate(b.replace(batch=trial_batch), **kwargs)  # type: ignore[arg-type]
        tps = np.nan_to_num(m.output_tokens_per_s_per_gpu, nan=-1.0)
        better = tps > best_tps
        best_tps = np.where(better, tps, best_tps)
        choice = np.where(better, j, choice)
        trials.append(m)
    best = _select(trials, choice)
    return best


def _select(trials: list[ServingMetrics], choice: np.ndarray) -> ServingMetrics:
    """Row-wise pick of trials[choice[i]]."""
    rows = np.arange(choice.shape[0])

    def pick(values: list[np.ndarray]) -> np.ndarray:
        return np.stack(values)[choice, rows]

    out = {}
    for key, value in trials[0].__dict__.items():
        if isinstance(value, StepTime):
            out[key] = StepTime(**{k: pick([getattr(t, key).__dict__[k] for t in trials]) for k in value.__dict__})
        else:
            out[key] = pick([getattr(t, key) for t in trials])
    return ServingMetrics(**out)
