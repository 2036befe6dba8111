"""Optuna's RDB storage on the sweep database.

The guided driver samples on an in-memory study and writes each finished wave of trials here
with `add_trials` — one transaction per wave, parameters, values, constraints and metrics
together, with the samplers' state — so the sampler never waits on the database (see
`search.sweeps.guided`). `add_trials` uses Optuna's table models, one reason the Optuna
version is pinned.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import distribution_to_json
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial

from search.store.engine import pg_connect_args

# pg_advisory_lock key serializing Optuna's table creation across processes.
_OPTUNA_INIT_LOCK_KEY = zlib.crc32(b"servesweep.optuna_tables")


def make_optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage on the sweep database (SQLite: WAL, 30 s busy timeout and
    synchronous=NORMAL, which WAL keeps crash-safe). On PostgreSQL, Optuna creates its tables
    when the storage is built; two processes doing that at once on a fresh database collide
    (duplicate type rows), so building it holds an advisory lock."""
    if not url.startswith("sqlite"):
        lock_engine = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool, connect_args=pg_connect_args(url)
        )
        try:
            with lock_engine.connect() as conn:
                conn.execute(sqlalchemy.select(sqlalchemy.func.pg_advisory_lock(_OPTUNA_INIT_LOCK_KEY)))
                try:
                    return optuna.storages.RDBStorage(
                        url, engine_kwargs={"pool_pre_ping": True, "connect_args": pg_connect_args(url)}
                    )
                finally:
                    conn.execute(sqlalchemy.select(sqlalchemy.func.pg_advisory_unlock(_OPTUNA_INIT_LOCK_KEY)))
        finally:
            lock_engine.dispose()
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    storage.engine.dispose()
    return storage


def add_trials(
    storage: optuna.storages.BaseStorage,
    study: optuna.Study,
    trials: list[FrozenTrial],
    fence: Callable[[sqlalchemy.engine.Connection], None] | None = None,
    study_attrs: Mapping[str, Any] | None = None,
) -> None:
    """Append finished `trials` to `study` (in order, numbered after its existing trials), and
    set the study system attributes `study_attrs` (what the guided driver keeps of its
    samplers' state, see search.sweeps.guided) with them.

    On an RDBStorage all of them — parameters, values, user and system attributes — are
    written in ONE transaction with bulk inserts through Optuna's own table models (instead of
    Optuna's `add_trial`, which costs one query per attribute). Other storages fall back to
    `Study.add_trial`.

    Two writers can never number trials alike: the transaction first locks the study's row
    (PostgreSQL `SELECT ... FOR UPDATE`; SQLite's write lock serializes writers anyway), so the
    count the numbers start from cannot change under it; and `fence(connection)` — the
    sweep lease's check, `Store.lease_fence(name)` — runs in the same transaction, so a driver
    that lost its lease writes nothing (LeaseLostError, rolled back). The trials and the study
    attributes land together or not at all.
    """
    if not trials:
        return
    if not isinstance(storage, optuna.storages.RDBStorage):
        for t in trials:
            study.add_trial(t)
        for key, value in (study_attrs or {}).items():
            storage.set_study_system_attr(study._study_id, key, value)
        return
    study_id = study._study_id
    with _create_scoped_session(storage.scoped_session, True) as session:
        if fence is not None:
            try:
                fence(session.connection())
            except BaseException:
                session.rollback()  # the scoped session is reused: leave it clean
                raise
        session.query(models.StudyModel.study_id).filter(models.StudyModel.study_id == study_id).with_for_update().one()
        base = (
            session.query(sqlalchemy.func.count(models.TrialModel.trial_id))
            .filter(models.TrialModel.study_id == study_id)
            .scalar()
        )
        for k, t in enumerate(trials):
            if not t.state.is_finished():
                raise ValueError(f"trial {t.number} is {t.state.name}; only finished trials are added")
            row = models.TrialModel(
                study_id=study_id,
                number=base + k,
                state=t.state,
                datetime_start=t.datetime_start,
                datetime_complete=t.datetime_complete,
            )
            values = []
            for i, v in enumerate(t.values or []):
                stored, kind = models.TrialValueModel.value_to_stored_repr(v)
                values.append(models.TrialValueModel(objective=i, value=stored, value_type=kind))
            row.values = values
            row.params = [
                models.TrialParamModel(
                    param_name=name,
                    param_value=t.distributions[name].to_internal_repr(value),
                    distribution_json=distribution_to_json(t.distributions[name]),
                )
                for name, value in t.params.items()
            ]
            row.user_attributes = [
                models.TrialUserAttributeModel(key=key, value_json=json.dumps(value))
                for key, value in t.user_attrs.items()
            ]
            row.system_attributes = [
                models.TrialSystemAttributeModel(key=key, value_json=json.dumps(value))
                for key, value in t.system_attrs.items()
            ]
            session.add(row)
        if study_attrs:
            session.query(models.StudySystemAttributeModel).filter(
                models.StudySystemAttributeModel.study_id == study_id,
                models.StudySystemAttributeModel.key.in_(list(study_attrs)),
            ).delete(synchronize_session=False)
            session.add_all(
                models.StudySystemAttributeModel(study_id=study_id, key=key, value_json=json.dumps(value))
                for key, value in study_attrs.items()
            )
