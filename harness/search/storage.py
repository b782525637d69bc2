"""Where the studies live, and how a study left by a killed process is resumed.

One Optuna study per outer run, in its own SQLite file next to the results store:
``<out_dir>/studies/<arm>-r<repeat>-f<fold>.sqlite3`` (one file per run, so parallel workers never
wait on each other's locks; on a cluster ``--out`` must be a shared folder). The study's name holds
the run's identity (its config hash and the data's content hash): a changed suite starts a new
study in the same file and never reads the old trials.

Why Optuna's RDB storage on SQLite rather than its journal file: every storage operation is one
SQLite transaction, so a process killed at any instant (``kill -9``) leaves each trial either as
it was before the operation or as after it; a journal file killed mid-append leaves a torn last
line that later appends follow. ``tests/test_search_resume.py`` kills a study mid-trial and checks
that nothing is lost or doubled.

Resuming (:func:`recover`): trials ``COMPLETE`` or ``PRUNED`` are kept and never redone (they count
towards the budget); a trial left ``RUNNING`` was interrupted: it is marked ``FAIL`` and its
parameters are enqueued again, once (the enqueued copy carries ``redo_of``, so a process killed
between the two steps does not enqueue it twice). Only one process works on a study at a time:
the driver claims each run once and holds the output directory's lock.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

STUDIES_DIR = "studies"
FINISHED = ("COMPLETE", "PRUNED")


def study_path(out_dir: str | Path, arm: str, repeat: int, fold: int) -> Path:
    """The SQLite file of the study of run (arm, repeat, fold)."""
    return Path(out_dir) / STUDIES_DIR / f"{arm}-r{int(repeat)}-f{int(fold)}.sqlite3"


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)


def open_study(path: str | Path | None, name: str, direction: str, sampler: Any, pruner: Any) -> Any:
    """Create or load the study ``name`` in the SQLite file ``path`` (in memory when ``path`` is None)."""
    import optuna

    _quiet()
    storage: Any = None
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 120}})
    study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if study.direction.name.lower() != direction:  # Optuna does not check a loaded study's direction
        close_study(study)
        raise ValueError(f"study {name!r} in {path}: stored with direction {study.direction.name.lower()}, asked to "
                         f"{direction}; a study's objective never changes (its name holds it)")
    return study


def close_study(study: Any) -> None:
    """Release the study's database connections (a worker runs many studies, one after another)."""
    backend = getattr(study._storage, "_backend", study._storage)
    engine = getattr(backend, "engine", None)
    if engine is not None:
        engine.dispose()


def finished_trials(study: Any) -> list[Any]:
    """Trials that count towards the budget (completed or pruned), in trial order."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED]


def recover(study: Any) -> int:
    """Redo the trials a killed process left ``RUNNING``; returns how many. Idempotent."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    redone = {t.user_attrs.get("redo_of") for t in trials}
    running = [t for t in trials if t.state == TrialState.RUNNING]
    for t in running:
        if t.number not in redone:
            study.enqueue_trial(dict(t.params), user_attrs={"origin": t.user_attrs.get("origin", "sampler"),
                                                            "redo_of": t.number})
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(running)


__all__ = ["STUDIES_DIR", "close_study", "finished_trials", "open_study", "recover", "study_path"]
