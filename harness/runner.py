"""Plan, execute and record a suite: arm x repeat x fold runs on shared patient-grouped splits.

The driver (:func:`run_suite`) loads the frames, builds every split and runs every check that needs
no training (:mod:`harness.prechecks`) before anything is written, records samples and splits,
skips the runs the store has completed with the same identity — config hash, data content hash and
code version (:mod:`harness.versions`) — says in one line per reason why the others are redone,
claims them (``running``) and hands them to an executor. Each run is
:func:`harness.execute.execute_run`, a pure function of its arguments that returns a
``RunOutcome``; only the driver writes the store, one transaction per run. A run that raises is
recorded ``failed`` with its error and the suite goes on.
"""

from __future__ import annotations

import functools
import json
import math
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.backbones import describe_backbones
from harness.data.overlap import check_external_overlap
from harness.execute import FitFn, RunOutcome, execute_run, load_external_frames, load_suite_frames, run_seed
from harness.search.nested import search_plan_line
from harness.store import STORE_FILENAME, ResultsStore, run_id_for
from harness.ray_cluster import RunResources
from harness.suite import Suite, pipeline_config


def default_cache_dir() -> Path:
    from harness.data.cache import default_cache_dir as data_cache

    return data_cache()


def splits_for(suite: Suite, frames) -> list:
    from harness.cv import make_splits

    return make_splits(frames.labels, frames.groups, suite.evaluation.folds, suite.evaluation.repeats,
                       suite.seed, suite.training.val_fraction)


# --------------------------------------------------------------------------- plan


#: Why a run the store already holds is redone (one line each: "N runs redone: <reason>").
REDO_REASONS = {
    "config": "the suite's settings for them changed since they ran",
    "data": "the data changed since they ran",
    "code": "the code that computes them changed since they ran",
    "unrecorded": "the store does not say which data and code they ran with (written by an older version)",
    "failed": "they failed last time",
    "interrupted": "they were interrupted before they finished (Ctrl-C, SIGTERM or kill -9)",
    "stale": "they were set aside as stale by an earlier run",
}


@dataclass
class PlannedRun:
    arm: str
    repeat: int
    fold: int
    config_hash: str
    done: bool
    data_hash: str | None = None
    code_version: str | None = None
    reasons: tuple[str, ...] = ()  # keys of REDO_REASONS; empty for a run never claimed (or done)

    @property
    def run_id(self) -> str:
        return run_id_for(self.arm, self.repeat, self.fold)

    @property
    def identity(self) -> tuple[str, str | None, str | None, str | None]:
        return (self.run_id, self.config_hash, self.data_hash, self.code_version)


@dataclass
class Plan:
    runs: list[PlannedRun]
    images: dict[tuple[int, int], dict[str, int]]  # (repeat, fold) -> n_train / n_val / n_test

    @property
    def todo(self) -> list[PlannedRun]:
        return [r for r in self.runs if not r.done]


def redo_reasons(stored: tuple[str, tuple[str | None, ...]] | None,
                 wanted: tuple[str, str | None, str | None]) -> tuple[str, ...]:
    """Why a run with store entry ``stored`` ((status, (config, data, code)) or None) and the wanted
    identity ``(config, data, code)`` must be redone: keys of :data:`REDO_REASONS` (empty: it need not be,
    or it was never claimed)."""
    if stored is None:
        return ()
    status, have = stored
    if status in ("running", "interrupted"):
        return ("interrupted",)
    if status == "failed":
        return ("failed",)
    reasons = []
    if have[0] != wanted[0]:
        reasons.append("config")
    for i, key in ((1, "data"), (2, "code")):
        if wanted[i] is not None and have[i] != wanted[i]:
            reasons.append("unrecorded" if have[i] is None else key)
    reasons = list(dict.fromkeys(reasons))
    if not reasons and status == "stale":
        reasons.append("stale")
    return tuple(reasons)


def make_plan(suite: Suite, splits: list, store: ResultsStore | None, data_hash: str | None = None,
              code_version: str | None = None) -> Plan:
    """Every run of the suite; ``done`` when the store holds it with this identity (config hash and,
    when given, the data content hash and code version)."""
    stored = store.identities() if store is not None else {}
    runs = []
    for arm in suite.run_arms():  # each arm's own runs, then its ~tuned / ~untuned variant (harness.search)
        h = suite.run_config_hash(arm)
        for repeat in range(suite.evaluation.repeats):
            for fold in range(suite.evaluation.folds):
                entry = stored.get(run_id_for(arm.name, repeat, fold))
                reasons = redo_reasons(entry, (h, data_hash, code_version))
                done = entry is not None and entry[0] == "done" and not reasons
                runs.append(PlannedRun(arm.name, repeat, fold, h, done, data_hash, code_version, reasons))
    images = {(s.repeat, s.fold): {"n_train": len(s.train_idx), "n_val": len(s.val_idx), "n_test": len(s.test_idx)}
              for s in splits}
    return Plan(runs, images)


def redo_lines(plan: Plan) -> list[str]:
    """One line per reason: ``"12 runs redone: the data changed since they ran"``."""
    counts: dict[str, int] = {}
    for r in plan.todo:
        for reason in r.reasons:
            counts[reason] = counts.get(reason, 0) + 1
    return [f"{n} run{'s' if n != 1 else ''} redone: {REDO_REASONS[k]}" for k, n in
            sorted(counts.items(), key=lambda kv: list(REDO_REASONS).index(kv[0]))]


def estimate_seconds(suite: Suite, plan: Plan, store: ResultsStore | None, frames=None,
                     cache_dir: Path | None = None) -> tuple[float, str]:
    """Estimated wall time of the runs to do (one worker) and its basis (see :mod:`harness.estimate`)."""
    est = estimate_phases(suite, plan, store, frames, cache_dir)
    return (est.quiet_total if est.busy else est.total), "; ".join(est.basis)


def estimate_phases(suite: Suite, plan: Plan, store: ResultsStore | None, frames=None, cache_dir: Path | None = None):
    from harness.estimate import estimate

    return estimate(suite, plan, store, frames, cache_dir)


# --------------------------------------------------------------------------- driver


@dataclass
class RunSummary:
    out_dir: Path
    planned: int = 0
    skipped: int = 0
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    report: Path | None = None
    report_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


def _save_checkpoint(out_dir: Path, arm: str, state: dict[str, Any]) -> str:
    from harness.models import save_weights

    path = out_dir / "checkpoints" / f"{arm}.safetensors"
    save_weights(state, path)
    return str(path.relative_to(out_dir))


def record_result(store: ResultsStore, out_dir: Path, result: RunOutcome) -> None:
    """Write one finished run (checkpoint file first, then the store in one transaction)."""
    run_id = run_id_for(result.arm, result.repeat, result.fold)
    checkpoint = None
    if result.state_dict:
        checkpoint = _save_checkpoint(out_dir, result.arm, result.state_dict)
        saved = store.meta().get("checkpoints") or {}
        store.set_meta(checkpoints={**saved, result.arm: checkpoint})
    prep = result.preprocessing
    if prep.mode != "none":
        store.put_preprocessing(result.arm, prep.pipeline_hash, prep.seconds, prep.n_images, mode=prep.mode)
    store.put_search(run_id, result.search)  # before finish_run: a kill in between leaves the run 'running'
    store.finish_run(run_id, result.metrics, result.predictions, result.timings, result.learned_params,
                     result.history, checkpoint=checkpoint, info=result.info,
                     external=getattr(result, "external", None))


class StoppedBySignal(KeyboardInterrupt):
    """A driver stopped by a signal (SIGTERM): cleaned up as Ctrl-C is (it is a ``KeyboardInterrupt``); the
    CLI exits with ``128 + signum`` (143 for SIGTERM, the Unix convention; Ctrl-C keeps 130)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise StoppedBySignal(signum)


def _sigterm_as_interrupt(fn: Callable[..., Any]) -> Callable[..., Any]:
    """While ``fn`` runs, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does, so a driver stopped by
    ``kill`` cleans up like one stopped by Ctrl-C: its workers end, its claimed runs are released, the
    CLI says how to resume. Only in the main thread, and only where SIGTERM has no handler yet."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        install = threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt) if install else None
        try:
            return fn(*args, **kwargs)
        finally:
            if install:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return wrapper


@_sigterm_as_interrupt
def run_suite(suite: Suite, out_dir: str | Path, *, executor: str = "local", workers: int = 1,
              address: str | None = None, dry_run: bool = False, report: bool = True,
              cache_dir: str | Path | None = None, fit: FitFn | None = None, progress: bool = True,
              command: list[str] | None = None, ray_init: dict[str, Any] | None = None,
              echo: Callable[[str], None] = print, replace_other_suite: bool = False,
              resources: RunResources | None = None) -> RunSummary:
    """Run (or, with ``dry_run``, plan) every run of the suite that the store lacks.

    ``resources``: what each Ray task asks for (``--cpus-per-run`` / ``--gpus-per-run``; resolved and
    checked on every node before any run, :mod:`harness.ray_cluster`).

    A store belongs to one suite name: an ``out_dir`` holding another suite's store is refused
    (:func:`check_store_suite`) unless ``replace_other_suite``.

    Every check that needs no training runs first, in this order, before anything is written: the
    output directory, the data, the splits, the external sets (none may hold the study's frames unless
    ``overlap: allow``), the strata, :func:`harness.prechecks.check_suite` (device,
    filter stencils against the frame size); the pretrained weights files are read and checked first of
    all (ImageNet's download or cache too, unless ``dry_run``)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    replaced = check_store_suite(out_dir, suite.name, replace_other_suite)
    if replaced is not None:
        echo(f"--replace-other-suite: {out_dir} held suite {replaced!r}; its runs that {suite.name!r} does not "
             f"share {'would be' if dry_run else 'are'} kept but set aside as stale")
    check_weights(suite, network=not dry_run)  # a bad weights file: one line before the data is loaded
    if not dry_run:
        check_not_busy(out_dir)  # another driver writing here: refused before the data is loaded
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    t_load = time.perf_counter()
    frames = load_suite_frames(suite, cache_dir)
    t_load = time.perf_counter() - t_load
    if t_load > 5 or not progress:
        echo(f"data: {len(frames)} frames loaded in {t_load:.1f} s")
    splits = splits_for(suite, frames)  # SplitError here: nothing has trained
    externals = load_external_frames(suite, cache_dir)  # evaluation.external: DataError here, before training
    for name, ef in externals.items():  # the study's own frames or files in an external set: refused unless allowed
        warning = check_external_overlap(name, frames, ef, suite.evaluation.external[name].overlap)
        if warning:
            echo(warning)
    check_strata(suite, frames)
    from harness.prechecks import check_suite

    check_suite(suite, frames, runs_here=executor != "ray")  # on Ray the nodes' GPUs are checked instead
    db = out_dir / STORE_FILENAME
    store = ResultsStore(db, readonly=dry_run) if not dry_run or db.exists() else None
    if store is not None:
        store.check_integrity()  # a damaged store: one line, before a run is claimed
    lock = None if dry_run else _lock_out_dir(out_dir)  # one driver per directory (freed even on kill -9)
    try:
        return _drive(suite, out_dir, cache_dir, frames, splits, store, executor=executor, workers=workers,
                      address=address, dry_run=dry_run, report=report, fit=fit, progress=progress,
                      command=command, ray_init=ray_init, echo=echo, externals=externals, resources=resources)
    finally:
        if lock is not None:
            lock.close()


def _drive(suite: Suite, out_dir: Path, cache_dir: Path, frames, splits: list, store: ResultsStore | None, *,
           executor: str, workers: int, address: str | None, dry_run: bool, report: bool, fit: FitFn | None,
           progress: bool, command: list[str] | None, ray_init: dict[str, Any] | None,
           echo: Callable[[str], None], externals: dict[str, Any] | None = None,
           resources: RunResources | None = None) -> RunSummary:
    from harness.executors import make_executor

    from harness.versions import code_version

    code = code_version()
    externals = externals or {}
    plan = make_plan(suite, splits, store, data_identity(frames, externals), code)
    summary = RunSummary(out_dir, planned=len(plan.runs), skipped=len(plan.runs) - len(plan.todo))
    if dry_run:
        _print_plan(suite, plan, frames, store, echo, cache_dir)
        return summary
    assert store is not None
    # The executor starts before anything is written: a cluster that cannot run the study (no GPU for
    # device: cuda, a node with other code) is one line before the store changes.
    ex = make_executor(executor, workers, address, ray_init=ray_init, resources=resources,
                       device=suite_device(suite)) if plan.todo else None
    execution = execution_record(ex, executor, workers, suite, cache_dir, echo)
    _record_study(store, suite, plan, frames, splits, externals, execution, code, cache_dir, command, echo)
    todo = plan.todo
    if summary.skipped:
        echo(f"{summary.skipped} of {len(plan.runs)} runs already done with the same config, data and code; "
             f"{len(todo)} to run")
    for line in redo_lines(plan):
        echo(line)
    payload = suite.to_payload()
    tasks = [(payload, r.arm, r.repeat, r.fold, str(out_dir), str(cache_dir)) + ((fit,) if fit else ()) for r in todo]
    bar = None
    try:
        for r in todo:
            t = suite.arm_training(suite.run_arm(r.arm).arm)
            store.claim_run(r.arm, r.repeat, r.fold, r.config_hash,
                            run_seed(suite.seed, r.repeat, r.fold, t.seed_offset * t.seeds),  # member 0's
                            data_hash=r.data_hash, code_version=r.code_version)
        bar = _progress_bar(len(todo), progress, suite.evaluation.primary_metric, echo,
                            level=suite.evaluation.primary_level)
        for task, result, error in (ex.run(execute_run, tasks) if ex else ()):
            run_id = run_id_for(task[1], task[2], task[3])
            if error is None:
                try:
                    record_result(store, out_dir, result)
                    summary.done += 1
                except Exception as err:  # e.g. a result the store refuses: record, go on
                    error = err
            if error is not None:
                text = _describe_error(error)
                store.fail_run(run_id, text)
                summary.failed.append((run_id, text))
                (bar.write if bar else echo)(f"run {run_id} failed: {text.splitlines()[0]}")
            if bar:
                bar.finished(task[1], task[2], task[3], None if error is not None else result)
    except BaseException as err:  # Ctrl-C, SIGTERM, an executor that cannot start: no run stays 'running'
        if ex:
            ex.close()  # workers first: none of them is still computing a run released here
        why = "interrupted (Ctrl-C or SIGTERM)" if isinstance(err, KeyboardInterrupt) else \
            f"not finished: the driver stopped ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        store.release_runs([r.run_id for r in todo], why)
        raise
    finally:
        if bar:
            bar.close()
        if ex:
            ex.close()
    t_explain = time.perf_counter()
    from harness.explain import explain_suite  # never raises: a failure is a note in the store

    echo(f"{explain_suite(suite, out_dir, store, frames).line} ({time.perf_counter() - t_explain:.1f} s)")
    store.set_meta(finished_at=time.time())
    store.close()
    if report:
        summary.report, summary.report_error = _build_report(out_dir)
    return summary


def suite_device(suite: Suite) -> str:
    """The device the suite's arms may ask for: ``cuda`` if any arm needs it, else ``auto`` if any may use it."""
    devices = {suite.arm_training(a).device for a in suite.arms}
    return "cuda" if "cuda" in devices else "auto" if "auto" in devices else "cpu"


def data_paths(suite: Suite) -> list[str]:
    """The folders and files the suite's data sections read (what every Ray node must be able to read)."""
    sections = [suite.data, *suite.evaluation.external.values()]
    paths = []
    for section in sections:
        path = getattr(section, "path", None)
        if path:
            p = Path(path).expanduser()
            paths.append(str(p if p.is_absolute() else suite.base_dir / p))
    return paths


def execution_record(ex: Any, executor: str, workers: int, suite: Suite, cache_dir: Path,
                     echo: Callable[[str], None]) -> dict[str, Any]:
    """Where the runs execute (stored as ``meta.execution``; the report's environment section says it).

    On Ray, every run's CPU/GPU request is resolved and each node checked first (one line when a node
    cannot run the study). With ``workers`` > 1 on one machine, the worker processes share its GPU(s)
    on purpose: recorded, so that the report says the timings are of shared cards."""
    record: dict[str, Any] = {"executor": executor, "workers": workers}
    if ex is not None and hasattr(ex, "prepare"):
        request = ex.prepare(data_paths(suite), str(cache_dir))
        record["request"] = request.as_dict()
        echo(f"ray: each run asks for {request.cpus:g} CPU(s) and {request.gpus:g} GPU(s) ({request.reason}); "
             f"every node checked (code, packages, data, cache)")
    elif executor == "local" and workers > 1 and suite_device(suite) != "cpu":
        import torch

        if torch.cuda.is_available():
            record["shared_gpus"] = torch.cuda.device_count()
            echo(f"--workers {workers}: the worker processes share this machine's {torch.cuda.device_count()} "
                 "GPU(s) (each run's timings are of a shared card)")
    return record


def _record_study(store: ResultsStore, suite: Suite, plan: Any, frames: Any, splits: list, externals: dict[str, Any],
                  execution: dict[str, Any], code: str, cache_dir: Path, command: list[str] | None,
                  echo: Callable[[str], None]) -> None:
    """What the store keeps of the study before its runs: the suite and its identities, the execution, the data
    (samples, splits, skipped items, external sets), the manipulation check; runs of other identities go stale."""
    store.set_meta(
        execution=execution,
        suite_name=suite.name, suite_config=suite.model_dump(mode="json"), suite_hash=suite.suite_hash(),
        suite_path=str(suite.source_path) if suite.source_path else None,
        config_hashes={a.name: suite.run_config_hash(a) for a in suite.run_arms()},
        # each arm's canonical pipeline: a callable:/module: step's code identity as it ran (report methods)
        pipelines={a.name: pipeline_config(a.preprocess, suite.base_dir) for a in suite.arms},
        run_arms=[{"name": a.name, "arm": a.arm.name, "tuned": a.tuned} for a in suite.run_arms()],
        environment=_environment(), command=shlex.join(command or sys.argv),
        data_description=frames.description, data_content_hash=frames.content_hash, code_version=code,
        n_samples=len(frames), planned_runs=len(plan.runs), started_at=time.time(), cache_dir=str(cache_dir),
        leakage={f"r{s.repeat}/f{s.fold}": s.leakage for s in splits}, strata=suite.strata,
        model_cards=model_cards(suite), backbones=describe_backbones(suite.arm_model(a) for a in suite.arms),
        external={n: {"description": f.description, "content_hash": f.content_hash, "n_samples": len(f),
                      "n_groups": len(np.unique(f.groups))} for n, f in externals.items()},
    )
    from harness.manipulation import check_suite as check_manipulation  # issue 26 §1: does each filter act?

    manipulation = check_manipulation(suite, frames)  # a sample of the frames through every pipeline (seconds)
    store.set_meta(**manipulation.meta())
    if manipulation.checks:
        echo(manipulation.line)
    store.put_samples(frames.sample_ids, frames.groups, frames.videos, frames.labels, frames.metadata)
    for name, ef in externals.items():
        store.put_external_samples(name, ef.sample_ids, ef.groups, ef.videos, ef.labels, ef.metadata)
    store.put_splits([row for s in splits for row in s.roles(frames.groups)])
    store.put_skipped(frames.skipped)
    store.mark_stale({r.identity for r in plan.runs})


def data_identity(frames, externals: dict[str, Any]) -> str:
    """The data part of a run's identity: the frames' content hash, and the external sets' when the
    suite scores any (so a changed external set redoes the runs that scored it)."""
    if not externals:
        return frames.content_hash
    from harness.suite import sha256_of

    return sha256_of([frames.content_hash, {n: f.content_hash for n, f in externals.items()}])[:32]


def model_cards(suite: Suite) -> dict[str, Any]:
    """``{weights path: model card}`` for each weights file of the suite with a ``model_card.json`` beside
    it (written by ``harness pretrain``), so the report prints it without reading files outside the store."""
    from harness.pretrain import read_model_card

    cards: dict[str, Any] = {}
    for arm in suite.arms:
        path = suite.arm_model(arm).pretrained
        if path not in ("none", "imagenet") and path not in cards:
            card = read_model_card(path)
            if card is not None:
                cards[path] = card
    return cards


class DirectoryBusyError(RuntimeError):
    """Another driver is running a suite into the same output directory."""


class OutDirError(ValueError):
    """``--out`` cannot be a results directory (a file, or a path below a file)."""


def check_out_dir(out_dir: Path) -> None:
    """One line, before anything is written, when ``out_dir`` cannot hold this driver's results store: a
    file, a path below a file, a directory this user cannot write to (read-only, or on a read-only file
    system: a temporary file is tried), a store path that is not a file, or a directory holding other
    files but no store (its files, e.g. a ``report.html``, would be overwritten without being named)."""
    from harness.safe_write import unwritable

    out_dir = Path(out_dir)
    problem = unwritable(out_dir)
    if problem is not None:
        raise OutDirError(f"--out {out_dir}: {problem}; nothing was written; accepted: a new directory, or one "
                          f"holding a results store ({STORE_FILENAME}), that this user can write to")
    db = out_dir / STORE_FILENAME
    if db.exists() and not db.is_file():
        raise OutDirError(f"--out {out_dir}: {db} is not a file; accepted: a directory whose {STORE_FILENAME} "
                          "is a results store")
    if out_dir.is_dir() and not db.exists():
        others = sorted(p.name for p in out_dir.iterdir() if p.name != ".lock")
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise OutDirError(f"--out {out_dir}: a directory holding other files ({shown}) and no results store; "
                              "nothing was written (they would be overwritten); accepted: a new or empty directory, "
                              f"or one holding a results store ({STORE_FILENAME})")


class ForeignSuiteError(OutDirError):
    """``--out`` holds the results store of a suite with another name."""


def check_store_suite(out_dir: Path, suite_name: str, replace: bool = False) -> str | None:
    """A store belongs to one suite name: a suite of another name is refused in one line before anything
    is touched, unless ``replace`` (``--replace-other-suite``); returns the replaced suite's name, else None."""
    import sqlite3

    from harness.store import NewerStoreError, StoreError

    db = Path(out_dir) / STORE_FILENAME
    if not db.is_file():
        return None
    try:
        with ResultsStore(db, readonly=True) as store:
            stored = store.meta().get("suite_name")
    except NewerStoreError:
        raise  # one line now, before the data is loaded: this checkout cannot read it at all
    except (StoreError, sqlite3.Error):
        return None  # a damaged or foreign file: refused with its own line before anything is written
    if stored is None or stored == suite_name:
        return None
    if not replace:
        raise ForeignSuiteError(
            f"--out {out_dir}: holds the results of suite {stored!r}, not {suite_name!r}; nothing was touched; "
            f"accepted: an --out of its own (e.g. reports/{suite_name}), or --replace-other-suite to run "
            f"{suite_name!r} here (the runs of {stored!r} it does not share are kept but set aside as stale)")
    return str(stored)


def _busy(out_dir: Path, holder: str) -> DirectoryBusyError:
    return DirectoryBusyError(f"{out_dir}: another 'harness run' (pid {holder or '?'}) is writing here; wait for it "
                              "or choose another --out")


def check_not_busy(out_dir: Path) -> None:
    """:class:`DirectoryBusyError` when another driver holds ``out_dir``'s lock; the lock is only tested
    (nothing is created or written), so a busy ``--out`` is refused before the data is loaded;
    :func:`_lock_out_dir` takes it once the store is open."""
    import fcntl

    try:
        handle = open(Path(out_dir) / ".lock")  # noqa: SIM115 (read-only: no lock file is created)
    except OSError:
        return  # no lock file yet: no driver has run here
    with handle:
        try:  # shared: refused only by a driver's exclusive lock
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(out_dir, handle.read().strip()) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_out_dir(out_dir: Path):
    """An exclusive ``flock`` on ``out_dir/.lock`` held while this driver writes the store."""
    import fcntl
    import os

    handle = open(out_dir / ".lock", "a+")  # noqa: SIM115 (held until the suite ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise _busy(out_dir, holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def check_weights(suite: Suite, network: bool = True) -> None:
    """Resolve every distinct pretrained-weights setting once (download/cache or read the file: a
    weights file must load into the arm's network, finite); raises ``harness.models.ModelError``
    before any run starts. ``network=False`` (``validate``, ``--dry-run``): files only, no ImageNet."""
    from harness.models import check_weights as check_model_weights

    seen: set[tuple[str, str, int]] = set()
    for arm in suite.arms:
        model = suite.arm_model(arm)
        key = (model.architecture, model.pretrained, model.num_classes)
        if model.pretrained not in ("none", *(() if network else ("imagenet",))) and key not in seen:
            seen.add(key)
            check_model_weights(model, in_chans=1)


def check_strata(suite: Suite, frames) -> None:
    """The report's strata must be metadata columns of the data (checked before training)."""
    check_strata_columns(suite, list(frames.metadata.columns))


def check_strata_columns(suite: Suite, columns: list[str], header: list[str] | None = None) -> None:
    """``report.strata`` must name metadata ``columns``; ``header``: a manifest CSV's columns, to say
    which missing ones the CSV has (a manifest's metadata are the columns ``data.metadata_columns`` lists)."""
    from harness.suite import SuiteError

    missing = [c for c in suite.strata if c not in columns]
    if missing and suite.report.strata is not None:
        label = str(suite.source_path or "<suite>")
        in_csv = [c for c in missing if header is not None and c in header]
        hint = f" ({', '.join(in_csv)}: in the CSV; list them in data.metadata_columns)" if in_csv else ""
        raise SuiteError([f"{label}: report.strata: {missing} not in the data's metadata{hint}; accepted: "
                          f"{', '.join(columns) or '(no metadata columns)'}"])


def _describe_error(err: BaseException) -> str:
    """First line: ``Type: message (at file:line in function)``; then the full traceback."""
    text = f"{type(err).__name__}: {err}".strip().replace("\n", " ")
    frames = traceback.extract_tb(err.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    full = "".join(traceback.format_exception(err)).strip()
    return text + "\n" + full


def _environment() -> dict[str, Any]:
    from harness.environment import environment

    return environment()


class _RunLog:
    """Progress outside a terminal (CI, nohup, a log file): one line per finished run, no carriage returns."""

    def __init__(self, total: int, metric: str, echo: Callable[[str], None], level: str = "frame"):
        self.total, self.metric, self.echo, self.level = total, metric, echo, level
        self.n = 0
        self.t0 = time.perf_counter()

    def write(self, line: str) -> None:
        self.echo(line)

    def finished(self, arm: str, repeat: int, fold: int, result: RunOutcome | None) -> None:
        self.n += 1
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.n * (self.total - self.n)
        if result is None:
            what = "failed"
        else:
            aggregation = "none" if self.level == "frame" else "mean"
            value = next((m["value"] for m in result.metrics if m.get("metric") == self.metric
                          and m.get("level") == self.level and m.get("aggregation") == aggregation), None)
            seconds = result.timings.get("run_seconds")
            name = f"{self.level} {self.metric}"
            what = (f"{name} {value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value)
                    else f"{name} n/a") + (f", {seconds:.1f} s" if isinstance(seconds, (int, float)) else "")
        self.echo(f"run {self.n}/{self.total} {arm} repeat {repeat} fold {fold}: {what}; "
                  f"ETA {_fmt_seconds(eta) if self.n < self.total else 'done'}")

    def close(self) -> None:
        pass


class _Bar:
    """tqdm in a terminal, with the same ``finished`` call as :class:`_RunLog`."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="run", desc="runs", dynamic_ncols=True, file=sys.stderr)

    def write(self, line: str) -> None:
        self._bar.write(line)

    def finished(self, arm: str, repeat: int, fold: int, result: RunOutcome | None) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def _progress_bar(total: int, enabled: bool, metric: str = "roc_auc",
                  echo: Callable[[str], None] = print, tty: bool | None = None,
                  level: str = "frame") -> _RunLog | _Bar | None:
    """A tqdm bar on a terminal; elsewhere one line per finished run (``tty`` None: stderr decides)."""
    if not enabled or total == 0:
        return None
    if tty is None:
        tty = sys.stderr.isatty()
    return _Bar(total) if tty else _RunLog(total, metric, echo, level)


def _build_report(out_dir: Path) -> tuple[Path | None, str | None]:
    """``harness.report.build_report`` if it exists; its failure is reported, results stay."""
    try:
        from harness.report import build_report
    except ImportError as err:
        return None, f"report not built (harness.report unavailable: {err})"
    try:
        return Path(build_report(out_dir)), None
    except Exception as err:  # the results are safe in the store; say what failed
        return None, f"report failed: {type(err).__name__}: {err}"


def _print_plan(suite: Suite, plan: Plan, frames, store: ResultsStore | None, echo: Callable[[str], None],
                cache_dir: Path | None = None) -> None:
    ev = suite.evaluation
    sets = suite.run_arms()
    variants = f" (+ {len(sets) - len(suite.arms)} tuned/untuned variants)" if len(sets) > len(suite.arms) else ""
    echo(f"suite {suite.name}: {len(suite.arms)} arms{variants} x {ev.repeats} repeats x {ev.folds} folds = "
         f"{len(plan.runs)} runs ({len(plan.runs) - len(plan.todo)} done, {len(plan.todo)} to run)")
    echo(f"data: {frames.description or suite.data.source} ({len(frames)} frames, "
         f"{len(np.unique(frames.groups))} patients, {int(np.sum(frames.labels == 1))} positive)")
    echo("images per fold (repeat/fold: train / val / test):")
    for (r, f), n in sorted(plan.images.items()):
        echo(f"  r{r}/f{f}: {n['n_train']} / {n['n_val']} / {n['n_test']}")
    echo("arms:")
    for run in sets:
        arm = run.arm
        runs = [p for p in plan.runs if p.arm == run.name]
        what = ", ".join(str(s.get("callable") or s.get("module") or next(iter(s)))  # a user step: its import path
                         for s in arm.preprocess) or "no preprocessing"
        model = suite.arm_model(arm)
        extra = []
        if model.stem:
            extra.append(f"stem {model.stem.mode}")
        if model.diffusion_blocks:
            extra.append(f"blocks after stages {model.diffusion_blocks.after_stages}")
        if arm.on_the_fly:
            extra.append("on the fly")
        if run.tuned:
            extra.append("tuned")
        echo(f"  {run.name}: {what}{' (' + ', '.join(extra) + ')' if extra else ''}; "
             f"{sum(not p.done for p in runs)}/{len(runs)} to run; config {runs[0].config_hash}")
    if suite.search is not None and suite.search.enabled:  # harness.search: trials and inner fits of the runs to do
        echo(search_plan_line(suite, [(r.arm, r.repeat, r.fold) for r in plan.todo]))
    for line in redo_lines(plan):
        echo(line)
    if plan.todo:
        for line in estimate_phases(suite, plan, store, frames, cache_dir).lines(_fmt_seconds):
            echo(line)


def _fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def status_lines(out_dir: str | Path) -> list[str]:
    """Progress of a results directory, for ``harness status``."""
    store = ResultsStore(out_dir, readonly=True)
    store.check_integrity()
    meta = store.meta()
    runs = store.runs()
    lines = [f"suite {meta.get('suite_name', '?')} in {Path(out_dir)}: "
             f"{int((runs['status'] == 'done').sum())} of {meta.get('planned_runs', len(runs))} runs done"]
    if not runs.empty:
        table = runs.pivot_table(index="arm", columns="status", values="run_id", aggfunc="count", fill_value=0)
        cols = [c for c in ("done", "running", "interrupted", "failed", "stale") if c in table.columns]
        # Every column at least one space wider than its longest entry ("interrupted", "~untuned" arms).
        first = max(24, *(len(str(a)) + 1 for a in table.index))
        widths = {c: max(9, len(c) + 1) for c in cols}
        lines.append(f"  {'arm':<{first}}" + "".join(f"{c:>{widths[c]}}" for c in cols))
        for arm, row in table.iterrows():
            lines.append(f"  {arm:<{first}}" + "".join(f"{int(row[c]):>{widths[c]}}" for c in cols))
        running = runs[runs["status"] == "running"]
        if len(running):
            lines.append(f"  {len(running)} 'running' run(s): in progress, or interrupted (they are redone next run)")
        for _, row in runs[runs["status"] == "failed"].iterrows():
            lines.append(f"  failed {row['run_id']}: {str(row['error']).splitlines()[0]}")
    if meta.get("finished_at") and (Path(out_dir) / "report.html").exists():
        lines.append(f"  report: {Path(out_dir) / 'report.html'}")
    store.close()
    return lines


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
