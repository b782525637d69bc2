"""Plan, execute and record a suite: arm x repeat x fold runs on shared patient-grouped splits.

The driver (:func:`run_suite`) loads the frames, builds every split (errors before any training),
records samples and splits, skips the runs the store has completed with the same config hash,
claims the others (``running``) and hands them to an executor. Each run is
:func:`harness.execute.execute_run`, a pure function of its arguments that returns a
``RunOutcome``; only the driver writes the store, one transaction per run. A run that raises is
recorded ``failed`` with its error and the suite goes on.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.execute import FitFn, RunOutcome, execute_run, load_suite_frames, run_seed
from harness.store import ResultsStore, run_id_for
from harness.suite import Suite


def default_cache_dir() -> Path:
    from harness.data.cache import default_cache_dir as data_cache

    return data_cache()


def splits_for(suite: Suite, frames) -> list:
    from harness.cv import make_splits

    return make_splits(frames.labels, frames.groups, suite.evaluation.folds, suite.evaluation.repeats,
                       suite.seed, suite.training.val_fraction)


# --------------------------------------------------------------------------- plan


@dataclass
class PlannedRun:
    arm: str
    repeat: int
    fold: int
    config_hash: str
    done: bool

    @property
    def run_id(self) -> str:
        return run_id_for(self.arm, self.repeat, self.fold)


@dataclass
class Plan:
    runs: list[PlannedRun]
    images: dict[tuple[int, int], dict[str, int]]  # (repeat, fold) -> n_train / n_val / n_test

    @property
    def todo(self) -> list[PlannedRun]:
        return [r for r in self.runs if not r.done]


def make_plan(suite: Suite, splits: list, store: ResultsStore | None) -> Plan:
    runs = []
    for arm in suite.arms:
        h = suite.run_config_hash(arm)
        for repeat in range(suite.evaluation.repeats):
            for fold in range(suite.evaluation.folds):
                done = store is not None and store.is_done(arm.name, repeat, fold, h)
                runs.append(PlannedRun(arm.name, repeat, fold, h, done))
    images = {(s.repeat, s.fold): {"n_train": len(s.train_idx), "n_val": len(s.val_idx), "n_test": len(s.test_idx)}
              for s in splits}
    return Plan(runs, images)


def estimate_seconds(suite: Suite, plan: Plan, store: ResultsStore | None) -> tuple[float, str]:
    """Estimated wall time of the runs to do (one worker): from finished runs of the same arm in
    the store when there are any, else from a short timing of training steps on this machine."""
    per_arm: dict[str, float] = {}
    if store is not None:
        done = store.runs(status="done")
        for arm, rows in done.groupby("arm"):
            secs = [t.get("run_seconds") for t in rows["timings"] if isinstance(t, dict) and t.get("run_seconds")]
            if secs:
                per_arm[str(arm)] = float(np.mean(secs))
    todo = plan.todo
    if all(r.arm in per_arm for r in todo):
        return sum(per_arm[r.arm] for r in todo), "mean time of finished runs"
    step = _time_training_step(suite)
    n_train = np.mean([v["n_train"] + v["n_val"] for v in plan.images.values()]) if plan.images else 0
    steps = math.ceil(n_train / suite.training.batch_size) * suite.training.epochs
    default = steps * step * 1.25  # + validation / test passes
    total = sum(per_arm.get(r.arm, default) for r in todo)
    return total, f"{step:.2f} s per training step of the plain model measured now (batch {suite.training.batch_size})"


def _time_training_step(suite: Suite) -> float:
    import torch

    from harness.models import create_model

    size = getattr(suite.data, "image_size", 64)
    model = create_model(suite.model.model_copy(update={"pretrained": "none"}), in_chans=1)
    model.train()
    if suite.training.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(min(suite.training.batch_size, 32), 1, size, size)
    if suite.training.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.zeros(len(x), dtype=torch.long)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:])) * suite.training.batch_size / len(x)


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
    """Write the weights as torch tensors (0-d tensors such as BatchNorm's step counter keep
    their shape, so the file loads back as ``model.pretrained``)."""
    import torch
    from safetensors.torch import save_file

    path = out_dir / "checkpoints" / f"{arm}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: torch.as_tensor(v).detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(path)
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
    store.finish_run(run_id, result.metrics, result.predictions, result.timings, result.learned_params,
                     result.history, checkpoint=checkpoint, info=result.info)


def run_suite(suite: Suite, out_dir: str | Path, *, executor: str = "local", workers: int = 1,
              address: str | None = None, dry_run: bool = False, report: bool = True,
              cache_dir: str | Path | None = None, fit: FitFn | None = None, progress: bool = True,
              command: list[str] | None = None, ray_init: dict[str, Any] | None = None,
              echo: Callable[[str], None] = print) -> RunSummary:
    """Run (or, with ``dry_run``, plan) every run of the suite that the store lacks."""
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    frames = load_suite_frames(suite, cache_dir)
    splits = splits_for(suite, frames)  # SplitError here: nothing has trained
    check_strata(suite, frames)
    if not dry_run:
        check_weights(suite)  # e.g. imagenet offline: one clear error before anything trains
    store = ResultsStore(out_dir) if not dry_run or (out_dir / "results.sqlite").exists() else None
    lock = None if dry_run else _lock_out_dir(out_dir)  # one driver per directory (freed even on kill -9)
    try:
        return _drive(suite, out_dir, cache_dir, frames, splits, store, executor=executor, workers=workers,
                      address=address, dry_run=dry_run, report=report, fit=fit, progress=progress,
                      command=command, ray_init=ray_init, echo=echo)
    finally:
        if lock is not None:
            lock.close()


def _drive(suite: Suite, out_dir: Path, cache_dir: Path, frames, splits: list, store: ResultsStore | None, *,
           executor: str, workers: int, address: str | None, dry_run: bool, report: bool, fit: FitFn | None,
           progress: bool, command: list[str] | None, ray_init: dict[str, Any] | None,
           echo: Callable[[str], None]) -> RunSummary:
    from harness.executors import make_executor

    plan = make_plan(suite, splits, store)
    summary = RunSummary(out_dir, planned=len(plan.runs), skipped=len(plan.runs) - len(plan.todo))
    if dry_run:
        _print_plan(suite, plan, frames, store, echo)
        return summary
    assert store is not None
    store.set_meta(
        suite_name=suite.name, suite_config=suite.model_dump(mode="json"), suite_hash=suite.suite_hash(),
        suite_path=str(suite.source_path) if suite.source_path else None,
        config_hashes={a.name: suite.run_config_hash(a) for a in suite.arms},
        environment=_environment(), command=shlex.join(command or sys.argv),
        data_description=frames.description, data_content_hash=frames.content_hash,
        n_samples=len(frames), planned_runs=len(plan.runs), started_at=time.time(), cache_dir=str(cache_dir),
        leakage={f"r{s.repeat}/f{s.fold}": s.leakage for s in splits},
    )
    store.put_samples(frames.sample_ids, frames.groups, frames.videos, frames.labels, frames.metadata)
    store.put_splits([row for s in splits for row in s.roles(frames.groups)])
    store.put_skipped(frames.skipped)
    store.mark_stale({(r.run_id, r.config_hash) for r in plan.runs})
    todo = plan.todo
    if summary.skipped:
        echo(f"{summary.skipped} of {len(plan.runs)} runs already done with the same config; {len(todo)} to run")
    payload = suite.to_payload()
    tasks = [(payload, r.arm, r.repeat, r.fold, str(out_dir), str(cache_dir)) + ((fit,) if fit else ()) for r in todo]
    for r in todo:
        store.claim_run(r.arm, r.repeat, r.fold, r.config_hash,
                        run_seed(suite.seed, r.repeat, r.fold, suite.arm_training(r.arm).seed_offset))
    bar = _progress_bar(len(todo), progress)
    ex = make_executor(executor, workers, address, ray_init=ray_init) if todo else None
    try:
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
                bar.update(1)
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


class DirectoryBusyError(RuntimeError):
    """Another driver is running a suite into the same output directory."""


def _lock_out_dir(out_dir: Path):
    """An exclusive ``flock`` on ``out_dir/.lock`` held while this driver writes the store."""
    import fcntl
    import os

    handle = open(out_dir / ".lock", "a+")  # noqa: SIM115 (held until the suite ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise DirectoryBusyError(f"{out_dir}: another 'harness run' (pid {holder}) is writing here; wait for it "
                                 "or choose another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def check_weights(suite: Suite) -> None:
    """Resolve every distinct pretrained-weights setting once (download/cache or read the file);
    raises ``harness.models.ModelError`` before any run starts."""
    from harness.models import check_weights as check_model_weights

    seen: set[tuple[str, str, int]] = set()
    for arm in suite.arms:
        model = suite.arm_model(arm)
        key = (model.architecture, model.pretrained, model.num_classes)
        if model.pretrained != "none" and key not in seen:
            seen.add(key)
            check_model_weights(model, in_chans=1)


def check_strata(suite: Suite, frames) -> None:
    """The report's strata must be metadata columns of the data (checked before training)."""
    from harness.suite import SuiteError

    columns = list(frames.metadata.columns)
    missing = [c for c in suite.strata if c not in columns]
    if missing and suite.report.strata is not None:
        label = str(suite.source_path or "<suite>")
        raise SuiteError([f"{label}: report.strata: {missing} not in the data's metadata; accepted: "
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


def _progress_bar(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="run", desc="runs", dynamic_ncols=True, file=sys.stderr)


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


def _print_plan(suite: Suite, plan: Plan, frames, store: ResultsStore | None, echo: Callable[[str], None]) -> None:
    ev = suite.evaluation
    echo(f"suite {suite.name}: {len(suite.arms)} arms x {ev.repeats} repeats x {ev.folds} folds = {len(plan.runs)} runs"
         f" ({len(plan.runs) - len(plan.todo)} done, {len(plan.todo)} to run)")
    echo(f"data: {frames.description or suite.data.source} ({len(frames)} frames, "
         f"{len(np.unique(frames.groups))} patients, {int(np.sum(frames.labels == 1))} positive)")
    echo("images per fold (repeat/fold: train / val / test):")
    for (r, f), n in sorted(plan.images.items()):
        echo(f"  r{r}/f{f}: {n['n_train']} / {n['n_val']} / {n['n_test']}")
    echo("arms:")
    for arm in suite.arms:
        runs = [p for p in plan.runs if p.arm == arm.name]
        what = ", ".join(next(iter(s)) for s in arm.preprocess) or "no preprocessing"
        model = suite.arm_model(arm)
        extra = []
        if model.stem:
            extra.append(f"stem {model.stem.mode}")
        if model.diffusion_blocks:
            extra.append(f"blocks after stages {model.diffusion_blocks.after_stages}")
        if arm.on_the_fly:
            extra.append("on the fly")
        echo(f"  {arm.name}: {what}{' (' + ', '.join(extra) + ')' if extra else ''}; "
             f"{sum(not p.done for p in runs)}/{len(runs)} to run; config {runs[0].config_hash}")
    if plan.todo:
        seconds, basis = estimate_seconds(suite, plan, store)
        echo(f"estimated time: {_fmt_seconds(seconds)} on one worker ({basis}; preprocessing and "
             "diffusion layers add to it)")


def _fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def status_lines(out_dir: str | Path) -> list[str]:
    """Progress of a results directory, for ``harness status``."""
    store = ResultsStore(out_dir, readonly=True)
    meta = store.meta()
    runs = store.runs()
    lines = [f"suite {meta.get('suite_name', '?')} in {Path(out_dir)}: "
             f"{int((runs['status'] == 'done').sum())} of {meta.get('planned_runs', len(runs))} runs done"]
    if not runs.empty:
        table = runs.pivot_table(index="arm", columns="status", values="run_id", aggfunc="count", fill_value=0)
        cols = [c for c in ("done", "running", "failed", "stale") if c in table.columns]
        lines.append(f"  {'arm':<24}" + "".join(f"{c:>9}" for c in cols))
        for arm, row in table.iterrows():
            lines.append(f"  {arm:<24}" + "".join(f"{int(row[c]):>9}" for c in cols))
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
