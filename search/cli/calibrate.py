"""`servesweep calibrate | calibrations`: fit the serving parameters to measurements, and list or
export the stored calibration records."""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from search.calibration import calibrate_from_measurements
from search.cli.checks import MkdirOpt, check_output, open_store
from search.cli.console import console, err, fail, say


def calibrate(
    measurements: Annotated[Path, typer.Option(help="measurement rows (JSON lines, the public file's format)")],
    holdout_fraction: Annotated[float, typer.Option(min=0.0, max=0.95, help="share of rows held out")] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the hold-out split")] = 0,
    params: Annotated[str | None, typer.Option(help="comma-separated serving parameters to fit (default: all)")] = None,
    max_evals: Annotated[int, typer.Option(min=10, help="loss evaluations of the optimizer")] = 800,
    name: Annotated[str | None, typer.Option(help="name of the stored calibration")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="also write the record here (JSON)")] = None,
    storage: Annotated[str | None, typer.Option(envvar="SERVESWEEP_STORAGE", help="database URL")] = None,
    mkdir: MkdirOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Fit the cost model's global efficiency parameters to end-to-end measurements."""
    import datetime as dt

    from search.calibration import BOUNDS, load_measurements

    check_output(output, mkdir=mkdir)  # before minutes of fitting, and before anything is stored
    try:
        rows = load_measurements(measurements)
    except (OSError, ValueError) as exc:
        fail(f"measurements {measurements}: {exc}")
        return
    names = tuple(p.strip() for p in params.split(",")) if params else tuple(BOUNDS)
    unknown = [p for p in names if p not in BOUNDS]
    if unknown:
        fail(f"unknown parameters {unknown}; fittable: {', '.join(BOUNDS)}")
    name = name or f"measurements-{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}"
    store = open_store(storage, write=True, mkdir=mkdir)
    try:
        if store.get_calibration(name) is not None:
            fail(f"a calibration named {name!r} already exists in {store.url}")
        with _fit_progress(len(rows), quiet) as on_progress:
            record = calibrate_from_measurements(
                rows,
                name=name,
                holdout_fraction=holdout_fraction,
                seed=seed,
                params=names,
                max_evals=max_evals,
                source=str(measurements),
                progress=on_progress,
            )
        text = json.dumps(record, indent=2) + "\n"
        if output is not None:
            output.write_text(text)  # the file first: a failed write stores nothing
        store.save_calibration(name, "measurements", record)
    except ValueError as exc:
        fail(str(exc))
        return
    errors = record["fit"]["errors"]
    table = Table(title=f"calibration {name}: absolute percentage error")
    for col in ("rows", "n", "median before", "median after", "p90 before", "p90 after"):
        table.add_column(col)
    for part in ("fit", "held_out"):
        if f"{part}_before" in errors:
            b, a = errors[f"{part}_before"], errors[f"{part}_after"]
            table.add_row(
                part.replace("_", "-"),
                str(a["n"]),
                f"{b['median_ape']}%",
                f"{a['median_ape']}%",
                f"{b['p90_ape']}%",
                f"{a['p90_ape']}%",
            )
    console.print(table)
    for k, v in record["serving"].items():
        console.print(f"  {k:<26} {v['value']:.6g}")
    if output is not None:
        say(f"wrote {output}")
    say(f"stored as calibration {name!r} in {store.url}; use it with --calibration latest or the file")


@contextmanager
def _fit_progress(n_rows: int, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr for the fit (minutes on the public file): yields the callback."""
    with Progress(
        TextColumn(f"fitting {n_rows:,} measurements"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    ) as bar:
        task = bar.add_task("fit", total=None, info="loss evaluations 0")
        last = [0.0]

        def on_progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last[0] > 0.1:  # a redraw per 0.1 s, not per evaluation
                last[0] = now
                bar.update(task, completed=done, total=total, info=f"loss evaluations {done:,}/{total:,}")

        yield on_progress


def calibrations(
    name: Annotated[str | None, typer.Argument(help="export this calibration (default: list them all)")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write the record here (JSON)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    storage: Annotated[str | None, typer.Option(envvar="SERVESWEEP_STORAGE", help="database URL")] = None,
    mkdir: MkdirOpt = False,
) -> None:
    """List the stored calibrations, or export one as JSON (to commit under calibrations/)."""
    if name is None and output is not None:
        fail("name the calibration to export with -o")
    check_output(output, mkdir=mkdir)
    store = open_store(storage)
    if name is None:
        rows = store.list_calibrations()
        summary = [
            {
                "name": c["name"],
                "kind": c["kind"],
                "gpu": c["gpu"],
                "device": c["device"],
                "created_at": c["created_at"],
                "applies_to": c["gpu"] or "all GPUs",
                **_held_out(c["record"]),
            }
            for c in rows
        ]
        if as_json:
            console.print_json(json.dumps(summary))
            return
        if not summary:
            say(f"no calibrations in {store.url}: run 'servesweep calibrate' or 'servesweep probe'")
            return
        table = Table(title=f"calibrations in {store.url} (newest first)")
        for col in ("name", "kind", "applies to", "created", "held-out median/p90: before -> after"):
            table.add_column(col)
        for c in summary:
            held = c.get("held_out")
            table.add_row(
                c["name"],
                c["kind"],
                c["applies_to"],
                str(c["created_at"])[:19].replace("T", " "),
                "-" if not held else f"{held[0]}% / {held[1]}% -> {held[2]}% / {held[3]}%",
            )
        console.print(table)
        return
    found = store.get_calibration(name)
    if found is None:
        known = [c["name"] for c in store.list_calibrations()]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        fail(f"no calibration named {name!r} in {store.url}{hint}")
        return
    text = json.dumps(found["record"], indent=2) + "\n"
    if output is None:
        print(text, end="")
    else:
        output.write_text(text)
        say(f"wrote {output} (use it with --calibration {output})", stderr=True)


def _held_out(record: dict) -> dict:
    """{'held_out': [median before, p90 before, median after, p90 after]} of a measurement fit."""
    errors = (record.get("fit") or {}).get("errors") or {}
    before, after = errors.get("held_out_before"), errors.get("held_out_after")
    if not before or not after:
        return {}
    return {"held_out": [before["median_ape"], before["p90_ape"], after["median_ape"], after["p90_ape"]]}


def register(app: typer.Typer) -> None:
    for fn in (
        calibrate,
        calibrations,
    ):
        app.command()(fn)
