"""Latencies of a continuous-batching replica under load, at percentiles (analytic, vectorized).

`objectives.serving.steady_state` gives the means of a replica kept full at its batch cap. An
SLO names a percentile at an arrival rate; this module gives TTFT, TPOT and end-to-end latency
at that percentile for a replica serving `rate_per_s` requests/s of variable lengths, and the
fleet that keeps them under targets (`size_replicas`). The replica is the one
`objectives.simulator` replays (vLLM-like scheduler: at most `max_num_seqs` sequences, a step
budget of `max_num_batched_tokens` tokens of which every decode takes one, FIFO admission,
chunked prefill sharing steps with decodes), and the step times are the same functions
(`objectives.timing.forward_time_s` / `decode_step_time_s`, the simulator's pipeline
convention). Assumptions, in order of use:

1. Lengths. Input X and output Y are independent; expectations over them are sums over the
   quadrature nodes of their distributions (`LengthDistribution.nodes`, finer in the tail), so
   the tail of the input length — not its mean — sets the tail of TTFT. Arrivals are Poisson
   (arrival_cv = 1) or a renewal process of inter-arrival cv `arrival_cv` (gamma); a fleet's
   replicas each see rate / replicas, smoothed by the dispatcher (`replica_arrival_cv`:
   round robin gives every replica a sum of R inter-arrival times, cv^2 / R).
2. The batch the load forms. By Little's law the time-average number of decoding sequences is
   n = rate * E[decode time], decode time = ((E[Y] - 1) * t_decode + V0) / (1 - phi) (3., 5.),
   solved by fixed-point iteration from n = 0 (the smallest solution; none below the slot limit
   means overload). A tagged request decodes beside 1 + n sequences. Slots: max_num_seqs, or
   fewer where the KV cache holds fewer sequences of the time-average resident size
   E[X] + E[Y^2] / (2 E[Y]). The batch is overdispersed (a burst of arrivals slows every
   decode, so sequences pile up): linearized it relaxes S = 1 / ((1 - phi)(1 - eps)) times
   slower than a residence (eps: elasticity of the decode step in the batch), an
   Ornstein-Uhlenbeck process of variance z * n, z = S^PEAKEDNESS_EXPONENT * (ca^2 + 1) / 2.
3. Prefill interference. A prompt of x tokens is prefilled in k = ceil(x / (budget - n)) chunk
   steps, each a decode step of the running sequences plus x / k prompt tokens; it adds
   delta(x) = k * (t_mixed - t_decode) to the decode stream. Decoders advance one token per
   step, so TPOT_mean = t_decode(1 + n) / (1 - phi), phi = rate * E[delta].
4. TTFT = W + B(X) + pipeline drain, its percentile mixing W over the input nodes, B(x) the
   prompt's own chunk steps, W a sum of three independent waits, each an atom at 0 plus an
   exponential (`_Waits`):
   a. the queue: the prefill pipeline as a GI/G/1 queue of prompt tokens served in full chunk
      steps when backlogged (work x * t_full / budget; Kingman's mean wait, = Pollaczek-
      Khinchine for Poisson; P(wait) = its utilization), or the slots as a GI/G/c queue of
      whole residences (Sakasegawa's M/M/c wait scaled by Allen-Cunneen's (ca^2 + cs^2) / 2)
      where that wait is larger (few slots: their service contains the prefill);
   b. bursts that fill the slots or the KV cache: occupancy gamma-distributed with the
      peakedness of 2. (plus the cv^2 of a sequence's KV tokens), the overflow
      E[(N - slots)+] draining at slots / residence departures per second;
   c. the step in progress: with steps running, an arrival waits for the next step (the
      residual of a length-biased step) and shares that step with the prompts arriving
      meanwhile, as far as its last chunk leaves budget. Renewal arrivals bring
      (ca^2 - 1) / 2 burst-mates right after an arrival (E[N(t)] ~ rate t + (ca^2 - 1) / 2
      from an arrival epoch): they share its step and queue behind its prefill (5., V0).
5. TPOT tail. A request of y tokens needs w0 = (y - 1) * t_decode of decode steps; the prompts
   queued behind its own prefill (work V0) and those arriving while it decodes insert their
   delta(X), as do those arriving during the insertions: its decode lasts the busy period of an
   M/G/1 queue started by w0 + V0 (mean (w0 + V0) / (1 - phi), variance (w0 + V0) * rate *
   (Var delta + ca^2 E[delta]^2) / (1 - phi)^3), or w0 exactly when no prompt comes. Given a
   prompt, the extra time is gamma (Wilson-Hilferty tail) with that mean and variance plus the
   overdispersed batch's; a step is never longer than a full chunk step, which bounds the extra
   time (mean and, Bhatia-Davis, variance). TPOT = t_decode + extra / (y - 1), mixed over the
   output nodes with y >= 2 (the simulator's TPOT is undefined for one-token outputs).
6. End to end: W + E[T0(X)] + (y - 1) * TPOT_mean, mixed over the output nodes.

Fitted constant: PEAKEDNESS_EXPONENT (below), fitted against `objectives.simulator` only;
scripts/validate_queueing.py prints the error by utilization band over models, GPUs and
workloads. Utilization is rate / capacity, capacity being the requests/s of `steady_state` at
the batch cap (today's `replicas = ceil(rate * osl / tokens_per_s)` runs at utilization 1).
For PP > 1 the pipeline follows the simulator (a prompt's first token comes (PP - 1) / PP of a
round after its last chunk), not `prefill_time_s`'s (chunks + PP - 1) stage steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from objectives.batch import ConfigBatch
from objectives.communication import pp_handoff_time_s
from objectives.memory import kv_budget_bytes, kv_bytes_per_sequence_per_gpu, max_batch_that_fits
from objectives.timing import decode_step_time_s, forward_time_s, prefill_time_s

BLOCK_SIZE = 16  # KV-cache block of the simulated scheduler (tokens)
EMPIRICAL_LEVELS = np.array([0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0])
WATERMARK_FRACTION = 0.01  # KV cache the scheduler keeps free
# Decoding-batch grid of the step-time tables, as fractions of the slot limit; everything
# between is linear interpolation (step times are close to affine in the batch).
_BATCH_FRACTIONS = np.array([0.0, 1 / 64, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1.0])
_FIXED_POINT_ITERATIONS = 60
_BISECTIONS = 26
# slack of an SLO check by survival (max_utilization) against one by the bisected percentile:
# the bisection stops within (hi - lo) / 2**26 of the quantile, i.e. a survival this close
_SURVIVAL_TOLERANCE = 1e-9
_CHUNK_CONFIGS = 2048  # configurations per table (bounds the (grid, nodes, configs) arrays)
DEFAULT_TARGET_UTILIZATION = 0.8
Dispatch = Literal["random", "round_robin", "least_loaded"]
DEFAULT_DISPATCH: Dispatch = "least_loaded"  # the simulator's default
# Fitted against objectives.simulator (scripts/validate_queueing.py): the batch's peakedness grows
# as S^PEAKEDNESS_EXPONENT. The linear-response value 1 leaves the grid's p99 TPOT optimistic by
# up to 21% (8B, RAG) and a KV-bound case's p99 TTFT at utilization 0.9 by 54% — the slowdown
# feeds on itself beyond first order; 1.5 brings the worst optimistic error to 11%.
PEAKEDNESS_EXPONENT = 1.5
_MAX_PEAKEDNESS = 16.0  # bound on the batch's variance / mean (see latency_at_load)


# ---------------------------------------------------------------- helpers


def norm_cdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF (Abramowitz & Stegun 7.1.26 erf, absolute error < 1.5e-7)."""
    z = np.asarray(z, dtype=np.float64)
    x = np.abs(z) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
    erf = 1.0 - poly * np.exp(-x * x)
    return 0.5 * (1.0 + np.sign(z) * erf)


def gamma_sf(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """P(G > x) for a gamma variable of `mean` and `var` (Wilson-Hilferty cube-root normal
    approximation; a variable of zero variance is the constant `mean`)."""
    mean = np.maximum(mean, 1e-300)
    shape = mean * mean / np.maximum(var, 1e-300)
    s = np.sqrt(1.0 / (9.0 * shape))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (np.cbrt(np.maximum(x, 0.0) / mean) - (1.0 - s * s)) / s
    out = 1.0 - norm_cdf(z)
    return np.where(x <= 0.0, 1.0, out)


@dataclass(frozen=True)
class LengthNodes:
    """A length distribution as quadrature nodes: tokens and their probabilities (sum 1)."""

    values: np.ndarray
    weights: np.ndarray

    @classmethod
    def of(cls, dist: Any) -> LengthNodes:
        """From LengthNodes, anything with `.nodes()` (a workloads.LengthDistribution), a
        (values, weights) pair, or a number (a fixed length)."""
        if isinstance(dist, LengthNodes):
            return dist
        if hasattr(dist, "nodes"):
            values, weights = dist.nodes()
        elif isinstance(dist, tuple | list):
            values, weights = dist
        else:
            values, weights = np.array([float(dist)]), np.array([1.0])
        w = np.asarray(weights, dtype=np.float64)
        return cls(np.maximum(np.asarray(values, dtype=np.float64), 1.0), w / w.sum())

    @classmethod
    def empirical(cls, tokens: np.ndarray) -> LengthNodes:
        """Nodes of observed lengths (a trace): the midpoint quantiles of probability bands
        `EMPIRICAL_LEVELS`, finer in the tail that sets the tail latencies, each weighing its band."""
        mids = 0.5 * (EMPIRICAL_LEVELS[1:] + EMPIRICAL_LEVELS[:-1])
        values = np.quantile(np.asarray(tokens, dtype=np.float64), mids)
        return cls.of((values, np.diff(EMPIRICAL_LEVELS)))

    @property
    def mean(self) -> float:
        return float(np.sum(self.values * self.weights))

    @property
    def second_moment(self) -> float:
        return float(np.sum(self.values**2 * self.weights))


def _expect(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sum over the node axis (axis 0) of values (Q, N) weighted by weights (Q,)."""
    return np.tensordot(weights, values, axes=(0, 0))


def _interp(table: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise linear interpolation: table (G, ..., N) on _BATCH_FRACTIONS, u (N,) in [0, 1]."""
    f = _BATCH_FRACTIONS
    u = np.clip(u, 0.0, 1.0)
    i = np.clip(np.searchsorted(f, u, side="right") - 1, 0, f.size - 2)
    w = (u - f[i]) / (f[i + 1] - f[i])
    shape = (1, *table.shape[1:])
    idx = np.broadcast_to(i.reshape((1,) * (table.ndim - 1) + (-1,)), shape)
    lo = np.take_along_axis(table, idx, axis=0)[0]
    hi = np.take_along_axis(table, idx + 1, axis=0)[0]
    return lo + (hi - lo) * w


def _round_s(
    b: ConfigBatch, decodes: np.ndarray, context: float, prompt_tokens: np.ndarray, prompt_context: np.ndarray
) -> np.ndarray:
    """One round of the replica (every decode advances a token, `prompt_tokens` of one prompt
    are prefilled), with the simulator's pipeline convention PP * (stage(n / PP) + hand-off)."""
    pp = b.pp
    seqs = np.where(prompt_tokens > 0, 1.0, 0.0)
    if b.has_attention_dp:
        return _rank_round_s(b, decodes, context, prompt_tokens, prompt_context, seqs)
    stage = forward_time_s(b, decodes / pp, context, prompt_tokens / pp, prompt_context, seqs / pp).total_s
    return pp * (stage + pp_handoff_time_s(b, (decodes + prompt_tokens) / pp))


def _rank_round_s(
    b: ConfigBatch,
    decodes: np.ndarray,
    context: float,
    prompt_tokens: np.ndarray,
    prompt_context: np.ndarray,
    seqs: np.ndarray,
) -> np.ndarray:
    """`_round_s` of one attention rank of a DEP replica (rows with attention_dp 1: the replica's
    round as before): the rank decodes `decodes` sequences and prefills `prompt_tokens` of one
    prompt while the other attention_dp - 1 ranks decode as many (mean field: the ranks are
    loaded alike, their prompts at other times), so the MoE layers route
    attention_dp * decodes + prompt_tokens tokens; a step carrying prompt tokens runs the
    prefill kernels (dispatch by node, the prefill TBO fraction)."""
    pp, dp = b.pp, b.attention_dp
    moe = (dp * decodes + prompt_tokens) / pp
    args = (b, decodes / pp, context, prompt_tokens / pp, prompt_context, seqs / pp)
    mixed = forward_time_s(*args, moe_tokens=moe, prefill_phase=True).total_s
    plain = forward_time_s(*args, moe_tokens=moe).total_s
    stage = np.where(prompt_tokens > 0, mixed, plain)
    rank = pp * (stage + pp_handoff_time_s(b, (decodes + prompt_tokens) / pp))
    if np.all(dp > 1):
        return rank
    one = forward_time_s(*args).total_s  # attention_dp 1 rows of the batch: the replica's round
    return np.where(dp > 1, rank, pp * (one + pp_handoff_time_s(b, (decodes + prompt_tokens) / pp)))


# ---------------------------------------------------------------- the replica's tables


@dataclass(frozen=True)
class ReplicaTable:
    """Per configuration (last axis, N): slot limit, capacity and step times on a grid of
    decoding batches (axis 0, G = _BATCH_FRACTIONS of the slot limit) and input nodes (axis 1, Q).
    Built once per batch of configurations and workload; every load is interpolation. Under
    attention DP the table describes one attention rank (its slots, its prefill pipeline, its
    rounds beside the other ranks' decodes) and `ranks` says how many share the replica
    (`latency_at_load` pools them); `capacity_per_s` is the replica's."""

    inputs: LengthNodes
    outputs: LengthNodes
    slots: np.ndarray  # (N,) sequences a replica runs at once
    capacity_per_s: np.ndarray  # (N,) requests/s at utilization 1 (steady state at the batch cap)
    decode_s: np.ndarray  # (G, N) decode round with 1 + (slots - 1) * f sequences
    prefill_s: np.ndarray  # (G, Q, N) chunk steps of a prompt beside slots * f decodes (B)
    drain_s: np.ndarray  # (G, Q, N) pipeline drain after the last chunk
    extra_s: np.ndarray  # (G, Q, N) time the prompt's chunks add to the decode stream (delta)
    token_s: np.ndarray  # (G, N) time per prompt token of a full chunk step (backlogged prefill)
    full_s: np.ndarray  # (G, N) a full chunk step: the longest step a decoding sequence waits for
    marginal_s: np.ndarray  # (G, N) time one more prompt token adds to a full chunk step
    spare_tokens: np.ndarray  # (G, Q, N) budget a prompt's last chunk leaves to other prompts
    context: float  # time-average context of a decoding sequence (tokens)
    resident_cv2: float  # squared coefficient of variation of a running sequence's KV tokens
    ranks: np.ndarray | None = None  # (N,) attention-DP ranks, each its own queue (None: 1)

    def take(self, rows: np.ndarray) -> ReplicaTable:
        """The configurations `rows` (indices along the last axis)."""
        return ReplicaTable(**{k: (v[..., rows] if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()})

    @classmethod
    def build(cls, b: ConfigBatch, inputs: Any, outputs: Any) -> ReplicaTable:
        xin, yout = LengthNodes.of(inputs), LengthNodes.of(outputs)
        ex, ey, ey2 = xin.mean, yout.mean, yout.second_moment
        context = ex + ey2 / (2.0 * ey)
        dep = b.has_attention_dp
        dp = b.attention_dp if dep else np.ones(len(b))
        # under attention DP one rank's sequences: max_batch_size is per rank (objectives.engines)
        seqs = np.maximum(np.minimum(b.batch / dp if dep else b.batch, b.max_batch_size), 1.0)
        ctx_sched = b.isl + b.osl  # the scheduler sizes its blocks at the mean request
        per_token = kv_bytes_per_sequence_per_gpu(b, ctx_sched) / ctx_sched
        budget = kv_budget_bytes(b)
        blocks = np.where(budget > 0, np.floor(np.maximum(budget, 0.0) / np.maximum(per_token, 1e-30) / BLOCK_SIZE), 0)
        resident = context + BLOCK_SIZE / 2.0
        kv_slots = np.floor(blocks * BLOCK_SIZE * (1.0 - WATERMARK_FRACTION) / resident)
        slots = np.maximum(np.minimum(seqs, kv_slots), 1.0)
        tokens_per_step = np.maximum(b.max_num_tokens, seqs)

        f = _BATCH_FRACTIONS[:, None]
        dec_n = 1.0 + (slots - 1.0) * f  # (G, N)
        decode = decode_step_time_s(b, dec_n * dp if dep else dec_n, context).total_s  # every rank at dec_n
        n = (slots * f)[:, None, :]  # (G, 1, N) decodes beside the prompt
        x = xin.values[None, :, None]  # (1, Q, 1)
        room = np.maximum(tokens_per_step - n, 1.0)
        chunks = np.ceil(x / room)
        chunk = x / chunks
        mixed = _round_s(b, n, context, chunk, x / 2.0)  # (G, Q, N)
        plain = decode_step_time_s(b, np.broadcast_to(n * dp if dep else n, mixed.shape), context).total_s
        fill = (b.pp - 1.0) / b.pp
        n2 = slots * f
        room2 = np.maximum(tokens_per_step - n2, 1.0)
        full = _round_s(b, n2, context, room2, np.full(n2.shape, ex / 2.0))
        plain2 = decode_step_time_s(b, n2 * dp if dep else n2, context).total_s
        return cls(
            inputs=xin,
            outputs=yout,
            slots=slots,
            capacity_per_s=capacity_per_s(b),
            decode_s=decode,
            prefill_s=chunks * mixed,
            drain_s=fill * mixed,
            extra_s=np.maximum(chunks * (mixed - plain), 0.0),
            token_s=full / room2,
            full_s=np.maximum(full, plain2),
            marginal_s=np.maximum(full - plain2, 0.0) / room2,
            spare_tokens=np.maximum(room - chunk, 0.0),
            context=context,
            resident_cv2=_resident_cv2(xin, yout),
            ranks=b.attention_dp.copy() if dep else None,
        )


def _resident_cv2(xin: LengthNodes, yout: LengthNodes) -> float:
    """cv^2 of the KV tokens of a running sequence, X + U * Y (U uniform: its progress), taken
    time-weighted (a sequence is seen in proportion to Y)."""
    ey, ey2 = yout.mean, yout.second_moment
    ey3 = float(np.sum(yout.values**3 * yout.weights))
    m = xin.mean + ey2 / (2.0 * ey)
    m2 = xin.second_moment + xin.mean * ey2 / ey + ey3 / (3.0 * ey)
    return max(m2 / (m * m) - 1.0, 0.0)


def capacity_per_s(b: ConfigBatch) -> np.ndarray:
    """Requests/s one replica serves flat out: the steady state of `objectives.serving` at the
    batch cap min(batch, what fits at isl + osl), fixed mean lengths (utilization 1)."""
    fit = max_batch_that_fits(b, b.isl + b.osl)
    batch = np.clip(np.minimum(b.batch, fit), 1.0, None)
    decode = decode_step_time_s(b, batch, b.isl + b.osl / 2.0).total_s
    cycle = b.osl * decode + prefill_time_s(b, b.isl, batch).total_s
    return batch / cycle


# ---------------------------------------------------------------- latencies at a load


@dataclass(frozen=True)
class QueueingLatency:
    """Latencies of each configuration at its per-replica rate (seconds; inf when overloaded).
    `ttft_s` / `tpot_s` / `e2e_s` map a percentile to an array."""

    rate_per_s: np.ndarray  # per replica
    utilization: np.ndarray  # rate / capacity
    batch: np.ndarray  # time-average decoding sequences the load forms
    slots: np.ndarray
    prefill_utilization: np.ndarray  # rho_p of the prefill pipeline
    slot_utilization: np.ndarray
    interference: np.ndarray  # phi: share of decode-stream time taken by prefill chunks
    peakedness: np.ndarray  # variance / mean of the batch (1: Poisson)
    full_probability: np.ndarray  # share of time a burst fills the slots / KV cache
    wait_mean_s: np.ndarray
    wait_probability: np.ndarray
    ttft_mean_s: np.ndarray
    tpot_mean_s: np.ndarray
    overloaded: np.ndarray  # bool
    ttft_s: dict[float, np.ndarray]
    tpot_s: dict[float, np.ndarray]
    e2e_s: dict[float, np.ndarray]
    survival: dict[int, np.ndarray] = field(default_factory=dict)  # see latency_at_load

    def at(self, metric: str, percentile: float) -> np.ndarray:
        """`metric` (ttft / tpot / e2e) at `percentile` (one of those computed)."""
        return getattr(self, f"{metric}_s")[float(percentile)]


class _Waits:
    """A sum of independent waits, each an atom at 0 (probability 1 - pi) plus an exponential
    of mean theta (probability pi). Its survival sums, over the subsets of waits present, the
    hypoexponential survival of their exponentials (means kept 1% apart, so the partial
    fractions stay well conditioned)."""

    def __init__(self, pis: Sequence[np.ndarray], thetas: Sequence[np.ndarray]) -> None:
        self.pis = [np.clip(p, 0.0, 1.0) for p in pis]
        ts: list[np.ndarray] = []
        for i, t in enumerate(thetas):
            t = np.maximum(t, 1e-12)
            for prev in ts:
                t = np.where(np.abs(t - prev) < 0.01 * prev, prev * (1.02 + 0.01 * i), t)
            ts.append(t)
        self.thetas = ts
        self.mean = sum(p * t for p, t in zip(self.pis, ts, strict=True))
        self.var = sum(p * t * t * (2.0 - p) for p, t in zip(self.pis, ts, strict=True))
        none = np.ones_like(self.mean)
        for p in self.pis:
            none = none * (1.0 - p)
        self.probability = 1.0 - none
        self.theta_sum = sum(ts)

        # for s >= 0 the survival is sum_i amplitude_i * exp(-s / theta_i)
        k = len(self.pis)
        amps = [np.zeros_like(self.mean) for _ in range(k)]
        for mask in range(1, 1 << k):
            members = [i for i in range(k) if mask >> i & 1]
            weight = np.ones_like(self.mean)
            for i in range(k):
                weight = weight * (self.pis[i] if i in members else 1.0 - self.pis[i])
            for i in members:
                coef = weight
                for j in members:
                    if j != i:
                        coef = coef * ts[i] / (ts[i] - ts[j])
                amps[i] = amps[i] + coef
        self.amplitudes = amps

    def sf(self, s: np.ndarray) -> np.ndarray:
        """P(sum of the waits > s), elementwise; s broadcasts against (N,)."""
        z = np.maximum(s, 0.0)
        out = sum(a * np.exp(-z / t) for a, t in zip(self.amplitudes, self.thetas, strict=True))
        return np.where(s < 0.0, 1.0, np.clip(out, 0.0, 1.0))


def _bisect_quantile(survival: Any, lo: np.ndarray, hi: np.ndarray, level: float) -> np.ndarray:
    """The smallest t in [lo, hi] with survival(t) <= level (survival decreasing in t)."""
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        above = survival(mid) > level
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return hi


def latency_at_load(
    table: ReplicaTable,
    rate_per_s: np.ndarray | float,
    *,
    percentiles: Iterable[float] = (50.0, 90.0, 99.0),
    arrival_cv: np.ndarray | float = 1.0,
    metrics: Iterable[str] = ("ttft", "tpot", "e2e"),
    survival_at: Sequence[tuple[str, float]] = (),
    pooled: np.ndarray | float = 1.0,
) -> QueueingLatency:
    """TTFT, TPOT and end-to-end latency at `percentiles` of each configuration of `table`
    serving `rate_per_s` requests/s per replica with inter-arrival coefficient of variation
    `arrival_cv` (1: Poisson; gamma renewal arrivals otherwise; per configuration or one) at
    that replica. See the module docstring. Percentiles are computed for `metrics` only (the
    others' dicts stay empty). `survival_at` [(metric, seconds), ...] adds P(metric > seconds)
    per configuration (`QueueingLatency.survival`, keyed by position; 1 when overloaded): a
    percentile p of the metric is within those seconds exactly when that probability is at
    most 1 - p / 100, which checks an SLO without finding the percentile. `pooled`: replicas
    sharing a least-loaded dispatcher (`pool_size`), whose queues pool: a prompt waits only when
    every replica of its pool is backlogged, so the waits for the prefill pipeline, the slots and
    a burst that fills them are those of one queue with `pooled` times the servers, fed by the
    pool's stream (cv^2 = arrival_cv^2 * pooled, undoing `replica_arrival_cv`'s smoothing)."""
    wanted = set(metrics)
    n_cfg = table.slots.shape[0]
    lam = np.broadcast_to(np.asarray(rate_per_s, dtype=np.float64), (n_cfg,)).copy()
    lam = np.maximum(lam, 0.0)
    ca2 = np.broadcast_to(np.asarray(arrival_cv, dtype=np.float64) ** 2, (n_cfg,)).copy()
    pool = np.maximum(np.broadcast_to(np.asarray(pooled, dtype=np.float64), (n_cfg,)), 1.0)
    lam_replica = lam
    ranks = table.ranks
    if ranks is not None:
        # a DEP replica's attention ranks each schedule their own sequences; its router spreads
        # the requests over them as a least-loaded dispatcher would (the ranks' queues pool):
        # each rank sees rate / ranks, cv^2 / ranks (`replica_arrival_cv`), in a pool of
        # pooled x ranks queues
        lam, ca2, pool = lam / ranks, ca2 / ranks, pool * ranks
    ca2_pool = ca2 * pool  # the stream the pool's dispatcher splits
    xin, yout = table.inputs, table.outputs
    wx, wy = xin.weights, yout.weights
    ey = yout.mean
    slots = table.slots

    # the batch the load forms (fixed point from 0: the smallest solution)
    n = np.zeros(n_cfg)
    over = np.zeros(n_cfg, dtype=bool)
    extra_mean = _expect(table.extra_s.transpose(1, 0, 2), wx)  # (G, N)
    prefill_mean = _expect(table.prefill_s.transpose(1, 0, 2), wx)
    for _ in range(_FIXED_POINT_ITERATIONS):
        previous = n
        d_mean = _interp(extra_mean, n / slots)
        phi = lam * d_mean
        t_dec = _interp(table.decode_s, np.clip(n / np.maximum(slots - 1.0, 1e-9), 0.0, 1.0))
        gap = np.maximum(1.0 - phi, 1e-12)
        # decode time: its own steps and the prompts that queued behind its prefill (V0)
        v0 = (lam * _interp(prefill_mean, n / slots) + np.maximum(ca2 - 1.0, 0.0) / 2.0) * d_mean
        new = lam * ((ey - 1.0) * t_dec + v0) / gap
        over = (phi >= 1.0) | (new > slots)
        n = np.minimum(new, slots)
        if np.all(np.abs(n - previous) <= 1e-7 * np.maximum(n, 1.0)):
            break
    u_n = n / slots
    b_q = _interp(table.prefill_s, u_n)  # (Q, N)
    t0_q = b_q + _interp(table.drain_s, u_n)
    d_q = _interp(table.extra_s, u_n)
    t_dec = _interp(table.decode_s, np.clip(n / np.maximum(slots - 1.0, 1e-9), 0.0, 1.0))
    phi = lam * _expect(d_q, wx)
    tpot_mean = t_dec / np.maximum(1.0 - phi, 1e-12)

    # waits before the first chunk (module docstring, 4.): (a) the prefill pipeline, a GI/G/1
    # queue of prompt tokens served in full chunk steps when backlogged (a prompt's work is
    # x * token_s), or the slots, a GI/G/c queue of whole residences. A pool of replicas waits
    # with the probability of one GI/G/(pool) prefill queue and one GI/G/(pool * slots) slot
    # queue (Sakasegawa: rho^(sqrt(2 (c + 1)) - 1), = rho for c = 1) and as long as that
    # queue's backlog takes to clear, plus — having joined one replica (the least loaded), not
    # the first free server of the pool — the residual of that replica's work in progress
    tau = _interp(table.token_s, u_n)
    eb = xin.mean * tau
    rho_p = lam * eb
    cb2 = max(xin.second_moment / xin.mean**2 - 1.0, 0.0)
    pi_p = np.clip(np.power(np.clip(rho_p, 0.0, 1.0), np.sqrt(2.0 * (pool + 1.0)) - 1.0), 0.0, 1.0)
    theta_p = eb * (ca2_pool + cb2) / (2.0 * pool * np.maximum(1.0 - rho_p, 1e-12))
    theta_p = theta_p + (1.0 - 1.0 / pool) * (1.0 + cb2) / 2.0 * eb
    wait_p = pi_p * theta_p
    et0 = _expect(t0_q, wx)
    vt0 = np.maximum(_expect(t0_q**2, wx) - et0 * et0, 0.0)
    vy = max(yout.second_moment - ey * ey, 0.0)
    t_slot = et0 + (ey - 1.0) * tpot_mean
    cs2 = (vt0 + vy * tpot_mean**2) / np.maximum(t_slot**2, 1e-300)
    rho_s = lam * t_slot / slots
    # The batch is overdispersed: a burst of arrivals slows every decode (more prefill, a larger
    # batch), so sequences pile up. Linearized, n relaxes S times slower than a residence,
    # S = 1 / ((1 - phi) (1 - eps)) with eps the elasticity of the decode step in the batch,
    # while arrivals and departures drive it (variance rate (ca^2 + 1) * rate): an
    # Ornstein-Uhlenbeck batch of variance z * n, peakedness z = S (ca^2 + 1) / 2; the fitted
    # PEAKEDNESS_EXPONENT (z = S^k (ca^2 + 1) / 2) corrects the linearization.
    # (b) the slots see that peaked traffic: besides the GI/G/c wait of Poisson-like occupancy,
    # an arrival waits when a burst fills them — occupancy N ~ gamma(a, z a), the overflow
    # E[(N - slots)+] drains at slots / t_slot departures per second.
    gap = np.maximum(1.0 - phi, 1e-12)
    u_up = np.clip((n + 1.0) / np.maximum(slots - 1.0, 1e-9), 0.0, 1.0)
    eps = np.clip((_interp(table.decode_s, u_up) - t_dec) * n / np.maximum(t_dec, 1e-300), 0.0, 0.9)
    peak = np.clip((ca2 + 1.0) / 2.0 / (gap * (1.0 - eps)) ** PEAKEDNESS_EXPONENT, 1.0, _MAX_PEAKEDNESS)
    servers = pool * slots  # the slots of the pool
    pi_s = np.clip(np.power(np.clip(rho_s, 0.0, 1.0), np.sqrt(2.0 * (servers + 1.0)) - 1.0), 0.0, 1.0)
    theta_s = (ca2_pool + cs2) / 2.0 * t_slot / (servers * np.maximum(1.0 - rho_s, 1e-12))
    theta_s = theta_s + (1.0 - 1.0 / pool) * (1.0 + cs2) / 2.0 * t_slot / slots
    # the pool's occupancy: its replicas' batches summed, driven by the pool's stream
    occupancy = np.maximum(pool * lam * t_slot, 1e-12)
    peak_pool = np.where(
        pool > 1.0,
        np.clip((ca2_pool + 1.0) / 2.0 / (gap * (1.0 - eps)) ** PEAKEDNESS_EXPONENT, 1.0, _MAX_PEAKEDNESS),
        peak,
    )
    # in KV-cache terms each sequence holds a variable number of tokens: add their cv^2
    scale = peak_pool + table.resident_cv2  # gamma occupancy: variance scale * mean, right-skewed
    p_full = gamma_sf(servers, occupancy, scale * occupancy)
    above = gamma_sf(servers, occupancy + scale, scale * (occupancy + scale))  # shape + 1
    overflow = np.maximum(occupancy * above - servers * p_full, 0.0)  # E[(N - slots)+]
    pi_b = np.where(p_full > 1e-9, np.clip(p_full, 0.0, 1.0), 0.0)
    excess = np.clip(overflow / np.maximum(p_full, 1e-300), 0.0, 3.0 * scale)  # E[N - slots | full]
    theta_b = np.maximum(excess * t_slot / servers, 1e-12)
    # the queue before a prompt: the prefill pipeline's, or the GI/G/c slots' where larger (few
    # slots: the slot's service then contains the prefill)
    slot_bound = pi_s * theta_s > wait_p
    pi_q = np.where(slot_bound, pi_s, pi_p)
    theta_q = np.maximum(np.where(slot_bound, theta_s, theta_p), 1e-12)
    over = over | (rho_p >= 1.0) | (rho_s >= 1.0)
    # (c) the step in progress: an arrival that finds steps running (probability `busy`) waits
    # for the next step (the residual of a length-biased step) and shares that step with the
    # prompts arriving meanwhile (as far as its last chunk leaves budget), an exponential too
    step_mixed = _expect(b_q, wx)  # a prompt's own chunk steps
    share_mixed = np.clip(lam * step_mixed, 0.0, 1.0)  # time share of steps carrying a prompt
    step2 = share_mixed * _expect(b_q**2, wx) / np.maximum(step_mixed, 1e-300) + (1.0 - share_mixed) * t_dec
    busy = 1.0 - np.exp(-(n + lam * step_mixed))
    # renewal arrivals: an arrival is followed at once by (ca^2 - 1) / 2 more than the rate says
    # (E[N(t)] ~ rate t + (ca^2 - 1) / 2 from an arrival epoch): burst-mates share its step and
    # queue behind it
    mates = np.maximum(ca2 - 1.0, 0.0) / 2.0
    cobatched = np.minimum(xin.mean * (lam * step2 + mates), _interp(table.spare_tokens, u_n))  # (Q, N)
    cobatched_s = _expect(cobatched, wx) * _interp(table.marginal_s, u_n)
    pi_r = busy
    theta_r = np.maximum(step2 / 2.0 + cobatched_s, 1e-12)
    waits = _Waits((pi_q, pi_b, pi_r), (theta_q, theta_b, theta_r))
    wait_mean, wait_var = waits.mean, waits.var
    wait_sf = waits.sf

    # TPOT: a request of y tokens needs w0 = (y - 1) * t_decode of decode steps. The prompts that
    # arrived during its own wait and prefill are queued when it starts (work V0), and those
    # arriving meanwhile insert their delta(X), as do those arriving during the insertions: its
    # decode lasts the busy period of an M/G/1 queue started by w0 + V0 (mean (w0 + V0) /
    # (1 - phi), variance (w0 + V0) * rate * (Var delta + ca^2 E[delta]^2) / (1 - phi)^3), an
    # atom at w0 when no prompt comes. The overdispersed batch (variance z * n) moves the decode
    # step by sd_dec.
    y = yout.values[:, None]  # (Qy, 1)
    wy_ok = np.where(yout.values >= 1.5, wy, 0.0)
    wy_ok = wy_ok / wy_ok.sum() if wy_ok.sum() > 0 else wy
    steps = np.maximum(y - 1.0, 1.0)
    w0 = steps * t_dec  # (Qy, N)
    md = _expect(d_q, wx)
    vd = np.maximum(_expect(d_q**2, wx) - md * md, 0.0)
    sojourn = wait_mean + et0
    behind = lam * sojourn + mates  # prompts queued behind its prefill
    v0m = behind * md
    v0v = behind * (vd + ca2 * md * md) + (lam * md) ** 2 * (wait_var + vt0)
    mu = lam * (w0 + sojourn)
    bursty = ca2 > 1.0 + 1e-9  # negative binomial counts; Poisson (cv <= 1: conservative)
    p0 = np.where(
        bursty, np.power(np.where(bursty, 1.0 / ca2, 1.0), mu / np.where(bursty, ca2 - 1.0, 1.0)), np.exp(-mu)
    )
    e1 = (w0 * phi + v0m) / gap
    var = (w0 + v0m) * lam * (vd + ca2 * md * md) / gap**3 + v0v / gap**2
    sd_n = np.sqrt(peak * n)  # the overdispersed batch (see the slots above)
    u_dec = np.clip((n + sd_n) / np.maximum(slots - 1.0, 1e-9), 0.0, 1.0)
    sd_dec = np.maximum(_interp(table.decode_s, u_dec) - t_dec, 1e-12 * t_dec)
    hit = np.maximum(1.0 - p0, 1e-300)
    m_c = e1 / hit
    v_c = np.maximum((var + e1 * e1) / hit - m_c * m_c, 1e-30 * m_c * m_c + 1e-300) + (sd_dec * steps / gap) ** 2
    # a decoding sequence advances a token every step, and no step is longer than a full chunk
    # step: the extra time is at most steps * (t_full - t_decode), which bounds its mean and
    # (Bhatia-Davis) its variance by mean * (bound - mean)
    t_full = _interp(table.full_s, u_n)
    bound = steps * np.maximum(t_full - t_dec, 1e-12)
    m_c = np.minimum(m_c, 0.99 * bound)
    v_c = np.clip(v_c, 1e-30 * m_c * m_c + 1e-300, np.maximum(m_c * (bound - m_c), 1e-30 * m_c * m_c + 1e-300))

    def tpot_sf(t: np.ndarray) -> np.ndarray:
        none = 1.0 - norm_cdf((t - t_dec) / sd_dec)
        some = gamma_sf((t - t_dec) * steps, m_c, v_c)
        out = np.tensordot(wy_ok, p0 * none + (1.0 - p0) * some, axes=(0, 0))
        return np.where(t >= t_full + sd_dec, 0.0, out)

    inf = np.where(over, np.inf, 1.0)
    ttft_out: dict[float, np.ndarray] = {}
    tpot_out: dict[float, np.ndarray] = {}
    e2e_out: dict[float, np.ndarray] = {}
    base = et0 + (y - 1.0) * tpot_mean  # (Qy, N)

    def ttft_sf(t: np.ndarray) -> np.ndarray:
        return _expect(wait_sf(t[None, :] - t0_q), wx)

    def e2e_sf(t: np.ndarray) -> np.ndarray:
        return _expect(wait_sf(t[None, :] - base), wy)

    for p in percentiles:
        p = float(p)
        level = 1.0 - p / 100.0
        hi_w = waits.theta_sum * (np.log(1.0 / max(level, 1e-12)) + 1.0)
        zero = np.zeros(n_cfg)
        if "ttft" in wanted:
            ttft_out[p] = _bisect_quantile(ttft_sf, zero, np.max(t0_q, axis=0) + hi_w, level) * inf
        if "tpot" in wanted:
            hi_t = t_dec + 6.0 * sd_dec + np.max((m_c + 8.0 * np.sqrt(v_c)) / steps, axis=0)
            tpot_out[p] = _bisect_quantile(tpot_sf, zero, hi_t, level) * inf
        if "e2e" in wanted:
            e2e_out[p] = _bisect_quantile(e2e_sf, zero, np.max(base, axis=0) + hi_w, level) * inf
    survival_fn = {"ttft": ttft_sf, "tpot": tpot_sf, "e2e": e2e_sf}
    survival = {
        k: np.where(over, 1.0, survival_fn[metric](np.full(n_cfg, float(max_s))))
        for k, (metric, max_s) in enumerate(survival_at)
    }
    per_replica = 1.0 if ranks is None else ranks
    return QueueingLatency(
        rate_per_s=lam_replica,
        utilization=lam_replica / table.capacity_per_s,
        batch=n * per_replica,
        slots=slots * per_replica,
        prefill_utilization=rho_p,
        slot_utilization=rho_s,
        interference=phi,
        peakedness=peak,
        full_probability=pi_b,
        wait_mean_s=wait_mean * inf,
        wait_probability=waits.probability,
        ttft_mean_s=(wait_mean + et0) * inf,
        tpot_mean_s=tpot_mean * inf,
        overloaded=over,
        ttft_s=ttft_out,
        tpot_s=tpot_out,
        e2e_s=e2e_out,
        survival=survival,
    )


def queueing_latency(
    b: ConfigBatch,
    rate_per_s: np.ndarray | float,
    inputs: Any,
    outputs: Any,
    *,
    percentiles: Iterable[float] = (50.0, 90.0, 99.0),
    arrival_cv: np.ndarray | float = 1.0,
    pooled: np.ndarray | float = 1.0,
) -> QueueingLatency:
    """`latency_at_load` for configurations `b` (built in chunks of _CHUNK_CONFIGS): inputs and
    outputs are length distributions (anything `LengthNodes.of` takes); `rate_per_s` and
    `arrival_cv` are one replica's (see `replica_arrival_cv` for a replica of a fleet), `pooled`
    the replicas sharing its least-loaded dispatcher (`pool_size`)."""
    pcts = tuple(float(p) for p in percentiles)
    lam = np.broadcast_to(np.asarray(rate_per_s, dtype=np.float64), (len(b),))
    cvs = np.broadcast_to(np.asarray(arrival_cv, dtype=np.float64), (len(b),))
    pools = np.broadcast_to(np.asarray(pooled, dtype=np.float64), (len(b),))
    parts = []
    for start in range(0, len(b), _CHUNK_CONFIGS):
        rows = slice(start, min(len(b), start + _CHUNK_CONFIGS))
        table = ReplicaTable.build(b.take(rows), inputs, outputs)
        parts.append(latency_at_load(table, lam[rows], percentiles=pcts, arrival_cv=cvs[rows], pooled=pools[rows]))
    return _concat(parts)


def _concat(parts: Sequence[QueueingLatency]) -> QueueingLatency:
    if len(parts) == 1:
        return parts[0]
    out: dict[str, Any] = {}
    for key, value in parts[0].__dict__.items():
        if isinstance(value, dict):
            out[key] = {p: np.concatenate([getattr(q, key)[p] for q in parts]) for p in value}
        else:
            out[key] = np.concatenate([getattr(q, key) for q in parts])
    return QueueingLatency(**out)


# ---------------------------------------------------------------- headroom: replicas for the SLOs


def slo_triple(slo: Any) -> tuple[str, float, float]:
    """(metric, max_s, percentile) of an SLO object (metric / max_s / percentile attributes)
    or a (metric, max_s[, percentile]) tuple; the percentile defaults to 50."""
    if isinstance(slo, tuple | list):
        metric, max_s, *rest = slo
        return str(metric), float(max_s), float(rest[0]) if rest else 50.0
    return str(slo.metric), float(slo.max_s), float(getattr(slo, "percentile", 50.0))


def default_target_utilization(slos: Iterable[Any] = ()) -> float:
    """The utilization cap when the spec names none: DEFAULT_TARGET_UTILIZATION (0.8). The SLO
    percentiles then lower it per configuration through the latency model (`size_replicas`),
    so the default is the SLO's own limit, never above 0.8."""
    del slos  # the percentiles act through max_utilization, not through the cap
    return DEFAULT_TARGET_UTILIZATION


def interarrival_cv(arrival_s: np.ndarray) -> float:
    """Coefficient of variation of the gaps between sorted arrival times (1: too few to tell)."""
    gaps = np.diff(np.sort(np.asarray(arrival_s, dtype=np.float64)))
    mean = float(np.mean(gaps)) if gaps.size > 1 else 0.0
    return float(np.std(gaps) / mean) if mean > 0 else 1.0


def pool_size(
    replicas: np.ndarray | float, dispatch: Dispatch = DEFAULT_DISPATCH, group: float | None = None
) -> np.ndarray:
    """Replicas whose queues pool (`latency_at_load`'s `pooled`): with `least_loaded` dispatch a
    request goes to the replica with the fewest outstanding, so it waits only when all of them
    are busy — the whole fleet, or its groups of `group` (the simulator evaluator replays fleets
    as groups of `simulation.max_replicas`); round robin and random dispatch pool nothing (1)."""
    r = np.maximum(np.asarray(replicas, dtype=np.float64), 1.0)
    if dispatch != "least_loaded":
        return np.ones_like(r)
    return np.minimum(r, max(float(group), 1.0)) if group is not None else r


def replica_arrival_cv(
    arrival_cv: float,
    replicas: np.ndarray | float,
    dispatch: Dispatch = DEFAULT_DISPATCH,
    group: float | None = None,
) -> np.ndarray:
    """Inter-arrival cv at one of `replicas` replicas fed a renewal stream of cv `arrival_cv`,
    the dispatcher balancing over groups of at most `group` replicas (None: all of them; the
    simulator evaluator replays fleets as groups of `simulation.max_replicas`).
    `random`: Bernoulli thinning, cv^2 = 1 + (cv^2 - 1) / R (Poisson stays Poisson);
    `round_robin`: every R-th arrival, a sum of R inter-arrival times, cv^2 = cv^2 / R;
    `least_loaded` (the simulator's default: fewest requests outstanding) is taken as round
    robin. Checked on a Llama-3.3-70B RAG fleet of 18-48 H200 TP2 replicas at 20 requests/s:
    the simulator's p99 TTFT with least-loaded dispatch is 3-18% above round robin's, and this
    model (cv^2 / R) is 2-23% above least-loaded's (a random split: 44-152% above)."""
    r = np.maximum(np.asarray(replicas, dtype=np.float64), 1.0)
    if group is not None:
        r = np.minimum(r, max(float(group), 1.0))
    c2 = float(arrival_cv) ** 2
    if dispatch == "random":
        return np.sqrt(1.0 + (c2 - 1.0) / r)
    if dispatch in ("round_robin", "least_loaded"):
        return np.sqrt(c2 / r)
    raise ValueError(f"unknown dispatch {dispatch!r}; use random, round_robin or least_loaded")


def max_utilization(
    table: ReplicaTable,
    slos: Sequence[Any],
    *,
    target_utilization: float | None = None,
    arrival_cv: float = 1.0,
    fleet_rate_per_s: np.ndarray | float | None = None,
    dispatch: Dispatch = DEFAULT_DISPATCH,
    dispatch_group: float | None = None,
    iterations: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """The largest utilization u <= target_utilization (default `default_target_utilization`)
    at which every SLO's latency percentile holds (latencies grow with the load, so bisection);
    and whether the SLOs hold at all (False where even an idle replica misses them — more
    replicas cannot help; u is then the cap). Arrays per configuration. With the fleet's rate
    `fleet_rate_per_s`, each replica's arrivals are those `dispatch` gives one of the
    rate / (u * capacity) replicas (`replica_arrival_cv`); without it, a stream of cv
    `arrival_cv`."""
    cap = float(default_target_utilization(slos) if target_utilization is None else target_utilization)
    if not 0.0 < cap <= 1.0:
        raise ValueError(f"target_utilization must be in (0, 1], got {cap}")
    triples = [slo_triple(s) for s in slos]
    n_cfg = table.slots.shape[0]
    if not triples:
        return np.full(n_cfg, cap), np.ones(n_cfg, dtype=bool)
    fleet = None if fleet_rate_per_s is None else np.broadcast_to(np.asarray(fleet_rate_per_s, np.float64), (n_cfg,))

    checks = [(metric, max_s) for metric, max_s, _ in triples]

    def meets(tab: ReplicaTable, fleet: np.ndarray | None, u: np.ndarray) -> np.ndarray:
        per = u * tab.capacity_per_s
        cv: np.ndarray | float = arrival_cv
        pooled: np.ndarray | float = 1.0
        if fleet is not None:
            replicas = np.maximum(np.ceil(fleet / per - 1e-9), 1.0)
            cv = replica_arrival_cv(arrival_cv, replicas, dispatch, dispatch_group)
            pooled = pool_size(replicas, dispatch, dispatch_group)
        # each SLO by its survival at the target: P(latency > max_s) <= 1 - p / 100
        lat = latency_at_load(tab, per, percentiles=(), arrival_cv=cv, metrics=(), survival_at=checks, pooled=pooled)
        ok = ~lat.overloaded
        for k, (_, _, p) in enumerate(triples):
            ok &= lat.survival[k] <= 1.0 - p / 100.0 + _SURVIVAL_TOLERANCE
        return ok

    at_cap = meets(table, fleet, np.full(n_cfg, cap))
    u = np.full(n_cfg, cap)
    attainable = at_cap.copy()
    rest = np.flatnonzero(~at_cap)  # only these need the bisection
    if rest.size:
        sub, sub_fleet = table.take(rest), None if fleet is None else fleet[rest]
        floor = cap * 1e-3
        idle_ok = meets(sub, sub_fleet, np.full(rest.size, floor))
        attainable[rest] = idle_ok
        lo = bisect_utilization(lambda x: meets(sub, sub_fleet, x), cap, rest.size, iterations)
        u[rest] = np.where(idle_ok, lo, cap)
    return u, attainable


def bisect_utilization(
    holds: Any, cap: float, n: int, iterations: int = 10, bad: np.ndarray | None = None
) -> np.ndarray:
    """The largest utilization in [cap / 1000, cap] at which `holds(u)` (an array of n bools,
    true below wherever it is true: latencies grow with the load) is true, per row, to
    cap / 2**iterations; rows in `bad` (default: all) are bisected, the others keep `cap`; a row
    where it never holds ends at the floor cap / 1000."""
    bad = np.ones(n, dtype=bool) if bad is None else np.asarray(bad, dtype=bool)
    lo, hi = np.full(n, cap * 1e-3), np.full(n, float(cap))
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        ok = holds(mid)
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid)
    return np.where(bad, lo, float(cap))


@dataclass(frozen=True)
class Headroom:
    """Replicas sized for a rate with headroom, per configuration."""

    replicas: np.ndarray
    utilization: np.ndarray  # each replica's rate / capacity, as deployed
    max_utilization: np.ndarray  # the largest meeting the SLOs (<= the target utilization)
    slo_attainable: np.ndarray  # bool: an idle replica meets the SLOs
    rate_per_replica_per_s: np.ndarray
    latency: QueueingLatency  # at the deployed per-replica rate


def size_replicas(
    b: ConfigBatch,
    rate_per_s: float | np.ndarray,
    inputs: Any,
    outputs: Any,
    *,
    slos: Sequence[Any] = (),
    target_utilization: float | None = None,
    arrival_cv: float = 1.0,
    dispatch: Dispatch = DEFAULT_DISPATCH,
    dispatch_group: float | None = None,
    percentiles: Iterable[float] = (50.0, 90.0, 99.0),
) -> Headroom:
    """Replicas so that every SLO percentile holds at `rate_per_s` (the whole fleet's rate,
    inter-arrival cv `arrival_cv`, split over the replicas — or groups of `dispatch_group` —
    by `dispatch`):
    ceil(rate / (u * capacity)) with u = `max_utilization`, at least one; where the SLOs cannot
    hold at any load the fleet is sized at the target utilization (and its latencies say so)."""
    pcts = sorted({float(p) for p in percentiles} | {slo_triple(s)[2] for s in slos})
    rate = np.broadcast_to(np.asarray(rate_per_s, dtype=np.float64), (len(b),))
    parts: list[tuple[np.ndarray, ...]] = []
    lats: list[QueueingLatency] = []
    for start in range(0, len(b), _CHUNK_CONFIGS):
        rows = slice(start, min(len(b), start + _CHUNK_CONFIGS))
        table = ReplicaTable.build(b.take(rows), inputs, outputs)
        u, ok = max_utilization(
            table,
            slos,
            target_utilization=target_utilization,
            arrival_cv=arrival_cv,
            fleet_rate_per_s=rate[rows],
            dispatch=dispatch,
            dispatch_group=dispatch_group,
        )
        cap = table.capacity_per_s
        replicas = np.maximum(np.ceil(rate[rows] / (u * cap) - 1e-9), 1.0)
        per = rate[rows] / replicas
        cv = replica_arrival_cv(arrival_cv, replicas, dispatch, dispatch_group)
        pooled = pool_size(replicas, dispatch, dispatch_group)
        lats.append(latency_at_load(table, per, percentiles=pcts, arrival_cv=cv, pooled=pooled))
        parts.append((replicas, per / cap, u, ok, per))
    cols = [np.concatenate([p[i] for p in parts]) for i in range(5)]
    return Headroom(
        replicas=cols[0],
        utilization=cols[1],
        max_utilization=cols[2],
        slo_attainable=cols[3].astype(bool),
        rate_per_replica_per_s=cols[4],
        latency=_concat(lats),
    )
