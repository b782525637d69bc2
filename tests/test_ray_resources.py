"""Ray that uses the cluster's GPUs (issue 28 §1), tested on a local Ray instance with declared GPUs.

Ray gives a task that asks for no GPU an empty ``CUDA_VISIBLE_DEVICES``, so a study on a GPU cluster
once trained every run on CPUs. Here a local instance declares two GPUs (``ray.init(num_gpus=2)``; no
card is needed, Ray only hands out the ids): each task's request and the ``CUDA_VISIBLE_DEVICES`` it got
are read back, the refusals are one line before any run, and every node is checked once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.ray_cluster import ClusterError, NodeReport, RunResources, check_nodes, node_report, resolve_resources

ray = pytest.importorskip("ray")

GPU_NODE = [{"CPU": 8.0, "GPU": 2.0}]
CPU_NODE = [{"CPU": 8.0}]


# ------------------------------------------------------------------ the request, resolved (no Ray needed)


@pytest.mark.parametrize("asked, nodes, device, cpus, gpus", [
    (RunResources(), GPU_NODE, "auto", 1.0, 1.0),  # a GPU cluster: one GPU per run by default
    (RunResources(), GPU_NODE, "cuda", 1.0, 1.0),
    (RunResources(), GPU_NODE, "cpu", 1.0, 0.0),  # the suite says cpu: no GPU asked
    (RunResources(), CPU_NODE, "auto", 1.0, 0.0),
    (RunResources(cpus=2, gpus=0.25), GPU_NODE, "auto", 2.0, 0.25),  # four runs packed on one card
    (RunResources(gpus=2), GPU_NODE, "auto", 1.0, 2.0),
])
def test_the_request_of_every_run(asked, nodes, device, cpus, gpus) -> None:
    request = resolve_resources(asked, nodes, device)
    assert (request.cpus, request.gpus) == (cpus, gpus)


@pytest.mark.parametrize("make, needle", [
    (lambda: resolve_resources(RunResources(gpus=0), GPU_NODE, "cuda"), "training.device: cuda with --gpus-per-run 0"),
    (lambda: resolve_resources(RunResources(), CPU_NODE, "cuda"), "training.device: cuda with --gpus-per-run 0"),
    (lambda: resolve_resources(RunResources(gpus=0.5), CPU_NODE, "auto"), "the Ray cluster has no GPU"),
    (lambda: resolve_resources(RunResources(gpus=4), GPU_NODE, "auto"), "no node of the Ray cluster has that much"),
    (lambda: resolve_resources(RunResources(cpus=16), GPU_NODE, "auto"), "largest: 8 CPUs, 2 GPUs"),
    (lambda: RunResources(gpus=1.5), "a fraction of one GPU (0 to 1) or a whole number"),
    (lambda: RunResources(gpus=-1), "accepted: a finite number >= 0"),
    (lambda: RunResources(cpus=0), "accepted: a number > 0"),
])
def test_a_request_that_cannot_run_is_one_line(make, needle) -> None:
    with pytest.raises(ClusterError) as err:
        make()
    assert needle in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ on a local instance with two declared GPUs


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test file
    yield ray
    ray.shutdown()


def _what_the_task_got(_: int) -> tuple[str | None, list]:
    return os.environ.get("CUDA_VISIBLE_DEVICES"), [str(g) for g in ray.get_gpu_ids()]


@pytest.mark.parametrize("asked, device, visible", [
    (RunResources(), "auto", 1),  # default on a GPU cluster: one GPU each
    (RunResources(gpus=0.5), "auto", 1),  # two runs per card: each still sees one card
    (RunResources(gpus=2), "auto", 2),
    (RunResources(), "cpu", 0),  # asks for none: Ray hides every GPU from it
])
def test_each_task_gets_the_gpus_it_asked_for(cluster, tmp_path, asked, device, visible) -> None:
    from harness.executors import RayExecutor

    ex = RayExecutor(resources=asked, device=device)
    request = ex.prepare([], str(tmp_path / "cache"))
    assert request.gpus == (asked.gpus if asked.gpus is not None else (1.0 if device == "auto" else 0.0))
    seen = [result for _, result, error in ex.run(_what_the_task_got, [(i,) for i in range(4)])
            if error is None]
    assert len(seen) == 4
    for env, ids in seen:
        assert len(ids) == visible
        assert env == ",".join(ids)  # what Ray hands the task is what torch would see
        assert set(ids) <= {"0", "1"}
    ex.close()
    assert cluster.is_initialized()  # an instance the executor did not start is left running


def test_every_node_is_checked_once_before_any_run(cluster, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert check_nodes(cluster, [str(data)], str(tmp_path / "cache")) == 1  # the one local node: as the driver
    me = node_report([str(data)], str(tmp_path / "cache"))
    other_code = NodeReport(me.host, "0123456789abcdef", me.packages)
    with pytest.raises(ClusterError, match=r"code version .* the driver's is 0123456789abcdef .* same checkout"):
        check_nodes(cluster, [str(data)], str(tmp_path / "cache"), driver=other_code)
    other_torch = NodeReport(me.host, me.code_version, {**me.packages, "torch": "0.0.1"})
    with pytest.raises(ClusterError, match="torch .* the driver has 0.0.1"):
        check_nodes(cluster, [str(data)], str(tmp_path / "cache"), driver=other_torch)
    with pytest.raises(ClusterError, match="cannot read the data at .*missing"):
        check_nodes(cluster, [str(tmp_path / "missing")], str(tmp_path / "cache"))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ClusterError, match="frame cache .* is a file"):
        check_nodes(cluster, [], str(blocker / "cache"))


def test_a_study_records_the_request_and_the_device_each_run_used(cluster, tmp_path, cache_dir) -> None:
    """End to end on the declared GPUs: each run asks for one (the default), this machine has no card, so
    ``device: auto`` trains on the CPU inside the task, and the store says both."""
    from harness.report import build_report
    from harness.runner import run_suite
    from harness.store import ResultsStore
    from harness.suite import load_suite
    from test_runner import write_suite

    lines: list[str] = []
    suite = load_suite(write_suite(tmp_path))
    summary = run_suite(suite, tmp_path / "out", cache_dir=cache_dir, report=False, progress=False, executor="ray",
                        echo=lines.append)
    assert summary.ok and summary.done == 2
    assert any("ray: each run asks for 1 CPU(s) and 1 GPU(s) (the cluster has 2 GPU(s)" in line for line in lines)
    with ResultsStore(tmp_path / "out", readonly=True) as store:
        execution = store.meta()["execution"]
        runs = store.runs(status="done")
    assert execution["executor"] == "ray" and execution["request"]["gpus_per_run"] == 1.0
    assert set(runs["host"]) == {os.uname().nodename}
    page = build_report(tmp_path / "out").read_text(encoding="utf-8")
    import torch

    if not torch.cuda.is_available():  # a machine with a card: .ci/gpu-check checks the device names
        assert set(runs["device"]) == {"cpu"}
        assert "cpu (2 runs on 1 host); Ray, each run asked for 1 CPU(s) and 1 GPU(s)" in page


def test_device_cuda_without_a_gpu_per_run_is_refused_before_any_run(cluster, tmp_path, cache_dir) -> None:
    from harness.runner import run_suite
    from harness.store import ResultsStore
    from harness.suite import load_suite
    from test_runner import TINY, write_suite

    suite = load_suite(write_suite(tmp_path, training={**TINY["training"], "device": "cuda"}))
    with pytest.raises(ClusterError, match="training.device: cuda with --gpus-per-run 0"):
        run_suite(suite, tmp_path / "out", cache_dir=cache_dir, report=False, progress=False, executor="ray",
                  resources=RunResources(gpus=0))
    db = tmp_path / "out" / "results.sqlite"
    if db.exists():
        with ResultsStore(db, readonly=True) as store:
            assert store.runs().empty  # nothing claimed, nothing trained


def test_the_flags_are_for_ray(tmp_path, capsys) -> None:
    from harness.cli import main
    from test_runner import write_suite

    path = write_suite(tmp_path)
    for flags in (["--gpus-per-run", "1"], ["--cpus-per-run", "2"]):
        assert main(["run", str(path), "--out", str(tmp_path / "out"), *flags]) == 2
        err = capsys.readouterr().err
        assert "is for --executor ray" in err and err.count("\n") == 1
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--executor", "ray", "--gpus-per-run", "1.5"]) == 2
    assert "a fraction of one GPU" in capsys.readouterr().err
    assert not Path(tmp_path / "out").exists()


def test_workers_sharing_one_gpu_are_recorded_and_said(tmp_path, monkeypatch) -> None:
    """``--workers 3`` on a machine with one card: the processes share it on purpose, and the report says
    the timings are of a shared card (the card is faked: no CUDA is needed to test what is recorded)."""
    import pandas as pd
    import torch

    from harness.report.timing import devices
    from harness.runner import execution_record
    from harness.suite import load_suite
    from test_runner import write_suite

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    lines: list[str] = []
    suite = load_suite(write_suite(tmp_path))
    record = execution_record(None, "local", 3, suite, tmp_path / "cache", lines.append)
    assert record == {"executor": "local", "workers": 3, "shared_gpus": 1}
    assert lines == ["--workers 3: the worker processes share this machine's 1 GPU(s) (each run's timings are of a "
                     "shared card)"]
    done = pd.DataFrame({"device": ["cuda (NVIDIA H100)"] * 3 + ["cpu"], "host": ["a", "a", "b", "b"]})
    assert devices(done, record) == ("cpu (1 run on 1 host), cuda (NVIDIA H100) (3 runs on 2 hosts); 3 worker "
                                     "processes shared this machine's 1 GPU(s) on purpose, so each run's timings "
                                     "are of a shared card")
    cpu_suite = load_suite(write_suite(tmp_path, training={"epochs": 1, "batch_size": 8, "device": "cpu"}))
    assert execution_record(None, "local", 3, cpu_suite, tmp_path / "cache", lines.append) == \
        {"executor": "local", "workers": 3}
