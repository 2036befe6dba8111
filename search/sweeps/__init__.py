"""A sweep: the spec, its search space, the evaluators (a batch of configurations in, a table of
metrics out), the driver with its exhaustive and guided tiers, Ray tasks, and Pareto fronts.
"""

from search._exports import lazy_exports

_EXPORTS = {
    "AnalyticEvaluator": "analytic",
    "basis_note": "pricing",
    "cloud_basis_note": "pricing",
    "excluded_note": "pricing",
    "mixed_basis_warning": "pricing",
    "price_table": "pricing",
    "stored_price_table": "pricing",
    "AUTO_EXHAUSTIVE_LIMIT": "spec",
    "code_version": "control",
    "Dimension": "space",
    "EvalResult": "evaluation",
    "evaluate_ids": "remote",
    "evaluate_shard": "remote",
    "Evaluator": "evaluation",
    "exact_front": "exhaustive",
    "hypervolume": "pareto",
    "LATENCY_METRICS": "spec",
    "load_spec": "spec",
    "make_evaluator": "evaluators",
    "MAXIMIZED": "spec",
    "merge_fronts": "pareto",
    "neighbourhood": "staged",
    "METRIC_COLUMNS": "evaluation",
    "normalized_hypervolume": "pareto",
    "OBJECTIVE_METRICS": "spec",
    "pareto_mask": "pareto",
    "parse_spec": "spec",
    "PROBE_MEASURED": "evaluation",
    "PROBE_STATUS": "evaluation",
    "ProbeEvaluator": "probed",
    "Progress": "control",
    "run_sweep": "driver",
    "SearchSpace": "space",
    "SimulatorEvaluator": "simulated",
    "stage_of": "evaluation",
    "STAGES": "evaluation",
    "SpecError": "spec",
    "start_sweep": "driver",
    "StopCheck": "control",
    "SWEEP_NAME_PATTERN": "spec",
    "SweepSpec": "spec",
    "SweepStopped": "control",
    "to_minimization": "pareto",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
