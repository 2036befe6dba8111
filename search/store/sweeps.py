"""Sweeps (`svc_sweeps`), their evaluations (`svc_evaluations`) and fronts (`svc_fronts`).

A part of `search.store.Store` (a mixin: it uses the store's engine and transactions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from search.store.leases import lease_is_live
from search.store.rows import (
    _MAX_NAME,
    _SWEEP_UPDATABLE,
    _aware,
    _evaluation_dict,
    _evaluation_row,
    _finite_float,
    _float_list,
    _front_dict,
    _jsonable,
    _name,
    _opt_str,
    _sweep_dict,
)
from search.store.schema import (
    EVALUATIONS,
    FRONT_KINDS,
    FRONTS,
    LEASES,
    SHARDS,
    SWEEP_STATUSES,
    SWEEPS,
    _utcnow,
)

_IN_CHUNK = 500


class SweepNotFoundError(LookupError):
    """No sweep of that name in the store."""


class SweepRecords:
    """Sweeps (`svc_sweeps`), their evaluations (`svc_evaluations`) and fronts (`svc_fronts`)."""

    @staticmethod
    def _sweep_id(conn: Connection, name: str) -> int:
        sweep_id = conn.execute(sa.select(SWEEPS.c.id).where(SWEEPS.c.name == name)).scalar()
        if sweep_id is None:
            raise SweepNotFoundError(f"no sweep named {name!r}")
        return int(sweep_id)

    def _sweep_select(self) -> sa.Select:
        """svc_sweeps with each sweep's lease (holder, heartbeat) beside it."""
        return sa.select(
            SWEEPS, LEASES.c.holder.label("lease_holder"), LEASES.c.heartbeat_at.label("lease_heartbeat_at")
        ).outerjoin(LEASES, LEASES.c.sweep_name == SWEEPS.c.name)

    def _live_sweep_dict(self, row: Any) -> dict[str, Any]:
        """_sweep_dict, with the driver's liveness: a `running` sweep whose lease was released or
        whose heartbeat is older than `lease_ttl_s` has no live driver (it died, or its database
        failed under it) and reads as `interrupted` (resumable), with `driver: "lost"`."""
        out = _sweep_dict(row)
        heartbeat = getattr(row, "lease_heartbeat_at", None)
        holder = getattr(row, "lease_holder", None)
        if heartbeat is not None:
            out["heartbeat_at"] = heartbeat.isoformat()
        if out["status"] == "running" and heartbeat is not None:
            live = lease_is_live(holder, heartbeat, self.lease_ttl_s)  # type: ignore[attr-defined]
            out["driver"] = "live" if live else "lost"
            if not live:
                out["status"] = "interrupted"
        return out

    # -- sweeps -------------------------------------------------------------------------------

    def create_sweep(
        self,
        name: str,
        spec_yaml: str,
        spec: Mapping[str, Any],
        submitter: str | None = None,
        code_version: str | None = None,
        price_table: Any = None,
    ) -> dict[str, Any]:
        """Record a new sweep (status 'pending'); ValueError if the name is taken."""
        name = _name(name)
        if not isinstance(spec_yaml, str):
            raise ValueError(f"spec_yaml must be a string, got {type(spec_yaml).__name__}")
        if not isinstance(spec, Mapping):
            raise ValueError(f"spec must be a dict, got {type(spec).__name__}")
        now = _utcnow()
        values = {
            "name": name,
            "status": "pending",
            "spec_yaml": spec_yaml,
            "spec": _jsonable(spec, "spec"),
            "submitter": _opt_str(submitter, "submitter", 200),
            "code_version": _opt_str(code_version, "code_version", 200),
            "price_table": _jsonable(price_table, "price_table"),
            "created_at": now,
            "updated_at": now,
        }
        taken = ValueError(f"a sweep named {name!r} already exists")
        try:
            with self._write() as conn:
                if conn.execute(sa.select(SWEEPS.c.id).where(SWEEPS.c.name == name)).first() is not None:
                    raise taken
                conn.execute(SWEEPS.insert().values(**values))
                row = conn.execute(sa.select(SWEEPS).where(SWEEPS.c.name == name)).one()
        except IntegrityError:  # lost a race with another process creating the same name
            raise taken from None
        return _sweep_dict(row)

    def get_sweep(self, name: str) -> dict[str, Any] | None:
        """The sweep as a dict, or None."""
        with self._read() as conn:
            row = conn.execute(self._sweep_select().where(SWEEPS.c.name == name)).first()
        return None if row is None else self._live_sweep_dict(row)

    def list_sweeps(self) -> list[dict[str, Any]]:
        """All sweeps, newest first."""
        with self._read() as conn:
            rows = conn.execute(self._sweep_select().order_by(SWEEPS.c.created_at.desc(), SWEEPS.c.id.desc())).all()
        return [self._live_sweep_dict(r) for r in rows]

    def update_sweep(self, name: str, /, **fields: Any) -> dict[str, Any]:
        """Set some of status, summary, optuna_study_name, started_at, finished_at, submitter,
        code_version, price_table, error (why it failed; cut to 4,000 characters); returns the
        updated sweep."""
        unknown = set(fields) - _SWEEP_UPDATABLE
        if unknown:
            raise ValueError(f"cannot update sweep field(s) {sorted(unknown)}; allowed: {sorted(_SWEEP_UPDATABLE)}")
        values: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "status":
                if value not in SWEEP_STATUSES:
                    raise ValueError(f"status must be one of {list(SWEEP_STATUSES)}, got {value!r}")
                values[key] = value
            elif key in ("started_at", "finished_at"):
                values[key] = None if value is None else _aware(value, key)
            elif key in ("summary", "price_table"):
                values[key] = _jsonable(value, key)
            elif key == "error":
                values[key] = None if value is None else str(value)[:4000]
            else:
                values[key] = _opt_str(value, key, _MAX_NAME)
        values["updated_at"] = _utcnow()
        with self._write() as conn:
            sweep_id = self._sweep_id(conn, name)
            self._fence(conn, name)  # type: ignore[attr-defined]
            conn.execute(SWEEPS.update().where(SWEEPS.c.id == sweep_id).values(**values))
            row = conn.execute(self._sweep_select().where(SWEEPS.c.id == sweep_id)).one()
        return self._live_sweep_dict(row)

    def delete_sweep(self, name: str) -> bool:
        """Delete the sweep with its evaluations and fronts; False if there was none."""
        with self._write() as conn:
            sweep_id = conn.execute(sa.select(SWEEPS.c.id).where(SWEEPS.c.name == name)).scalar()
            if sweep_id is None:
                return False
            conn.execute(EVALUATIONS.delete().where(EVALUATIONS.c.sweep_id == sweep_id))
            conn.execute(SHARDS.delete().where(SHARDS.c.sweep_id == sweep_id))
            conn.execute(FRONTS.delete().where(FRONTS.c.sweep_id == sweep_id))
            conn.execute(SWEEPS.delete().where(SWEEPS.c.id == sweep_id))
        return True

    # -- evaluations --------------------------------------------------------------------------

    def add_evaluations(self, name: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert evaluations in one transaction; rows whose config_key is already stored for
        this sweep are skipped. Returns the number of rows inserted.

        Row keys: config_key (str), config (dict), feasible (bool), and optional reason,
        metrics (dict; NaN/inf stored as null), objectives (list of finite floats or None),
        trial_number, evaluator, measured (bool, default False).
        """
        rows = list(rows)
        if not rows:
            return 0
        now = _utcnow()
        with self._write() as conn:
            sweep_id = self._sweep_id(conn, name)
            self._fence(conn, name)  # type: ignore[attr-defined]
            values: dict[str, dict[str, Any]] = {}
            for i, row in enumerate(rows):  # validate everything before writing anything
                value = _evaluation_row(row, i, sweep_id, now)
                values.setdefault(value["config_key"], value)
            stmt = (
                self._insert(EVALUATIONS)
                .on_conflict_do_nothing(index_elements=["sweep_id", "config_key"])
                .returning(EVALUATIONS.c.id)
            )
            result = conn.execute(stmt, list(values.values()))
            return len(result.all())

    def replace_evaluations(self, name: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert evaluations, replacing any stored row of the same config_key (an upsert, in one
        transaction): a higher-fidelity evaluation supersedes a lower one — every field but the
        key is overwritten, so what the caller wants kept of the old row (e.g. the analytic
        latencies as `analytic_*` metrics) must be in the new one. Returns the rows written."""
        rows = list(rows)
        if not rows:
            return 0
        now = _utcnow()
        with self._write() as conn:
            sweep_id = self._sweep_id(conn, name)
            self._fence(conn, name)  # type: ignore[attr-defined]
            values: dict[str, dict[str, Any]] = {}
            for i, row in enumerate(rows):  # validate everything before writing anything; the last row of a key wins
                value = _evaluation_row(row, i, sweep_id, now)
                values[value["config_key"]] = value
            stmt = self._insert(EVALUATIONS)
            replaced = (
                "config",
                "feasible",
                "reason",
                "metrics",
                "objectives",
                "trial_number",
                "evaluator",
                "measured",
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["sweep_id", "config_key"],
                set_={c: stmt.excluded[c] for c in (*replaced, "created_at")},
            ).returning(EVALUATIONS.c.id)
            result = conn.execute(stmt, list(values.values()))
            return len(result.all())

    def add_shard(
        self,
        name: str,
        shard: int,
        rows: Iterable[Mapping[str, Any]],
        *,
        evaluated: int,
        feasible: int,
        reasons: Mapping[str, int],
        front: list[Mapping[str, Any]],
        covers: list[int] | None = None,
    ) -> bool:
        """Record a finished exhaustive shard — its evaluations (`rows`, stored as by
        add_evaluations), counts, reasons and front points — in ONE transaction, so a shard is
        done exactly when its rows are stored. False if the shard was already recorded."""
        now = _utcnow()
        rows = list(rows)
        with self._write() as conn:
            sweep_id = self._sweep_id(conn, name)
            self._fence(conn, name)  # type: ignore[attr-defined]
            if conn.execute(
                sa.select(SHARDS.c.shard).where(SHARDS.c.sweep_id == sweep_id, SHARDS.c.shard == int(shard))
            ).first():
                return False
            if rows:
                values: dict[str, dict[str, Any]] = {}
                for i, row in enumerate(rows):
                    value = _evaluation_row(row, i, sweep_id, now)
                    values.setdefault(value["config_key"], value)
                conn.execute(
                    self._insert(EVALUATIONS).on_conflict_do_nothing(index_elements=["sweep_id", "config_key"]),
                    list(values.values()),
                )
            conn.execute(
                SHARDS.insert().values(
                    sweep_id=sweep_id,
                    shard=int(shard),
                    covers=[int(c) for c in (covers if covers is not None else [shard])],
                    evaluated=int(evaluated),
                    feasible=int(feasible),
                    reasons=_jsonable(dict(reasons), "reasons"),
                    front=_jsonable(list(front), "front"),
                    created_at=now,
                )
            )
        return True

    def get_shards(self, name: str) -> list[dict[str, Any]]:
        """The recorded shards of an exhaustive sweep, by shard number."""
        with self._read() as conn:
            sweep_id = self._sweep_id(conn, name)
            rows = conn.execute(sa.select(SHARDS).where(SHARDS.c.sweep_id == sweep_id).order_by(SHARDS.c.shard)).all()
        return [
            {
                "shard": r.shard,
                "covers": list(r.covers),
                "evaluated": int(r.evaluated),
                "feasible": int(r.feasible),
                "reasons": dict(r.reasons),
                "front": list(r.front),
            }
            for r in rows
        ]

    def evaluated_keys(self, name: str) -> set[str]:
        """config_key of every stored evaluation of the sweep."""
        with self._read() as conn:
            sweep_id = self._sweep_id(conn, name)
            return set(
                conn.execute(sa.select(EVALUATIONS.c.config_key).where(EVALUATIONS.c.sweep_id == sweep_id)).scalars()
            )

    def get_evaluations(
        self, name: str, keys: Iterable[str] | None = None, feasible_only: bool = False
    ) -> list[dict[str, Any]]:
        """Stored evaluations of the sweep in insertion order, optionally only `keys` / feasible."""
        wanted = None if keys is None else sorted(set(keys))
        with self._read() as conn:
            sweep_id = self._sweep_id(conn, name)
            base = sa.select(EVALUATIONS).where(EVALUATIONS.c.sweep_id == sweep_id)
            if feasible_only:
                base = base.where(EVALUATIONS.c.feasible.is_(True))
            if wanted is None:
                rows = conn.execute(base.order_by(EVALUATIONS.c.id)).all()
            else:
                rows = []
                for start in range(0, len(wanted), _IN_CHUNK):
                    chunk = wanted[start : start + _IN_CHUNK]
                    rows.extend(conn.execute(base.where(EVALUATIONS.c.config_key.in_(chunk))).all())
                rows.sort(key=lambda r: r.id)
        return [_evaluation_dict(r) for r in rows]

    def count_evaluations(self, name: str) -> dict[str, int]:
        """{'total': n, 'feasible': m, 'measured': k} for the sweep (measured: by a probe)."""
        with self._read() as conn:
            sweep_id = self._sweep_id(conn, name)
            total, feasible, measured = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(sa.case((EVALUATIONS.c.feasible.is_(True), 1), else_=0)), 0),
                    sa.func.coalesce(sa.func.sum(sa.case((EVALUATIONS.c.measured.is_(True), 1), else_=0)), 0),
                ).where(EVALUATIONS.c.sweep_id == sweep_id)
            ).one()
        return {"total": int(total), "feasible": int(feasible), "measured": int(measured)}

    # -- fronts -------------------------------------------------------------------------------

    def save_front(
        self,
        name: str,
        kind: str,
        points: Iterable[Mapping[str, Any]],
        hypervolume: float | None = None,
        reference_point: Iterable[float] | None = None,
    ) -> dict[str, Any]:
        """Store a Pareto front snapshot ('exhaustive', 'guided', 'partial' (a checkpoint) or 'final'); returns it."""
        if kind not in FRONT_KINDS:
            raise ValueError(f"front kind must be one of {list(FRONT_KINDS)}, got {kind!r}")
        points = list(points)
        for i, p in enumerate(points):
            if not isinstance(p, Mapping):
                raise ValueError(f"front point {i} must be a dict, got {type(p).__name__}")
        values = {
            "kind": kind,
            "points": _jsonable(points, "points"),
            "hypervolume": None if hypervolume is None else _finite_float(hypervolume, "hypervolume"),
            "reference_point": _float_list(
                None if reference_point is None else list(reference_point), "reference_point"
            ),
            "created_at": _utcnow(),
        }
        with self._write() as conn:
            values["sweep_id"] = self._sweep_id(conn, name)
            self._fence(conn, name)  # type: ignore[attr-defined]
            front_id = conn.execute(FRONTS.insert().values(**values).returning(FRONTS.c.id)).scalar_one()
            row = conn.execute(sa.select(FRONTS).where(FRONTS.c.id == front_id)).one()
        return _front_dict(row, name)

    def latest_front(self, name: str, kind: str | None = None) -> dict[str, Any] | None:
        """The most recently saved front of the sweep (of `kind` if given), or None."""
        if kind is not None and kind not in FRONT_KINDS:
            raise ValueError(f"front kind must be one of {list(FRONT_KINDS)}, got {kind!r}")
        with self._read() as conn:
            sweep_id = self._sweep_id(conn, name)
            stmt = sa.select(FRONTS).where(FRONTS.c.sweep_id == sweep_id)
            if kind is not None:
                stmt = stmt.where(FRONTS.c.kind == kind)
            row = conn.execute(stmt.order_by(FRONTS.c.id.desc()).limit(1)).first()
        return None if row is None else _front_dict(row, name)
