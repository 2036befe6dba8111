"""The probe evaluator: the analytic front's best candidates measured on a real GPU — one decoder
layer (search.calibration.layer_probe) timed on a cluster GPU of the candidate's type — and
stored as measured; candidates whose dtype is not probed or whose GPU type the cluster lacks
stay analytic, with `probe_status` saying why.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from objectives.batch import ConfigBatch
from objectives.quantization import get_scheme
from objectives.serving import SteadyState, steady_state
from search.sweeps.analytic import AnalyticEvaluator
from search.sweeps.evaluation import PROBE_MEASURED, PROBE_STATUS, EvalResult
from search.sweeps.spec import SweepSpec

PROBED_STEADY_STATE = tuple(f.name for f in dataclasses.fields(SteadyState))  # metrics a probe replaces
# What happened to each row of a probe sweep (metric probe_status: the index). A candidate is
# "dtype not probed" unless the layer probe builds its weights (bf16, or fp8 W8A8 on fp8
# tensor cores) with a bf16 KV cache.
PROBE_FRONT_LIMIT = 2_000_000  # spaces up to this size pick probe candidates from their exact analytic front


def _probe_weights(weights: str, activation_bytes: float) -> str | None:
    """The layer probe's linear-layer dtype for a candidate's weight scheme, or None when the
    probe cannot build it: bf16 (2-byte weights and activations), or fp8 W8A8 where the GPU
    computes in fp8 (1-byte activations; a GPU without fp8 tensor cores runs it otherwise)."""
    scheme = get_scheme(weights)
    if scheme.bytes_per_weight == 2 and activation_bytes == 2 and not scheme.weight_only:
        return "bf16"
    if scheme.name == "fp8" and activation_bytes == 1:
        return "fp8"
    return None


class ProbeEvaluator(AnalyticEvaluator):
    """The analytic model, with the layer times of the analytic front's best candidates measured:
    one real decoder layer of the model (search.probes.probe_layer) at the candidate's per-GPU
    shapes, timed for a decode step at its batch and context and for a prefill chunk, on a GPU of
    its type (a Ray task asking num_gpus=1 and the accelerator type) or, with
    `probe.device: cpu`, in this process (tests). The measured / analytic ratio of the linear
    layers (plus the analytic LM head) and of attention, at the probed shapes, replaces the
    analytic `gemm_s` and `attention_s` of the decode and prefill steps; communication and
    overheads stay analytic. Only the first `probe.max_candidates` configurations of the
    analytic front of the whole space are probed (`probe_ids`), and only layers the probe can
    build (`_probe_weights`: bf16, or fp8 W8A8 on a GPU with fp8 tensor cores; KV cache bf16).
    Rows carry `probe_status` (an index into PROBE_STATUS): measured rows are stored as
    measured; candidates the probe could not measure say why (dtype, or no GPU of that type).

    On a CPU the probe exists for tests: its times are a CPU's, not the GPU's."""

    name = "probe"

    def __init__(self, spec: SweepSpec) -> None:
        super().__init__(spec)
        self.settings = spec.probe
        self.probed = 0
        self._cache: dict[tuple, dict[str, float]] = {}
        self._available: dict[str, str | None] = {}
        self._probe_ids: set[int] | None = None

    def _unavailable(self, gpu_id: str) -> str | None:
        """Why `gpu_id` cannot be probed, or None."""
        if gpu_id not in self._available:
            from search.calibration import probe_coverage

            why = probe_coverage([gpu_id], self.settings.device).get(gpu_id)
            self._available[gpu_id] = why
            if why:
                logging.getLogger("servesweep.probe").warning("%s candidates stay analytic: %s", gpu_id, why)
        return self._available[gpu_id]

    def _measure(
        self, gpu_id: str, b: ConfigBatch, micro: int, context: int, prefill: int, weights: str
    ) -> dict[str, float]:
        from search.calibration import layer_shape, probe_layer, probe_layer_remote
        from search.cluster import ray_accelerator_type

        tp, ep = int(b.tp[0]), int(b.ep[0])
        key = (gpu_id, tp, ep, micro, context, prefill, weights, self.settings.device)
        if key not in self._cache:
            shape = layer_shape(
                self.model,
                tp=tp,
                ep=ep,
                batch=micro,
                context=context,
                prefill_tokens=prefill,
                seed=self.spec.seed,
                weights=weights,
            )
            if self.settings.device == "cpu":
                self._cache[key] = probe_layer(shape, "cpu", self.settings.repeats)
            else:
                self._cache[key] = probe_layer_remote(shape, ray_accelerator_type(gpu_id), self.settings.repeats)
        return self._cache[key]

    def _front_order(self, result: EvalResult, rows: np.ndarray) -> np.ndarray:
        """`rows` of `result` on their analytic Pareto front, best first objective first."""
        from search.sweeps.pareto import pareto_mask, to_minimization

        if not rows.size:
            return rows
        objs = to_minimization(
            np.nan_to_num(result.objectives[rows], nan=np.inf), [o.direction for o in self.spec.objectives]
        )
        objs = np.where(np.isfinite(objs), objs, 1e300)
        keep = pareto_mask(objs)
        front, first = rows[keep], objs[keep, 0]
        return front[np.argsort(first, kind="stable")]

    def probe_ids(self) -> set[int] | None:
        """The configurations worth a probe: the first `max_candidates` of the analytic front of
        the whole space (feasible, best first objective first) — the same in every process, so
        a sweep probes at most that many distinct configurations. None when the space is too
        large to enumerate (then each evaluate call probes its own front, up to the cap)."""
        if self._probe_ids is None and self.space.size <= PROBE_FRONT_LIMIT:
            ids, objs = np.zeros(0, dtype=np.int64), []
            results = []
            for start in range(0, self.space.size, 65_536):
                r = AnalyticEvaluator.evaluate(self, np.arange(start, min(self.space.size, start + 65_536)))
                front = self._front_order(r, np.flatnonzero(r.feasible))
                results.append(r.take(front))
            ids = np.concatenate([r.ids for r in results])
            objs = np.vstack([r.objectives for r in results])
            merged = EvalResult(
                ids=ids,
                feasible=np.ones(ids.size, dtype=bool),
                reason=[""] * ids.size,
                objectives=objs,
                constraints=np.zeros((ids.size, 0)),
                constraint_names=[],
            )
            best = self._front_order(merged, np.arange(ids.size))[: self.settings.max_candidates]
            self._probe_ids = {int(i) for i in ids[best]}
        return self._probe_ids

    def _order(self, base: EvalResult) -> list[int]:
        """Rows to probe, best first."""
        chosen = self.probe_ids()
        if chosen is not None:
            rows = np.array([i for i in range(len(base)) if int(base.ids[i]) in chosen], dtype=np.int64)
            return [int(i) for i in self._front_order(base, rows)] if rows.size else []
        return [int(i) for i in self._front_order(base, np.flatnonzero(base.constraints[:, 0] <= 0.0))]

    def evaluate(self, ids: np.ndarray) -> EvalResult:
        from objectives.memory import layers_per_gpu
        from objectives.timing import (
            decode_step_time_s,
            forward_time_s,
            lm_head_time_s,
            prefill_time_s,
        )

        base = super().evaluate(ids)
        n = len(base)
        metrics = dict(base.metrics)
        metrics["probe_status"] = np.zeros(n)
        for k in ("probe_decode_layer_s", "probe_prefill_layer_s", "analytic_tpot_s", "analytic_ttft_s"):
            metrics[k] = np.full(n, np.nan)
        for k in ("ttft_s", "total_gpus", *PROBED_STEADY_STATE):  # overwritten for probed rows
            metrics[k] = metrics[k].copy()
        wl = self.workload
        isl, osl = float(wl.isl), float(wl.osl)
        mean_ctx = isl + osl / 2.0
        fixed = "replicas" in {d.name for d in self.space.dimensions}
        for i in self._order(base):
            if self.probe_ids() is None and self.probed >= self.settings.max_candidates:
                break
            idx = self.space.decode(base.ids[i : i + 1])
            b, _ = self._batch(idx, np.array([0]))
            dims = {d.name: d for d in self.space.dimensions}
            gpu_id = dims["accelerator"].values[int(idx["accelerator"][0])]
            weights = dims["weights"].values[int(idx["weights"][0])]
            kv = dims["kv_cache"].values[int(idx["kv_cache"][0])]
            probed_as = _probe_weights(weights, float(b.activation_bytes[0]))
            if probed_as is None or kv != "bf16":
                metrics["probe_status"][i] = PROBE_STATUS.index("dtype not probed")
                continue
            if self._unavailable(gpu_id):
                metrics["probe_status"][i] = PROBE_STATUS.index("GPU type not in the cluster")
                continue
            batch = float(metrics["batch"][i])
            pp = float(b.pp[0])
            micro = max(1, round(batch / pp))
            chunks = max(1.0, np.ceil(isl / float(b.max_num_tokens[0])))
            prefill = int(self.settings.prefill_tokens or max(1, round(isl / chunks)))
            t = self._measure(gpu_id, b, micro, round(mean_ctx), prefill, probed_as)
            self.probed += 1
            layers = float(layers_per_gpu(b)[0])

            def lm_head_s(tokens: float, b: ConfigBatch = b) -> float:
                return float(lm_head_time_s(b, np.array([tokens]))[0])

            a_dec = forward_time_s(b, np.array([float(micro)]), mean_ctx)
            a_pre = forward_time_s(
                b, np.array([0.0]), 0.0, prefill_tokens=float(prefill), prefill_context=prefill / 2.0, prefill_seqs=1.0
            )
            r_gemm_dec = (layers * t["decode_linear_s"] + lm_head_s(micro)) / float(a_dec.gemm_s[0])
            r_att_dec = layers * t["decode_attention_s"] / max(float(a_dec.attention_s[0]), 1e-30)
            r_gemm_pre = (layers * t["prefill_linear_s"] + lm_head_s(1.0)) / float(a_pre.gemm_s[0])
            r_att_pre = layers * t["prefill_attention_s"] / max(float(a_pre.attention_s[0]), 1e-30)

            def measured(st: Any, rg: float, ra: float) -> float:
                return float(st.total_s[0] + (rg - 1.0) * st.gemm_s[0] + (ra - 1.0) * st.attention_s[0])

            bb = np.array([batch])
            dec = decode_step_time_s(b, bb, mean_ctx)
            pre_all = prefill_time_s(b, isl, bb)
            first = prefill_time_s(b, isl, 1.0, running_seqs=bb - 1.0, running_context=mean_ctx)
            st = steady_state(
                isl=isl,
                osl=osl,
                batch=bb,
                decode_step_s=np.array([measured(dec, r_gemm_dec, r_att_dec)]),
                prefill_all_s=np.array([measured(pre_all, r_gemm_pre, r_att_pre)]),
                ttft_s=np.array([measured(first, r_gemm_pre, r_att_pre)]),
                gpus=b.gpus,
                tdp_w=b.tdp_w,
                usd_per_gpu_hour=np.array([self.price_per_gpu_hour(gpu_id)]),
                arrival_rate_per_s=self._rate(),
                replicas=self._fixed_replicas(idx) if fixed else None,
            )
            metrics["analytic_tpot_s"][i] = metrics["tpot_s"][i]
            metrics["analytic_ttft_s"][i] = metrics["ttft_s"][i]
            metrics["ttft_s"][i] = measured(first, r_gemm_pre, r_att_pre)
            for key in PROBED_STEADY_STATE:
                metrics[key][i] = float(getattr(st, key)[0])
            metrics["total_gpus"][i] = metrics["replicas"][i] * metrics["gpus"][i]
            metrics["probe_status"][i] = PROBE_MEASURED
            metrics["probe_decode_layer_s"][i] = t["decode_linear_s"] + t["decode_attention_s"]
            metrics["probe_prefill_layer_s"][i] = t["prefill_linear_s"] + t["prefill_attention_s"]
        cons = self._constraints(metrics, base.constraints[:, 0])
        return self._rescored(base, metrics, cons)
