"""Where runs execute: in this process, in worker processes, or as Ray tasks.

Every executor takes the same task tuples and yields ``(task, result, error)`` as runs finish
(in completion order); only the caller (the driver) writes the results store, so the store is
the same whichever executor ran the work.

- ``LocalExecutor``: one run after the other in this process.
- ``ProcessExecutor(workers)``: ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn``
  start method (fork is unsafe with torch threads); each worker uses ``cores // workers``
  torch threads so the workers share the machine instead of oversubscribing it. Workers die with
  their driver however it ends (:func:`die_with_parent`: the parent-death signal on Linux and a
  watchdog thread everywhere), and a driver that stops early (Ctrl-C, SIGTERM, an error) ends them
  at once instead of waiting for their runs.
- ``RayExecutor(address, resources, device)``: ``ray.init(address=...)`` (an existing cluster, ``"auto"``,
  or a new local instance when ``address`` is None); each run is a Ray task asking for the CPUs and
  GPUs that :meth:`RayExecutor.prepare` resolved and checked on every node (:mod:`harness.ray_cluster`).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from harness.ray_cluster import Request, RunResources

Task = tuple[Any, ...]
Outcome = tuple[Task, Any, BaseException | None]


class ExecutorError(RuntimeError):
    """The executor could not start (e.g. Ray cannot connect); one line saying why."""


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".strip()


class LocalExecutor:
    name = "local"

    def run(self, fn: Callable[..., Any], tasks: Sequence[Task]) -> Iterator[Outcome]:
        for task in tasks:
            try:
                yield task, fn(*task), None
            except Exception as err:  # recorded as a failed run; the suite goes on
                yield task, None, err

    def close(self) -> None:
        pass


#: Seconds between two looks of a worker's watchdog at its driver.
WATCHDOG_SECONDS = 1.0
#: ``prctl`` option: the signal a process gets when its parent dies (``<linux/prctl.h>``).
_PR_SET_PDEATHSIG = 1


def _init_worker(threads: int, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def die_with_parent(parent_pid: int, interval: float = WATCHDOG_SECONDS) -> None:
    """End this (worker) process when the process ``parent_pid`` ends, however it ends (even ``kill -9``).

    On Linux the kernel sends SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``); everywhere
    a daemon thread looks every ``interval`` seconds and exits the process once the parent is gone (the
    worker was re-parented, or the pid no longer exists). A worker holds nothing to save: only the
    driver writes the results store.
    """
    _set_parent_death_signal()
    if not _parent_alive(parent_pid):  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, interval), name="harness-parent-watchdog",
                     daemon=True).start()


def _set_parent_death_signal() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parent_alive(parent_pid: int) -> bool:
    import psutil

    return os.getppid() == parent_pid and psutil.pid_exists(parent_pid)


def _watch_parent(parent_pid: int, interval: float) -> None:
    while _parent_alive(parent_pid):
        time.sleep(interval)
    os._exit(1)


class ProcessExecutor:
    name = "process"

    def __init__(self, workers: int, cores: int | None = None):
        if workers < 1:
            raise ValueError(f"--workers {workers}; accepted: an integer >= 1")
        self.workers = workers
        self.threads = max(1, (cores or os.cpu_count() or 1) // workers)
        self._pool: cf.ProcessPoolExecutor | None = None

    def run(self, fn: Callable[..., Any], tasks: Sequence[Task]) -> Iterator[Outcome]:
        """Outcomes as runs finish. Left early (an exception in the caller, Ctrl-C, SIGTERM, the
        generator closed), the workers are ended at once: their runs are not waited for."""
        ctx = multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_worker,
                                      initargs=(self.threads, os.getpid()))
        self._pool = pool
        finished = False
        try:
            futures = {pool.submit(fn, *task): task for task in tasks}
            for future in cf.as_completed(futures):
                err = future.exception()
                yield futures[future], (None if err else future.result()), err
            finished = True
        finally:
            self._stop(pool, wait=finished)

    def _stop(self, pool: cf.ProcessPoolExecutor, wait: bool) -> None:
        """Shut ``pool`` down once: after its last outcome, normally; else ending its workers now."""
        if self._pool is not pool:
            return
        self._pool = None
        if wait:
            pool.shutdown(wait=True)
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)

    def close(self) -> None:
        """End the workers of a ``run`` that was left early (no-op after a complete one)."""
        if self._pool is not None:
            self._stop(self._pool, wait=False)


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Ray task body (``ray.remote`` needs a Python function; ``fn`` may be any callable)."""
    return fn(*args)


def _call_without_gpus(fn: Callable[..., Any], *args: Any) -> Any:
    """Ray task body of a run that asked for no GPU: it sees none. Ray versions differ here (newer ones leave
    ``CUDA_VISIBLE_DEVICES`` as it was for such a task, so ``device: auto`` would take a card Ray gave to
    another run); hiding them is this harness's rule, whatever the version."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return fn(*args)


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, resources: RunResources | None = None, device: str = "auto",
                 init_kwargs: dict[str, Any] | None = None):
        try:
            import ray
        except ImportError as err:
            raise ExecutorError(f"--executor ray needs the ray package ({err}); "
                                "accepted: pip install 'ray[default]'") from None
        self._ray = ray
        self._owned = False
        if not ray.is_initialized():
            kwargs = dict(init_kwargs or {})
            kwargs.setdefault("include_dashboard", False)
            kwargs.setdefault("log_to_driver", False)
            if address:
                kwargs.pop("num_cpus", None)
            try:
                ray.init(address=address, **kwargs)
            except Exception as err:
                raise ExecutorError(f"cannot start or reach Ray at {address or 'a new local instance'}: "
                                    f"{_error_text(err).splitlines()[0]}") from None
            self._owned = True
        self.resources, self.device = resources or RunResources(), device
        self.request: Request | None = None

    def prepare(self, paths: Sequence[str], cache_dir: str) -> Request:
        """Resolve every run's CPU/GPU request against the alive nodes and check each node can run the study
        (code, packages, data, cache): :class:`harness.ray_cluster.ClusterError` in one line before any run."""
        from harness.ray_cluster import check_nodes, resolve_resources

        nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        try:
            self.request = resolve_resources(self.resources, nodes, self.device)
            check_nodes(self._ray, paths, cache_dir)
        except Exception:
            self.close()
            raise
        return self.request

    def run(self, fn: Callable[..., Any], tasks: Sequence[Task]) -> Iterator[Outcome]:
        ray = self._ray
        request = self.request or Request(1.0, 0.0, "not prepared")
        body = _call if request.gpus > 0 else _call_without_gpus
        remote = ray.remote(num_cpus=request.cpus, num_gpus=request.gpus, max_retries=0)(body)
        refs = {remote.remote(fn, *task): task for task in tasks}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    yield refs[ref], ray.get(ref), None
                except ray.exceptions.RayTaskError as err:
                    cause = err.as_instanceof_cause() if hasattr(err, "as_instanceof_cause") else err
                    yield refs[ref], None, getattr(err, "cause", None) or cause
                except Exception as err:
                    yield refs[ref], None, err

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(kind: str = "local", workers: int = 1, address: str | None = None,
                  ray_init: dict[str, Any] | None = None, resources: RunResources | None = None,
                  device: str = "auto") -> LocalExecutor | ProcessExecutor | RayExecutor:
    """``local`` with ``workers`` > 1 means worker processes; ``ray`` uses ``address`` and ``resources``."""
    if kind == "ray":
        return RayExecutor(address, resources, device, init_kwargs=ray_init)
    if kind != "local":
        raise ValueError(f"--executor {kind!r}; accepted: local, ray")
    if address:
        raise ValueError("--address is for --executor ray")
    if resources is not None and resources != RunResources():
        raise ValueError("--cpus-per-run / --gpus-per-run are for --executor ray (local workers divide the cores, "
                         "and share this machine's GPU)")
    return LocalExecutor() if workers <= 1 else ProcessExecutor(workers)
