"""Disaggregated prefill / decode: x prefill replicas and y decode replicas, each pool with its
own GPU type and parallelism, the KV cache of every prompt moved from one to the other.

A request is prefilled on a prefill replica (its first token comes from there), its KV cache
goes over the link to a decode replica, which decodes the other tokens. Neither pool runs the
other's phase, so prefill never stalls decodes and decodes never share a step with a prompt.

Per configuration (arrays; `evaluate_disaggregated`):

- KV transfer of a prompt of x tokens (`kv_transfer_time_s`): every GPU of the prefill replica
  sends its share of the cache and every GPU of the decode replica receives its share, each over
  its own link, so  t_kv = alpha + max(send bytes per GPU, receive bytes per GPU) / (bw * eff),
  bytes from `objectives.memory.kv_bytes_per_sequence_per_gpu` of each pool at x tokens. The link
  (`kv_link_for`): NVLink (the catalog's scale-up bandwidth) when both pools sit in one scale-up
  domain of one GPU type, else the per-GPU scale-out NIC of the catalog (InfiniBand / RoCE / EFA:
  RDMA at its line rate), or Ethernet without RDMA (TCP: a node moves at most
  `tcp_node_bytes_per_s`, shared by its GPUs). Efficiency and alpha: data/disaggregation.yaml.
- Decode pool: each replica runs at most B sequences, B = the batch limit, lowered to what the KV
  cache holds at isl + osl and to the largest batch whose decode step meets the TPOT target
  (`decode_batch_for_tpot`): the TPOT target sets the batch. A request stays Y steps (the step
  that admits its transferred cache and Y - 1 decodes); by Little's law a replica at rate r holds
  n = r * E[Y] * t(1 + n) sequences. TPOT = t(1 + n) (no prefill interference); its percentile
  mixes over the output lengths a normal of the batch averaged over the request's life (the
  batch an Ornstein-Uhlenbeck process of variance z * n, z = (ca^2 + 1) / 2, relaxing over a
  residence E[Y] * t), never above t(B). A sequence waits for a slot as in a GI/G/c queue of the
  pool's y * B slots (Sakasegawa / Allen-Cunneen, as `objectives.queueing`), plus half a step
  for the next step boundary. Replicas: ceil(rate / (u * capacity)), u the largest utilization
  <= the target (0.8) at which the TPOT percentile holds.
- Prefill pool: a replica is `objectives.queueing`'s replica with one-token outputs (only
  prefill chunks run, up to `max_num_tokens` tokens a step): its TTFT percentiles (queue +
  prefill) come from `queueing.latency_at_load`, and replicas are sized so that
  TTFT_prefill(p) + t_kv(x_p) + the decode admission stays within the TTFT SLO (x_p: the p-th
  percentile prompt), at most at the target utilization.
- TTFT(p) = prefill-pool TTFT(p) + t_kv(x_p) + decode admission wait; end-to-end(p) = mean TTFT
  + (y_p - 1) * TPOT mean (y_p: the p-th percentile output).
- Fleet: cost = x * GPUs_p * price_p + y * GPUs_d * price_d per hour; capacity = min(x * cap_p,
  y * cap_d) requests/s, so x : y is what makes the two rates match; without an arrival rate
  (offline) the ratio is the one of up to MAX_OFFLINE_REPLICAS replicas a pool giving the most
  output tokens/s per GPU.

Pure numpy; `objectives.simulator.simulate_disaggregated` replays the same two pools.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import yaml

from objectives import queueing
from objectives.accelerators import Accelerator
from objectives.batch import ConfigBatch
from objectives.memory import kv_bytes_per_sequence_per_gpu, max_batch_that_fits, memory_per_gpu_bytes
from objectives.memory import weight_bytes_per_gpu as _weights_per_gpu
from objectives.serving import BOUNDS, REASONS, structural_reason
from objectives.timing import decode_step_time_s, prefill_time_s

KV_LINKS = ("auto", "nvlink", "infiniband", "ethernet")
LINK_NAMES = ("nvlink", "infiniband", "ethernet")  # link_code indexes these
MAX_OFFLINE_REPLICAS = 8
_GRID = np.array([0.0, 1 / 64, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1.0])
_UTILIZATION_BISECTIONS = 10
NO_LINK_REASON = "no scale-out bandwidth in the catalog for the KV transfer between the pools"


@functools.cache
def link_defaults() -> dict[str, float]:
    """The KV-transfer constants of data/disaggregation.yaml (values only; the file has sources)."""
    text = resources.files("objectives").joinpath("data/disaggregation.yaml").read_text()
    return {k: float(v["value"]) for k, v in yaml.safe_load(text).items()}


@dataclass(frozen=True)
class KVLink:
    """The link a prompt's KV cache crosses, per GPU per direction."""

    name: str  # nvlink, infiniband or ethernet
    bytes_per_s: float  # line rate per GPU (NaN: unknown)
    efficiency: float
    latency_s: float

    @property
    def code(self) -> int:
        return LINK_NAMES.index(self.name)


def kv_link_for(
    prefill_gpu: Accelerator,
    decode_gpu: Accelerator,
    kind: str,
    *,
    one_domain: bool,
    override_bytes_per_s: float | None = None,
) -> KVLink:
    """The link of `kind` (auto, nvlink, infiniband, ethernet) between a prefill and a decode
    replica. auto: NVLink when both pools are of one GPU type and fit one scale-up domain
    (`one_domain`), else the scale-out NIC (RDMA). nvlink between two GPU types or beyond one
    domain is not possible: the scale-out NIC is used. `override_bytes_per_s` replaces the line
    rate (a network the catalog does not describe)."""
    if kind not in KV_LINKS:
        raise ValueError(f"unknown kv_link {kind!r}; use one of {', '.join(KV_LINKS)}")
    d = link_defaults()
    same = prefill_gpu.id == decode_gpu.id
    if kind in ("auto", "nvlink") and same and one_domain:
        bw = override_bytes_per_s or prefill_gpu.scaleup_bw_bytes_per_s
        return KVLink("nvlink", float(bw), d["nvlink_efficiency"], d["rdma_latency_s"])
    outs = [g.scaleout_bw_bytes_per_s for g in (prefill_gpu, decode_gpu)]
    line = float(override_bytes_per_s) if override_bytes_per_s else (min(outs) if all(outs) else float("nan"))  # type: ignore[type-var]
    if kind == "ethernet":
        per_node = max(min(prefill_gpu.gpus_per_node, decode_gpu.gpus_per_node), 1)
        tcp = d["tcp_node_bytes_per_s"] / per_node
        return KVLink("ethernet", min(line, tcp) if np.isfinite(line) else tcp, 1.0, d["rdma_latency_s"])
    return KVLink("infiniband", line, d["rdma_efficiency"], d["rdma_latency_s"])


def kv_transfer_time_s(
    bp: ConfigBatch,
    bd: ConfigBatch,
    prompt_tokens: np.ndarray | float,
    bytes_per_s: np.ndarray | float,
    efficiency: np.ndarray | float,
    latency_s: np.ndarray | float,
) -> np.ndarray:
    """Seconds to move the KV cache of a prompt of `prompt_tokens` from a prefill replica (`bp`)
    to a decode replica (`bd`): latency + max(bytes one prefill GPU sends, bytes one decode GPU
    receives) / (bytes_per_s * efficiency) — each GPU on its own link, all in parallel."""
    x = np.asarray(prompt_tokens, dtype=np.float64)
    send = kv_bytes_per_sequence_per_gpu(bp, x)
    recv = kv_bytes_per_sequence_per_gpu(bd, x)
    return np.asarray(latency_s) + np.maximum(send, recv) / (np.asarray(bytes_per_s) * np.asarray(efficiency))


def decode_context(inputs: queueing.LengthNodes, outputs: queueing.LengthNodes) -> float:
    """Time-average context of a decoding sequence: E[X] + E[Y^2] / (2 E[Y])."""
    return inputs.mean + outputs.second_moment / (2.0 * outputs.mean)


def decode_batch_for_tpot(bd: ConfigBatch, cap: np.ndarray, tpot_s: float | None, context: float) -> np.ndarray:
    """The largest batch <= `cap` whose decode step at `context` is at most `tpot_s` (the cap
    without a target; 1 where even one sequence is slower: the TPOT target cannot be met)."""
    cap = np.maximum(np.floor(cap), 1.0)
    if tpot_s is None:
        return cap
    ok_cap = decode_step_time_s(bd, cap, context).total_s <= tpot_s
    lo, hi = np.ones_like(cap), cap.copy()
    for _ in range(int(np.ceil(np.log2(max(float(np.max(cap)), 2.0)))) + 1):
        mid = np.floor(0.5 * (lo + hi))
        ok = decode_step_time_s(bd, mid, context).total_s <= tpot_s
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid)
    return np.where(ok_cap, cap, lo)


def quantile_of(nodes: queueing.LengthNodes, p: float) -> float:
    """The p-th percentile of a length distribution given as quadrature nodes."""
    order = np.argsort(nodes.values)
    v, w = nodes.values[order], nodes.weights[order]
    if v.size == 1:
        return float(v[0])
    mid = np.cumsum(w) - w / 2.0  # each node's weight centred on it; the CDF linear between
    return float(np.interp(p / 100.0, mid, v))


# ---------------------------------------------------------------- the decode pool


@dataclass(frozen=True)
class DecodeTable:
    """Decode steps of each configuration (last axis) on a grid of batches 1 + (B - 1) * f."""

    batch_cap: np.ndarray  # (N,) B
    step_s: np.ndarray  # (G, N)
    context: float

    @classmethod
    def build(cls, bd: ConfigBatch, batch_cap: np.ndarray, context: float) -> DecodeTable:
        n = 1.0 + (batch_cap - 1.0) * _GRID[:, None]
        return cls(batch_cap, decode_step_time_s(bd, n, context).total_s, context)

    def step(self, batch: np.ndarray) -> np.ndarray:
        """Decode step with `batch` sequences (interpolated; clipped to 1..B)."""
        u = np.clip((batch - 1.0) / np.maximum(self.batch_cap - 1.0, 1e-9), 0.0, 1.0)
        return queueing._interp(self.step_s, u)

    @property
    def full_s(self) -> np.ndarray:
        return self.step_s[-1]

    def capacity_per_s(self, mean_output: float) -> np.ndarray:
        """Requests/s a replica serves with all B slots busy (each request stays E[Y] steps)."""
        return self.batch_cap / (mean_output * self.full_s)


@dataclass(frozen=True)
class DecodeLoad:
    batch: np.ndarray  # time-average sequences per replica
    tpot_mean_s: np.ndarray
    tpot_s: dict[float, np.ndarray]
    admission_s: np.ndarray  # mean wait for a slot and the next step boundary
    overloaded: np.ndarray


def decode_at_load(
    table: DecodeTable,
    rate_per_s: np.ndarray,
    outputs: queueing.LengthNodes,
    *,
    percentiles: Sequence[float],
    arrival_cv: np.ndarray | float = 1.0,
    pooled: np.ndarray | float = 1.0,
) -> DecodeLoad:
    """TPOT (mean and at `percentiles`) and the admission wait of decode replicas each fed
    `rate_per_s` requests/s (module docstring)."""
    lam = np.maximum(np.asarray(rate_per_s, dtype=np.float64), 0.0)
    cap = table.batch_cap
    ey = outputs.mean
    n = np.zeros_like(lam)
    for _ in range(60):
        new = lam * ey * table.step(np.minimum(n + 1.0, cap))
        if np.all(np.abs(new - n) <= 1e-7 * np.maximum(new, 1.0)):
            n = new
            break
        n = new
    over = n >= cap
    n = np.minimum(n, cap)
    seen = np.minimum(n + 1.0, cap)
    t = table.step(seen)
    slope = np.maximum(table.step(np.minimum(seen + 1.0, cap)) - t, 0.0)
    ca2 = np.broadcast_to(np.asarray(arrival_cv, dtype=np.float64) ** 2, lam.shape)
    z = (ca2 + 1.0) / 2.0
    residence = np.maximum(ey * t, 1e-12)
    y = outputs.values[:, None]
    w = np.where(outputs.values >= 1.5, outputs.weights, 0.0)
    w = w / w.sum() if w.sum() > 0 else outputs.weights
    s = np.maximum((y - 1.0) * t / residence, 1e-9)
    averaging = 2.0 * (s - 1.0 + np.exp(-s)) / (s * s)  # OU variance of a window's mean / var
    sd = np.maximum(slope * np.sqrt(z * n * averaging), 1e-9 * t)  # (Qy, N)
    top = table.full_s
    tpot: dict[float, np.ndarray] = {}
    inf = np.where(over, np.inf, 1.0)
    for p in percentiles:
        level = 1.0 - float(p) / 100.0

        def sf(x: np.ndarray) -> np.ndarray:
            out = np.tensordot(w, 1.0 - queueing.norm_cdf((x[None, :] - t) / sd), axes=(0, 0))
            return np.where(x >= top, 0.0, out)

        hi = np.maximum(top, t + 8.0 * np.max(sd, axis=0))
        tpot[float(p)] = np.minimum(queueing._bisect_quantile(sf, np.zeros_like(t), hi, level), top) * inf
    # a slot: GI/G/c over the pool's slots, service = a residence
    pool = np.maximum(np.broadcast_to(np.asarray(pooled, dtype=np.float64), lam.shape), 1.0)
    servers = pool * cap
    rho = lam * residence / cap
    cs2 = max(outputs.second_moment / ey**2 - 1.0, 0.0)
    pi = np.power(np.clip(rho, 0.0, 1.0), np.sqrt(2.0 * (servers + 1.0)) - 1.0)
    theta = (ca2 * pool + cs2) / 2.0 * residence / (servers * np.maximum(1.0 - rho, 1e-12))
    admission = pi * theta + 0.5 * t
    over = over | (rho >= 1.0)
    return DecodeLoad(n, t * inf, tpot, admission * inf, over)


# ---------------------------------------------------------------- both pools


@dataclass(frozen=True)
class DisaggregatedMetrics:
    """Metrics per configuration (arrays; seconds, bytes); latencies at percentiles in dicts."""

    feasible: np.ndarray
    prefill_reason_code: np.ndarray  # index into objectives.serving.REASONS (prefill pool)
    decode_reason_code: np.ndarray
    link_ok: np.ndarray  # False: no bandwidth known for the KV transfer
    ttft_s: dict[float, np.ndarray]
    tpot_s: dict[float, np.ndarray]
    e2e_s: dict[float, np.ndarray]
    ttft_mean_s: np.ndarray
    tpot_mean_s: np.ndarray
    kv_transfer_s: np.ndarray  # of the mean prompt
    link_code: np.ndarray  # index into LINK_NAMES
    prefill_replicas: np.ndarray
    decode_replicas: np.ndarray
    prefill_gpus: np.ndarray  # per replica
    decode_gpus: np.ndarray
    total_gpus: np.ndarray
    batch: np.ndarray  # decode batch limit (after KV fit and the TPOT target)
    max_batch: np.ndarray  # decode sequences whose KV fits at isl + osl
    load_batch: np.ndarray
    prefill_capacity_per_s: np.ndarray  # requests/s per replica
    decode_capacity_per_s: np.ndarray
    capacity_per_s: np.ndarray  # of the fleet: min of the pools
    utilization: np.ndarray  # rate / fleet capacity
    output_tokens_per_s: np.ndarray  # fleet capacity per replica (x + y replicas)
    output_tokens_per_s_per_gpu: np.ndarray  # fleet capacity per GPU
    output_tokens_per_s_per_user: np.ndarray
    usd_per_hour: np.ndarray
    usd_per_million_output_tokens: np.ndarray
    usd_per_request: np.ndarray
    usd_per_million_total_tokens: np.ndarray
    energy_j_per_output_token: np.ndarray
    weight_bytes_per_gpu: np.ndarray  # decode pool
    memory_per_gpu_bytes: np.ndarray  # decode pool
    bound_code: np.ndarray  # index into objectives.serving.BOUNDS (decode pool)

    def reason(self, i: int) -> str:
        """Why configuration i is infeasible ("" when it is feasible)."""
        if self.prefill_reason_code[i]:
            return "prefill pool: " + REASONS[int(self.prefill_reason_code[i])]
        if self.decode_reason_code[i]:
            return "decode pool: " + REASONS[int(self.decode_reason_code[i])]
        if not self.link_ok[i]:
            return NO_LINK_REASON
        return ""

    def at(self, metric: str, percentile: float) -> np.ndarray:
        return getattr(self, f"{metric}_s")[float(percentile)]


def _pool_reason(b: ConfigBatch, context: np.ndarray, max_position_embeddings: float) -> np.ndarray:
    code = structural_reason(b)
    code = np.where((code == 0) & (b.isl + b.osl > max_position_embeddings), 6, code)
    from objectives.memory import kv_budget_bytes

    code = np.where((code == 0) & (kv_budget_bytes(b) <= 0), 1, code)
    code = np.where((code == 0) & (max_batch_that_fits(b, context) < 1), 2, code)
    return code


def prefill_slots(b: ConfigBatch, mean_input: float) -> np.ndarray:
    """Prompts a prefill replica runs at once: enough to fill two chunks of `max_num_tokens`
    (a prompt longer than a chunk spans several steps), at least 2 — per attention rank under
    attention DP (each rank prefills its own chunk)."""
    per_rank = np.maximum(np.ceil(2.0 * b.max_num_tokens / max(mean_input, 1.0)), 2.0)
    return per_rank * b.attention_dp


def prefill_pool_tokens_per_s_per_gpu(
    bp: ConfigBatch, isl: np.ndarray | float, chunk_tokens: np.ndarray | float | None = None
) -> np.ndarray:
    """Input tokens/s per GPU of a prefill replica kept full (decode assumed unlimited): every
    attention rank prefills floor(chunk / isl) prompts (at least one) of `isl` tokens per step
    of `chunk_tokens` tokens per rank (default: the batch's max_num_tokens), no decodes in the
    steps. The prefill-only rows of the headline file are compared with this."""
    x = np.asarray(isl, dtype=np.float64)
    chunk = bp.max_num_tokens if chunk_tokens is None else np.asarray(chunk_tokens, dtype=np.float64)
    b = bp.replace(max_num_tokens=chunk)
    prompts = np.maximum(np.floor(chunk / x), 1.0) * b.attention_dp
    t = prefill_time_s(b, x, prompts).total_s
    return prompts * x / t / b.gpus


def decode_pool_tokens_per_s_per_gpu(
    bd: ConfigBatch, batch: np.ndarray | float, context: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """(output tokens/s per GPU, sequences run) of a decode replica kept at `batch` sequences
    (prefill assumed unlimited) at KV length `context`: the batch lowered to what the KV cache
    holds there (at least one); speculative decoding (MTP) included, as the decode step is per
    output token. The decode-only rows of the headline file are compared with this."""
    ctx = np.asarray(context, dtype=np.float64)
    fit = max_batch_that_fits(bd, ctx)
    n = np.maximum(np.minimum(np.asarray(batch, dtype=np.float64), fit), 1.0)
    t = decode_step_time_s(bd, n, ctx).total_s
    return n / t / bd.gpus, n


def evaluate_disaggregated(
    bp: ConfigBatch,
    bd: ConfigBatch,
    *,
    prefill_usd_per_gpu_hour: np.ndarray,
    decode_usd_per_gpu_hour: np.ndarray,
    links: Sequence[KVLink] | Mapping[str, Any],
    arrival_rate_per_s: float | None = None,
    input_lengths: Any = None,
    output_lengths: Any = None,
    percentiles: Mapping[str, float] | None = None,
    extra_percentiles: Sequence[float] = (),
    slos: Sequence[Any] = (),
    target_utilization: float | None = None,
    arrival_cv: float = 1.0,
    dispatch: queueing.Dispatch = queueing.DEFAULT_DISPATCH,
    dispatch_group: float | None = None,
    max_position_embeddings: float = np.inf,
    scaleup_domain: np.ndarray | float = np.inf,
) -> DisaggregatedMetrics:
    """Metrics of disaggregated deployments: row i has prefill replicas of configuration
    `bp[i]` (its `max_num_tokens` the prefill chunk) and decode replicas of `bd[i]` (its `batch`
    the decode batch limit); isl / osl of both are the workload's means. `links`: (scale-out
    link, NVLink link or None) per row as arrays {"out": (bw, eff, lat, code), "nvlink": ...}
    (`link_arrays`). Latencies at `percentiles` {ttft, tpot, e2e: p} (default each SLO's, else
    50) and at `extra_percentiles`. See the module docstring."""
    n_rows = len(bp)
    xin = queueing.LengthNodes.of(input_lengths if input_lengths is not None else float(np.mean(bp.isl)))
    yout = queueing.LengthNodes.of(output_lengths if output_lengths is not None else float(np.mean(bd.osl)))
    triples = [queueing.slo_triple(s) for s in slos]
    slo = {m: (mx, p) for m, mx, p in triples}
    pct = {m: float((percentiles or {}).get(m, slo.get(m, (None, 50.0))[1])) for m in ("ttft", "tpot", "e2e")}
    wanted = sorted({*pct.values(), *(float(p) for p in extra_percentiles), *(p for _, _, p in triples)})
    isl, osl = bp.isl, bd.osl
    context = decode_context(xin, yout)

    code_p = _pool_reason(bp, isl, max_position_embeddings)
    code_d = _pool_reason(bd, isl + osl, max_position_embeddings)
    fit_d = max_batch_that_fits(bd, isl + osl)
    cap_d = np.clip(np.minimum(np.minimum(bd.batch, fit_d), bd.max_batch_size), 1.0, None)
    tpot_target = slo["tpot"][0] if "tpot" in slo else None
    batch = decode_batch_for_tpot(bd, cap_d, tpot_target, context)
    dtab = DecodeTable.build(bd, batch, context)
    cap_dec = dtab.capacity_per_s(yout.mean)

    slots_p = prefill_slots(bp, xin.mean)
    bp1 = bp.replace(batch=slots_p, osl=1.0)
    one = queueing.LengthNodes.of(1.0)
    ptab = queueing.ReplicaTable.build(bp1, xin, one)
    cap_pre = ptab.capacity_per_s
    gpus_p, gpus_d = bp.gpus, bd.gpus
    lk = links if isinstance(links, Mapping) else link_arrays(links, n_rows)
    out_bw, out_eff, out_lat, out_code = lk["out"]

    def transfer(tokens: np.ndarray | float, nvlink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t_out = kv_transfer_time_s(bp, bd, tokens, out_bw, out_eff, out_lat)
        if lk.get("nvlink") is None:
            return t_out, out_code
        nb, ne, nl, nc = lk["nvlink"]
        t_nv = kv_transfer_time_s(bp, bd, tokens, nb, ne, nl)
        return np.where(nvlink, t_nv, t_out), np.where(nvlink, nc, out_code)

    x_q = {p: quantile_of(xin, p) for p in wanted}
    y_q = {p: quantile_of(yout, p) for p in wanted}
    ca = float(arrival_cv)
    cap_u = float(queueing.default_target_utilization() if target_utilization is None else target_utilization)

    if arrival_rate_per_s is None:
        # offline: the ratio of the two pools that gives the most output tokens/s per GPU
        best = np.full(n_rows, -np.inf)
        xr, yr = np.ones(n_rows), np.ones(n_rows)
        for a in range(1, MAX_OFFLINE_REPLICAS + 1):
            for c in range(1, MAX_OFFLINE_REPLICAS + 1):
                tps = np.minimum(a * cap_pre, c * cap_dec) / (a * gpus_p + c * gpus_d)
                better = tps > best * (1.0 + 1e-9)
                best = np.where(better, tps, best)
                xr, yr = np.where(better, a, xr), np.where(better, c, yr)
        nvlink = (xr * gpus_p + yr * gpus_d) <= scaleup_domain
        t_kv_mean, code = transfer(xin.mean, nvlink)
        base_ttft = prefill_time_s(bp, xin.values[:, None], 1.0).total_s
        ttft = {p: prefill_time_s(bp, x_q[p], 1.0).total_s + transfer(x_q[p], nvlink)[0] for p in wanted}
        tpot = {p: dtab.full_s for p in wanted}
        ttft_mean = queueing._expect(base_ttft, xin.weights) + t_kv_mean
        tpot_mean = dtab.full_s
        e2e = {p: ttft_mean + (y_q[p] - 1.0) * tpot_mean for p in wanted}
        load_batch = batch
        rate = None
    else:
        rate = float(arrival_rate_per_s)
        lam = np.full(n_rows, rate)

        def decode_fleet(u: np.ndarray) -> tuple[np.ndarray, DecodeLoad]:
            y = np.maximum(np.ceil(lam / (u * cap_dec) - 1e-9), 1.0)
            cv = queueing.replica_arrival_cv(ca, y, dispatch, dispatch_group)
            pooled = queueing.pool_size(y, dispatch, dispatch_group)
            return y, decode_at_load(dtab, lam / y, yout, percentiles=wanted, arrival_cv=cv, pooled=pooled)

        # decode: the largest utilization <= the cap at which the TPOT percentile holds
        u_d = np.full(n_rows, cap_u)
        if tpot_target is not None:
            p_t = slo["tpot"][1]
            _, d_load = decode_fleet(u_d)
            bad = ~(d_load.tpot_s[p_t] <= tpot_target)
            if bad.any():
                u_d = queueing.bisect_utilization(
                    lambda u: decode_fleet(u)[1].tpot_s[p_t] <= tpot_target,
                    cap_u,
                    n_rows,
                    _UTILIZATION_BISECTIONS,
                    bad,
                )
        y_rep, d_load = decode_fleet(u_d)

        def prefill_fleet(u: np.ndarray) -> tuple[np.ndarray, queueing.QueueingLatency]:
            x = np.maximum(np.ceil(lam / (u * cap_pre) - 1e-9), 1.0)
            cv = queueing.replica_arrival_cv(ca, x, dispatch, dispatch_group)
            pooled = queueing.pool_size(x, dispatch, dispatch_group)
            lat = queueing.latency_at_load(
                ptab, lam / x, percentiles=wanted, arrival_cv=cv, metrics=("ttft",), pooled=pooled
            )
            return x, lat

        nvlink_guess = np.zeros(n_rows, dtype=bool)  # size with the scale-out link (the slower)
        u_p = np.full(n_rows, cap_u)
        if "ttft" in slo:
            max_s, p_f = slo["ttft"]
            budget = max_s - transfer(x_q[p_f], nvlink_guess)[0] - d_load.admission_s
            _, lat = prefill_fleet(u_p)
            bad = ~(lat.ttft_s[p_f] <= budget)
            if bad.any():
                u_p = queueing.bisect_utilization(
                    lambda u: prefill_fleet(u)[1].ttft_s[p_f] <= budget, cap_u, n_rows, _UTILIZATION_BISECTIONS, bad
                )
        xr, p_lat = prefill_fleet(u_p)
        yr = y_rep
        nvlink = (xr * gpus_p + yr * gpus_d) <= scaleup_domain
        t_kv_mean, code = transfer(xin.mean, nvlink)
        admission = d_load.admission_s
        ttft = {p: p_lat.ttft_s[p] + transfer(x_q[p], nvlink)[0] + admission for p in wanted}
        tpot = d_load.tpot_s
        ttft_mean = p_lat.ttft_mean_s + t_kv_mean + admission
        tpot_mean = d_load.tpot_mean_s
        e2e = {p: ttft_mean + (y_q[p] - 1.0) * tpot_mean for p in wanted}
        load_batch = d_load.batch

    capacity = np.minimum(xr * cap_pre, yr * cap_dec)
    total_gpus = xr * gpus_p + yr * gpus_d
    mean_out = osl
    capacity_tokens = capacity * mean_out
    served = capacity_tokens if rate is None else np.minimum(rate * mean_out, capacity_tokens)
    usd = xr * gpus_p * np.asarray(prefill_usd_per_gpu_hour) + yr * gpus_d * np.asarray(decode_usd_per_gpu_hour)
    watts = xr * gpus_p * bp.tdp_w + yr * gpus_d * bd.tdp_w
    from objectives.cost import usd_per_million_tokens, usd_per_million_total_tokens, usd_per_request

    link_ok = np.isfinite(t_kv_mean)
    feasible = (code_p == 0) & (code_d == 0) & link_ok
    nan = np.where(feasible, 1.0, np.nan)
    dstep = decode_step_time_s(bd, batch, context)
    comp = np.stack(
        [
            dstep.weights_memory_s + dstep.kv_memory_s,
            dstep.gemm_compute_s + dstep.attention_compute_s,
            dstep.communication_s,
            dstep.overhead_s,
        ]
    )
    bound = np.where(bd.batch > fit_d, BOUNDS.index("capacity"), np.argmax(comp, axis=0))

    def masked(d: dict[float, np.ndarray]) -> dict[float, np.ndarray]:
        return {p: v * nan for p, v in d.items()}

    with np.errstate(divide="ignore", invalid="ignore"):
        return DisaggregatedMetrics(
            feasible=feasible,
            prefill_reason_code=code_p,
            decode_reason_code=code_d,
            link_ok=link_ok,
            ttft_s=masked(ttft),
            tpot_s=masked(tpot),
            e2e_s=masked(e2e),
            ttft_mean_s=ttft_mean * nan,
            tpot_mean_s=tpot_mean * nan,
            kv_transfer_s=t_kv_mean * nan,
            link_code=code.astype(np.float64),
            prefill_replicas=xr,
            decode_replicas=yr,
            prefill_gpus=gpus_p,
            decode_gpus=gpus_d,
            total_gpus=total_gpus,
            batch=batch,
            max_batch=fit_d,
            load_batch=load_batch * nan,
            prefill_capacity_per_s=cap_pre * nan,
            decode_capacity_per_s=cap_dec * nan,
            capacity_per_s=capacity * nan,
            utilization=(np.ones(n_rows) if rate is None else rate / capacity) * nan,
            output_tokens_per_s=capacity_tokens / (xr + yr) * nan,
            output_tokens_per_s_per_gpu=capacity_tokens / total_gpus * nan,
            output_tokens_per_s_per_user=1.0 / tpot_mean * nan,
            usd_per_hour=usd,
            usd_per_million_output_tokens=usd_per_million_tokens(usd, served) * nan,
            usd_per_request=usd_per_request(usd, served, mean_out) * nan,
            usd_per_million_total_tokens=usd_per_million_total_tokens(usd, served, isl, mean_out) * nan,
            energy_j_per_output_token=watts / capacity_tokens * nan,
            weight_bytes_per_gpu=_weights_per_gpu(bd),
            memory_per_gpu_bytes=memory_per_gpu_bytes(bd.replace(batch=batch), isl + osl),
            bound_code=bound.astype(np.float64),
        )


def link_arrays(links: Sequence[KVLink | None], n: int) -> dict[str, Any]:
    """{"out": (bw, eff, latency, code) arrays, "nvlink": the same or None} from a scale-out
    link and an optional NVLink one (both for every row)."""
    out = links[0]
    nv = links[1] if len(links) > 1 else None

    def arr(link: KVLink) -> tuple[np.ndarray, ...]:
        return (
            np.full(n, link.bytes_per_s),
            np.full(n, link.efficiency),
            np.full(n, link.latency_s),
            np.full(n, float(link.code)),
        )

    assert out is not None
    return {"out": arr(out), "nvlink": None if nv is None else arr(nv)}


def balanced_tokens_per_s_per_gpu(
    prefill_tokens_per_s_per_gpu: np.ndarray | float,
    decode_tokens_per_s_per_gpu: np.ndarray | float,
    isl: float,
    osl: float,
) -> np.ndarray:
    """Output tokens/s per GPU of a deployment whose pools are in the ideal (fractional) ratio:
    a request takes isl / P GPU-seconds of prefill and osl / D of decode (P, D the per-GPU token
    rates of each pool), so osl / (isl / P + osl / D) output tokens/s per GPU."""
    p = np.asarray(prefill_tokens_per_s_per_gpu, dtype=np.float64)
    d = np.asarray(decode_tokens_per_s_per_gpu, dtype=np.float64)
    return osl / (isl / p + osl / d)
