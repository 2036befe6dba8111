"""Optuna's RDB storage on the sweep database, with batched writes.

Optuna's RDBStorage commits one transaction per call and re-reads a trial from the database on
every suggestion: a trial of eight parameters, three constraints and twenty metrics stored as
user attributes costs some forty round trips, which on SQLite or PostgreSQL dwarfs the sampler.
`BatchedRDBStorage` keeps the trials this process is running in memory, queues their parameter
and attribute writes, and commits them as bulk statements in one transaction — before the next
trial is created, before a trial is told, and before any read of other trials — so what other
trials and processes see is unchanged at those points. It relies on RDBStorage's models and
helpers, one reason the Optuna version is pinned.
"""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution, check_distribution_compatibility, distribution_to_json
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

# Reads of other trials: queued writes are committed first so they are visible.
_READS = ("get_all_trials", "get_best_trial", "get_trial_id_from_study_id_trial_number")


class BatchedRDBStorage(optuna.storages.RDBStorage):
    """RDBStorage that serves its own running trials from memory and commits their writes in
    bulk."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_buffers()

    def _init_buffers(self) -> None:
        self._lock = threading.RLock()
        self._own: dict[int, FrozenTrial] = {}  # running trials created here, by trial id
        self._own_study: dict[int, int] = {}  # their study ids
        self._params: list[tuple[int, str, float, BaseDistribution]] = []
        self._attrs: dict[str, list[tuple[int, str, Any]]] = {"user": [], "system": []}
        self._known_distributions: dict[str, BaseDistribution] = {}

    # -- writes ------------------------------------------------------------------------------

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        # Optuna's cache layer calls this private method, so it is the one to extend.
        self.flush()
        frozen = super()._create_new_trial(study_id, template_trial)
        with self._lock:
            self._own[frozen._trial_id] = copy.deepcopy(frozen)
            self._own_study[frozen._trial_id] = study_id
        return frozen

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        with self._lock:
            own = self._own.get(trial_id)
            if own is None:  # not ours: behave exactly like RDBStorage
                self.flush()
                return super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
            known = self._known_distributions.get(param_name)
            if known is not None:
                check_distribution_compatibility(known, distribution)
            self._params.append((trial_id, param_name, param_value_internal, distribution))
            own.params = {**own.params, param_name: distribution.to_external_repr(param_value_internal)}
            own.distributions = {**own.distributions, param_name: distribution}
        return None

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._queue_attr("user", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._queue_attr("system", trial_id, key, value)

    def _queue_attr(self, kind: str, trial_id: int, key: str, value: Any) -> None:
        json.dumps(value)  # fail now, not at commit, on a value that is not JSON
        with self._lock:
            own = self._own.get(trial_id)
            if own is None:
                self.flush()
                parent = (
                    optuna.storages.RDBStorage.set_trial_user_attr
                    if kind == "user"
                    else optuna.storages.RDBStorage.set_trial_system_attr
                )
                return parent(self, trial_id, key, value)
            self._attrs[kind].append((trial_id, key, value))
            if kind == "user":
                own.user_attrs = {**own.user_attrs, key: value}
            else:
                own.system_attrs = {**own.system_attrs, key: value}
        return None

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        self.flush()
        done = super().set_trial_state_values(trial_id, state, values)
        with self._lock:
            if state.is_finished():
                self._own.pop(trial_id, None)
                self._own_study.pop(trial_id, None)
            elif trial_id in self._own:
                self._own[trial_id].state = state
        return done

    def flush(self) -> None:
        """Commit every queued write in one transaction, as bulk statements."""
        with self._lock:
            params, attrs = self._params, self._attrs
            if not params and not attrs["user"] and not attrs["system"]:
                return
            self._params, self._attrs = [], {"user": [], "system": []}
            trial_ids = {p[0] for p in params} | {a[0] for rows in attrs.values() for a in rows}
            with _create_scoped_session(self.scoped_session, True) as session:
                for trial_id in trial_ids:
                    trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                    self.check_trial_is_updatable(trial_id, trial.state)
                for trial_id, name, value, dist in params:
                    if name not in self._known_distributions:
                        # the first write of a name checks it against the study's stored trials
                        self._set_trial_param_without_commit(session, trial_id, name, value, dist)
                        self._known_distributions[name] = dist
                    else:
                        session.add(
                            models.TrialParamModel(
                                trial_id=trial_id,
                                param_name=name,
                                param_value=value,
                                distribution_json=distribution_to_json(dist),
                            )
                        )
                for kind, model_cls in (
                    ("user", models.TrialUserAttributeModel),
                    ("system", models.TrialSystemAttributeModel),
                ):
                    rows = attrs[kind]
                    if rows:
                        latest = {(t, k): v for t, k, v in rows}  # last write of a key wins
                        values = [
                            {"trial_id": t, "key": k, "value_json": json.dumps(v)} for (t, k), v in latest.items()
                        ]
                        session.execute(self._upsert(model_cls), values)

    def _upsert(self, model_cls: Any) -> Any:
        dialect = self.engine.name
        if dialect == "postgresql":
            stmt = pg_dialect.insert(model_cls)
        elif dialect == "sqlite":
            stmt = sqlite_dialect.insert(model_cls)
        else:  # pragma: no cover - servesweep supports SQLite and PostgreSQL only
            raise ValueError(f"batched Optuna storage supports sqlite and postgresql, not {dialect}")
        return stmt.on_conflict_do_update(
            index_elements=[model_cls.trial_id, model_cls.key], set_={"value_json": stmt.excluded.value_json}
        )

    # -- reads -------------------------------------------------------------------------------

    def _get_trials(
        self, study_id: int, states: Any, included_trial_ids: set[int], trial_id_greater_than: int
    ) -> list[FrozenTrial]:
        """Other processes' trials from the database, this process's running ones from memory
        (the sampler re-reads running trials on every suggestion)."""
        self.flush()
        with self._lock:
            mine = {tid: t for tid, t in self._own.items() if self._own_study.get(tid) == study_id}
            mine_copies = [
                copy.deepcopy(t)
                for tid, t in mine.items()
                if (tid in included_trial_ids or tid > trial_id_greater_than) and (states is None or t.state in states)
            ]
        if not mine:
            return super()._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)
        # Ids of the newer trials (a light query), so the full query loads none of ours.
        with _create_scoped_session(self.scoped_session) as session:
            newer = {
                tid
                for (tid,) in session.query(models.TrialModel.trial_id).filter(
                    models.TrialModel.study_id == study_id, models.TrialModel.trial_id > trial_id_greater_than
                )
            }
        wanted = (set(included_trial_ids) | newer) - set(mine)
        rows = super()._get_trials(study_id, states, wanted, max(newer | {trial_id_greater_than})) if wanted else []
        return sorted(rows + mine_copies, key=lambda t: t._trial_id)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            own = self._own.get(trial_id)
            if own is not None:
                return copy.deepcopy(own)
        self.flush()
        return super().get_trial(trial_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self.get_trial(trial_id).user_attrs

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self.get_trial(trial_id).system_attrs

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        trial = self.get_trial(trial_id)
        return trial.distributions[param_name].to_internal_repr(trial.params[param_name])

    def __getstate__(self) -> dict[str, Any]:
        self.flush()
        state = super().__getstate__()
        for key in ("_lock", "_own", "_own_study", "_params", "_attrs", "_known_distributions"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._init_buffers()


def _flushing(name: str) -> Any:
    parent = getattr(optuna.storages.RDBStorage, name)

    def read(self: BatchedRDBStorage, *args: Any, **kwargs: Any) -> Any:
        self.flush()
        return parent(self, *args, **kwargs)

    read.__name__ = name
    read.__doc__ = parent.__doc__
    return read


for _name in _READS:
    setattr(BatchedRDBStorage, _name, _flushing(_name))


def make_optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's storage on the sweep database (SQLite: WAL, 30 s busy timeout and
    synchronous=NORMAL, which WAL keeps crash-safe)."""
    if not url.startswith("sqlite"):
        return BatchedRDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    storage = BatchedRDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    storage.engine.dispose()
    return storage
