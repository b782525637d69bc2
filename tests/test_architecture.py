"""The rules of the house that imports can check (../shared/ARCHITECTURE.md): schemas sit below what
reads them, the training side never imports the report, the filter library never imports the harness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _imports(path: Path, prefix: str) -> list[str]:
    return sorted(n for n in imported_modules(path) if n == prefix or n.startswith(prefix + "."))


SUITE = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "harness/suite").glob("*.py"))


@pytest.mark.parametrize("source", SUITE)
def test_the_suite_schema_never_imports_the_search(source: str) -> None:
    # The suite owns the search section's schema, its sets of runs and their identity
    # (harness/suite/search.py); the search (Optuna, nested fits) reads them, never the reverse.
    assert _imports(ROOT / source, "harness.search") == []


def test_the_stored_names_of_variants_import_nothing_of_the_harness() -> None:
    # harness.variants is read by the suite and by the report, which never imports the suite.
    assert _imports(ROOT / "harness/variants.py", "harness") == []


def test_safe_writing_imports_nothing_of_the_harness() -> None:
    # harness.safe_write is the one home of "never overwrite what the tool did not make": the data layer,
    # the report and every command use it, so it sits below all of them.
    assert _imports(ROOT / "harness/safe_write.py", "harness") == []


TRAINING_SIDE = ["harness/pretrain.py", "harness/evaluate.py", "harness/models.py", "harness/backbones.py",
                 "harness/execute.py", "harness/explain.py", "harness/recipe.py", "harness/preprocess.py",
                 *[p.relative_to(ROOT).as_posix() for p in (ROOT / "harness/training").glob("*.py")],
                 "harness/suite/search.py",
                 *[p.relative_to(ROOT).as_posix() for p in (ROOT / "harness/search").glob("*.py")]]


@pytest.mark.parametrize("source", TRAINING_SIDE)
def test_the_training_side_never_imports_the_report(source: str) -> None:
    assert _imports(ROOT / source, "harness.report") == []


def test_the_filter_library_never_imports_the_harness() -> None:
    offenders = {p.name: _imports(p, "harness") for p in (ROOT / "diffusion_filters").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
