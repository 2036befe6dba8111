"""`servesweep probe`: run the GPU probe suite and store the calibration record it yields.

    servesweep probe [--device cuda|cpu] [--accelerator-type H100] [--gpus N] [--storage URL] [-o FILE]

The suite runs as a Ray task asking for one GPU (and the accelerator type when given; with
`--gpus N`, N GPUs of one node, and it adds the all-reduce probe across them); the cluster is
checked first, so a missing GPU is an error at once rather than a task Ray waits on
forever. `--device cpu` runs the same code on the CPU: the record is labelled gpu "CPU" and never
changes a GPU's prediction. The record is stored in svc_calibrations (kind "probe") and, with
`-o`, written as JSON (commit it under calibrations/); use it with `--calibration latest|FILE`.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from search.cli.checks import MkdirOpt, check_output, open_store
from search.cli.console import console, fail


class Device(StrEnum):
    cuda = "cuda"
    cpu = "cpu"


def probe(
    device: Annotated[Device, typer.Option(help="cuda: a cluster GPU; cpu: the same code on the CPU")] = Device.cuda,
    accelerator_type: Annotated[
        str | None, typer.Option(help="Ray accelerator_type the task asks for (e.g. H100, A100-80G)")
    ] = None,
    model: Annotated[
        str, typer.Option(help="model whose linear-layer and attention shapes the probes use")
    ] = "meta-llama/Llama-3.1-8B-Instruct",
    repeats: Annotated[int | None, typer.Option(min=1, help="timed repetitions per sample")] = None,
    gpus: Annotated[
        int, typer.Option(min=1, max=64, help="GPUs of one node for the all-reduce probe (cpu: gloo processes)")
    ] = 1,
    name: Annotated[str | None, typer.Option(help="name of the stored calibration")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="also write the record here (JSON)")] = None,
    storage: Annotated[str | None, typer.Option(envvar="SERVESWEEP_STORAGE", help="database URL")] = None,
    ray_address: Annotated[str | None, typer.Option(envvar="RAY_ADDRESS", help="Ray cluster to join")] = None,
    mkdir: MkdirOpt = False,
) -> None:
    """Measure GEMM, HBM and attention rates on a GPU and store them as a calibration."""
    from objectives.models import UnknownModelError, load_model
    from search.calibration import ProbeUnavailableError, build_record, run_probe

    check_output(output, mkdir=mkdir)  # before the probe runs, and before anything is stored
    try:
        model = load_model(model).id
    except UnknownModelError as exc:
        fail(str(exc))
    store = open_store(storage, write=True, mkdir=mkdir)
    if name is not None and store.get_calibration(name) is not None:
        fail(f"a calibration named {name!r} already exists in {store.url}")
    try:
        result = run_probe(
            device.value,
            accelerator_type=accelerator_type,
            model=model,
            repeats=repeats,
            ray_address=ray_address,
            gpus=gpus,
        )
        record = build_record(result, name)
        if output is not None:
            output.write_text(json.dumps(record, indent=2) + "\n")  # the file first: a failed write stores nothing
        store.save_calibration(record["name"], "probe", record, gpu=record["gpu"], device=record["device"])
    except (ProbeUnavailableError, ValueError) as exc:
        fail(str(exc))
        return
    v = record["versions"]
    console.print(
        f"{record['device_name']} -> {record['gpu']}  (driver {v['driver'] or '-'}, CUDA {v['cuda'] or '-'}, "
        f"torch {v['torch']}); {len(record['samples'])} samples"
    )
    peaks = record["fit"]["peaks"]["source"]
    table = Table(title=f"calibration {record['name']}: achieved fractions of peak ({peaks})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, entry in record["gpus"][record["gpu"]].items():
        if key == "gemm_fraction":
            for dtype, e in entry.items():
                table.add_row(f"gemm_fraction {dtype}", f"{e['value']:.3f}")
        else:
            table.add_row(key, f"{entry['value']:.4g}")
    for key, entry in record.get("serving", {}).items():
        table.add_row(f"serving {key}", f"{entry['value']:.4g}")
    console.print(table)
    if record["device"] == "cpu":
        console.print("[yellow]a CPU calibration: it never changes predictions for GPUs[/]")
    if output is not None:
        console.print(f"wrote {output}")
    console.print(
        f"stored as calibration {record['name']!r} in {store.url}; use it with --calibration latest or the file"
    )
    store.close()


def register(app: typer.Typer) -> None:
    app.command()(probe)
