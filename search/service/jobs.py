"""The sweeps the HTTP service runs: one driver thread per sweep (Ray does the evaluating),
cooperative cancel and shutdown, live progress, and resuming the service's own sweeps after a
restart. The database stays the truth; this only knows what runs in this process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from search.store import Store, SweepBusyError
from search.sweeps import Progress, run_sweep

log = logging.getLogger("servesweep.service")

RESUMABLE = ("pending", "running", "interrupted")  # statuses a restarted service picks up
ACTIVE = ("pending", "running")  # statuses that count against a token's cap


@dataclass
class Job:
    """One sweep driven by this process."""

    name: str
    submitter: str
    stop: str | None = None  # the status a requested stop ends with ('cancelled' / 'interrupted')
    progress: dict[str, Any] | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class SweepManager:
    """Starts, tracks and stops the sweep threads of one service process."""

    def __init__(
        self,
        store: Store,
        *,
        ray_address: str | None = None,
        workers: int | None = None,
        scrub: Callable[[str], str] = lambda s: s,
    ) -> None:
        self.store = store
        self.ray_address = ray_address
        self.workers = workers
        self.scrub = scrub
        self.lock = threading.RLock()  # held by callers across check-then-start (the per-token cap)
        self._jobs: dict[str, Job] = {}
        self._closing = False

    # -- queries ------------------------------------------------------------------------------

    def job(self, name: str) -> Job | None:
        """The running job of that name, or None."""
        with self.lock:
            return self._jobs.get(name)

    def running(self) -> list[str]:
        with self.lock:
            return list(self._jobs)

    def active_for(self, submitter: str) -> set[str]:
        """Names of this submitter's service sweeps that run here or are pending / running in
        the database (another instance of the service on the same database counts too)."""
        with self.lock:
            names = {j.name for j in self._jobs.values() if j.submitter == submitter}
        for s in self.store.list_sweeps():
            if s["status"] in ACTIVE and s.get("submitter") == submitter and (s.get("spec") or {}).get("_service"):
                names.add(s["name"])
        return names

    # -- control ------------------------------------------------------------------------------

    def start(self, name: str, submitter: str) -> Job:
        """Run (or resume) the stored sweep `name` in a new thread."""
        with self.lock:
            if self._closing:
                raise RuntimeError("the service is shutting down")
            if name in self._jobs:
                return self._jobs[name]
            job = Job(name=name, submitter=submitter)
            job.thread = threading.Thread(target=self._run, args=(job,), name=f"sweep-{name}", daemon=True)
            self._jobs[name] = job
            job.thread.start()
        return job

    def _run(self, job: Job) -> None:
        started = time.monotonic()

        def on_progress(p: Progress) -> None:
            job.progress = {
                "total": p.total,
                "evaluated": p.evaluated,
                "feasible": p.feasible,
                "front_size": p.front_size,
                "hypervolume": p.hypervolume,
                "eta_s": p.eta_s,
                "elapsed_s": time.monotonic() - started,
            }

        try:
            result = run_sweep(
                self.store,
                job.name,
                ray_address=self.ray_address,
                workers=self.workers,
                progress=on_progress,
                should_stop=lambda: job.stop,
            )
            log.info("sweep %s: %s", job.name, result.get("stopped") or "finished")
        except SweepBusyError as exc:  # another service instance (or a CLI resume) drives it
            job.error = self.scrub(str(exc))
            log.info("sweep %s: left to the process running it", job.name)
        except Exception as exc:  # run_sweep stored status 'failed'
            job.error = self.scrub(f"{type(exc).__name__}: {exc}")
            log.error("sweep %s failed: %s", job.name, job.error)
        finally:
            with self.lock:
                self._jobs.pop(job.name, None)
            job.done.set()

    def cancel(self, name: str, wait_s: float = 0.0) -> Job | None:
        """Ask the sweep running here to stop with status 'cancelled' (at its next shard result
        or wave); waits up to `wait_s` for it. None if it does not run here."""
        job = self.job(name)
        if job is None:
            return None
        job.stop = "cancelled"
        job.done.wait(wait_s)
        return job

    def resume_own(self) -> list[str]:
        """Start the service's own unfinished sweeps (after a restart or a crash)."""
        names = []
        for s in reversed(self.store.list_sweeps()):  # oldest first
            if s["status"] in RESUMABLE and (s.get("spec") or {}).get("_service"):
                self.start(s["name"], s.get("submitter") or "unknown")
                names.append(s["name"])
        if names:
            log.info("resuming %d sweep(s): %s", len(names), ", ".join(names))
        return names

    def shutdown(self, wait_s: float = 30.0) -> None:
        """Stop every sweep with status 'interrupted' (a restarted service resumes them)."""
        with self.lock:
            self._closing = True
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop = job.stop or "interrupted"
        deadline = time.monotonic() + wait_s
        for job in jobs:
            job.done.wait(max(0.0, deadline - time.monotonic()))
        left = [j.name for j in jobs if not j.done.is_set()]
        if left:
            log.warning("sweeps still stopping at shutdown (left running in the database): %s", ", ".join(left))
