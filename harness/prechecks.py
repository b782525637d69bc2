"""Checks that need no training, run before the first run starts (``validate``, ``--dry-run`` and ``run``).

The schema (:mod:`harness.suite`) already refuses what a suite file alone can tell: types, bounds
(seeds, ``num_classes``, every filter parameter through the filter specs). These checks need the
machine or the data's geometry:

- ``training.device: cuda`` (suite or arm) on a machine without a CUDA device;
- a filter whose stencil (patch, search window, kernel) is larger than the frames
  (``diffusion_filters.check_image_size``), with the frames' real size once they are loaded;
- a filter from outside the package (a ``callable:`` / ``module:`` step, an entry-point filter)
  that breaks the filter contract (``diffusion_filters.check_conformance``: shape, dtype, finite
  output, range, determinism, ...), run on synthetic frames of the frames' size (``data.image_size``
  before they are loaded); the built-in filters are held to the same function by the test suite;
- the frames' size against ``data.image_size``.

Each problem is one line ``FILE: key.path: what is wrong; accepted: ...``; :func:`check_suite`
raises them together as a :class:`harness.suite.SuiteError`.
"""

from __future__ import annotations

from typing import Any

from harness.suite import Suite, SuiteError


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def conformance_problems(suite: Suite, size: int | tuple[int, int]) -> list[tuple[str, str]]:
    """``(key path, message)`` of every step of outside code that breaks the filter contract on frames
    of ``size`` (a side or ``(H, W)``); each distinct step is run once."""
    import diffusion_filters
    from harness.suite import canonical_json

    out: list[tuple[str, str]] = []
    verdicts: dict[str, str | None] = {}
    for i, arm in enumerate(suite.arms):
        for j, step in enumerate(arm.preprocess):
            where = f"arms[{i}].preprocess[{j}]"
            key = canonical_json(step)
            if key not in verdicts:
                verdicts[key] = None
                try:  # the schema has built the step already: a failure here is the code's own
                    module = diffusion_filters.Pipeline.from_config([step], where=where, base_dir=suite.base_dir)
                except ValueError as err:
                    verdicts[key] = str(err).partition(": ")[2] or str(err)
                else:
                    f = module.filters[0]
                    if isinstance(f, diffusion_filters.ExternalFilter):
                        try:
                            diffusion_filters.check_conformance(f, size)
                        except diffusion_filters.ConformanceError as err:
                            verdicts[key] = f"{err} (filter contract, checked before any training)"
            if verdicts[key] is not None:
                out.append((where, str(verdicts[key])))
    return out


def problems(suite: Suite, frames: Any = None, runs_here: bool = True) -> list[tuple[str, str]]:
    """``(key path, message)`` of every problem found without training.

    ``runs_here``: the runs train on this machine; False for a Ray cluster, whose nodes (not the driver)
    need the CUDA device (:mod:`harness.ray_cluster` checks the GPUs each run asks for)."""
    import diffusion_filters

    out: list[tuple[str, str]] = []
    size = int(getattr(suite.data, "image_size", 0) or 0)
    hw: tuple[int, int] = (size, size)
    if frames is not None and len(frames):
        h, w = (int(s) for s in frames.images.shape[1:3])
        size, hw = min(h, w), (h, w)
    wants_cuda = ([("training.device", suite.training)] if suite.training.device == "cuda" else [])
    for i, arm in enumerate(suite.arms):
        if "device" in arm.training and suite.arm_training(arm).device == "cuda":
            wants_cuda.append((f"arms[{i}].training.device", suite.arm_training(arm)))
        if arm.preprocess and size:
            try:
                diffusion_filters.check_image_size(arm.preprocess, size, where=f"arms[{i}].preprocess",
                                                   base_dir=suite.base_dir)
            except ValueError as err:  # "arms[i].preprocess[j].name: image of size ... minimum size is ..."
                text = str(err).strip().splitlines()[0]
                where, _, message = text.partition(": ")
                out.append((where, f"{message} (frames are {size}x{size}); accepted: a smaller window or a "
                                   "larger data.image_size"))
    if size:
        out += conformance_problems(suite, hw)
    if wants_cuda and runs_here and not _cuda_available():
        for where, _ in wants_cuda:
            out.append((where, "cuda, but this machine has no CUDA device (torch.cuda.is_available() is False); "
                               "accepted: auto (CUDA when present, else CPU) or cpu, or run --executor ray on a "
                               "cluster with GPUs"))
    return out


def check_suite(suite: Suite, frames: Any = None, runs_here: bool = True) -> None:
    """Raise :class:`SuiteError` with one line per problem (nothing is trained); ``runs_here`` as in
    :func:`problems`."""
    found = problems(suite, frames, runs_here)
    if found:
        label = str(suite.source_path or "<suite>")
        raise SuiteError([f"{label}: {p}: {m}" for p, m in found])


__all__ = ["check_suite", "conformance_problems", "problems"]
