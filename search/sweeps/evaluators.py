"""`make_evaluator(spec)`: the evaluator a spec names (`analytic`, `simulator` or `probe`)."""

from __future__ import annotations

from search.sweeps.analytic import AnalyticEvaluator
from search.sweeps.evaluation import Evaluator
from search.sweeps.probed import ProbeEvaluator
from search.sweeps.simulated import SimulatorEvaluator
from search.sweeps.spec import SweepSpec


def make_evaluator(spec: SweepSpec) -> Evaluator:
    """The evaluator a spec asks for."""
    if spec.evaluator == "analytic":
        return AnalyticEvaluator(spec)
    if spec.evaluator == "simulator":
        return SimulatorEvaluator(spec)
    if spec.evaluator == "probe":
        return ProbeEvaluator(spec)
    raise ValueError(f"evaluator {spec.evaluator!r} is not available")
