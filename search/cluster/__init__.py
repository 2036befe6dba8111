"""Ray: starting the embedded local cluster or joining one, and what GPUs it has."""

from search._exports import lazy_exports

_EXPORTS = {
    "EVAL_LOG_ENV": "ray_cluster",
    "KILL_ONCE_ENV": "ray_cluster",
    "ClusterUnavailableError": "ray_cluster",
    "check_reachable": "ray_cluster",
    "ProbeUnavailableError": "ray_cluster",
    "cluster_gpu_types": "ray_cluster",
    "has_gpu_type": "ray_cluster",
    "check_gpu_resource": "ray_cluster",
    "ensure_ray": "ray_cluster",
    "ray_accelerator_type": "ray_cluster",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
