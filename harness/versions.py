"""Versions of the code that computes the numbers, for run identities and cache keys.

A run's identity (what the store compares on resume) is ``(config hash, data content hash, code
version)``: the suite's canonical config for the arm (:meth:`harness.suite.Suite.run_config_hash`),
the frames' content (``FrameSet.content_hash``) and :func:`code_version`. The preprocessing cache
key is ``(content hash, pipeline hash, filters_version())``.

What counts as "the code that computes the numbers" (:data:`CODE_SOURCES`): the filter library
(its C kernels included), the training package, the network and its backbones (Lite0's weights are
mapped there), augmentation, one run, the nested search and the space it draws from
(``harness/suite/search.py``; a tuned run's numbers are its choice), preprocessing, the splits and
the metrics. Not included, on purpose:

- ``harness/data``: its effect is already in the data content hash (decoder and simulator
  sources are part of the frame keys; labels, groups and metadata are hashed as loaded), so an
  edit there that changes the data redoes the runs as "the data changed", and one that does not
  (a new ``data fetch`` option) redoes nothing;
- the driver, store, report and statistics: they do not change a run's numbers;
- installed packages (torch, timm, numpy): recorded in the store's ``environment``, not compared,
  so upgrading them does not silently throw results away.

The version hashes each file's syntax tree without docstrings (comments are not in it), so
editing documentation redoes nothing while any change to code does.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Glob patterns (relative to the repository root) of the sources in :func:`code_version`.
_FILTER_CODE: tuple[str, ...] = (
    "diffusion_filters/*.py",
    "diffusion_filters/_native/*.py",  # the C kernels' loader (compiler flags) and their autograd
    "diffusion_filters/_native/*.c",
    "diffusion_filters/_native/*.h",
)
CODE_SOURCES: tuple[str, ...] = (
    *_FILTER_CODE,
    "harness/training/*.py",
    "harness/models.py",
    "harness/backbones.py",
    "harness/search/*.py",
    "harness/suite/search.py",
    "harness/augment.py",
    "harness/execute.py",
    "harness/preprocess.py",
    "harness/cv.py",
    "harness/metrics.py",
)
#: The sources of :func:`filters_version` (what the preprocessing cache holds).
FILTER_SOURCES: tuple[str, ...] = (*_FILTER_CODE, "harness/preprocess.py")
#: Files matched above that never compute numbers (benchmark scripts).
EXCLUDED: frozenset[str] = frozenset({"diffusion_filters/bench.py"})


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(path: Path) -> str:
    """Hash of a Python file's code (syntax tree without docstrings); raw bytes for other files (the
    C kernels) and for Python that does not parse."""
    text = path.read_bytes()
    if path.suffix != ".py":
        return hashlib.sha256(text).hexdigest()
    try:
        payload = ast.dump(_strip_docstrings(ast.parse(text)), include_attributes=False).encode()
    except SyntaxError:
        payload = text
    return hashlib.sha256(payload).hexdigest()


def _files(patterns: tuple[str, ...]) -> list[Path]:
    files = {p for pattern in patterns for p in ROOT.glob(pattern) if p.is_file()}
    return sorted(p for p in files if p.relative_to(ROOT).as_posix() not in EXCLUDED)


def version_of(patterns: tuple[str, ...]) -> str:
    """16 hex digits over the (relative path, code digest) of every matched file."""
    digest = hashlib.sha256()
    for path in _files(patterns):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + source_digest(path).encode() + b"\n")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Version of the code that computes a run's numbers (see the module docstring)."""
    return version_of(CODE_SOURCES)


@functools.lru_cache(maxsize=1)
def filters_version() -> str:
    """Version of the code that computes preprocessed frames (filters + the preprocessing loop)."""
    return version_of(FILTER_SOURCES)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (its identity: frame caches, weights, checkpoints)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


__all__ = ["CODE_SOURCES", "FILTER_SOURCES", "code_version", "file_sha256", "filters_version", "source_digest",
           "version_of"]
