"""A discrete-event simulator of a continuous-batching LLM server (one replica, or a
load-balanced group of replicas), for tail latencies under load.

The analytic model (`objectives.serving`) predicts steady-state means; SLOs are percentiles
under bursty load. This module replays a request stream (arrival time, input and output tokens
per request) through a scheduler modelled on vLLM's:

- at most `max_num_seqs` sequences run at once and one step processes at most
  `max_num_batched_tokens` tokens;
- chunked prefill: every running decode takes one token of the step's budget first, the rest
  goes to prompt chunks — prompts already being prefilled first, then new admissions from the
  FIFO waiting queue — so prefill chunks and decodes share steps;
- KV-cache admission in blocks of `block_size` tokens: a request is admitted only when the
  blocks of its whole prompt fit, leaving a watermark (1% of the cache) free;
- decodes allocate a block every `block_size` tokens; when the cache is full the most recently
  admitted running sequence is preempted (its blocks freed) and later recomputed: it returns to
  the head of the queue and prefills its prompt plus the tokens it had generated.

Step durations are not modelled here. `StepTimeTable.from_batch` evaluates
`objectives.timing.forward_time_s` — the step-time function the analytic model uses — with one
vectorized call over a grid of step shapes (decode sequences, their mean context, prefill tokens,
their mean causal context) and the simulator interpolates in that table. A replica with PP
pipeline stages runs PP micro-batches per round (`decode_step_time_s`'s convention):
round = PP * (t_stage(decodes / PP, prefill tokens / PP) + hand-off); a prompt's first token comes
(PP - 1) / PP of a round after the round that finished its prefill (the pipeline drains).

Speed: between events (an arrival that can be admitted, a completion, the cache filling) every
running sequence decodes one token per step, so the simulator advances such stretches in one
move: k steps at a context growing by one token per step take k * t(n, c0 + (k - 1) / 2) (exact
for a step time linear in the context, as the table is between its grid points), and the blocks
allocated follow from each sequence's block phase. The events left are a few per request.

Outputs (`SimResult`): TTFT, TPOT, end-to-end latency and queueing delay per request, their
percentiles, throughput, KV-cache utilization, preemptions and SLO attainment (the share of
requests meeting every target). A run with the same inputs replays identically.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from objectives.batch import ConfigBatch
from objectives.communication import pp_handoff_time_s
from objectives.memory import kv_budget_bytes, kv_bytes_per_sequence_per_gpu
from objectives.modes import expected_tokens_per_step
from objectives.timing import decode_step_time_s, draft_time_s, forward_time_s

Dispatch = Literal["least_loaded", "round_robin"]
LATENCY_KEYS = ("ttft", "tpot", "e2e", "queue")
DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)
BLOCK_SIZE = 16
WATERMARK_FRACTION = 0.01
_INF = math.inf
_NEVER = 1e300  # latency of a rejected request, in percentiles (reported as inf)

# Grids of the step-time table (see StepTimeTable.build).
_DECODE_EXACT_SEQS = 256  # decode rows for every sequence count up to this, geometric above
_DECODE_CONTEXT_POINTS = 33
_MIXED_CONTEXT_POINTS = 7
_MIXED_PREFILL_CONTEXT_POINTS = 6
_MIXED_SEQS_RATIO = 1.25
_MIXED_TOKENS_RATIO = 1.2

StepFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# ---------------------------------------------------------------- step times


def _int_grid(top: int, exact: int, ratio: float, start: int = 0) -> np.ndarray:
    """Integers start..exact, then geometric by `ratio` up to `top` (always included); at
    least two points."""
    top = max(int(top), start + 1)
    pts = list(range(start, min(exact, top) + 1))
    x = float(pts[-1])
    while x < top:
        x = max(x * ratio, x + 1.0)
        pts.append(min(round(x), top))
    grid = np.unique(np.asarray(pts, dtype=np.int64))
    return grid if grid.size >= 2 else np.array([start, start + 1])


def _index_lists(grid: np.ndarray, top: int) -> tuple[list[int], list[float]]:
    """For every integer v in 0..top: the grid cell i (grid[i] <= v <= grid[i + 1]) and the
    weight of grid[i + 1] — so lookups of integers need no search."""
    v = np.arange(top + 1, dtype=np.float64)
    i = np.clip(np.searchsorted(grid, v, side="right") - 1, 0, grid.size - 2)
    lo, hi = grid[i].astype(np.float64), grid[i + 1].astype(np.float64)
    w = np.clip((v - lo) / (hi - lo), 0.0, None)
    return i.tolist(), w.tolist()


class StepTimeTable:
    """Round times of one replica over a grid of step shapes, interpolated by `decode` and
    `mixed` (plain-Python scalar lookups, microseconds each).

    - `decode(n, c)`: n sequences decoding at mean context c (a row per sequence count up to
      `_DECODE_EXACT_SEQS`, linear in c between 33 context points);
    - `mixed(n, c, p, pc)`: the same plus p prompt tokens at mean causal context pc
      (multilinear on a coarser 4-D grid, geometric in n and p).
    """

    def __init__(
        self,
        fn: StepFunction,
        max_seqs: int,
        max_tokens: int,
        max_context: float,
        *,
        fill_fraction: float = 0.0,
        source: str = "",
    ) -> None:
        self.max_seqs = int(max(max_seqs, 1))
        self.max_tokens = int(max(max_tokens, 1))
        self.max_context = float(max(max_context, 2.0))
        self.fill_fraction = float(fill_fraction)
        self.source = source
        cmax = self.max_context

        # decode table: n x c
        dn = _int_grid(self.max_seqs, _DECODE_EXACT_SEQS, 1.05)
        dc = np.linspace(0.0, cmax, _DECODE_CONTEXT_POINTS)
        gn, gc = np.meshgrid(dn.astype(np.float64), dc, indexing="ij")
        zeros = np.zeros(gn.size)
        dec = np.asarray(fn(gn.ravel(), gc.ravel(), zeros, zeros, zeros), dtype=np.float64).reshape(gn.shape)
        # one row per sequence count 0..max_seqs (interpolated along n where the grid is sparse)
        ns = np.arange(self.max_seqs + 1, dtype=np.float64)
        rows = np.stack([np.interp(ns, dn, dec[:, j]) for j in range(dc.size)], axis=1)
        self._dec_rows: list[list[float]] = rows.tolist()
        self._dec_inv_dc = (dc.size - 1) / cmax
        self._dec_last = dc.size - 2

        # mixed table: n x c x p x pc
        mn = _int_grid(self.max_seqs, 4, _MIXED_SEQS_RATIO)
        mp = _int_grid(self.max_tokens, 4, _MIXED_TOKENS_RATIO, start=1)
        mc = np.linspace(0.0, cmax, _MIXED_CONTEXT_POINTS)
        mx = np.linspace(0.0, cmax, _MIXED_PREFILL_CONTEXT_POINTS)
        an, ac, ap, ax = np.meshgrid(mn.astype(np.float64), mc, mp.astype(np.float64), mx, indexing="ij")
        mixed = np.asarray(fn(an.ravel(), ac.ravel(), ap.ravel(), ax.ravel(), np.ones(an.size)), dtype=np.float64)
        self._mix: list[float] = mixed.tolist()
        self._mix_shape = (mn.size, mc.size, mp.size, mx.size)
        self._s_x = 1
        self._s_p = mx.size
        self._s_c = mp.size * mx.size
        self._s_n = mc.size * mp.size * mx.size
        self._mn_i, self._mn_w = _index_lists(mn, self.max_seqs)
        self._mp_i, self._mp_w = _index_lists(mp, self.max_tokens)
        self._mc_inv = (mc.size - 1) / cmax
        self._mc_last = mc.size - 2
        self._mx_inv = (mx.size - 1) / cmax
        self._mx_last = mx.size - 2
        self.grid_points = int(dec.size + mixed.size)

    # -- constructors

    @classmethod
    def from_batch(
        cls, b: ConfigBatch, max_seqs: int, max_tokens: int, max_context: float, row: int = 0
    ) -> StepTimeTable:
        """Round times of configuration `row` of `b` from `objectives.timing.forward_time_s`
        (one vectorized call per table), with `decode_step_time_s`'s pipeline convention."""
        one = b.take(np.array([row]))
        pp = float(one.pp[0])
        if one.has_attention_dp or one.has_mtp:
            return cls._from_modes(one, max_seqs, max_tokens, max_context)

        def fn(n: np.ndarray, c: np.ndarray, p: np.ndarray, pc: np.ndarray, ps: np.ndarray) -> np.ndarray:
            rows = one.take(np.zeros(n.size, dtype=np.int64))
            stage = forward_time_s(rows, n / pp, c, p / pp, pc, ps / pp)
            return pp * (stage.total_s + pp_handoff_time_s(rows, (n + p) / pp))

        return cls(fn, max_seqs, max_tokens, max_context, fill_fraction=(pp - 1.0) / pp, source="forward_time_s")

    @classmethod
    def _from_modes(cls, one: ConfigBatch, max_seqs: int, max_tokens: int, max_context: float) -> StepTimeTable:
        """`from_batch` under attention DP and / or MTP (objectives.timing): the step's sequences
        and prompt tokens spread evenly over the attention ranks (the MoE layers route all of
        them); with k draft tokens a round's decode part is the verification of k + 1 positions
        plus the draft passes divided by the expected tokens per step (the simulator advances a
        sequence one token per round), the prefill part on top unscaled."""
        pp = float(one.pp[0])
        dp = float(one.attention_dp[0])
        k = float(one.mtp_tokens[0])
        per_step = float(expected_tokens_per_step(one.mtp_acceptance[0], k))

        def fn(n: np.ndarray, c: np.ndarray, p: np.ndarray, pc: np.ndarray, ps: np.ndarray) -> np.ndarray:
            rows = one.take(np.zeros(n.size, dtype=np.int64))
            stage = forward_time_s(rows, n / pp / dp, c, p / pp / dp, pc, ps / pp / dp).total_s
            if k > 0:
                decode = forward_time_s(rows, n / pp / dp, c).total_s
                verify = forward_time_s(rows, n / pp / dp, c, tokens_per_seq=k + 1.0).total_s
                draft = draft_time_s(rows, n / pp / dp, c).total_s
                stage = stage - decode + (verify + draft) / per_step
            return pp * (stage + pp_handoff_time_s(rows, (n + p) / pp))

        return cls(fn, max_seqs, max_tokens, max_context, fill_fraction=(pp - 1.0) / pp, source="forward_time_s")

    @classmethod
    def constant(cls, step_s: float, max_seqs: int, max_tokens: int, max_context: float = 1e9) -> StepTimeTable:
        """Every step takes `step_s` seconds, whatever its shape (for queueing checks)."""

        def fn(n: np.ndarray, c: np.ndarray, p: np.ndarray, pc: np.ndarray, ps: np.ndarray) -> np.ndarray:
            return np.full(n.shape, float(step_s))

        return cls(fn, max_seqs, max_tokens, max_context, source=f"constant {step_s} s")

    # -- lookups (plain Python: called once per simulated event)

    def decode(self, n: int, c: float) -> float:
        """Round time of n decoding sequences at mean context c."""
        row = self._dec_rows[n]
        x = c * self._dec_inv_dc
        i = int(x)
        if i > self._dec_last:
            i = self._dec_last
        v = row[i]
        return v + (row[i + 1] - v) * (x - i)

    def mixed(self, n: int, c: float, p: int, pc: float) -> float:
        """Round time of n decodes at mean context c plus p prompt tokens at mean causal
        context pc (multilinear interpolation)."""
        T = self._mix
        i = self._mn_i[n]
        wn = self._mn_w[n]
        j = self._mp_i[p]
        wp = self._mp_w[p]
        x = c * self._mc_inv
        k = int(x)
        if k > self._mc_last:
            k = self._mc_last
        wc = x - k
        y = pc * self._mx_inv
        m = int(y)
        if m > self._mx_last:
            m = self._mx_last
        wx = y - m
        sn, sc, sp = self._s_n, self._s_c, self._s_p
        o = i * sn + k * sc + j * sp + m
        out = 0.0
        for on, fw in ((o, 1.0 - wn), (o + sn, wn)):
            if fw == 0.0:
                continue
            a = T[on]
            v00 = a + (T[on + 1] - a) * wx
            a = T[on + sp]
            v01 = a + (T[on + sp + 1] - a) * wx
            a = T[on + sc]
            v10 = a + (T[on + sc + 1] - a) * wx
            a = T[on + sc + sp]
            v11 = a + (T[on + sc + sp + 1] - a) * wx
            v0 = v00 + (v01 - v00) * wp
            v1 = v10 + (v11 - v10) * wp
            out += fw * (v0 + (v1 - v0) * wc)
        return out


# ---------------------------------------------------------------- scheduler configuration


@dataclass(frozen=True)
class SchedulerConfig:
    """Limits of one replica's scheduler."""

    max_num_seqs: int  # running sequences at most
    max_num_batched_tokens: int  # tokens per step at most (raised to max_num_seqs if below)
    kv_blocks: int  # KV-cache blocks of the replica (per GPU: every GPU holds its share)
    block_size: int = BLOCK_SIZE
    watermark_fraction: float = WATERMARK_FRACTION

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1 or self.block_size < 1:
            raise ValueError("max_num_seqs, max_num_batched_tokens and block_size must be >= 1")
        if self.kv_blocks < 1:
            raise ValueError("the KV cache has no room for a single block")

    @property
    def tokens_per_step(self) -> int:
        return max(self.max_num_batched_tokens, self.max_num_seqs)

    @property
    def watermark_blocks(self) -> int:
        return math.ceil(self.kv_blocks * self.watermark_fraction)

    @property
    def kv_tokens(self) -> int:
        return self.kv_blocks * self.block_size


def kv_blocks_for(b: ConfigBatch, context_tokens: float, block_size: int = BLOCK_SIZE, row: int = 0) -> int:
    """KV-cache blocks of configuration `row`: the KV budget per GPU divided by the bytes a token
    takes at `context_tokens` of context (sliding-window layers make long contexts cheaper per
    token, as in `max_batch_that_fits`)."""
    one = b.take(np.array([row]))
    ctx = float(max(context_tokens, 1.0))
    budget = float(kv_budget_bytes(one)[0]) * float(one.attention_dp[0])  # every attention rank its own cache
    per_token = float(kv_bytes_per_sequence_per_gpu(one, np.array([ctx]))[0]) / ctx
    if budget <= 0 or per_token <= 0:
        return 0
    return int(budget / per_token) // block_size


# ---------------------------------------------------------------- the engine


class _Shared:
    """Per-request inputs, scheduler state and outputs, as Python lists (fast scalar access)."""

    def __init__(self, arrival: np.ndarray, isl: np.ndarray, osl: np.ndarray) -> None:
        n = int(arrival.shape[0])
        self.arrival: list[float] = np.asarray(arrival, dtype=np.float64).tolist()
        self.isl: list[int] = np.asarray(isl, dtype=np.int64).tolist()
        self.osl: list[int] = np.asarray(osl, dtype=np.int64).tolist()
        self.ptot = list(self.isl)  # tokens to prefill (prompt + generated, after a preemption)
        self.left = [0] * n  # prompt tokens still to prefill
        self.done = [0] * n  # prompt tokens already in the cache
        self.gen = [0] * n  # tokens generated when the sequence last finished a prefill
        self.base = [0] * n  # decoding: context at global step G is base + G
        self.fin = [-1] * n  # decoding: the global step at which it finishes (-1: none)
        nan = math.nan
        self.start = [nan] * n
        self.first = [nan] * n
        self.finish = [nan] * n
        self.npre = [0] * n
        self.rejected = [False] * n
        self.replica = [0] * n


class _Replica:
    """One replica's scheduler state; `advance(t_limit)` runs the steps that start before
    `t_limit` (all of them for t_limit = inf)."""

    def __init__(self, table: StepTimeTable, sched: SchedulerConfig, shared: _Shared) -> None:
        if table.max_seqs < sched.max_num_seqs or table.max_tokens < sched.tokens_per_step:
            raise ValueError("the step-time table does not cover the scheduler's limits")
        self.table = table
        self.sched = sched
        self.s = shared
        self.pending: list[int] = []  # requests dispatched here, in arrival order
        self.pi = 0  # pending[:pi] have arrived (moved to the waiting queue)
        self.waiting: deque[int] = deque()
        self.running: dict[int, None] = {}  # admission order (dicts keep insertion order)
        self.prefilling: list[int] = []
        self.heap: list[tuple[int, int]] = []  # (finish step, request)
        self.phase = [0] * sched.block_size  # decoders needing a new block at steps = r mod B
        self.n = 0  # decoding sequences
        self.sum_base = 0
        self.used = 0  # KV blocks in use
        self.G = 0  # steps run
        self.t = 0.0
        self.steps = 0
        self.preemptions = 0
        self.kv_block_s = 0.0  # integral of used blocks over time
        self.busy_s = 0.0
        self.peak_used = 0

    def outstanding(self) -> int:
        return len(self.pending) - self.pi + len(self.waiting) + len(self.running)

    def advance(self, t_limit: float = _INF) -> None:
        tab = self.table
        sc = self.sched
        s = self.s
        B = sc.block_size
        M = sc.tokens_per_step
        maxs = sc.max_num_seqs
        total = sc.kv_blocks
        wm = sc.watermark_blocks
        fill = tab.fill_fraction
        dec_rows = tab._dec_rows
        inv_dc = tab._dec_inv_dc
        dlast = tab._dec_last
        mixed = tab.mixed
        arr, isl, osl = s.arrival, s.isl, s.osl
        ptot, left, done, gen, base, fin = s.ptot, s.left, s.done, s.gen, s.base, s.fin
        first, start, finish, npre, rejected = s.first, s.start, s.finish, s.npre, s.rejected
        pending, waiting, running, prefilling = self.pending, self.waiting, self.running, self.prefilling
        heap, phase = self.heap, self.phase
        pi, npend = self.pi, len(pending)
        n, sum_base, used, G, t = self.n, self.sum_base, self.used, self.G, self.t
        steps, npreempt, kv_int, busy, peak = self.steps, self.preemptions, self.kv_block_s, self.busy_s, self.peak_used
        heappush, heappop, isnan, sqrt = heapq.heappush, heapq.heappop, math.isnan, math.sqrt

        while True:
            while pi < npend and arr[pending[pi]] <= t:
                waiting.append(pending[pi])
                pi += 1
            npf = len(prefilling)
            if n == 0 and npf == 0 and not waiting:
                if pi < npend:
                    ta = arr[pending[pi]]
                    if ta >= t_limit:
                        break
                    t = ta  # idle until the next arrival
                    continue
                break
            if t >= t_limit:
                break
            admit = False
            if waiting and n + npf < maxs:
                need = -(-ptot[waiting[0]] // B)
                admit = need > total - wm or total - used - need >= wm
            key = (G + 1) % B
            cross = phase[key] if n else 0

            if npf or admit or cross > total - used:
                # ------------------------------------------------ one scheduled step
                while cross > total - used and running:  # preempt the newest (recompute)
                    v = next(reversed(running))
                    del running[v]
                    npreempt += 1
                    npre[v] += 1
                    if fin[v] < 0:  # still prefilling: its whole prompt was reserved
                        prefilling.remove(v)
                        used -= -(-ptot[v] // B)
                    else:
                        bv = base[v]
                        used -= -(-(bv + G) // B)
                        n -= 1
                        sum_base -= bv
                        pk = (1 - bv) % B
                        phase[pk] -= 1
                        if pk == key:
                            cross -= 1
                        g = gen[v] + G - (ptot[v] - bv)
                        gen[v] = g
                        ptot[v] = isl[v] + g
                        fin[v] = -1
                    left[v] = ptot[v]
                    done[v] = 0
                    waiting.appendleft(v)
                used += cross  # the decodes' new blocks, before any admission
                budget = M - n
                ptoks = 0
                pairs = 0.0
                chunk_r: list[int] = []
                chunk_l: list[int] = []
                for r in prefilling:
                    if budget <= 0:
                        break
                    L = left[r]
                    if L > budget:
                        L = budget
                    pairs += L * (done[r] + 0.5 * L)
                    ptoks += L
                    budget -= L
                    chunk_r.append(r)
                    chunk_l.append(L)
                while waiting and budget > 0 and n + len(prefilling) < maxs:
                    r = waiting[0]
                    need = -(-ptot[r] // B)
                    if need > total - wm:  # can never fit: dropped
                        waiting.popleft()
                        rejected[r] = True
                        continue
                    if total - used - need < wm:
                        break
                    waiting.popleft()
                    used += need
                    running[r] = None
                    prefilling.append(r)
                    left[r] = ptot[r]
                    done[r] = 0
                    if isnan(start[r]):
                        start[r] = t
                    L = ptot[r]
                    if L > budget:
                        L = budget
                    pairs += 0.5 * L * L
                    ptoks += L
                    budget -= L
                    chunk_r.append(r)
                    chunk_l.append(L)
                if n == 0 and ptoks == 0:  # every candidate was rejected
                    used -= cross
                    continue
                if n:
                    cmean = sum_base / n + G + 1
                    dt = mixed(n, cmean, ptoks, pairs / ptoks) if ptoks else tab.decode(n, cmean)
                else:
                    dt = mixed(0, 0.0, ptoks, pairs / ptoks)
                t += dt
                G += 1
                steps += 1
                busy += dt
                kv_int += used * dt
                if used > peak:
                    peak = used
                for r, L in zip(chunk_r, chunk_l, strict=True):
                    lr = left[r] - L
                    left[r] = lr
                    done[r] += L
                    if lr:
                        continue
                    prefilling.remove(r)
                    g = gen[r] + 1
                    gen[r] = g
                    if isnan(first[r]):
                        first[r] = t + fill * dt
                    if g >= osl[r]:
                        finish[r] = t + fill * dt
                        used -= -(-ptot[r] // B)
                        del running[r]
                    else:
                        bv = ptot[r] - G
                        base[r] = bv
                        sum_base += bv
                        n += 1
                        phase[(1 - bv) % B] += 1
                        fs = G + osl[r] - g
                        fin[r] = fs
                        heappush(heap, (fs, r))
            else:
                # ------------------------------------------------ a stretch of pure decode steps
                while True:
                    top = heap[0]
                    if fin[top[1]] == top[0]:
                        break
                    heappop(heap)
                k = top[0] - G
                row = dec_rows[n]
                c0 = sum_base / n + G + 1
                ta = t_limit
                if not waiting and pi < npend and n < maxs:
                    r = pending[pi]
                    need = -(-isl[r] // B)
                    if (need > total - wm or total - used - need >= wm) and arr[r] < ta:
                        ta = arr[r]
                if ta < _INF:  # stop at the first step boundary at or after ta
                    x = c0 * inv_dc
                    i = int(x)
                    if i > dlast:
                        i = dlast
                    v = row[i]
                    slope = (row[i + 1] - v) * inv_dc
                    a = v + (row[i + 1] - v) * (x - i)
                    delta = ta - t
                    if slope > 1e-15 * a:
                        h = a - 0.5 * slope
                        j = math.ceil((sqrt(h * h + 2.0 * slope * delta) - h) / slope - 1e-9)
                    else:
                        j = math.ceil(delta / a - 1e-9)
                    if j < 1:
                        j = 1
                    if j < k:
                        k = j
                free = total - used
                if n * (k // B + 1) > free:  # the cache may fill within k steps
                    q = free // n
                    remaining = free - q * n
                    acc = 0
                    first_short = q * B + B
                    for j in range(1, B + 1):
                        acc += phase[(G + j) % B]
                        if acc > remaining:
                            first_short = q * B + j
                            break
                    if first_short - 1 < k:
                        k = first_short - 1
                cm = c0 + 0.5 * (k - 1)
                x = cm * inv_dc
                i = int(x)
                if i > dlast:
                    i = dlast
                v = row[i]
                dt = k * (v + (row[i + 1] - v) * (x - i))
                q, rem = divmod(k, B)
                cr = n * q
                for j in range(G + 1, G + rem + 1):
                    cr += phase[j % B]
                kv_int += (used + 0.5 * cr) * dt
                used += cr
                t += dt
                G += k
                steps += k
                busy += dt
                if used > peak:
                    peak = used
            # ---------------------------------------------------- completions at step G
            while heap and heap[0][0] <= G:
                fs, r = heappop(heap)
                if fin[r] != fs:
                    continue
                fin[r] = -1
                bv = base[r]
                used -= -(-(bv + G) // B)
                n -= 1
                sum_base -= bv
                phase[(1 - bv) % B] -= 1
                del running[r]
                finish[r] = t
                gen[r] = osl[r]

        self.pi = pi
        self.n, self.sum_base, self.used, self.G, self.t = n, sum_base, used, G, t
        self.steps, self.preemptions, self.kv_block_s, self.busy_s, self.peak_used = steps, npreempt, kv_int, busy, peak


# ---------------------------------------------------------------- results


def _slo_tuple(slo: Any) -> tuple[str, float, float]:
    """(metric, max_s, percentile) of an SLO object (metric / max_s / percentile attributes)
    or tuple."""
    if isinstance(slo, tuple | list):
        metric, max_s, *rest = slo
        return str(metric), float(max_s), float(rest[0]) if rest else 50.0
    return str(slo.metric), float(slo.max_s), float(getattr(slo, "percentile", 50.0))


@dataclass
class SimResult:
    """Per-request times (s, NaN where never reached) and per-replica counters of one run."""

    arrival_s: np.ndarray
    start_s: np.ndarray  # first scheduled (admitted)
    first_token_s: np.ndarray
    finish_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    preemptions: np.ndarray  # per request
    rejected: np.ndarray  # prompt larger than the whole KV cache: never served
    replica: np.ndarray
    replicas: int
    kv_blocks: int  # per replica
    block_size: int
    steps: int
    busy_s: float  # summed over replicas
    kv_block_s: float  # integral of KV blocks in use, summed over replicas
    peak_kv_blocks: int  # largest in use on any replica
    table_source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def completed(self) -> np.ndarray:
        return np.isfinite(self.finish_s)

    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        """(finish - first token) / (output tokens - 1); NaN for one-token outputs."""
        steps = (self.output_tokens - 1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(steps > 0, (self.finish_s - self.first_token_s) / np.maximum(steps, 1.0), np.nan)

    @property
    def e2e_s(self) -> np.ndarray:
        return self.finish_s - self.arrival_s

    @property
    def queue_s(self) -> np.ndarray:
        """Queueing delay: arrival to first admission."""
        return self.start_s - self.arrival_s

    def values(self, metric: str) -> np.ndarray:
        if metric not in LATENCY_KEYS:
            raise ValueError(f"unknown latency metric {metric!r}; use one of {', '.join(LATENCY_KEYS)}")
        return getattr(self, f"{metric}_s")

    def percentile(self, metric: str, p: float) -> float:
        """The p-th percentile of `metric` over the requests that reached it (NaN if none).
        Rejected requests count as infinitely late."""
        v = np.where(self.rejected, _NEVER, self.values(metric))
        v = v[~np.isnan(v)]
        if v.size == 0:
            return math.nan
        out = float(np.percentile(v, p, method="linear"))
        reached = v[v < _NEVER]
        return math.inf if reached.size == 0 or out > float(np.max(reached)) else out

    @property
    def duration_s(self) -> float:
        """First arrival to last completion."""
        done = self.completed
        if not done.any():
            return 0.0
        return float(np.max(self.finish_s[done]) - np.min(self.arrival_s))

    def output_tokens_per_s(self) -> float:
        d = self.duration_s
        return float(np.sum(self.output_tokens[self.completed])) / d if d > 0 else math.nan

    def requests_per_s(self) -> float:
        d = self.duration_s
        return float(np.count_nonzero(self.completed)) / d if d > 0 else math.nan

    def kv_utilization(self) -> float:
        """Time-averaged share of the KV cache in use (over the run, all replicas)."""
        d = self.duration_s
        if d <= 0:
            return 0.0
        return self.kv_block_s / (self.kv_blocks * self.replicas * d)

    def meets(self, slos: Iterable[Any]) -> np.ndarray:
        """Per request: does it meet every SLO's latency target (percentiles aside)?"""
        ok = self.completed & ~self.rejected
        for slo in slos:
            metric, max_s, _ = _slo_tuple(slo)
            v = self.values(metric)
            if metric == "tpot":
                ok &= ~(v > max_s)  # one-token outputs have no TPOT: met
            else:
                ok &= v <= max_s
        return ok

    def slo_attainment(self, slos: Sequence[Any]) -> float | None:
        """Share of requests meeting every target (None without SLOs)."""
        if not slos or len(self) == 0:
            return None
        return float(np.mean(self.meets(slos)))

    def summary(self, percentiles: Sequence[float] = DEFAULT_PERCENTILES, slos: Sequence[Any] = ()) -> dict[str, Any]:
        """Plain-Python (JSON-ready) summary: latency percentiles and means, throughput, queueing,
        KV utilization, preemptions and SLO attainment."""

        def stats(metric: str) -> dict[str, float | None]:
            out: dict[str, float | None] = {f"p{p:g}": _finite(self.percentile(metric, p)) for p in percentiles}
            v = self.values(metric)
            v = v[np.isfinite(v)]
            out["mean"] = float(np.mean(v)) if v.size else None
            return out

        slo_rows = []
        for slo in slos:
            metric, max_s, pct = _slo_tuple(slo)
            value = self.percentile(metric, pct)
            slo_rows.append(
                {
                    "metric": metric,
                    "percentile": pct,
                    "max_s": max_s,
                    "value_s": _finite(value),
                    "met": bool(value <= max_s),
                }
            )
        return {
            "requests": len(self),
            "completed": int(np.count_nonzero(self.completed)),
            "rejected": int(np.count_nonzero(self.rejected)),
            "replicas": self.replicas,
            "duration_s": self.duration_s,
            "ttft_s": stats("ttft"),
            "tpot_s": stats("tpot"),
            "e2e_s": stats("e2e"),
            "queue_s": stats("queue"),
            "output_tokens_per_s": _finite(self.output_tokens_per_s()),
            "requests_per_s": _finite(self.requests_per_s()),
            "kv_utilization": self.kv_utilization(),
            "peak_kv_utilization": self.peak_kv_blocks / self.kv_blocks,
            "kv_blocks_per_replica": self.kv_blocks,
            "preemptions": int(np.sum(self.preemptions)),
            "preempted_requests": int(np.count_nonzero(self.preemptions)),
            "steps": self.steps,
            "slo_attainment": self.slo_attainment(slos),
            "slos": slo_rows,
            **self.meta,
        }


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


# ---------------------------------------------------------------- entry points


def simulate(
    table: StepTimeTable,
    sched: SchedulerConfig,
    arrival_s: np.ndarray,
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    replicas: int = 1,
    dispatch: Dispatch = "least_loaded",
) -> SimResult:
    """Replay requests (arrival time, input tokens, output tokens; any order) through
    `replicas` identical replicas. `least_loaded` sends each arrival to the replica with the
    fewest requests outstanding (ties: lowest index); `round_robin` deals them in turn."""
    arrival = np.asarray(arrival_s, dtype=np.float64)
    isl = np.maximum(np.asarray(input_tokens, dtype=np.int64), 1)
    osl = np.maximum(np.asarray(output_tokens, dtype=np.int64), 1)
    if not (arrival.shape == isl.shape == osl.shape) or arrival.ndim != 1:
        raise ValueError("arrival_s, input_tokens and output_tokens must be 1-D and of one length")
    if arrival.size and not np.all(np.isfinite(arrival)):
        raise ValueError("arrival times must be finite")
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if dispatch not in ("least_loaded", "round_robin"):
        raise ValueError(f"unknown dispatch {dispatch!r}; use least_loaded or round_robin")
    if arrival.size and float(np.max(isl + osl)) > table.max_context + 1e-9:
        raise ValueError("the step-time table does not cover the longest request's context")
    order = np.argsort(arrival, kind="stable")
    shared = _Shared(arrival[order], isl[order], osl[order])
    reps = [_Replica(table, sched, shared) for _ in range(replicas)]
    count = len(shared.arrival)
    if replicas == 1:
        reps[0].pending.extend(range(count))
    elif dispatch == "round_robin":
        for i in range(count):
            reps[i % replicas].pending.append(i)
            shared.replica[i] = i % replicas
    else:
        for i in range(count):
            ta = shared.arrival[i]
            best, best_load = 0, None
            for k, rep in enumerate(reps):
                rep.advance(ta)
                load = rep.outstanding()
                if best_load is None or load < best_load:
                    best, best_load = k, load
            reps[best].pending.append(i)
            shared.replica[i] = best
    for rep in reps:
        rep.advance(_INF)
        if rep.used or rep.n or rep.running or rep.waiting:  # pragma: no cover - an accounting bug
            raise RuntimeError(f"simulator state not drained: {rep.used} blocks, {len(rep.running)} running")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)

    def back(values: list, dtype: Any = np.float64) -> np.ndarray:
        return np.asarray(values, dtype=dtype)[inverse]

    return SimResult(
        arrival_s=arrival,
        start_s=back(shared.start),
        first_token_s=back(shared.first),
        finish_s=back(shared.finish),
        input_tokens=isl,
        output_tokens=osl,
        preemptions=back(shared.npre, np.int64),
        rejected=back(shared.rejected, bool),
        replica=back(shared.replica, np.int64),
        replicas=replicas,
        kv_blocks=sched.kv_blocks,
        block_size=sched.block_size,
        steps=sum(r.steps for r in reps),
        busy_s=sum(r.busy_s for r in reps),
        kv_block_s=sum(r.kv_block_s for r in reps),
        peak_kv_blocks=max(r.peak_used for r in reps),
        table_source=table.source,
    )


def scheduler_for(
    b: ConfigBatch,
    *,
    row: int = 0,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    block_size: int = BLOCK_SIZE,
    context_tokens: float | None = None,
) -> SchedulerConfig:
    """The scheduler of configuration `row`: max_num_seqs = its batch (capped at the runtime's
    max_batch_size), max_num_batched_tokens = its max_num_tokens, and the blocks its KV budget
    holds at `context_tokens` (default: isl + osl of the row)."""
    seqs = int(max_num_seqs if max_num_seqs is not None else min(b.batch[row], b.max_batch_size[row]))
    tokens = int(max_num_batched_tokens if max_num_batched_tokens is not None else b.max_num_tokens[row])
    ctx = float(context_tokens if context_tokens is not None else b.isl[row] + b.osl[row])
    blocks = kv_blocks_for(b, ctx, block_size, row)
    if blocks < 1:
        raise ValueError("the weights leave no room for a KV cache")
    return SchedulerConfig(
        max_num_seqs=max(seqs, 1), max_num_batched_tokens=max(tokens, 1), kv_blocks=blocks, block_size=block_size
    )


def simulate_config(
    b: ConfigBatch,
    arrival_s: np.ndarray,
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    row: int = 0,
    replicas: int = 1,
    dispatch: Dispatch = "least_loaded",
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    block_size: int = BLOCK_SIZE,
    table: StepTimeTable | None = None,
) -> SimResult:
    """Simulate configuration `row` of `b` serving the requests (step times from
    `forward_time_s`, scheduler limits from the configuration, see `scheduler_for`)."""
    isl = np.asarray(input_tokens, dtype=np.int64)
    osl = np.asarray(output_tokens, dtype=np.int64)
    max_ctx = float(np.max(isl + osl)) if isl.size else 2.0
    sched = scheduler_for(
        b,
        row=row,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        block_size=block_size,
        context_tokens=float(b.isl[row] + b.osl[row]),
    )
    if table is None:
        table = StepTimeTable.from_batch(b, sched.max_num_seqs, sched.tokens_per_step, max_ctx + 1.0, row=row)
    result = simulate(table, sched, arrival_s, isl, osl, replicas=replicas, dispatch=dispatch)
    result.meta.update(
        max_num_seqs=sched.max_num_seqs,
        max_num_batched_tokens=sched.tokens_per_step,
        block_size=sched.block_size,
    )
    return result


# ---------------------------------------------------------------- two pools: disaggregated prefill / decode


def decode_pool_table(
    b: ConfigBatch, max_seqs: int, max_tokens: int, max_context: float, row: int = 0
) -> StepTimeTable:
    """Round times of a decode-pool replica (configuration `row` of `b`): prompt tokens cost
    nothing — their KV cache arrives over the link — so a step that admits transferred
    sequences is a decode step of the running sequences plus one (`decode_step_time_s`'s
    pipeline convention)."""
    one = b.take(np.array([row]))
    pp = float(one.pp[0])
    modes = one.has_attention_dp or one.has_mtp

    def fn(n: np.ndarray, c: np.ndarray, p: np.ndarray, pc: np.ndarray, ps: np.ndarray) -> np.ndarray:
        rows = one.take(np.zeros(n.size, dtype=np.int64))
        seqs = n + np.where(p > 0, 1.0, 0.0)
        ctx = np.where(n > 0, c, pc * 2.0)  # an admission alone: the prompt's own context
        if modes:  # DEP: the sequences spread over the attention ranks; MTP: per output token
            return decode_step_time_s(rows, np.maximum(seqs, 1e-9), ctx).total_s
        stage = forward_time_s(rows, np.maximum(seqs, 1e-9) / pp, ctx)
        return pp * (stage.total_s + pp_handoff_time_s(rows, seqs / pp))

    return StepTimeTable(
        fn, max_seqs, max_tokens, max_context, fill_fraction=0.0, source="decode pool (forward_time_s)"
    )


def simulate_disaggregated(
    prefill: ConfigBatch,
    decode: ConfigBatch,
    arrival_s: np.ndarray,
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    transfer_s: np.ndarray,
    prefill_replicas: int = 1,
    decode_replicas: int = 1,
    prefill_seqs: int | None = None,
    dispatch: Dispatch = "least_loaded",
    block_size: int = BLOCK_SIZE,
    row: int = 0,
) -> SimResult:
    """Two pools in series (objectives.disaggregation): the prompts are prefilled on
    `prefill_replicas` replicas of `prefill[row]` (the prefill-only scheduler: one-token
    outputs, at most `prefill_seqs` prompts at once — default `disaggregation.prefill_slots` — in
    steps of `max_num_tokens`), each prompt's KV cache then takes `transfer_s[i]` seconds to
    reach a decode replica (every pair of replicas on its own links: no contention), and
    `decode_replicas` replicas of `decode[row]` (at most its batch of sequences, its KV cache
    in blocks) admit the transferred caches in FIFO order and decode the other output tokens
    (`decode_pool_table`: an admission costs no prefill).

    The result's first token is the decode admission (queue + prefill + transfer + the wait
    for a decode slot), its TPOT the decode steps after it; `start_s` / `queue_s` are the
    prefill pool's. meta: prefill_replicas, decode_replicas, kv_transfer_mean_s,
    prefill_done_p99_s (arrival to the end of prefill), decode_wait_mean_s (KV arrived to
    admission)."""
    from objectives.disaggregation import prefill_slots

    arrival = np.asarray(arrival_s, dtype=np.float64)
    isl = np.maximum(np.asarray(input_tokens, dtype=np.int64), 1)
    osl = np.maximum(np.asarray(output_tokens, dtype=np.int64), 1)
    xfer = np.broadcast_to(np.asarray(transfer_s, dtype=np.float64), arrival.shape)
    bp = prefill.take(np.array([row]))
    bd = decode.take(np.array([row]))
    seqs_p = int(prefill_seqs if prefill_seqs is not None else prefill_slots(bp, float(np.mean(isl)))[0])
    max_in = float(np.max(isl)) if isl.size else 2.0
    dp = int(bp.attention_dp[0])  # a DEP pool's ranks each run a chunk of max_num_tokens
    sched_p = scheduler_for(
        bp,
        max_num_seqs=seqs_p,
        max_num_batched_tokens=int(bp.max_num_tokens[0]) * dp,
        block_size=block_size,
        context_tokens=float(bp.isl[0]) + 1.0,
    )
    table_p = StepTimeTable.from_batch(bp, sched_p.max_num_seqs, sched_p.tokens_per_step, max_in + 2.0)
    pre = simulate(table_p, sched_p, arrival, isl, np.ones_like(osl), replicas=prefill_replicas, dispatch=dispatch)
    ready = pre.first_token_s + xfer
    ok = np.isfinite(ready)
    ready = np.where(ok, ready, np.nanmax(np.where(ok, ready, np.nan)) if ok.any() else 0.0)
    seqs_d = int(min(decode.batch[row], decode.max_batch_size[row] * decode.attention_dp[row]))  # per rank
    tokens_d = seqs_d + 4 * int(max_in)  # a step admits whole transferred prompts
    sched_d = scheduler_for(
        bd,
        max_num_seqs=seqs_d,
        max_num_batched_tokens=tokens_d,
        block_size=block_size,
        context_tokens=float(bd.isl[0] + bd.osl[0]),
    )
    max_ctx = float(np.max(isl + osl)) + 1.0 if isl.size else 2.0
    table_d = decode_pool_table(bd, sched_d.max_num_seqs, sched_d.tokens_per_step, max_ctx)
    dec = simulate(table_d, sched_d, ready, isl, np.maximum(osl - 1, 1), replicas=decode_replicas, dispatch=dispatch)
    first = np.where(ok, dec.start_s, np.nan)
    finish = np.where(ok, dec.finish_s, np.nan)
    done_p = pre.first_token_s - arrival
    result = SimResult(
        arrival_s=arrival,
        start_s=pre.start_s,
        first_token_s=first,
        finish_s=finish,
        input_tokens=isl,
        output_tokens=osl,
        preemptions=pre.preemptions + dec.preemptions,
        rejected=pre.rejected | dec.rejected,
        replica=dec.replica,
        replicas=decode_replicas,
        kv_blocks=dec.kv_blocks,
        block_size=block_size,
        steps=pre.steps + dec.steps,
        busy_s=pre.busy_s + dec.busy_s,
        kv_block_s=dec.kv_block_s,
        peak_kv_blocks=dec.peak_kv_blocks,
        table_source=f"prefill {table_p.source}; {table_d.source}",
    )
    finite = done_p[np.isfinite(done_p)]
    waited = (dec.start_s - ready)[ok]
    result.meta.update(
        disaggregated=True,
        prefill_replicas=int(prefill_replicas),
        decode_replicas=int(decode_replicas),
        kv_transfer_mean_s=float(np.mean(xfer)) if xfer.size else 0.0,
        prefill_done_p99_s=float(np.percentile(finite, 99)) if finite.size else math.nan,
        decode_wait_mean_s=float(np.mean(waited)) if waited.size else math.nan,
        max_num_seqs=sched_d.max_num_seqs,
        prefill_max_num_seqs=sched_p.max_num_seqs,
        max_num_batched_tokens=sched_p.tokens_per_step,
        block_size=block_size,
    )
    return result
