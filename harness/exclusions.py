"""Named row exclusions by metadata: the label-sensitivity analyses of ``report.sensitivity``.

One rule names a set of test samples whose label is doubtful and that the report leaves out to give
each verdict again (recomputed from the stored predictions, never retrained)::

    report:
      sensitivity:
        - name: ambiguous-labels
          description: severity 2-3 videos labelled "no B-lines"
          exclude: {severity: [2, 3], label: 0}

``exclude`` maps a column of the stored samples (a metadata column of the data, or ``label``,
``group_id``, ``video_id``, ``sample_id``) to a value or a list of values: a row is left out when
*every* named column holds one of its values. A list of such mappings leaves out the rows that match
*any* of them. Values compare as numbers where both sides read as numbers (``2`` matches the stored
text ``"2"``), else as text.

This module is the one place a rule is parsed (:func:`parse_exclusions`: the suite schema and the
report both call it), checked against the columns a store or a data source has
(:func:`column_problems`) and applied (:meth:`Exclusion.mask`). It imports nothing of the harness:
the suite and the report both read it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Exclusion", "parse_exclusions", "column_problems", "STANDARD_COLUMNS"]

#: The columns every stored sample has besides its metadata.
STANDARD_COLUMNS = ("sample_id", "group_id", "video_id", "label")
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_NAME_MAX = 100

Condition = tuple[tuple[str, tuple[Any, ...]], ...]  # (column, accepted values) pairs, all must hold


def _key(value: Any) -> tuple[str, Any] | None:
    """How a value compares: numbers (and text that reads as one) by value, other text as text; None never
    matches (a missing metadata value)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return ("n", float(value))
    if isinstance(value, (int, float)) or type(value).__module__ == "numpy":
        try:
            number = float(value)
        except (TypeError, ValueError):
            return ("s", str(value))
        return None if math.isnan(number) else ("n", number)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return ("s", text)
    return ("n", number) if math.isfinite(number) else ("s", text)


@dataclass(frozen=True)
class Exclusion:
    """One named rule: leave out the rows matching any of ``conditions``."""

    name: str
    conditions: tuple[Condition, ...]
    description: str = ""

    @property
    def columns(self) -> list[str]:
        """Every column the rule reads, in the order it names them."""
        return list(dict.fromkeys(c for cond in self.conditions for c, _ in cond))

    def describe(self) -> str:
        """The rule in words: ``severity in {2, 3} and label = 0``."""
        def one(cond: Condition) -> str:
            return " and ".join(f"{c} = {_show(v[0])}" if len(v) == 1 else f"{c} in {{{', '.join(map(_show, v))}}}"
                                for c, v in cond)
        return " or ".join(f"({one(c)})" if len(self.conditions) > 1 else one(c) for c in self.conditions)

    def mask(self, table: Any) -> Any:
        """A boolean numpy array, True for each row of ``table`` (a pandas DataFrame) the rule leaves out.

        Raises ``ValueError`` when ``table`` lacks a column the rule names (:func:`column_problems`
        says so first, in one line)."""
        import numpy as np

        missing = [c for c in self.columns if c not in table.columns]
        if missing:
            raise ValueError(f"sensitivity {self.name}: column(s) {missing} not in the table")
        out = np.zeros(len(table), dtype=bool)
        for cond in self.conditions:
            hit = np.ones(len(table), dtype=bool)
            for column, values in cond:
                accepted = {_key(v) for v in values}
                hit &= np.fromiter((_key(x) in accepted for x in table[column].tolist()), dtype=bool,
                                   count=len(table))
            out |= hit
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "rule": self.describe(),
                "exclude": [{c: list(v) for c, v in cond} for cond in self.conditions]}


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


def _values(raw: Any, where: str, problems: list[str]) -> tuple[Any, ...]:
    items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    if not items:
        problems.append(f"{where}: an empty list matches nothing; accepted: a value or a non-empty list of values")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or (isinstance(v, float) and not math.isfinite(v)):
            problems.append(f"{where}: {v!r} is not a value; accepted: text, an integer or a finite number")
        else:
            out.append(v)
    return tuple(out)


def _condition(raw: Any, where: str, problems: list[str]) -> Condition:
    if not isinstance(raw, Mapping) or not raw:
        problems.append(f"{where}: {raw!r}; accepted: a mapping column -> value(s), e.g. {{severity: [2, 3], label: 0}}")
        return ()
    out = []
    for column, values in raw.items():
        if not isinstance(column, str) or not column.strip():
            problems.append(f"{where}: {column!r} is not a column name; accepted: a metadata column or "
                            f"{', '.join(STANDARD_COLUMNS)}")
            continue
        out.append((column, _values(values, f"{where}.{column}", problems)))
    return tuple(out)


def parse_exclusions(raw: Any, where: str = "report.sensitivity") -> list[Exclusion]:
    """The rules of ``raw`` (a list of ``{name, exclude, description?}``), or ``ValueError`` with one line per
    problem (``where[i].key: what is wrong; accepted: ...``). None gives no rule."""
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"{where}: {raw!r}; accepted: a list of {{name, exclude, description}} mappings")
    problems: list[str] = []
    rules: list[Exclusion] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{at}: {item!r}; accepted: a mapping {{name, exclude, description}}")
            continue
        unknown = sorted(set(map(str, item)) - {"name", "exclude", "description"})
        if unknown:
            problems.append(f"{at}: unknown key(s) {unknown}; accepted: name, exclude, description")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > _NAME_MAX or name.startswith("-"):
            problems.append(f"{at}.name: {name!r}; accepted: letters, digits, '.', '_', '-' (at most {_NAME_MAX}, "
                            "not starting with '-')")
            name = None
        elif name in seen:
            problems.append(f"{at}.name: {name!r} already names {where}[{seen[name]}]; names must be unique")
        else:
            seen[name] = i
        description = item.get("description", "")
        if not isinstance(description, str):
            problems.append(f"{at}.description: {description!r}; accepted: text")
            description = ""
        if "exclude" not in item:
            problems.append(f"{at}.exclude: missing; accepted: a mapping column -> value(s), or a list of them")
            continue
        ex = item["exclude"]
        raws = list(ex) if isinstance(ex, (list, tuple)) else [ex]
        if not raws:
            problems.append(f"{at}.exclude: an empty list leaves nothing out; accepted: a mapping or a list of them")
        conds = tuple(_condition(c, f"{at}.exclude" + (f"[{j}]" if isinstance(ex, (list, tuple)) else ""), problems)
                      for j, c in enumerate(raws))
        if name is not None:
            rules.append(Exclusion(name, conds, description))
    if problems:
        raise ValueError("; ".join(problems))
    return rules


def column_problems(rules: Sequence[Exclusion], columns: Iterable[str], where: str = "report.sensitivity") -> list[str]:
    """One line per rule naming a column that is not in ``columns`` (a store's or a data source's)."""
    have = list(dict.fromkeys([*STANDARD_COLUMNS, *columns]))
    out = []
    for i, rule in enumerate(rules):
        missing = [c for c in rule.columns if c not in have]
        if missing:
            out.append(f"{where}[{i}] ({rule.name}): column(s) {', '.join(missing)} not in the samples' metadata; "
                       f"accepted: {', '.join(have)}")
    return out
