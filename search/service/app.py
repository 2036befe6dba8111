"""The HTTP service (`servesweep serve`): teams submit sweeps, watch them, fetch fronts and
reports, and ask for single estimates; results land in one database.

Every endpoint but `/healthz` wants `Authorization: Bearer <token>` (search.service.auth,
search.service.requests); request bodies are capped; a token runs at most
`max_sweeps_per_token` sweeps at once; sweep names never leave the report folder. Sweeps run in
driver threads (search.service.jobs) that evaluate on Ray; the sweeps the service started and
did not finish are resumed when it starts again. Errors are JSON `{"detail": ...}`, 4xx for
anything a client got wrong. `create_app` is one function on purpose: the routes share the
settings, the store and the job manager through its closure, and read best in one place.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from search.service.auth import TokenChecker
from search.service.jobs import SweepManager
from search.service.requests import (
    _NAME_RULE,
    OPEN_PATHS,
    Guard,
    _catalog_model_error,
    _check_name,
    _json,
    _parse_body,
    _plain,
    _server_file_fields,
    _user,
    bearer,
)
from search.store import Store
from search.sweeps import SpecError, SweepSpec, parse_spec

log = logging.getLogger("servesweep.service")


@dataclass
class ServiceSettings:
    """What one service process serves, and its limits."""

    storage_url: str
    tokens: dict[str, str]  # name -> token
    ray_address: str | None = None
    max_body_bytes: int = 1 << 20
    body_timeout_s: float = 10.0  # a request body must arrive within this (else 408)
    max_sweeps_per_token: int = 2
    report_dir: Path = field(default_factory=lambda: Path.cwd() / "servesweep-reports")
    workers: int | None = None  # Ray tasks in flight per sweep (default: CPUs)
    resume: bool = True  # resume the service's own unfinished sweeps at start
    cancel_wait_s: float = 5.0  # DELETE waits this long for the sweep to stop before answering 202
    status_cache_s: float = 0.5  # GET /sweeps/{name} reads the database at most this often per sweep
    shutdown_wait_s: float = 30.0


class EstimateRequest(BaseModel):
    """One deployment to estimate (the options of `servesweep estimate`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=200, description="catalog id or alias (GET /catalog/models)")
    gpu: str = Field(max_length=100, description="accelerator id or alias (GET /catalog/gpus)")
    tp: int = Field(1, ge=1, le=1024, description="tensor parallel size")
    pp: int = Field(1, ge=1, le=1024, description="pipeline parallel size")
    ep: int = Field(1, ge=1, le=1024, description="expert parallel size (divides TP)")
    weights: str = Field("bf16", max_length=32, description="bf16, fp8, int8, int8-wo, int4, fp4, mxfp4")
    kv_cache: Literal["bf16", "fp16", "fp8", "int8"] | None = Field(
        None, description="KV-cache dtype (default: fp8 with fp8/fp4 weights, else bf16)"
    )
    isl: int = Field(1024, ge=1, le=10_000_000, description="input tokens per request")
    osl: int = Field(256, ge=1, le=10_000_000, description="output tokens per request")
    batch: int | None = Field(None, ge=1, le=1_000_000, description="concurrent sequences per replica")
    max_throughput: bool = Field(False, description="pick the batch giving the most tokens/s per GPU")
    rate: float | None = Field(
        None, ge=0, le=1e9, description="arrival rate, requests/s: latencies under load, replicas with headroom"
    )
    percentile: float = Field(99.0, gt=0, lt=100, description="latency percentile under `rate`")
    target_utilization: float | None = Field(
        None, gt=0, le=1, description="largest share of a replica's capacity in use under `rate` (default 0.8)"
    )
    pricing: Literal["cloud", "owned"] = "cloud"
    calibration: Literal["none", "latest"] = Field("none", description="latest: the newest stored calibration")
    engine: Literal["trtllm", "vllm", "sglang"] | None = Field(
        None, description="serving engine: its runtime profile (default: the efficiency model's serving values)"
    )


# ------------------------------------------------------------------------------ the app


def create_app(settings: ServiceSettings) -> FastAPI:
    """The FastAPI application of one service process."""
    checker = TokenChecker(settings.tokens)
    report_dir = Path(settings.report_dir).expanduser().resolve()
    redacted = make_url(settings.storage_url).render_as_string(hide_password=True)
    state: dict[str, Any] = {}

    def scrub(message: str) -> str:
        """Messages never carry the database password (runner / store errors name the URL)."""
        store: Store | None = state.get("store")
        for url in {settings.storage_url, store.url if store else settings.storage_url}:
            message = message.replace(url, redacted)
        return message

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        from search.cluster import ensure_ray
        from search.store import make_optuna_storage

        store = await run_in_threadpool(Store, settings.storage_url)
        # Optuna's tables, created (under a lock) before any sweep starts; fails early on a bad database.
        (await run_in_threadpool(make_optuna_storage, store.url)).engine.dispose()
        report_dir.mkdir(parents=True, exist_ok=True)
        ensure_ray(settings.ray_address, settings.workers)
        manager = SweepManager(store, ray_address=settings.ray_address, workers=settings.workers, scrub=scrub)
        state.update(store=store, manager=manager, started=time.time())
        if settings.resume:
            await run_in_threadpool(manager.resume_own)
        log.info("servesweep service on %s, %d token(s), reports in %s", redacted, len(settings.tokens), report_dir)
        try:
            yield
        finally:
            await run_in_threadpool(manager.shutdown, settings.shutdown_wait_s)
            store.close()

    app = FastAPI(
        title="servesweep",
        summary="Sweeps of LLM serving deployments over HTTP: submit, watch, fronts, reports, estimates.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # the schema is at /openapi.json (behind the token like everything else)
        redoc_url=None,
    )
    app.add_middleware(
        Guard, checker=checker, max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s
    )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s: %s", request.method, request.url.path, scrub(repr(exc)))
        return JSONResponse({"detail": "internal error (logged by the service)"}, status_code=500)

    app.add_exception_handler(Exception, on_unexpected)

    def store() -> Store:
        return state["store"]

    def manager() -> SweepManager:
        return state["manager"]

    def record_or_404(name: str) -> dict[str, Any]:
        _check_name(name)
        s = store().get_sweep(name)
        if s is None:
            raise HTTPException(404, f"no sweep named {name!r}")
        return s

    # -- open ---------------------------------------------------------------------------------

    @app.get("/healthz", tags=["service"], summary="liveness and database reachability (no token needed)")
    def healthz() -> JSONResponse:
        try:
            with store().engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            database = "ok"
        except Exception as exc:
            log.warning("health check: database unreachable: %s", scrub(repr(exc)))
            return _json({"status": "unavailable", "database": "unreachable"}, 503)
        return _json({"status": "ok", "database": database, "running_sweeps": len(manager().running())})

    api = APIRouter(dependencies=[Depends(bearer)])

    # -- sweeps -------------------------------------------------------------------------------

    @api.post(
        "/sweeps",
        status_code=202,
        tags=["sweeps"],
        summary="submit a sweep spec (JSON object or YAML text); it runs in the background",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/SweepSpec"}},
                    "application/yaml": {"schema": {"type": "string"}},
                },
            }
        },
        responses={
            202: {"description": "accepted: the sweep's name and where to watch it"},
            409: {"description": "a sweep of that name exists"},
            413: {"description": "body too large"},
            415: {"description": "neither JSON nor YAML"},
            422: {"description": "invalid spec or name; the message names the field"},
            429: {"description": "this token already runs its maximum of sweeps"},
        },
    )
    async def submit_sweep(
        request: Request,
        name: str | None = Query(None, max_length=200, description=f"sweep name ({_NAME_RULE}); default: the spec's"),
    ) -> JSONResponse:
        user = _user(request)
        body = await request.body()
        if name is not None:
            _check_name(name)
        return await run_in_threadpool(_submit, body, request.headers.get("content-type", ""), name, user)

    def _submit(body: bytes, content_type: str, name: str | None, user: str) -> JSONResponse:
        data, text = _parse_body(body, content_type)  # here, not on the event loop: YAML is slow
        if isinstance(data, dict):
            problem = _server_file_fields(data)
            if problem:
                raise HTTPException(422, problem)
        try:
            spec = parse_spec(data)
        except SpecError as exc:
            raise HTTPException(422, scrub(str(exc))) from None
        except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
            raise HTTPException(422, scrub(f"invalid sweep spec: {exc}")) from None
        if name is None:
            name = spec.name or _generated_name(spec)
        _check_name(name)
        from search.sweeps import start_sweep

        m = manager()
        with m.lock:  # check the cap and start in one step
            if store().get_sweep(name) is not None:
                raise HTTPException(409, f"a sweep named {name!r} already exists; choose another name (?name=...)")
            active = m.active_for(user)
            if len(active) >= settings.max_sweeps_per_token:
                raise HTTPException(
                    429,
                    f"token {user!r} already runs {len(active)} sweep(s) ({', '.join(sorted(active))}); the limit "
                    f"is {settings.max_sweeps_per_token} at once: wait for one to finish or cancel one",
                )
            try:
                start_sweep(
                    store(), spec, text, name, settings.workers or os.cpu_count() or 1, submitter=user, service=True
                )
            except ValueError as exc:
                status = 409 if "already exists" in str(exc) else 422
                raise HTTPException(status, scrub(str(exc))) from None
            except (TypeError, KeyError, ArithmeticError, ImportError) as exc:
                raise HTTPException(422, scrub(f"invalid sweep spec: {exc}")) from None
            m.start(name, user)
        log.info("sweep %s submitted by %s", name, user)
        return _json(
            {"name": name, "status": "pending", "submitter": user, "url": f"/sweeps/{name}"},
            202,
            headers={"Location": f"/sweeps/{name}"},
        )

    @api.get("/sweeps", tags=["sweeps"], summary="every sweep in the database, newest first")
    def list_sweeps() -> JSONResponse:
        running = set(manager().running())
        out = []
        for s in store().list_sweeps():
            summary = s.get("summary") or {}
            spec = s.get("spec") or {}
            out.append(
                {
                    "name": s["name"],
                    "status": s["status"],
                    "submitter": s.get("submitter"),
                    "model": spec.get("model"),
                    "sampler": spec.get("sampler"),
                    "evaluator": spec.get("evaluator"),
                    "service": bool(spec.get("_service")),
                    "running_here": s["name"] in running,
                    "created_at": s.get("created_at"),
                    "started_at": s.get("started_at"),
                    "finished_at": s.get("finished_at"),
                    "evaluated": summary.get("evaluated"),
                    "front_size": summary.get("front_size"),
                    "error": scrub(s["error"]) if s.get("error") else None,
                }
            )
        return _json({"sweeps": out})

    @api.get("/sweeps/{name}", tags=["sweeps"], summary="status, submitter, times, progress and stored counts")
    def get_sweep(name: str) -> JSONResponse:
        _check_name(name)
        job = manager().job(name)
        stored = stored_status(name, job is not None)
        summary = stored["summary"]
        if job is not None and job.progress is not None:
            progress = dict(job.progress)
        else:
            exhaustive = summary.get("kind") == "exhaustive" or stored["spec"].get("sampler") == "exhaustive"
            progress = {
                "total": summary.get("space_size")
                if exhaustive
                else (stored["spec"].get("budget") or {}).get("trials"),
                "evaluated": summary.get("evaluated", 0),
                "feasible": summary.get("feasible", 0),
                "front_size": summary.get("front_size"),
                "hypervolume": summary.get("hypervolume"),
            }
        return _json(
            {
                **stored,
                "running_here": job is not None,
                "stop_requested": None if job is None else job.stop,
                "error": (job.error if job is not None else None) or stored["error"],
                "progress": progress,
            }
        )

    status_cache: dict[str, tuple[float, bool, dict[str, Any]]] = {}  # name -> (when, ran here, document)

    def stored_status(name: str, running_here: bool) -> dict[str, Any]:
        """The database part of a status document, at most `status_cache_s` old, and read again
        as soon as the sweep starts or stops running here (pollers share one read)."""
        hit = status_cache.get(name)
        now = time.monotonic()
        if hit is not None and now - hit[0] < settings.status_cache_s and hit[1] == running_here:
            return hit[2]
        s = record_or_404(name)
        summary = dict(s.get("summary") or {})
        if "done_shards" in summary:
            summary["done_shards"] = len(summary["done_shards"])
        raw_spec = s.get("spec") or {}
        document = {
            "name": s["name"],
            "status": s["status"],
            "submitter": s.get("submitter"),
            "service": bool(raw_spec.get("_service")),
            "created_at": s.get("created_at"),
            "started_at": s.get("started_at"),
            "finished_at": s.get("finished_at"),
            "code_version": s.get("code_version"),
            "error": scrub(s["error"]) if s.get("error") else None,
            "driver": s.get("driver"),  # 'live' / 'lost' (its heartbeat) while stored as running
            "counts": store().count_evaluations(name),
            "summary": summary,
            "spec": {k: v for k, v in raw_spec.items() if not k.startswith("_") and k != "calibration_record"},
        }
        if settings.status_cache_s > 0:
            status_cache[name] = (now, running_here, document)
        return document

    @api.delete(
        "/sweeps/{name}",
        tags=["sweeps"],
        summary="cancel a sweep (its stored evaluations and trials are kept)",
        responses={
            200: {"description": "cancelled"},
            202: {"description": "cancelling: it stops at its next shard result or wave"},
            403: {"description": "another token submitted it"},
            409: {"description": "finished, failed, or running in another process"},
        },
    )
    def cancel_sweep(name: str, request: Request) -> JSONResponse:
        s = record_or_404(name)
        status_cache.pop(name, None)
        user = _user(request)
        if s.get("submitter") != user:
            raise HTTPException(403, f"sweep {name!r} was submitted by {s.get('submitter')!r}; only they may cancel it")
        job = manager().cancel(name, settings.cancel_wait_s)
        if job is not None and not job.done.is_set():
            return _json({"name": name, "status": "cancelling"}, 202)
        status = store().get_sweep(name)["status"]  # type: ignore[index]
        if job is not None or status == "cancelled":
            return _json({"name": name, "status": status})
        if status in ("pending", "interrupted"):
            store().update_sweep(name, status="cancelled")
            return _json({"name": name, "status": "cancelled"})
        if status == "running":
            raise HTTPException(
                409,
                f"sweep {name!r} is running in another process, not in this service; stop it there (its driver "
                "may also have died: 'servesweep run --resume' finishes it)",
            )
        raise HTTPException(409, f"sweep {name!r} is already {status}; nothing to cancel (its results stay)")

    def final_front(s: dict[str, Any]) -> dict[str, Any]:
        front = store().latest_front(s["name"], kind="final")
        if front is None:
            raise HTTPException(409, f"sweep {s['name']!r} has no final front yet (status {s['status']})")
        return front

    @api.get(
        "/sweeps/{name}/front", tags=["sweeps"], summary="the Pareto front and recommendations (as front --format json)"
    )
    def get_front(name: str) -> JSONResponse:
        from search.outputs import for_store, front_rows

        s = record_or_404(name)
        final_front(s)
        _, rows = front_rows(store(), name)
        try:
            recommendations = for_store(store(), name)["recommendations"]
        except ValueError as exc:
            raise HTTPException(409, scrub(str(exc))) from None
        return _json({"sweep": name, "front": rows, "recommendations": recommendations})

    @api.get(
        "/sweeps/{name}/report",
        tags=["sweeps"],
        summary="the procurement report: one self-contained HTML page",
        response_class=FileResponse,
        responses={200: {"content": {"text/html": {}}}},
    )
    def get_report(name: str) -> FileResponse:
        from search.outputs import build_report

        s = record_or_404(name)
        final_front(s)
        target = (report_dir / f"{name}.html").resolve()
        if target.parent != report_dir:  # belt and braces: the name check already forbids this
            raise HTTPException(422, f"invalid sweep name {name!r}: {_NAME_RULE}")
        fresh = (
            s["status"] == "finished"
            and target.is_file()
            and s.get("finished_at") is not None
            and target.stat().st_mtime >= _timestamp(s["finished_at"])
        )
        if not fresh:
            try:
                html = build_report(store(), name)
            except ValueError as exc:
                raise HTTPException(409, scrub(str(exc))) from None
            tmp = target.with_name(f".{name}.{secrets.token_hex(4)}.tmp")
            tmp.write_text(html, encoding="utf-8")
            os.replace(tmp, target)
        return FileResponse(target, media_type="text/html; charset=utf-8")

    # -- catalog and estimates ----------------------------------------------------------------

    @api.get("/catalog/gpus", tags=["catalog"], summary="accelerators with specs, prices and sources")
    def catalog_gpus() -> JSONResponse:
        from search.outputs import gpu_catalog

        if "gpus" not in state:
            state["gpus"] = _plain(gpu_catalog())
        return JSONResponse(state["gpus"])

    @api.get("/catalog/models", tags=["catalog"], summary="the shipped model configs")
    def catalog_models() -> JSONResponse:
        from search.outputs import model_catalog

        if "models" not in state:
            state["models"] = _plain(model_catalog())
        return JSONResponse(state["models"])

    @api.post(
        "/estimate",
        tags=["catalog"],
        summary="memory, latency, throughput and cost of one deployment (as estimate --json)",
        responses={422: {"description": "unknown model / GPU / scheme or a bad combination"}},
    )
    def estimate(req: EstimateRequest) -> JSONResponse:
        from search.calibration import resolve_calibration
        from search.outputs import EstimateError
        from search.outputs import estimate as estimate_deployment

        if req.batch is not None and req.max_throughput:
            raise HTTPException(422, "give either batch or max_throughput, not both")
        problem = _catalog_model_error(req.model)
        if problem:
            raise HTTPException(422, problem)
        try:
            result = estimate_deployment(
                model=req.model,
                gpu=req.gpu,
                calibration=lambda gpu_id: resolve_calibration(req.calibration, store(), gpus=[gpu_id]),
                tp=req.tp,
                pp=req.pp,
                ep=req.ep,
                weights=req.weights,
                kv_cache=req.kv_cache,
                isl=req.isl,
                osl=req.osl,
                batch=req.batch,
                rate=req.rate,
                percentile=req.percentile,
                target_utilization=req.target_utilization,
                pricing=req.pricing,
                engine=req.engine,
            )
        except (EstimateError, ValueError, ArithmeticError) as exc:
            raise HTTPException(422, scrub(str(exc))) from None
        return _json(result)

    app.include_router(api)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            spec_schema = SweepSpec.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(spec_schema.pop("$defs", {}))
            components["SweepSpec"] = spec_schema
            _document_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


# Every error is JSON {"detail": ...}: a message, or (422 from FastAPI's request validation)
# pydantic's list of errors. What any operation may answer, besides what it documents itself:
_ANY_OPERATION = {
    "400": "invalid Content-Length header, or a body that cannot be parsed",
    "408": "the request body did not arrive within the body timeout",
    "413": "body too large",
}
_WITH_TOKEN = {"401": "missing or invalid bearer token"}
_WITH_NAME = {"404": "no sweep of that name", "422": "invalid sweep name"}


def _document_errors(schema: dict[str, Any]) -> None:
    """Make the schema say what the service answers (issue 17, finding 15): the errors every
    operation may give (400 / 408 / 413 from the request guard, 401 without a valid token, 404 /
    422 for a sweep name), each with the JSON error body; 422's `detail` is a message or
    pydantic's list, where FastAPI's default says list only."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = {
        "title": "Error",
        "type": "object",
        "properties": {"detail": {"title": "Detail", "type": "string", "description": "what went wrong"}},
        "required": ["detail"],
    }
    components["ValidationErrorResponse"] = {
        "title": "ValidationErrorResponse",
        "type": "object",
        "properties": {
            "detail": {
                "title": "Detail",
                "anyOf": [
                    {"type": "string", "description": "the message names the field"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
                ],
            }
        },
        "required": ["detail"],
    }
    components.pop("HTTPValidationError", None)
    components.setdefault(
        "ValidationError",
        {
            "title": "ValidationError",
            "type": "object",
            "properties": {
                "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                "msg": {"type": "string"},
                "type": {"type": "string"},
            },
            "required": ["loc", "msg", "type"],
        },
    )
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            extra = dict(_ANY_OPERATION)
            if path not in OPEN_PATHS:
                extra |= _WITH_TOKEN
            if "{name}" in path:
                extra |= _WITH_NAME
            if path == "/healthz":
                extra["503"] = "the database is unreachable"
            if path.endswith(("/front", "/report")):
                extra["409"] = "the sweep has no final front yet, or its results cannot be read"
            for code, description in extra.items():
                responses.setdefault(code, {"description": description})
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    ref = "ValidationErrorResponse" if code == "422" else "Error"
                    response["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _generated_name(spec: SweepSpec) -> str:
    base = re.sub(r"[^a-z0-9_.-]+", "-", spec.model.split("/")[-1].lower()).strip("-.") or "sweep"
    return f"{base[:60]}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _timestamp(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso).timestamp()


def _version() -> str:
    from search.sweeps import code_version

    return code_version()
