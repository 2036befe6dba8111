"""Pareto fronts and hypervolume, for objectives that are all minimized.

Callers turn maximized objectives into minimized ones by negating them (`to_minimization`).
Hypervolume is measured in a normalized space — each objective mapped to [0, 1] by an ideal and
a nadir point — so that objectives in different units (seconds, dollars) weigh alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_minimization(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Objective values (n, k) with maximized columns negated."""
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.asarray(values, dtype=np.float64) * sign


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `points` (n, k), all minimized. Rows with a
    non-finite value are never on the front; duplicate points are kept once (the first)."""
    pts = np.asarray(points, dtype=np.float64)
    n = pts.shape[0]
    keep = np.all(np.isfinite(pts), axis=1) if n else np.zeros(0, dtype=bool)
    if n == 0 or not keep.any():
        return keep
    if pts.shape[1] == 2:
        # sort by (f0, f1); a point is on the front iff its f1 beats every earlier f1
        order = np.lexsort((pts[:, 1], pts[:, 0]))
        order = order[keep[order]]
        f1 = pts[order, 1]
        best_before = np.concatenate([[np.inf], np.minimum.accumulate(f1)[:-1]])
        out = np.zeros(n, dtype=bool)
        out[order[f1 < best_before]] = True
        return out
    order = np.lexsort(pts.T[::-1])
    for i in order:
        if not keep[i]:
            continue
        p = pts[i]
        dominated = np.all(pts >= p, axis=1)  # includes duplicates of p and p itself
        dominated[i] = False
        keep &= ~dominated
    return keep


def merge_fronts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask over the concatenation [a; b] of the rows that stay non-dominated."""
    return pareto_mask(np.vstack([a, b]))


def normalize(points: np.ndarray, ideal: np.ndarray, nadir: np.ndarray) -> np.ndarray:
    span = np.where(nadir > ideal, nadir - ideal, 1.0)
    return (np.asarray(points, dtype=np.float64) - ideal) / span


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by `points` (n, k) and bounded by `reference`, all minimized; exact for
    any k by slicing along the last objective (fast for k <= 3 and fronts of a few thousand)."""
    pts = np.asarray(points, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if pts.size == 0:
        return 0.0
    pts = pts[np.all(pts < ref, axis=1)]
    if pts.shape[0] == 0:
        return 0.0
    pts = pts[pareto_mask(pts)]
    k = pts.shape[1]
    if k == 1:
        return float(ref[0] - pts[:, 0].min())
    if k == 2:
        order = np.argsort(pts[:, 0])
        xs, ys = pts[order, 0], pts[order, 1]
        # after the Pareto filter, y decreases as x increases
        widths = np.append(xs[1:], ref[0]) - xs
        return float(np.sum(widths * (ref[1] - ys)))
    order = np.argsort(pts[:, -1])
    pts = pts[order]
    volume = 0.0
    for i in range(pts.shape[0]):
        upper = pts[i + 1, -1] if i + 1 < pts.shape[0] else ref[-1]
        depth = upper - pts[i, -1]
        if depth > 0:
            volume += depth * hypervolume(pts[: i + 1, :-1], ref[:-1])
    return float(volume)


def reference_frame(points: np.ndarray, margin: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ideal, nadir, reference) of a front: the reference sits `margin` of the span beyond the
    nadir, in normalized units 1 + margin."""
    pts = np.asarray(points, dtype=np.float64)
    ideal = pts.min(axis=0)
    nadir = pts.max(axis=0)
    return ideal, nadir, np.full(pts.shape[1], 1.0 + margin)


def normalized_hypervolume(points: np.ndarray, ideal: np.ndarray, nadir: np.ndarray, margin: float = 0.1) -> float:
    """Hypervolume of `points` in the frame where `ideal` -> 0 and `nadir` -> 1, reference 1 + margin."""
    if len(points) == 0:
        return 0.0
    return hypervolume(normalize(points, ideal, nadir), np.full(np.shape(points)[1], 1.0 + margin))
