"""Bulk trial writes into Optuna's RDB tables read back exactly as Optuna wrote them."""

from __future__ import annotations

import optuna
import pytest

from search.store import add_trials, make_optuna_storage


def _finished_trials(n: int) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(directions=["minimize", "minimize"])
    for i in range(n):
        t = study.ask()
        t.suggest_categorical("gpu", ["H100-SXM", "MI300X"])
        t.suggest_categorical("tp", [1, 2, 4])
        t.set_user_attr("tpot_s", 0.01 * (i + 1))
        t.set_user_attr("feasible", i % 2 == 0)
        t.set_constraint("fits", float(i % 2))
        study.tell(t, [float(i), float("inf") if i == 2 else -float(i)])
    return study.get_trials()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_add_trials_round_trip(tmp_path, backend, request):
    url = f"sqlite:///{tmp_path}/o.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    storage = make_optuna_storage(url)
    stored = optuna.create_study(storage=storage, study_name="s", directions=["minimize", "minimize"])
    trials = _finished_trials(5)
    add_trials(storage, stored, trials[:3])
    add_trials(storage, stored, trials[3:])
    back = optuna.load_study(study_name="s", storage=make_optuna_storage(url)).get_trials()
    assert [t.number for t in back] == [0, 1, 2, 3, 4]
    for a, b in zip(trials, back, strict=True):
        assert a.params == b.params
        assert a.values == b.values
        assert a.user_attrs == b.user_attrs
        assert a.system_attrs == b.system_attrs
        assert b.state == optuna.trial.TrialState.COMPLETE
    assert back[2].values[1] == float("inf")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_add_trials_sets_study_attributes_in_the_same_transaction(tmp_path, backend, request):
    """The guided driver's wave record (the samplers' state) lands with the wave's trials, is
    replaced when set again, and neither is written when the fence refuses the transaction."""
    url = f"sqlite:///{tmp_path}/a.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    storage = make_optuna_storage(url)
    stored = optuna.create_study(storage=storage, study_name="a", directions=["minimize", "minimize"])
    trials = _finished_trials(4)
    add_trials(storage, stored, trials[:2], study_attrs={"w:2": {"end": 2}, "k": [1, 2]})
    add_trials(storage, stored, trials[2:3], study_attrs={"k": [3]})

    def refuse(conn):
        raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError, match="lease lost"):
        add_trials(storage, stored, trials[3:], fence=refuse, study_attrs={"w:4": {"end": 4}})
    again = make_optuna_storage(url)
    study_id = again.get_study_id_from_name("a")
    assert again.get_study_system_attrs(study_id) == {"w:2": {"end": 2}, "k": [3]}
    assert len(again.get_all_trials(study_id)) == 3


def test_add_trials_refuses_unfinished(tmp_path):
    storage = make_optuna_storage(f"sqlite:///{tmp_path}/u.db")
    stored = optuna.create_study(storage=storage, study_name="u")
    running = optuna.create_study().ask()
    with pytest.raises(ValueError, match="RUNNING"):
        add_trials(storage, stored, [running.study._storage.get_trial(running._trial_id)])


def test_optuna_tables_created_by_several_processes_at_once_on_a_fresh_postgresql(pg_url):
    """Building the storage creates Optuna's tables; processes starting guided sweeps together
    on a fresh database must not collide (make_optuna_storage holds an advisory lock)."""
    import subprocess
    import sys

    code = (
        "import sys; from search.store import make_optuna_storage; "
        "s = make_optuna_storage(sys.argv[1]); s.get_all_studies(); s.engine.dispose()"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, pg_url], stderr=subprocess.PIPE, text=True) for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(errors)
    assert make_optuna_storage(pg_url).get_all_studies() == []
