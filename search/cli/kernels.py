"""`servesweep kernels`: import the open kernel database into kernel records, list and show them.

    servesweep kernels import [--source PATH|installed] [--gpu G]... [--engine E]... [-o DIR]
    servesweep kernels ls [--dir DIR] [--gpu G] [--json]
    servesweep kernels show NAME [--dir DIR]

`import` reads aiconfigurator-core's parquet tables (a wheel file, an unpacked tree, or the
installed package: read as data, its code is never run; needs pyarrow, `servesweep[kernels]`)
and writes one JSON file per GPU and engine (default: the package's objectives/data/kernels/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from search.cli.console import console, fail

kernels_app = typer.Typer(
    help="Measured kernel surfaces: import the open kernel database, list, show.", no_args_is_help=True
)


def _library(directory: Path | None):
    from objectives.kernels import KernelLibrary, KernelRecordError

    if directory is not None and not directory.is_dir():
        fail(f"kernel record directory {directory} does not exist")
    try:
        return KernelLibrary.from_dir(directory)
    except KernelRecordError as exc:
        fail(str(exc))
        raise  # unreachable


@kernels_app.command("import")
def import_command(
    source: Annotated[
        str, typer.Option(help="aiconfigurator-core wheel, unpacked tree, or 'installed' (the installed package)")
    ] = "installed",
    gpu: Annotated[list[str] | None, typer.Option("--gpu", help="database GPU name or catalog id (repeatable)")] = None,
    engine: Annotated[
        list[str] | None, typer.Option("--engine", help="trtllm, vllm, sglang or nccl (repeatable)")
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="directory for the JSON files")] = None,
) -> None:
    """Fit kernel records from the open kernel database and write them as JSON."""
    from objectives.kernels import default_kernel_dir
    from search.calibration import (
        KernelImportError,
        Source,
        import_records,
        installed_source,
        write_library,
    )

    try:
        src = installed_source() if source == "installed" else Source(source)
        records, notes = import_records(
            src, gpu or (), engine or (), progress=lambda m: console.print(m, highlight=False)
        )
    except KernelImportError as exc:
        fail(str(exc))
        return
    for note in notes:
        console.print(f"note: {note}", highlight=False)
    if not records:
        fail("no kernel records imported (nothing matched the GPUs and engines asked for)")
    out = output or default_kernel_dir()
    paths = write_library(records, out, src.package_version)
    size = sum(p.stat().st_size for p in paths)
    console.print(f"wrote {len(records)} records in {len(paths)} files to {out} ({size / 1e6:.2f} MB)", highlight=False)


@kernels_app.command("ls")
def ls_command(
    directory: Annotated[Path | None, typer.Option("--dir", help="directory of kernel record JSON files")] = None,
    gpu: Annotated[str | None, typer.Option(help="only this catalog GPU")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """List the kernel records: GPU, engine, version, op, dtype, rows and fit error."""
    lib = _library(directory)
    recs = [r for r in lib.records if gpu is None or r.gpu == gpu]
    if gpu is not None and not recs and directory is None:
        # a GPU without kernel data: its sibling's surfaces scaled onto it (objectives.kernel_timing)
        from objectives.accelerators import UnknownAcceleratorError, get_accelerator
        from objectives.efficiency import default_efficiency
        from objectives.kernel_timing import scaled_records

        try:
            recs = scaled_records(get_accelerator(gpu), default_efficiency())
        except UnknownAcceleratorError:
            recs = []
        if recs and not as_json:
            how = recs[0].basis.split(" (")[0]
            typer.echo(f"{gpu} has no kernel data: {how}, by peak and microbenchmark fractions (no fit of its own)")
    if gpu is not None and not recs:
        fail(f"no kernel records for GPU {gpu}; records exist for {', '.join(lib.gpus()) or 'no GPU'}")
    if as_json:
        for r in recs:
            typer.echo(
                json.dumps(
                    {k: getattr(r, k) for k in ("name", "gpu", "engine", "engine_version", "op", "dtype")}
                    | {"fit": r.fit, "basis": r.basis}
                    | ({"note": r.note} if r.source.get("scaled_from_gpu") else {})
                )
            )
        return
    head = f"{'gpu':<14} {'engine':<7} {'version':<11} {'op':<21} {'dtype':<17} {'rows':>6} {'median':>7} {'p90':>7}"
    typer.echo(head + "  name")
    for r in recs:
        f = r.fit
        typer.echo(
            f"{r.gpu:<14} {r.engine:<7} {r.engine_version:<11} {r.op:<21} {r.dtype:<17} {f.get('rows', 0):>6} "
            f"{f.get('median_abs_error', float('nan')):>7.1%} {f.get('p90_abs_error', float('nan')):>7.1%}  {r.name}"
        )
    typer.echo(f"{len(recs)} records")


@kernels_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="record name, as `kernels ls` prints it")],
    directory: Annotated[Path | None, typer.Option("--dir", help="directory of kernel record JSON files")] = None,
    grid: Annotated[bool, typer.Option(help="also print the grid values")] = False,
) -> None:
    """Show one record: its source, collection metadata, axes and fit error."""
    import difflib

    from objectives.kernels import KernelRecordError

    lib = _library(directory)
    try:
        rec = lib.by_name(name)
    except KernelRecordError:
        close = difflib.get_close_matches(name, [r.name for r in lib.records], n=3, cutoff=0.5)
        fail(f"no kernel record named {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        return
    d = rec.to_dict()
    if not grid:
        d.pop("time_s")
        d["grid"] = {a: [g[0], g[-1], len(g)] for a, g in zip(rec.axes, d["grid"], strict=True)}
        d["grid_note"] = "per axis: [first knot, last knot, knots]; --grid prints every value"
    d["basis"] = rec.basis
    typer.echo(json.dumps(d, indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(kernels_app, name="kernels")
