"""Import the open kernel database into kernel records (objectives.kernels).

NVIDIA's Apache-2.0 package `aiconfigurator-core` ships collected kernel latencies as parquet
tables under `aiconfigurator_core/systems/data/<gpu>/<family>/<engine>/<version>/<table>.parquet`
with a `collection_meta.yaml` beside them. This module reads those tables as data (pyarrow,
imported lazily; the package's code is never imported or run) and fits one small log-space grid
per (GPU, engine, engine version, op, dtype), see objectives/kernels.py for the surface shapes.

Which rows a record summarizes:
- gemm_perf: every row of the dtype, one kernel source (the one with most rows for the dtype);
- context / generation_attention_perf: window_size 0 (full attention; sliding windows cap the
  context in the cost model), beam width 1, one kernel source per dtype; generation context =
  isl + step;
- moe_perf: gated kernels (sources named `nongated` are left out), routing distribution
  `balanced` where collected (else the least skewed power law), one kernel source per dtype;
- custom_allreduce_perf (the engine's own all-reduce) and nccl_perf (NCCL collectives):
  message_size counts elements of the table's dtype; records store bytes.

Version: per (GPU, engine, table) the `current` version of the package's
systems/query_versions.yaml when it has that table, else the newest version that has it
(NCCL: the newest).

The grid values are fitted by least squares in log space (dense normal equations with a small
second-difference penalty, numpy only), so every row counts and cells without rows are filled
smoothly; `fit` records the error against all the rows summarized.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from objectives.kernels import OP_AXES, KernelRecord, fit_errors, write_records

PACKAGE = "aiconfigurator-core"
MODULE = "aiconfigurator_core"

# aiconfigurator system names -> servesweep catalog ids (objectives/data/accelerators.yaml)
GPU_MAP: dict[str, str] = {
    "a100_sxm": "A100-SXM-80GB",
    "a100_pcie": "A100-PCIe-80GB",
    "h100_sxm": "H100-SXM",
    "h100_pcie": "H100-PCIe",
    "h200_sxm": "H200-SXM",
    "b200_sxm": "B200",
    "gb200": "GB200",
    "l40s": "L40S",
    "l4": "L4",
}
ENGINES = ("trtllm", "vllm", "sglang", "nccl")
TABLES: dict[str, tuple[str, ...]] = {
    "gemm_perf": ("gemm",),
    "context_attention_perf": ("context_attention",),
    "generation_attention_perf": ("generation_attention",),
    "moe_perf": ("moe",),
    "custom_allreduce_perf": ("allreduce",),
    "nccl_perf": ("nccl_allreduce", "nccl_allgather", "nccl_reducescatter", "nccl_alltoall"),
}
DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "int8": 1, "fp8": 1}
NCCL_OPS = {
    "all_reduce": "nccl_allreduce",
    "all_gather": "nccl_allgather",
    "reduce_scatter": "nccl_reducescatter",
    "alltoall": "nccl_alltoall",
}

# Grid resolution per op: the most knots per axis (the distinct values of the rows, thinned
# evenly in log space), chosen so each surface meets median <= 5 % / p90 <= 15 % on the
# database while the files stay small.
MAX_KNOTS: dict[str, tuple[int, ...]] = {
    "gemm": (74, 8, 8),
    "context_attention": (9, 11, 6, 5),
    "generation_attention": (12, 9, 12, 4),
    "moe": (16, 7, 7),
    "allreduce": (8, 32),
    "nccl": (8, 32),
}
SMOOTHING = 1e-3
SAMPLE_ROWS = 8


class KernelImportError(RuntimeError):
    """The import cannot run (missing source, missing pyarrow, unknown GPU ...): one line."""


# --- sources ------------------------------------------------------------------------------


class Source:
    """A tree of kernel tables: a directory (systems dir, its data dir, the package dir or a
    site-packages dir holding it) or the package's wheel file."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self.package_version = "unknown"
        self._zip: zipfile.ZipFile | None = None
        path = Path(location)
        if not path.exists():
            raise KernelImportError(f"kernel database source {location} does not exist")
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise KernelImportError(f"{location} is neither a directory nor a wheel (zip) file")
            self._zip = zipfile.ZipFile(path)
            m = re.match(r"aiconfigurator_core-([^-]+)-", path.name)
            self.package_version = m.group(1) if m else self._version_from_zip()
            prefix = f"{MODULE}/systems/"
            if not any(n.startswith(prefix + "data/") for n in self._zip.namelist()):
                raise KernelImportError(f"{location} holds no {prefix}data/ tables")
            self._root = prefix
        else:
            systems = _find_systems_dir(path)
            if systems is None:
                raise KernelImportError(
                    f"no kernel tables (<gpu>/<family>/<engine>/<version>/*.parquet) under {location}"
                )
            self._systems = systems
            self.package_version = _version_near(systems)

    def _version_from_zip(self) -> str:
        assert self._zip is not None
        for n in self._zip.namelist():
            m = re.match(r"aiconfigurator_core-([^/]+)\.dist-info/METADATA$", n)
            if m:
                return m.group(1)
        return "unknown"

    def files(self) -> list[str]:
        """Relative paths under the data directory: '<gpu>/<family>/<engine>/<version>/<file>'."""
        if self._zip is not None:
            head = self._root + "data/"
            return sorted(n[len(head) :] for n in self._zip.namelist() if n.startswith(head) and not n.endswith("/"))
        data = self._systems / "data"
        return sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())

    def read_bytes(self, rel: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self._root + "data/" + rel)
        return (self._systems / "data" / rel).read_bytes()

    def query_versions(self) -> dict[str, Any]:
        try:
            if self._zip is not None:
                text = self._zip.read(self._root + "query_versions.yaml").decode()
            else:
                text = (self._systems / "query_versions.yaml").read_text()
        except (KeyError, OSError):
            return {}
        return yaml.safe_load(text) or {}


def _find_systems_dir(path: Path) -> Path | None:
    for cand in (path, path / "systems", path / MODULE / "systems"):
        if (cand / "data").is_dir():
            return cand
    if path.name == "data" and path.is_dir():
        return path.parent
    return None


def _version_near(systems: Path) -> str:
    for parent in (systems.parent.parent, systems.parent):
        for meta in sorted(parent.glob("aiconfigurator_core-*.dist-info/METADATA")):
            for line in meta.read_text().splitlines():
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
    return "unknown"


def installed_source() -> Source:
    """The installed package's data directory, located without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise KernelImportError(
            f"{PACKAGE} is not installed; pass --source PATH (a wheel from `pip download --no-deps {PACKAGE}`)"
        )
    src = Source(Path(next(iter(spec.submodule_search_locations))) / "systems")
    if src.package_version == "unknown":
        from importlib.metadata import PackageNotFoundError, version

        try:
            src.package_version = version(PACKAGE)
        except PackageNotFoundError:
            pass
    return src


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise KernelImportError(
            "pyarrow is needed to read the kernel database: pip install 'servesweep[kernels]'"
        ) from exc
    return pq


# --- grid fitting -----------------------------------------------------------------------------


def choose_knots(values: np.ndarray, max_knots: int) -> np.ndarray:
    """Distinct positive values, thinned to at most `max_knots` spread evenly in log space
    (the smallest and largest always kept)."""
    u = np.unique(np.asarray(values, dtype=np.float64))
    u = u[u > 0]
    if u.size <= max_knots:
        return u
    logs = np.log(u)
    targets = np.linspace(logs[0], logs[-1], max_knots)
    picked = np.unique([int(np.argmin(np.abs(logs - t))) for t in targets])
    return u[picked]


def _corner_weights(log_axes: Sequence[np.ndarray], log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat cell index, weight) of the 2^d grid corners of each row (rows inside the grid)."""
    n, d = log_x.shape
    shape = [a.size for a in log_axes]
    strides = [int(np.prod(shape[i + 1 :])) for i in range(d)]
    parts = []
    for j, axis in enumerate(log_axes):
        if axis.size == 1:
            parts.append((np.zeros(n, dtype=np.int64), np.zeros(n), 0))
            continue
        i = np.clip(np.searchsorted(axis, log_x[:, j], side="right") - 1, 0, axis.size - 2)
        w = np.clip((log_x[:, j] - axis[i]) / (axis[i + 1] - axis[i]), 0.0, 1.0)
        parts.append((i * strides[j], w, strides[j]))
    idx = np.zeros((n, 1 << d), dtype=np.int64)
    wts = np.ones((n, 1 << d))
    for corner in range(1 << d):
        for j, (base, w, stride) in enumerate(parts):
            if (corner >> j) & 1:
                idx[:, corner] += base + stride
                wts[:, corner] *= w if stride else 0.0
            else:
                idx[:, corner] += base
                wts[:, corner] *= 1.0 - w
    return idx, wts


def fit_grid(
    coords: np.ndarray, times_s: np.ndarray, knots: Sequence[np.ndarray], smoothing: float = SMOOTHING
) -> np.ndarray:
    """Least-squares log times on the grid `knots` (shape = knot counts) for rows `coords`
    (n x d, natural units) with measured `times_s`: minimizes
    sum (log t_pred - log t)^2 + smoothing * n / cells * sum (second differences)^2."""
    log_axes = [np.log(k) for k in knots]
    log_x = np.log(coords)
    y = np.log(times_s)
    shape = tuple(k.size for k in knots)
    cells = int(np.prod(shape))
    idx, wts = _corner_weights(log_axes, log_x)
    c = idx.shape[1]
    rows_i = np.repeat(idx, c, axis=1).ravel()
    rows_j = np.tile(idx, (1, c)).ravel()
    prod = (np.repeat(wts, c, axis=1) * np.tile(wts, (1, c))).ravel()
    ata = np.bincount(rows_i * cells + rows_j, weights=prod, minlength=cells * cells).reshape(cells, cells)
    aty = np.bincount(idx.ravel(), weights=(wts * y[:, None]).ravel(), minlength=cells)
    # second-difference penalty along every axis (index space)
    lam = smoothing * len(y) / cells
    flat = np.arange(cells).reshape(shape)
    for axis in range(len(shape)):
        if shape[axis] < 3:
            continue
        a = np.moveaxis(flat, axis, 0)
        trip = [a[:-2].ravel(), a[1:-1].ravel(), a[2:].ravel()]
        coef = (1.0, -2.0, 1.0)
        for p in range(3):
            for q in range(3):
                np.add.at(ata, (trip[p], trip[q]), lam * coef[p] * coef[q])
    ata[np.diag_indices(cells)] += 1e-9 * lam + 1e-12
    solution = np.linalg.solve(ata, aty)
    return np.exp(solution.reshape(shape))


# --- rows -> records -------------------------------------------------------------------------


@dataclass
class Group:
    """Rows of one future record."""

    op: str
    dtype: str
    coords: np.ndarray  # n x d
    times_s: np.ndarray
    filters: str
    kernel_source: str


def _norm_dtype(name: str) -> str:
    return DTYPE_NAMES.get(str(name), str(name))


def _dominant(values: np.ndarray, mask: np.ndarray) -> str:
    counts = Counter(values[mask].tolist())
    return counts.most_common(1)[0][0] if counts else ""


def _cols(table: Any) -> dict[str, np.ndarray]:
    return {name: np.asarray(table.column(name).to_numpy(zero_copy_only=False)) for name in table.column_names}


def _groups_gemm(c: dict[str, np.ndarray]) -> list[Group]:
    out = []
    for raw in sorted(set(c["gemm_dtype"].tolist())):
        mask = c["gemm_dtype"] == raw
        ks = _dominant(c["kernel_source"], mask)
        mask &= c["kernel_source"] == ks
        coords = np.stack([c["m"][mask], c["n"][mask], c["k"][mask]], axis=1).astype(np.float64)
        out.append(Group("gemm", _norm_dtype(raw), coords, c["latency"][mask] * 1e-3, f"gemm_dtype={raw}", ks))
    return out


def _attention_dtype(attn: str, kv: str) -> str:
    a, k = _norm_dtype(attn), _norm_dtype(kv)
    return a if a == k else f"{a}-kv{k}"


def _groups_attention(c: dict[str, np.ndarray], op: str) -> list[Group]:
    base = np.ones(c["latency"].shape, dtype=bool)
    if "window_size" in c:
        base &= c["window_size"] == 0
    if "beam_width" in c:
        base &= c["beam_width"] == 1
    out = []
    pairs = sorted(set(zip(c["attn_dtype"][base].tolist(), c["kv_cache_dtype"][base].tolist(), strict=True)))
    for attn, kv in pairs:
        mask = base & (c["attn_dtype"] == attn) & (c["kv_cache_dtype"] == kv)
        ks = _dominant(c["kernel_source"], mask)
        mask &= c["kernel_source"] == ks
        b = c["batch_size"][mask].astype(np.float64)
        h = c["num_heads"][mask].astype(np.float64)
        kvh = c["num_key_value_heads"][mask].astype(np.float64)
        hd = c["head_dim"][mask].astype(np.float64)
        if op == "context_attention":
            coords = np.stack([b * h, c["isl"][mask], h / kvh, hd], axis=1).astype(np.float64)
        else:
            ctx = c["isl"][mask].astype(np.float64) + c["step"][mask]
            coords = np.stack([b * kvh, ctx, h / kvh, hd], axis=1)
        keep = np.all(coords > 0, axis=1)
        filt = f"window_size=0, beam_width=1, attn_dtype={attn}, kv_cache_dtype={kv}"
        out.append(Group(op, _attention_dtype(attn, kv), coords[keep], c["latency"][mask][keep] * 1e-3, filt, ks))
    return out


def _groups_moe(c: dict[str, np.ndarray]) -> list[Group]:
    gated = np.array(["nongated" not in s for s in c["kernel_source"].tolist()])
    dists = set(c["distribution"].tolist())
    if "balanced" in dists:
        dist = "balanced"
    else:
        # power_law_<a>: the larger the exponent, the more skewed; the smallest is nearest uniform
        laws = sorted((float(d.split("_")[-1]), d) for d in dists if d.startswith("power_law_"))
        dist = laws[0][1] if laws else sorted(dists)[0]
    base = gated & (c["distribution"] == dist)
    out = []
    for raw in sorted(set(c["moe_dtype"][base].tolist())):
        mask = base & (c["moe_dtype"] == raw)
        ks = _dominant(c["kernel_source"], mask)
        mask &= c["kernel_source"] == ks
        ep = c["moe_ep_size"][mask].astype(np.float64)
        coords = np.stack(
            [
                c["num_tokens"][mask] * c["topk"][mask] / ep,
                c["num_experts"][mask] / ep,
                c["hidden_size"][mask].astype(np.float64) * c["inter_size"][mask] / c["moe_tp_size"][mask],
            ],
            axis=1,
        ).astype(np.float64)
        keep = np.all(coords > 0, axis=1)
        filt = f"moe_dtype={raw}, distribution={dist}, gated kernels"
        out.append(Group("moe", _norm_dtype(raw), coords[keep], c["latency"][mask][keep] * 1e-3, filt, ks))
    return out


def _groups_comm(c: dict[str, np.ndarray], nccl: bool) -> list[Group]:
    out = []
    dcol = "nccl_dtype" if nccl else "allreduce_dtype"
    ops = sorted(set(c["op_name"].tolist())) if nccl else [None]
    for op_name in ops:
        if nccl and op_name not in NCCL_OPS:
            continue
        for raw in sorted(set(c[dcol].tolist())):
            mask = c[dcol] == raw
            if op_name is not None:
                mask &= c["op_name"] == op_name
            impl_col = "implementation" if "implementation" in c else "kernel_source"
            impl = _dominant(c[impl_col], mask)
            mask &= c[impl_col] == impl
            dtype = _norm_dtype(raw)
            nbytes = DTYPE_BYTES.get(dtype, 2)
            coords = np.stack([c["num_gpus"][mask], c["message_size"][mask] * float(nbytes)], axis=1).astype(np.float64)
            keep = np.all(coords > 0, axis=1) & (coords[:, 0] > 1)
            if not keep.any():
                continue
            op = NCCL_OPS[op_name] if nccl else "allreduce"
            filt = f"{dcol}={raw}, {impl_col}={impl}" + (f", op_name={op_name}" if nccl else "")
            filt += f"; message_bytes = message_size elements x {nbytes} bytes"
            out.append(Group(op, dtype, coords[keep], c["latency"][mask][keep] * 1e-3, filt, str(impl)))
    return out


def groups_for_table(table_name: str, table: Any) -> list[Group]:
    c = _cols(table)
    if table_name == "gemm_perf":
        return _groups_gemm(c)
    if table_name == "context_attention_perf":
        return _groups_attention(c, "context_attention")
    if table_name == "generation_attention_perf":
        return _groups_attention(c, "generation_attention")
    if table_name == "moe_perf":
        return _groups_moe(c)
    if table_name == "custom_allreduce_perf":
        return _groups_comm(c, nccl=False)
    if table_name == "nccl_perf":
        return _groups_comm(c, nccl=True)
    raise KernelImportError(f"table {table_name} is not imported")


def record_from_group(
    g: Group,
    *,
    gpu: str,
    db_gpu: str,
    engine: str,
    version: str,
    rel: str,
    device: str,
    package_version: str,
    collection: dict[str, Any],
    imported: str,
) -> KernelRecord | None:
    """Fit the grid of one group and wrap it as a record (None when too few rows)."""
    # duplicates of one shape (e.g. batch x heads products): their geometric mean
    coords, inverse = np.unique(g.coords, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    logt = np.bincount(inverse, weights=np.log(g.times_s)) / np.bincount(inverse)
    if len(coords) < 4:
        return None
    limits = MAX_KNOTS["nccl" if g.op.startswith("nccl_") else g.op]
    knots = [choose_knots(coords[:, j], limits[j]) for j in range(coords.shape[1])]
    grid_t = fit_grid(coords, np.exp(logt), knots)
    name = f"{gpu}/{engine}-{version}/{g.op}/{g.dtype}"
    rec = KernelRecord(
        name=name,
        gpu=gpu,
        engine=engine,
        engine_version=version,
        op=g.op,
        dtype=g.dtype,
        axes=OP_AXES[g.op],
        grid=tuple(knots),
        time_s=grid_t,
        source={
            "package": PACKAGE,
            "package_version": package_version,
            "license": "Apache-2.0",
            "database_gpu": db_gpu,
            "device": device,
            "table": rel,
            "kernel_source": g.kernel_source,
            "filters": g.filters,
            "units": "table latency in ms; stored in s",
            "imported": imported,
        },
        collection=collection,
        note="",
    )
    # error against every row summarized (rounded values as stored)
    rec = KernelRecord.from_dict(rec.to_dict())
    pred = rec.time_at(*(g.coords[:, j] for j in range(g.coords.shape[1])))
    fit = fit_errors(pred, g.times_s)
    fit["shapes"] = len(coords)
    fit["cells"] = int(grid_t.size)
    # a few rows kept verbatim, so a test can check the committed grid without the database
    pick = np.random.default_rng(0).choice(len(g.times_s), size=min(SAMPLE_ROWS, len(g.times_s)), replace=False)
    fit["sample"] = [
        [*(float(f"{v:.6g}") for v in g.coords[i]), float(f"{g.times_s[i]:.4g}")] for i in sorted(pick.tolist())
    ]
    return _with_fit(rec, fit)


def _with_fit(rec: KernelRecord, fit: dict[str, Any]) -> KernelRecord:
    d = rec.to_dict()
    d["fit"] = fit
    return KernelRecord.from_dict(d)


# --- planning and running ---------------------------------------------------------------------


@dataclass(frozen=True)
class TableRef:
    db_gpu: str
    family: str
    engine: str
    version: str
    table: str

    @property
    def rel(self) -> str:
        return f"{self.db_gpu}/{self.family}/{self.engine}/{self.version}/{self.table}.parquet"


def _version_key(v: str) -> tuple:
    parts = re.findall(r"\d+|[a-z]+", v.lower())
    return tuple((0, int(p)) if p.isdigit() else (-1, p) for p in parts)


def plan(source: Source, gpus: Iterable[str] = (), engines: Iterable[str] = ()) -> tuple[list[TableRef], list[str]]:
    """(tables to import, notes on what was skipped). `gpus` takes database names or catalog ids."""
    files = source.files()
    db_gpus = sorted({f.split("/")[0] for f in files if f.count("/") >= 4})
    wanted = {g.lower() for g in gpus}
    reverse = {v.lower(): k for k, v in GPU_MAP.items()}
    unknown = [g for g in wanted if g not in GPU_MAP and g not in reverse]
    if unknown:
        raise KernelImportError(
            f"unknown GPU {', '.join(sorted(unknown))}: known are {', '.join(sorted(GPU_MAP))} "
            f"(or their catalog ids {', '.join(sorted(GPU_MAP.values()))})"
        )
    want_db = {reverse.get(g, g) for g in wanted}
    engines = {e.lower() for e in engines}
    bad = engines - set(ENGINES)
    if bad:
        raise KernelImportError(f"unknown engine {', '.join(sorted(bad))}: known are {', '.join(ENGINES)}")
    notes = []
    skipped = [g for g in db_gpus if g not in GPU_MAP]
    if skipped and not want_db:
        notes.append(f"skipped GPUs the catalog lacks: {', '.join(skipped)}")
    qv = source.query_versions()
    found: dict[tuple[str, str, str], list[TableRef]] = {}
    for f in files:
        parts = f.split("/")
        if len(parts) != 5 or not parts[4].endswith(".parquet"):
            continue
        db_gpu, family, engine, version, fname = parts
        table = fname[: -len(".parquet")]
        if table not in TABLES or db_gpu not in GPU_MAP:
            continue
        if want_db and db_gpu not in want_db:
            continue
        if engines and engine not in engines:
            continue
        found.setdefault((db_gpu, engine, table), []).append(TableRef(db_gpu, family, engine, version, table))
    missing = sorted(want_db - {k[0] for k in found})
    if missing:
        notes.append(f"no kernel tables for {', '.join(missing)} in this source")
    chosen = []
    for (db_gpu, engine, _table), refs in sorted(found.items()):
        current = ((qv.get("overrides") or {}).get(db_gpu) or {}).get(engine) or (qv.get("defaults") or {}).get(engine)
        cur = current.get("current") if isinstance(current, dict) else None
        pick = next((r for r in refs if r.version == cur), None)
        if pick is None:
            pick = max(refs, key=lambda r: _version_key(r.version))
        chosen.append(pick)
    return chosen, notes


def _collection_meta(source: Source, ref: TableRef) -> dict[str, Any]:
    rel = f"{ref.db_gpu}/{ref.family}/{ref.engine}/{ref.version}/collection_meta.yaml"
    try:
        meta = yaml.safe_load(source.read_bytes(rel).decode()) or {}
    except (KeyError, OSError, yaml.YAMLError):
        return {}
    keep = {k: meta[k] for k in ("schema_version", "provenance", "runtime") if k in meta}
    status = (meta.get("tables") or {}).get(ref.table)
    if status is not None:
        keep["table_status"] = status.get("status") if isinstance(status, dict) else status
    return keep


def import_records(
    source: Source,
    gpus: Iterable[str] = (),
    engines: Iterable[str] = (),
    progress: Callable[[str], None] | None = None,
) -> tuple[list[KernelRecord], list[str]]:
    """Read and fit every planned table; returns (records, notes)."""
    pq = _pyarrow()
    refs, notes = plan(source, gpus, engines)
    imported = dt.date.today().isoformat()
    records: list[KernelRecord] = []
    for ref in refs:
        table = pq.read_table(io.BytesIO(source.read_bytes(ref.rel)))
        device = str(table.column("device")[0]) if "device" in table.column_names and table.num_rows else ""
        meta = _collection_meta(source, ref)
        for g in groups_for_table(ref.table, table):
            rec = record_from_group(
                g,
                gpu=GPU_MAP[ref.db_gpu],
                db_gpu=ref.db_gpu,
                engine=ref.engine,
                version=ref.version,
                rel=ref.rel,
                device=device,
                package_version=source.package_version,
                collection=meta,
                imported=imported,
            )
            if rec is None:
                notes.append(f"{ref.rel} {g.op} {g.dtype}: too few rows, skipped")
                continue
            records.append(rec)
            if progress:
                f = rec.fit
                progress(
                    f"{rec.name}: {f['rows']} rows, median {f['median_abs_error']:.2%} p90 {f['p90_abs_error']:.2%}"
                )
    return records, notes


def write_library(records: Sequence[KernelRecord], out_dir: Path, package_version: str) -> list[Path]:
    """One JSON file per (GPU, engine): <gpu>.<engine>.json."""
    by: dict[tuple[str, str], list[KernelRecord]] = {}
    for r in records:
        by.setdefault((r.gpu, r.engine), []).append(r)
    paths = []
    for (gpu, engine), recs in sorted(by.items()):
        path = out_dir / f"{gpu}.{engine}.json"
        header = {
            "gpu": gpu,
            "engine": engine,
            "source": f"{PACKAGE} {package_version} (Apache-2.0), read as data",
            "written": dt.date.today().isoformat(),
            "by": "servesweep kernels import",
        }
        write_records(sorted(recs, key=lambda r: r.name), path, header)
        paths.append(path)
    return paths
