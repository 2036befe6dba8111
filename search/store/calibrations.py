"""Calibration records (`svc_calibrations`): probes of a GPU and fits to measurements.

A part of `search.store.Store` (a mixin: it uses the store's engine and transactions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from search.store.rows import (
    _calibration_dict,
    _jsonable,
    _name,
    _opt_str,
)
from search.store.schema import (
    CALIBRATION_KINDS,
    CALIBRATIONS,
    _utcnow,
)


class CalibrationRecords:
    """Calibration records (`svc_calibrations`): probes of a GPU and fits to measurements."""

    def save_calibration(
        self, name: str, kind: str, record: Mapping[str, Any], gpu: str | None = None, device: str | None = None
    ) -> dict[str, Any]:
        """Store a calibration record under a new name; ValueError if the name is taken."""
        name = _name(name)
        if kind not in CALIBRATION_KINDS:
            raise ValueError(f"calibration kind must be one of {list(CALIBRATION_KINDS)}, got {kind!r}")
        if not isinstance(record, Mapping):
            raise ValueError(f"calibration record must be a mapping, got {type(record).__name__}")
        values = {
            "name": name,
            "kind": kind,
            "gpu": _opt_str(gpu, "gpu", 64),
            "device": _opt_str(device, "device", 16),
            "record": _jsonable(dict(record), "record"),
            "created_at": _utcnow(),
        }
        with self._write() as conn:
            taken = conn.execute(sa.select(CALIBRATIONS.c.id).where(CALIBRATIONS.c.name == name)).first()
            if taken is not None:
                raise ValueError(f"a calibration named {name!r} already exists")
            cal_id = conn.execute(CALIBRATIONS.insert().values(**values).returning(CALIBRATIONS.c.id)).scalar_one()
            row = conn.execute(sa.select(CALIBRATIONS).where(CALIBRATIONS.c.id == cal_id)).one()
        return _calibration_dict(row)

    def get_calibration(self, name: str) -> dict[str, Any] | None:
        """The calibration named `name`, or None."""
        with self._read() as conn:
            row = conn.execute(sa.select(CALIBRATIONS).where(CALIBRATIONS.c.name == name)).first()
        return None if row is None else _calibration_dict(row)

    def latest_calibration(
        self, gpu: str | None = None, for_gpus: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """The newest calibration (of `gpu` when given; with `for_gpus`, the newest that applies
        to one of them: a record of that GPU or one without a GPU, i.e. fitted to
        measurements), or None."""
        stmt = sa.select(CALIBRATIONS)
        if gpu is not None:
            stmt = stmt.where(CALIBRATIONS.c.gpu == gpu)
        if for_gpus is not None:
            stmt = stmt.where(sa.or_(CALIBRATIONS.c.gpu.is_(None), CALIBRATIONS.c.gpu.in_(list(for_gpus))))
        with self._read() as conn:
            row = conn.execute(stmt.order_by(CALIBRATIONS.c.id.desc()).limit(1)).first()
        return None if row is None else _calibration_dict(row)

    def list_calibrations(self) -> list[dict[str, Any]]:
        """Every calibration, newest first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(CALIBRATIONS).order_by(CALIBRATIONS.c.id.desc())).all()
        return [_calibration_dict(r) for r in rows]
