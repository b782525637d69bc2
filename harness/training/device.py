"""Where a run computes: device choice, mixed precision, threads and determinism settings."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from harness.training.errors import TrainingError


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("training.device: cuda was requested but no CUDA device is available "
                                "(accepted: auto, cpu, or cuda on a machine with a GPU)")
        return torch.device("cuda")
    if requested == "cpu":
        return torch.device("cpu")
    raise TrainingError(f"training.device: '{requested}' is not supported (accepted: auto, cpu, cuda)")


@dataclass(frozen=True)
class Precision:
    """Memory format and automatic mixed precision of a run (AMP on CUDA only)."""

    memory_format: torch.memory_format
    amp_dtype: torch.dtype | None
    scaler: Any  # torch.amp.GradScaler for float16, else None

    @classmethod
    def for_run(cls, device: torch.device, channels_last: bool, amp: bool) -> Precision:
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        amp_dtype = None
        scaler = None
        if device.type == "cuda" and amp:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            if amp_dtype == torch.float16:
                scaler = torch.amp.GradScaler("cuda")
        return cls(memory_format, amp_dtype, scaler)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)


@contextlib.contextmanager
def run_settings(num_threads: int | None, device: torch.device, deterministic: bool) -> Iterator[None]:
    """Thread count and determinism for the run, restored afterwards.

    CPU: deterministic algorithms always (warn-only: the few CPU kernels without a deterministic
    version still run). CUDA: cuDNN autotuning unless ``deterministic``, which instead turns
    autotuning off, sets the cuBLAS workspace and makes an operation without a deterministic
    version an error (``torch.use_deterministic_algorithms``).
    """
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_bench = torch.backends.cudnn.benchmark
    old_cudnn_det = torch.backends.cudnn.deterministic
    old_workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        if num_threads:
            torch.set_num_threads(int(num_threads))
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=not deterministic)
        elif deterministic:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True)
        else:
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.backends.cudnn.benchmark = old_bench
        torch.backends.cudnn.deterministic = old_cudnn_det
        if old_workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = old_workspace


def deterministic_error(exc: RuntimeError) -> TrainingError | None:
    """The one-line error for an operation that has no deterministic implementation, else None."""
    text = str(exc)
    if "does not have a deterministic implementation" not in text:
        return None
    first = text.splitlines()[0]
    return TrainingError(f"training.deterministic: true, but an operation has no deterministic version on "
                         f"this device ({first[:200]}); set training.deterministic: false")


__all__ = ["Precision", "deterministic_error", "resolve_device", "run_settings"]
