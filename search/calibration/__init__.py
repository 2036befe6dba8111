"""What makes the cost model true to a machine: GPU probes (GEMM, HBM, attention, all-reduce, one
real decoder layer), fitting the serving parameters, calibration records, and validation against
published or a user's measurements.
"""

from search._exports import lazy_exports

_EXPORTS = {
    "KernelImportError": "kernel_import",
    "Source": "kernel_import",
    "import_records": "kernel_import",
    "installed_source": "kernel_import",
    "write_library": "kernel_import",
    "build_rows": "validation",
    "predict_batch": "validation",
    "log_error": "fitting",
    "nelder_mead": "fitting",
    "BOUNDS": "fitting",
    "CPU_ID": "probes",
    "ProbeUnavailableError": "probes",
    "allreduce_samples": "probes",
    "build_record": "probes",
    "calibrate_from_measurements": "records",
    "catalog_id": "probes",
    "efficiency_from_record": "records",
    "fit_serving_params": "fitting",
    "latest_usable_calibration": "records",
    "layer_shape": "layer_probe",
    "load_measurements": "validation",
    "load_record": "records",
    "predict": "validation",
    "probe_coverage": "probes",
    "probe_layer": "layer_probe",
    "probe_layer_remote": "layer_probe",
    "resolve_calibration": "records",
    "run_probe": "probes",
    "split_rows": "records",
    "summarize": "validation",
    "with_serving": "fitting",
    "worse_than_defaults": "records",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
