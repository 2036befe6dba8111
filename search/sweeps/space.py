"""The search space of a sweep: a mixed-radix grid over its dimensions.

Configuration i of a space of size N = prod(len(values)) is the tuple of value indices
(i mod r0, (i // r0) mod r1, ...), so any range of integers is a shard that a worker can decode
on its own, and a configuration's integer id is stable across processes and restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from search.sweeps.spec import SweepSpec


@dataclass(frozen=True)
class Dimension:
    name: str
    values: tuple

    @property
    def size(self) -> int:
        return len(self.values)


class SearchSpace:
    """Dimensions of a sweep in a fixed order: accelerator, tp, pp, ep, weights, kv_cache,
    max_batch, chunked_prefill and, when the spec lists them, replicas; with a disaggregation
    section, then disaggregated, decode_accelerator and decode_tp (a disaggregated configuration
    reads accelerator / tp / max_batch as its prefill GPU, prefill TP and decode batch limit); then
    attention_dp and mtp when the spec gives them other values than the defaults [1] / [0] (so the
    ids and keys of sweeps without those modes stay what they were); then engine, last, when the spec lists engines."""

    def __init__(self, spec: SweepSpec) -> None:
        s = spec.space
        dims = [
            Dimension("accelerator", tuple(spec.accelerators)),
            Dimension("tp", tuple(s.tp)),
            Dimension("pp", tuple(s.pp)),
            Dimension("ep", tuple(s.ep)),
            Dimension("weights", tuple(s.weights)),
            Dimension("kv_cache", tuple(s.kv_cache)),
            Dimension("max_batch", tuple(s.max_batch)),
            Dimension("chunked_prefill", tuple(s.chunked_prefill)),
        ]
        if isinstance(s.replicas, list):
            dims.append(Dimension("replicas", tuple(s.replicas)))
        if s.disaggregation is not None:  # objectives.disaggregation; see spec.Disaggregation
            d = s.disaggregation
            dims.append(Dimension("disaggregated", tuple(d.enabled)))
            dims.append(Dimension("decode_accelerator", tuple(d.decode.accelerators or spec.accelerators)))
            dims.append(Dimension("decode_tp", tuple(d.decode.tp or s.tp)))
        if list(s.attention_dp) != [1]:
            dims.append(Dimension("attention_dp", tuple(s.attention_dp)))
        if list(s.mtp) != [0]:
            dims.append(Dimension("mtp", tuple(s.mtp)))
        # last and only when given: a spec without engines keeps its configuration ids, and an
        # engine list keeps the ids of its first engine's configurations
        if getattr(s, "engine", None) is not None:
            dims.append(Dimension("engine", tuple(s.engine)))
        self.dimensions: tuple[Dimension, ...] = tuple(dims)
        self._radix = np.array([d.size for d in dims], dtype=np.int64)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    @property
    def size(self) -> int:
        return math.prod(d.size for d in self.dimensions)  # Python ints: np.prod wraps past int64

    def decode(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Value indices of each dimension for configuration ids (vectorized)."""
        rest = np.asarray(ids, dtype=np.int64)
        if rest.size and (rest.min() < 0 or rest.max() >= self.size):
            raise IndexError(f"configuration id outside 0..{self.size - 1}")
        out = {}
        for dim, radix in zip(self.dimensions, self._radix, strict=True):
            out[dim.name] = rest % radix
            rest = rest // radix
        return out

    def encode(self, indices: dict[str, np.ndarray | int]) -> np.ndarray:
        """Configuration ids from value indices (inverse of decode)."""
        ids = np.zeros(np.shape(indices[self.dimensions[0].name]), dtype=np.int64)
        scale = 1
        for dim, radix in zip(self.dimensions, self._radix, strict=True):
            ids = ids + np.asarray(indices[dim.name], dtype=np.int64) * scale
            scale *= int(radix)
        return ids

    def config(self, config_id: int) -> dict[str, object]:
        """One configuration as {dimension: value}."""
        idx = self.decode(np.array([config_id]))
        return {d.name: d.values[int(idx[d.name][0])] for d in self.dimensions}

    def id_of(self, config: dict[str, object]) -> int:
        """Configuration id of {dimension: value}; ValueError names a value not in the space."""
        indices = {}
        for d in self.dimensions:
            if config.get(d.name) not in d.values:
                raise ValueError(f"{d.name}={config.get(d.name)!r} is not in the space {list(d.values)}")
            indices[d.name] = d.values.index(config[d.name])
        return int(self.encode(indices))

    @staticmethod
    def key(config: dict[str, object]) -> str:
        """A readable, stable key of a configuration (the unique key of stored evaluations)."""
        return "|".join(f"{k}={v}" for k, v in config.items())
