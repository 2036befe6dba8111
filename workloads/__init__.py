"""Traffic and targets: request lengths, arrival rates, SLOs and named presets."""

from workloads.presets import PRESETS, get_preset, preset_with
from workloads.workload import SLO, LengthDistribution, Workload

__all__ = ["PRESETS", "SLO", "LengthDistribution", "Workload", "get_preset", "preset_with"]
