"""Request streams for the serving simulator: when requests arrive and how long they are.

Arrival processes (times in seconds from the start of the run):
- `poisson`: exponential inter-arrival times at `rate` requests/s (coefficient of variation 1);
- `gamma`: gamma inter-arrival times of mean 1/rate and coefficient of variation `cv`
  (shape 1/cv^2): cv > 1 is burstier than Poisson, cv < 1 smoother, cv = 1 is Poisson;
- `offline`: every request queued at t = 0 (a workload without a rate);
- a trace: a CSV file of (timestamp, input tokens, output tokens), such as the public Azure LLM
  inference traces (`TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps like
  `2023-11-16 18:15:46.6805900`). Timestamps may also be plain seconds.

Lengths are drawn from the workload's distributions. Arrivals, input and output lengths use
independent random streams spawned from one seed, so changing the rate leaves the lengths of a
seeded run unchanged (common random numbers across configurations and rates).
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from workloads.workload import Workload

ArrivalProcess = Literal["poisson", "gamma"]

# Column names accepted for each field of a trace (compared lower-case, without spaces / _).
_TIME_NAMES = ("timestamp", "time", "arrival", "arrivaltime", "arrivals", "t")
_INPUT_NAMES = ("contexttokens", "inputtokens", "input", "prompttokens", "isl", "requesttokens")
_OUTPUT_NAMES = ("generatedtokens", "outputtokens", "output", "completiontokens", "osl", "responsetokens")


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class Requests:
    """A request stream sorted by arrival: parallel arrays, one entry per request."""

    arrival_s: np.ndarray  # float64, non-decreasing
    input_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1

    def __post_init__(self) -> None:
        n = self.arrival_s.shape[0]
        if self.input_tokens.shape[0] != n or self.output_tokens.shape[0] != n:
            raise ValueError("arrival_s, input_tokens and output_tokens must have the same length")

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def mean_rate_per_s(self) -> float | None:
        """Requests per second over the span of the arrivals (None when they all arrive at once)."""
        if len(self) < 2:
            return None
        span = float(self.arrival_s[-1] - self.arrival_s[0])
        return (len(self) - 1) / span if span > 0 else None

    def head(self, n: int) -> Requests:
        """The first `n` requests."""
        return Requests(self.arrival_s[:n], self.input_tokens[:n], self.output_tokens[:n])

    def at_rate(self, rate_per_s: float) -> Requests:
        """The same requests with time stretched or compressed to a mean rate of `rate_per_s`
        (the burst pattern is kept; a stream with no time span is left as it is)."""
        if rate_per_s <= 0:
            raise ValueError(f"rate must be > 0, got {rate_per_s}")
        current = self.mean_rate_per_s
        if current is None:
            return self
        t0 = self.arrival_s[0]
        return Requests(t0 + (self.arrival_s - t0) * (current / rate_per_s), self.input_tokens, self.output_tokens)


def interarrival_times(
    rate_per_s: float, n: int, rng: np.random.Generator, process: ArrivalProcess = "poisson", cv: float = 1.0
) -> np.ndarray:
    """`n` inter-arrival gaps (s) of mean 1 / rate for a Poisson or gamma(cv) process."""
    if rate_per_s <= 0:
        raise ValueError(f"arrival rate must be > 0, got {rate_per_s}")
    if process == "poisson":
        return rng.exponential(1.0 / rate_per_s, n)
    if process == "gamma":
        if cv <= 0:
            raise ValueError(f"the gamma process needs cv > 0, got {cv}")
        shape = 1.0 / (cv * cv)
        return rng.gamma(shape, 1.0 / (rate_per_s * shape), n)
    raise ValueError(f"unknown arrival process {process!r}; use poisson or gamma")


def sample_requests(
    workload: Workload,
    n: int,
    *,
    rate_per_s: float | None = None,
    process: ArrivalProcess = "poisson",
    cv: float = 1.0,
    seed: int = 0,
) -> Requests:
    """`n` requests of `workload` arriving at `rate_per_s` (default: the workload's rate; a
    workload without one is offline: everything arrives at t = 0)."""
    if n < 1:
        raise ValueError(f"need at least one request, got {n}")
    arrivals_rng, input_rng, output_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    rate = rate_per_s if rate_per_s is not None else workload.arrival_rate_per_s
    if rate is None:
        arrival = np.zeros(n)
    else:
        arrival = np.cumsum(interarrival_times(rate, n, arrivals_rng, process, cv))
    return Requests(
        arrival_s=arrival.astype(np.float64),
        input_tokens=workload.input_tokens.sample(input_rng, n),
        output_tokens=workload.output_tokens.sample(output_rng, n),
    )


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "").replace(" ", "").replace("-", "")


def _parse_time(text: str) -> float:
    """Seconds: a number, or an ISO-like date-time (its POSIX time)."""
    try:
        return float(text)
    except ValueError:
        pass
    value = dt.datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _column(header: list[str], names: tuple[str, ...], position: int) -> int:
    normed = [_norm(h) for h in header]
    for name in names:
        if name in normed:
            return normed.index(name)
    return position


def read_trace(path: str | Path, limit: int | None = None) -> Requests:
    """Requests of a CSV trace: a header row naming a timestamp, an input-token and an
    output-token column (Azure: TIMESTAMP,ContextTokens,GeneratedTokens; unknown names fall back
    to the first three columns in that order), then one request per row. Times are shifted to
    start at 0 and sorted; token counts below 1 become 1. `limit` keeps the first rows."""
    p = Path(path)
    times: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    try:
        with p.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise TraceError(f"trace {p} is empty")
            has_header = True
            try:
                _parse_time(header[0])
                float(header[1])
                has_header = False
            except (ValueError, IndexError):
                pass
            if has_header:
                cols = (
                    _column(header, _TIME_NAMES, 0),
                    _column(header, _INPUT_NAMES, 1),
                    _column(header, _OUTPUT_NAMES, 2),
                )
                rows = reader
            else:
                cols = (0, 1, 2)
                rows = iter([header, *reader])  # type: ignore[assignment]
            for line, row in enumerate(rows, start=2 if has_header else 1):
                if not row or all(not c.strip() for c in row):
                    continue
                if limit is not None and len(times) >= limit:
                    break
                try:
                    times.append(_parse_time(row[cols[0]]))
                    inputs.append(int(float(row[cols[1]])))
                    outputs.append(int(float(row[cols[2]])))
                except (ValueError, IndexError) as exc:
                    raise TraceError(f"trace {p}, line {line}: cannot read {row!r} ({exc})") from None
    except OSError as exc:
        raise TraceError(f"cannot read trace {p}: {exc.strerror}") from None
    if not times:
        raise TraceError(f"trace {p} has no requests")
    t = np.asarray(times, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order[0]]
    return Requests(
        arrival_s=t,
        input_tokens=np.maximum(np.asarray(inputs, dtype=np.int64)[order], 1),
        output_tokens=np.maximum(np.asarray(outputs, dtype=np.int64)[order], 1),
    )


def trace_requests(
    path: str | Path, n: int | None = None, rate_per_s: float | None = None, offline: bool = False
) -> Requests:
    """The first `n` requests of a trace, replayed at their own times, rescaled to a mean
    `rate_per_s`, or all at t = 0 when `offline`."""
    reqs = read_trace(path, limit=n)
    if offline:
        return Requests(np.zeros(len(reqs)), reqs.input_tokens, reqs.output_tokens)
    return reqs.at_rate(rate_per_s) if rate_per_s is not None else reqs
