"""What a Ray cluster must offer a study, checked once on the driver before any run.

Two things go wrong silently on a cluster, and both are caught here in one line each:

- **Resources.** Ray gives a task that asks for no GPU an empty ``CUDA_VISIBLE_DEVICES``, so
  ``training.device: auto`` inside it trains on the CPU. :func:`resolve_resources` turns
  ``--cpus-per-run`` / ``--gpus-per-run`` (:class:`RunResources`; fractional GPUs pack several runs on
  one card) into the request of every run: by default one GPU per run when the cluster has GPUs and the
  suite may use CUDA (``auto`` or ``cuda``), none otherwise. A request no node can meet would leave every
  run pending forever, and ``device: cuda`` without a GPU would fail every run: both are refused.
- **Nodes.** A node with other code would write runs of another code version into the store, and a node
  that cannot read the data or the frame cache fails each of its runs. :func:`check_nodes` runs one tiny
  task pinned to every alive node (:func:`node_report`) and compares it with the driver's.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ClusterError(RuntimeError):
    """The cluster cannot run the study as asked (one line: what, where, what is accepted)."""


@dataclass(frozen=True)
class RunResources:
    """What each run asks of the cluster; ``None``: resolved from the cluster (:func:`resolve_resources`)."""

    cpus: float | None = None
    gpus: float | None = None

    def __post_init__(self) -> None:
        for flag, value in (("--cpus-per-run", self.cpus), ("--gpus-per-run", self.gpus)):
            if value is not None and not (value >= 0 and value == value and value != float("inf")):
                raise ClusterError(f"{flag} {value}: accepted: a finite number >= 0")
        if self.cpus is not None and self.cpus <= 0:
            raise ClusterError(f"--cpus-per-run {self.cpus:g}: accepted: a number > 0 (a run needs a CPU to feed it)")
        if self.gpus is not None and self.gpus > 1 and self.gpus != int(self.gpus):
            raise ClusterError(f"--gpus-per-run {self.gpus:g}: accepted: a fraction of one GPU (0 to 1) or a whole "
                               "number of GPUs (Ray's rule)")


@dataclass(frozen=True)
class Request:
    """The resolved request of every run, as Ray's ``num_cpus`` / ``num_gpus``, and why."""

    cpus: float
    gpus: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"cpus_per_run": self.cpus, "gpus_per_run": self.gpus, "reason": self.reason}


def resolve_resources(asked: RunResources, nodes: Sequence[Mapping[str, float]], device: str) -> Request:
    """The request of every run on a cluster whose alive nodes offer ``nodes`` (Ray's resource dicts).

    ``device`` is the suite's ``training.device`` (``auto``, ``cpu``, ``cuda``).
    """
    node_gpus = [float(n.get("GPU", 0.0)) for n in nodes]
    node_cpus = [float(n.get("CPU", 0.0)) for n in nodes]
    total_gpus = sum(node_gpus)
    cpus = 1.0 if asked.cpus is None else float(asked.cpus)
    if asked.gpus is not None:
        gpus, reason = float(asked.gpus), "--gpus-per-run"
    elif total_gpus > 0 and device in ("auto", "cuda"):
        gpus, reason = 1.0, f"the cluster has {total_gpus:g} GPU(s) and training.device is {device}: one GPU per run"
    else:
        gpus = 0.0
        reason = "training.device is cpu" if device == "cpu" else "the cluster has no GPU"
    if device == "cuda" and gpus == 0:
        raise ClusterError("training.device: cuda with --gpus-per-run 0: Ray gives a task that asks for no GPU an "
                           "empty CUDA_VISIBLE_DEVICES, so every run would fail; accepted: --gpus-per-run > 0 (e.g. 1, "
                           "or 0.25 to pack four runs on one card) on a cluster with GPUs, or training.device: auto")
    if gpus > 0 and total_gpus == 0:
        raise ClusterError(f"--gpus-per-run {gpus:g}: the Ray cluster has no GPU, so every run would wait forever; "
                           "accepted: --gpus-per-run 0 with training.device auto or cpu, or a cluster with GPUs")
    fits = [c >= cpus and g >= gpus for c, g in zip(node_cpus, node_gpus)]
    if not any(fits):
        biggest = max(zip(node_cpus, node_gpus), default=(0.0, 0.0))
        raise ClusterError(f"--cpus-per-run {cpus:g} --gpus-per-run {gpus:g}: no node of the Ray cluster has that much "
                           f"(largest: {biggest[0]:g} CPUs, {biggest[1]:g} GPUs), so every run would wait forever; "
                           "accepted: a request one node can meet")
    return Request(cpus, gpus, reason)


@dataclass(frozen=True)
class NodeReport:
    """What one node (or the driver) runs: its host, the code and package versions, what it cannot read."""

    host: str
    code_version: str
    packages: dict[str, str | None]
    problems: tuple[str, ...] = field(default=())


def node_report(paths: Sequence[str], cache_dir: str) -> NodeReport:
    """This process's :class:`NodeReport`: ``paths`` (the data) must be readable, ``cache_dir`` writable."""
    from harness.environment import package_versions
    from harness.safe_write import unwritable
    from harness.versions import code_version

    problems = []
    for p in paths:
        if not os.access(p, os.R_OK):
            problems.append(f"cannot read the data at {p}")
    why = unwritable(Path(cache_dir))
    if why is not None:
        problems.append(f"frame cache {cache_dir}: {why}")
    return NodeReport(socket.gethostname(), code_version(), package_versions(), tuple(problems))


def compare(driver: NodeReport, node: NodeReport, where: str) -> str | None:
    """The first way ``node`` differs from what the driver needs, as one line; None when it can run the study."""
    if node.problems:
        return f"Ray node {where}: {node.problems[0]}; accepted: the data and the frame cache at the same paths on " \
               "every node (a shared folder, or --cache-dir on one)"
    if node.code_version != driver.code_version:
        return f"Ray node {where}: code version {node.code_version}, the driver's is {driver.code_version} (its runs " \
               "would be stored as another code's); accepted: the same checkout of the project on every node"
    for name, version in driver.packages.items():
        if node.packages.get(name) != version:
            return f"Ray node {where}: {name} {node.packages.get(name)}, the driver has {version}; accepted: the same " \
                   "package versions on every node (pip install -e . from the same checkout)"
    return None


def check_nodes(ray: Any, paths: Sequence[str], cache_dir: str, driver: NodeReport | None = None) -> int:
    """Run :func:`node_report` on every alive node (a task pinned to it) and refuse the first that differs
    from the driver (:class:`ClusterError`, one line); returns the number of nodes checked."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    driver = driver or node_report(paths, cache_dir)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    remote = ray.remote(num_cpus=0, max_retries=0)(node_report)
    refs = {remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(list(paths), cache_dir): n for n in nodes}
    for ref, node in refs.items():
        where = node.get("NodeManagerHostname") or node.get("NodeManagerAddress") or node["NodeID"][:12]
        try:
            report = ray.get(ref, timeout=120)
        except Exception as err:  # a node that cannot even import the project
            raise ClusterError(f"Ray node {where}: the node check failed ({type(err).__name__}: "
                               f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''}); accepted: the "
                               "project installed on every node") from None
        problem = compare(driver, report, f"{where} ({report.host})")
        if problem is not None:
            raise ClusterError(problem)
    return len(nodes)


__all__ = ["ClusterError", "NodeReport", "Request", "RunResources", "check_nodes", "compare", "node_report",
           "resolve_resources"]
