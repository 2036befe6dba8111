"""Fault bench (issue 17): SIGKILL the sweep driver at random moments, resume it, and count what
the kills cost.

For each backend (a SQLite file; the PostgreSQL at --pg-url, in a fresh database dropped
afterwards) and each tier (exhaustive, tpe, nsga2, auto — the multi-fidelity default), on a
small spec of its own:

1. the reference: `servesweep run SPEC` uninterrupted (once per tier, on SQLite; every backend
   is compared with it). Its working time W runs from the moment its driver takes the sweep's
   lease (Ray is up by then) to the moment it exits.
2. the killed sweep: `servesweep run SPEC --name NAME`, SIGKILLed a uniform random time in
   [0, 0.9 W') after its driver took the lease, W' = W x the share of the reference's
   evaluations not yet computed (at least a tenth); then `servesweep run --resume NAME`, killed
   the same way, until --kills kills have landed; a last `--resume` runs it to the end. A
   resumed driver that finishes before its kill ends the case (`kills` says how many landed);
   a first driver that does is a miss, and the case starts again on a fresh sweep (3 tries).

Columns:
- kills: kills that landed while the driver was working.
- lost: configurations the reference stored that the final sweep lacks, plus configurations
  stored when a kill landed that the final sweep lacks.
- extra: configurations the final sweep stored that the reference did not (a resumed driver
  that decided otherwise than an uninterrupted one).
- duplicated: stored evaluation rows that share a configuration key, plus trials of the
  sweep's Optuna studies that share a trial number.
- re-evaluated: evaluations computed by a resumed driver of a configuration whose evaluation by
  the same evaluator (fidelity) was already stored when that driver started: a row in
  svc_evaluations, or a configuration of an exhaustive shard recorded in svc_shards. Every Ray
  evaluation task appends what it evaluated to $SERVESWEEP_EVAL_LOG (search.sweeps.remote), a
  log per driver, which is what is counted; evaluations a driver makes in-process for other
  purposes (the analytic latencies kept beside a simulated row, the exact front a guided
  summary compares with) are not sweep evaluations and are not logged.
- in flight: evaluations a killed driver computed but had not stored when it died, computed
  again by a later driver — the work in flight at a kill, redone by design (not re-evaluated).
- front: whether the final front's configuration ids equal the reference's.
- stored / computed: configurations the final sweep stored; evaluations its drivers' Ray tasks
  computed in all (logged; the auto tier evaluates its simulated configurations twice, analytic
  then simulated).

All of lost, extra, duplicated and re-evaluated are 0, and every front equal, when resumes are
exact. The drivers share one Ray cluster the bench starts (`--ray-address`), so a kill does not
also cost a Ray start-up; `--embedded` gives each driver its own local Ray, as `servesweep run`
does by default. The whole bench stays within --time-budget-s: a case that would not fit is
skipped and its row says so.

    python scripts/bench_faults.py [--kills 2] [--time-budget-s 300] [--backends sqlite,postgresql]
                                   [--tiers exhaustive,tpe,nsga2,auto] [--seed 0] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search.cluster import EVAL_LOG_ENV  # noqa: E402
from search.store import Store  # noqa: E402

PG_URL = os.environ.get("SERVESWEEP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TIERS = ("exhaustive", "tpe", "nsga2", "auto")

BASE: dict[str, Any] = {
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "workload": "chat",
    "accelerators": ["H100-SXM", "A100-SXM-80GB", "L40S"],
    "seed": 7,
}
GUIDED_SPACE = {
    "tp": [1, 2, 4, 8],
    "weights": ["bf16", "fp8"],
    "kv_cache": ["bf16", "fp8"],
    "max_batch": [1, 2, 4, 8, 16, 32, 64, 128],
    "chunked_prefill": [8192],
}  # 384 configurations
SPECS: dict[str, dict[str, Any]] = {
    "exhaustive": {
        "sampler": "exhaustive",
        "space": {**GUIDED_SPACE, "pp": [1, 2], "max_batch": list(range(1, 129))},
    },  # 12,288 configurations, 12 shards of 1,024
    "tpe": {"sampler": "tpe", "space": GUIDED_SPACE, "budget": {"trials": 120}},
    "nsga2": {"sampler": "nsga2", "space": GUIDED_SPACE, "budget": {"trials": 120}},  # past NSGA-II's 2nd generation
    "auto": {
        "sampler": "auto",
        "space": {**GUIDED_SPACE, "tp": [1, 2], "max_batch": [1, 4, 16, 64, 256]},
        "simulation": {"requests": 100},
        "budget": {"trials": 40},
    },  # 120 configurations: analytic shards, then 40 simulated (seeds, then TPE)
}


def _command() -> list[str]:
    exe = Path(sys.executable).with_name("servesweep")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from search.cli import app; app()"]


def _env(log: Path | None) -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    env.pop(EVAL_LOG_ENV, None)
    if log is not None:
        env[EVAL_LOG_ENV] = str(log)
    return env


class Backend:
    """A database for one backend's runs: a SQLite file, or a fresh PostgreSQL database."""

    def __init__(self, kind: str, workdir: Path, pg_url: str) -> None:
        self.kind = kind
        self._admin: sa.Engine | None = None
        if kind == "sqlite":
            self.url = f"sqlite:///{workdir}/{kind}.db"
        else:
            self._admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
            self._db = f"servesweep_faults_{uuid.uuid4().hex[:8]}"
            with self._admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self._db}"'))
            self.url = pg_url.rsplit("/", 1)[0] + "/" + self._db
        self.store = Store(self.url)
        self.engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)

    def lease_token(self, name: str) -> int | None:
        try:
            with self.engine.connect() as conn:
                return conn.execute(sa.text("SELECT token FROM svc_leases WHERE sweep_name = :n"), {"n": name}).scalar()
        except sa.exc.SQLAlchemyError:  # tables not created yet
            return None

    def duplicated(self, name: str) -> int:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT count(*) - count(DISTINCT e.config_key) FROM svc_evaluations e "
                    "JOIN svc_sweeps s ON s.id = e.sweep_id WHERE s.name = :n"
                ),
                {"n": name},
            ).scalar()
            if not sa.inspect(conn).has_table("trials"):  # no Optuna study (the exhaustive tier)
                return int(rows or 0)
            trials = conn.execute(
                sa.text(
                    "SELECT coalesce(sum(c - d), 0) FROM (SELECT count(*) AS c, count(DISTINCT t.number) AS d "
                    "FROM trials t JOIN studies s ON s.study_id = t.study_id "
                    "WHERE s.study_name = :a OR s.study_name LIKE :b GROUP BY s.study_id) per_study"
                ),
                {"a": f"servesweep:{name}", "b": f"servesweep:{name}:%"},
            ).scalar()
        return int(rows or 0) + int(trials or 0)

    def close(self) -> None:
        self.store.close()
        self.engine.dispose()
        if self._admin is not None:
            with self._admin.connect() as conn:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :n AND pid <> pg_backend_pid()"
                    ),
                    {"n": self._db},
                )
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self._db}"'))
            self._admin.dispose()


def _stored(store: Store, name: str) -> set[tuple[str, int]]:
    """(evaluator, configuration id) of every evaluation the sweep has stored: its rows, and the
    configurations of its recorded exhaustive shards (analytic)."""
    out = {(r.get("evaluator") or "", int(r["config"]["id"])) for r in store.get_evaluations(name)}
    summary = (store.get_sweep(name) or {}).get("summary") or {}
    shard = summary.get("shard_size") or next(
        (s.get("shard_size") for s in summary.get("stages", []) if s.get("shard_size")), None
    )
    size = summary.get("space_size")
    if shard and size:
        for rec in store.get_shards(name):
            for i in rec["covers"]:
                if i >= 0:
                    out.update(("analytic", c) for c in range(i * shard, min(size, (i + 1) * shard)))
    return out


def _logged(log: Path) -> Counter:
    """(evaluator, configuration id) -> times a driver's Ray tasks evaluated it."""
    counts: Counter = Counter()
    if not log.exists():
        return counts
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut by the kill
            continue
        ids = entry.get("ids")
        if ids is None:
            ids = range(int(entry["start"]), int(entry["stop"]))
        counts.update((entry["evaluator"], int(i)) for i in ids)
    return counts


def _front(store: Store, name: str) -> list[int]:
    front = store.latest_front(name, kind="final") or {}
    return sorted(int(p["id"]) for p in front.get("points") or [])


def _keys(store: Store, name: str) -> set[str]:
    return {r["config_key"] for r in store.get_evaluations(name)}


def _run(
    args: list[str],
    backend: Backend,
    name: str,
    log: Path | None,
    kill_after: float | None,
    ray_address: str | None,
    deadline: float,
) -> tuple[bool, float]:
    """Run a driver; with `kill_after`, SIGKILL it that many seconds after it takes the sweep's
    lease. Returns (killed while working, seconds from the lease to the exit)."""
    before = backend.lease_token(name)
    cmd = [*_command(), "run", *args, "--storage", backend.url, "--quiet"]
    if ray_address:
        cmd += ["--ray-address", ray_address]
    err_path = (log or Path(tempfile.gettempdir()) / f"bench_faults_{name}").with_suffix(".stderr")
    for _ in range(20):  # a PostgreSQL lease of a killed driver is freed when its backend notices
        with open(err_path, "w") as err_file:  # a file, not a pipe nobody reads while the driver runs
            proc = subprocess.Popen(cmd, env=_env(log), stdout=subprocess.DEVNULL, stderr=err_file)
        leased = None
        while proc.poll() is None and time.monotonic() < deadline:
            if backend.lease_token(name) not in (None, before):
                leased = time.monotonic()
                break
            time.sleep(0.05)
        if leased is None:
            if proc.poll() is None:  # out of time
                proc.kill()
                proc.wait()
                raise TimeoutError("time budget spent")
            err = err_path.read_text()
            if "running in another process" in err or "busy" in err.lower():
                time.sleep(0.5)
                continue
            raise RuntimeError(f"{' '.join(cmd[-6:])} exited {proc.returncode} without taking the lease: {err[-400:]}")
        if kill_after is None:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            if rc != 0:
                raise RuntimeError(f"driver exited {rc}: {err_path.read_text()[-400:]}")
            return False, time.monotonic() - leased
        try:
            proc.wait(timeout=kill_after)
            return False, time.monotonic() - leased  # finished before its kill
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True, time.monotonic() - leased
    raise RuntimeError("the sweep's lease was never free")


def _spec_file(workdir: Path, tier: str) -> Path:
    data = {**BASE, "name": f"faults-{tier}", **SPECS[tier]}
    path = workdir / f"{tier}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _case(
    backend: Backend,
    tier: str,
    spec: Path,
    reference: dict[str, Any],
    kills: int,
    rng: random.Random,
    workdir: Path,
    ray_address: str | None,
    deadline: float,
    verbose: bool = False,
    name: str | None = None,
) -> dict[str, Any]:
    name = name or f"killed-{tier}"
    store = backend.store
    landed = 0
    logs: list[Path] = []
    snapshots: list[set[tuple[str, int]]] = []  # stored when each driver started
    stored_keys_at_kills: set[str] = set()
    args = [str(spec), "--name", name]
    while True:
        log = workdir / f"{backend.kind}-{name}-{len(logs)}.jsonl"
        logs.append(log)
        snapshots.append(_stored(store, name) if store.get_sweep(name) else set())
        last = landed >= kills
        # a uniform point of the work left: the reference's working time, less the share of its
        # evaluations already done
        done = len({k for c in (_logged(p) for p in logs[:-1]) for k in c}) / max(1, reference["computed"])
        delay = None if last else rng.uniform(0.0, 0.9 * reference["work_s"] * max(0.1, 1.0 - done))
        killed, ran = _run(args, backend, name, log, delay, ray_address, deadline)
        if verbose:
            print(
                f"  {backend.kind} {tier} driver {len(logs)}: started with {len(snapshots[-1])} stored, "
                f"{'killed' if killed else 'ended'} after {ran:.1f} s, computed {sum(_logged(log).values())}",
                flush=True,
            )
        args = ["--resume", name]
        if killed:
            landed += 1
            stored_keys_at_kills |= _keys(store, name)
        record = store.get_sweep(name) or {}
        if last or (not killed and record.get("status") == "finished"):
            break
    final_keys = _keys(store, name)
    counts = [_logged(log) for log in logs]
    re_evaluated = sum(n for a in range(1, len(logs)) for key, n in counts[a].items() if key in snapshots[a])
    in_flight = 0
    for a in range(1, len(logs)):
        earlier = Counter()
        for c in counts[:a]:
            earlier.update(c)
        in_flight += sum(1 for key in counts[a] if key not in snapshots[a] and key in earlier)
    return {
        "backend": backend.kind,
        "tier": tier,
        "kills": landed,
        "lost": len(reference["keys"] - final_keys) + len(stored_keys_at_kills - final_keys),
        "extra": len(final_keys - reference["keys"]),
        "duplicated": backend.duplicated(name),
        "re-evaluated": re_evaluated,
        "in flight": in_flight,
        "front": "equal" if _front(store, name) == reference["front"] else "DIFFERS",
        "stored": len(final_keys),
        "computed": sum(sum(c.values()) for c in counts),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ["backend", "tier", "kills", "lost", "extra", "duplicated", "re-evaluated", "in flight", "front"]
    cols += ["stored", "computed"]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = [" | ".join(c.ljust(widths[c]) for c in cols), "-+-".join("-" * widths[c] for c in cols)]
    for r in rows:
        lines.append(" | ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kills", type=int, default=2, help="driver kills per tier and backend (default 2)")
    ap.add_argument("--time-budget-s", type=float, default=300.0, help="the whole bench (default 300 s)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--tiers", default=",".join(TIERS))
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pg-url", default=PG_URL)
    ap.add_argument("--embedded", action="store_true", help="each driver starts its own local Ray")
    ap.add_argument("-v", "--verbose", action="store_true", help="a line per driver")
    a = ap.parse_args()
    started = time.monotonic()
    deadline = started + a.time_budget_s
    rng = random.Random(a.seed)
    tiers = [t for t in a.tiers.split(",") if t]
    unknown = set(tiers) - set(TIERS)
    if unknown:
        ap.error(f"unknown tiers {sorted(unknown)}; choose from {', '.join(TIERS)}")
    ray_address = None
    if not a.embedded:
        import ray

        ray.init(address="local", num_cpus=a.workers, include_dashboard=False, log_to_driver=False)
        ray_address = ray.get_runtime_context().gcs_address
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_faults_") as tmp:
        workdir = Path(tmp)
        specs = {t: _spec_file(workdir, t) for t in tiers}
        references: dict[str, dict[str, Any]] = {}
        (workdir / "reference").mkdir()
        ref_backend = Backend("sqlite", workdir / "reference", a.pg_url)
        for t in tiers:
            ref_log = workdir / f"reference-{t}.jsonl"
            try:
                _, work_s = _run(
                    [str(specs[t]), "--name", f"reference-{t}"],
                    ref_backend,
                    f"reference-{t}",
                    ref_log,
                    None,
                    ray_address,
                    deadline,
                )
            except TimeoutError:
                rows.append({"backend": "-", "tier": t, "front": "skipped (time budget)"})
                continue
            name = f"reference-{t}"
            references[t] = {
                "keys": _keys(ref_backend.store, name),
                "front": _front(ref_backend.store, name),
                "work_s": work_s,
                "computed": len(_logged(ref_log)),
            }
            print(
                f"reference {t}: {work_s:.1f} s of work, {len(references[t]['keys'])} stored, "
                f"{references[t]['computed']} evaluated",
                flush=True,
            )
        ref_backend.close()
        for kind in [b for b in a.backends.split(",") if b]:
            (workdir / kind).mkdir()
            try:
                backend = Backend(kind, workdir / kind, a.pg_url)
            except sa.exc.OperationalError as exc:
                rows.append({"backend": kind, "tier": "-", "front": f"unreachable: {str(exc).splitlines()[0]}"})
                continue
            try:
                for t in tiers:
                    if t not in references:
                        continue
                    # a case needs about (kills + 1) x the reference's time and a start-up each
                    need = (a.kills + 1) * (references[t]["work_s"] + 6.0)
                    if time.monotonic() + need > deadline:
                        rows.append({"backend": kind, "tier": t, "front": "skipped (time budget)"})
                        continue
                    try:
                        for attempt in range(3):  # a first driver that finished before its kill: a fresh sweep
                            row = _case(
                                backend,
                                t,
                                specs[t],
                                references[t],
                                a.kills,
                                rng,
                                workdir,
                                ray_address,
                                deadline,
                                a.verbose,
                                name=f"killed-{t}-{attempt}",
                            )
                            if row["kills"] or time.monotonic() + need / (a.kills + 1) > deadline:
                                break
                    except TimeoutError:
                        row = {"backend": kind, "tier": t, "front": "cut (time budget)"}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                backend.close()
    print()
    print(_table(rows))
    print(f"\n{time.monotonic() - started:.0f} s; kills at uniform random times over each reference's working time")
    ok = all(
        r.get("front") == "equal" and not (r["lost"] or r["extra"] or r["duplicated"] or r["re-evaluated"])
        for r in rows
        if "lost" in r
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
