"""What a user reads: fronts, recommendations, the procurement report, launch commands, and the
single-deployment estimates and simulations behind `estimate` and `simulate`.
"""

from search._exports import lazy_exports

_EXPORTS = {
    "analyze": "analysis",
    "build_report": "report",
    "candidate_mask": "candidates",
    "CHECKPOINT": "launch",
    "clean_json": "simulation",
    "CONFIG_FIELDS": "candidates",
    "COST": "candidates",
    "efficiency_bases": "procurement",
    "estimate": "estimates",
    "evaluation_rows": "fronts",
    "EstimateError": "estimates",
    "for_store": "analysis",
    "front_rows": "fronts",
    "FrontError": "fronts",
    "nothing_fits_reasons": "infeasible",
    "gpu_catalog": "estimates",
    "KINDS": "candidates",
    "knee_index": "candidates",
    "label": "candidates",
    "launch_commands": "launch",
    "model_catalog": "estimates",
    "per_accelerator_best": "procurement",
    "price_sensitivity": "procurement",
    "pricing_assumptions": "procurement",
    "recommendations": "recommend",
    "rent_vs_own": "procurement",
    "roofline_data": "report_figures",
    "rows_from": "candidates",
    "RUNTIMES": "launch",
    "SENSITIVITY_FACTORS": "candidates",
    "simulate_deployment": "simulation",
    "SimulationError": "simulation",
    "sweep_context": "candidates",
    "SweepContext": "candidates",
    "why_nothing_fits": "infeasible",
    "write_report": "report",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
