"""Executors: the same tasks give the same outcomes locally and in worker processes (Ray: the
end-to-end test in test_runner.py)."""

from __future__ import annotations

import operator

import pytest
import torch

from harness.executors import LocalExecutor, ProcessExecutor, make_executor

TASKS = [(6, 3), (1, 0), (9, 3)]


def outcomes(executor):
    out = {}
    for task, result, error in executor.run(operator.truediv, TASKS):
        out[task] = type(error).__name__ if error else result
    return out


EXPECTED = {(6, 3): 2.0, (1, 0): "ZeroDivisionError", (9, 3): 3.0}


def test_local_executor_records_errors_and_goes_on():
    assert outcomes(LocalExecutor()) == EXPECTED


def _divide_and_count_threads(a: float, b: float) -> tuple[float, int]:
    return a / b, torch.get_num_threads()


def test_process_executor_divides_cores():
    ex = ProcessExecutor(workers=2, cores=4)
    assert ex.threads == 2
    out = {task: (type(err).__name__ if err else result) for task, result, err in
           ex.run(_divide_and_count_threads, TASKS)}
    assert out == {(6, 3): (2.0, 2), (1, 0): "ZeroDivisionError", (9, 3): (3.0, 2)}
    with pytest.raises(ValueError, match="accepted: an integer >= 1"):
        ProcessExecutor(0)


def test_make_executor_choices():
    assert isinstance(make_executor("local", 1), LocalExecutor)
    assert isinstance(make_executor("local", 3), ProcessExecutor)
    with pytest.raises(ValueError, match="accepted: local, ray"):
        make_executor("slurm")
    with pytest.raises(ValueError, match="--address is for --executor ray"):
        make_executor("local", 1, address="auto")
