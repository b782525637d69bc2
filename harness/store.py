"""The results store: one SQLite file (WAL) per output directory.

Only the driver process writes it (the runner); the report reads it. A run's results are
written in one transaction by :meth:`ResultsStore.finish_run`, so a process killed at any
moment (even ``kill -9``) leaves either the whole run or none of it. A row left ``running`` by a
killed driver counts as not done and is redone next time; a driver stopped by Ctrl-C or SIGTERM (or
by an error before its runs finish) releases the runs it claimed as ``interrupted``
(:meth:`ResultsStore.release_runs`), also redone next time.

Schema (documented in docs/architecture.md, section harness.store):

- ``meta(key, value)``: JSON values: suite name/config/hash, environment, command, data description.
- ``samples(sample_id, group_id, video_id, label, metadata)``: every frame of the data set.
- ``splits(repeat, fold, group_id, role)``: role is ``train`` | ``val`` | ``test``.
- ``runs(run_id, arm, repeat, fold, config_hash, status, seed, ...)``: one row per planned run;
  ``config_hash`` / ``data_hash`` / ``code_version`` are what the run was computed with (the suite's
  config for its arm, the frames' content hash, the version of the code that computes the numbers:
  together the run's identity; a resume redoes a run when any of them differs and says which);
  ``fit`` (JSON) says whether the run learned (``status`` ok | did_not_fit | diverged, ``reason``,
  chance losses), ``initial_params`` (JSON) the diffusion parameters before training.
- ``metrics(run_id, level, aggregation, metric, value)``: level ``frame`` | ``video`` | ``patient``,
  aggregation ``none`` (frame level) | ``mean`` | ``max``.
- ``predictions(run_id, sample_id, prob, label)``: test-fold probability of the positive class.
- ``epochs(run_id, epoch, record)``: the training history (incl. learned parameters per epoch).
- ``preprocessing(arm, pipeline_hash, mode, seconds, n_images)``; ``skipped(item, reason)``.
- ``explanation_arms(arm, key, checkpoint_hash, note, seconds, created_at)``: one row per explained arm;
  ``key`` identifies what was explained (checkpoint content, frames, pipeline, ...), ``note`` says what
  failed (e.g. no checkpoint), else null.
- ``explanations(arm, sample_id, position, label, title, raw, processed, cam)``: the report's sample
  frames per arm (``position`` orders them); ``raw`` (the frame as decoded), ``processed`` (after the
  arm's pipeline) and ``cam`` (Grad-CAM map or null) are ``.npy`` bytes (``numpy.save`` format, so
  dtype and shape travel with the data; read with ``allow_pickle=False``).
- ``searches(run_id, record)``: the nested search of a tuned run (JSON: chosen ``params``, ``inner_best``,
  ``trials``, ``seconds``, budget, leakage check; harness.search.nested); none for untuned runs.
- ``external_samples(dataset, sample_id, group_id, video_id, label, metadata)``: the frames of each external
  validation set (``evaluation.external``); ``external_metrics(run_id, dataset, level, aggregation, metric,
  value)`` and ``external_predictions(run_id, dataset, sample_id, prob, label)``: every run's model scored on
  them, written with the run (``finish_run(external=...)``).
"""

from __future__ import annotations

import io
import json
import math
import socket
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STORE_FILENAME = "results.sqlite"
#: The store's schema version (SQLite ``PRAGMA user_version``), set when a store is created or migrated.
#: A store from before it was recorded reads 0 (and is read as it always was); one of a higher version was
#: written by a newer checkout and is refused (:func:`_check_version`), never migrated or written to.
SCHEMA_VERSION = 1
RUN_STATUSES = ("running", "done", "failed", "stale", "interrupted")
#: Run columns added after the first release: (name, SQL type); older stores are migrated.
_ADDED_RUN_COLUMNS = (("fit", "TEXT"), ("initial_params", "TEXT"), ("data_hash", "TEXT"),
                      ("code_version", "TEXT"), ("ensemble", "TEXT"))
#: What a run's identity is made of (``runs`` columns), in the order of :meth:`ResultsStore.identity`.
IDENTITY_FIELDS = ("config_hash", "data_hash", "code_version")
#: JSON run fields: ``fit`` (did the run learn: status, reason, chance loss, ...),
#: ``initial_params`` (the diffusion parameters before training), ``ensemble`` (``training.seeds`` > 1:
#: each member's seed, epoch, fit and scores, and their spread; harness.training.ensemble).
_JSON_RUN_FIELDS = ("fit", "initial_params", "ensemble")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    sample_id TEXT PRIMARY KEY, group_id TEXT NOT NULL, video_id TEXT NOT NULL,
    label INTEGER NOT NULL, metadata TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS splits (
    repeat INTEGER NOT NULL, fold INTEGER NOT NULL, group_id TEXT NOT NULL, role TEXT NOT NULL,
    PRIMARY KEY (repeat, fold, group_id));
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, arm TEXT NOT NULL, repeat INTEGER NOT NULL, fold INTEGER NOT NULL,
    config_hash TEXT NOT NULL, status TEXT NOT NULL, seed INTEGER, started_at REAL, finished_at REAL,
    error TEXT, n_train INTEGER, n_val INTEGER, n_test INTEGER,
    n_train_groups INTEGER, n_val_groups INTEGER, n_test_groups INTEGER,
    leakage_check TEXT, timings TEXT, learned_params TEXT, checkpoint TEXT,
    best_epoch INTEGER, device TEXT, host TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    fit TEXT, initial_params TEXT, data_hash TEXT, code_version TEXT,
    UNIQUE (arm, repeat, fold));
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, level TEXT NOT NULL, aggregation TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, PRIMARY KEY (run_id, level, aggregation, metric));
CREATE TABLE IF NOT EXISTS predictions (
    run_id TEXT NOT NULL, sample_id TEXT NOT NULL, prob REAL NOT NULL, label INTEGER NOT NULL,
    PRIMARY KEY (run_id, sample_id));
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL, epoch INTEGER NOT NULL, record TEXT NOT NULL, PRIMARY KEY (run_id, epoch));
CREATE TABLE IF NOT EXISTS preprocessing (
    arm TEXT NOT NULL, pipeline_hash TEXT NOT NULL, mode TEXT NOT NULL, seconds REAL,
    n_images INTEGER NOT NULL, PRIMARY KEY (arm, pipeline_hash));
CREATE TABLE IF NOT EXISTS skipped (item TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS explanation_arms (
    arm TEXT PRIMARY KEY, key TEXT NOT NULL, checkpoint_hash TEXT, note TEXT, seconds REAL, created_at REAL);
CREATE TABLE IF NOT EXISTS explanations (
    arm TEXT NOT NULL, sample_id TEXT NOT NULL, position INTEGER NOT NULL, label INTEGER, title TEXT NOT NULL,
    raw BLOB NOT NULL, processed BLOB NOT NULL, cam BLOB, PRIMARY KEY (arm, sample_id));
CREATE TABLE IF NOT EXISTS searches (run_id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS external_samples (
    dataset TEXT NOT NULL, sample_id TEXT NOT NULL, group_id TEXT NOT NULL, video_id TEXT NOT NULL,
    label INTEGER NOT NULL, metadata TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (dataset, sample_id));
CREATE TABLE IF NOT EXISTS external_metrics (
    run_id TEXT NOT NULL, dataset TEXT NOT NULL, level TEXT NOT NULL, aggregation TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL, PRIMARY KEY (run_id, dataset, level, aggregation, metric));
CREATE TABLE IF NOT EXISTS external_predictions (
    run_id TEXT NOT NULL, dataset TEXT NOT NULL, sample_id TEXT NOT NULL, prob REAL NOT NULL,
    label INTEGER NOT NULL, PRIMARY KEY (run_id, dataset, sample_id));
"""


def run_id_for(arm: str, repeat: int, fold: int) -> str:
    """Stable run id, e.g. ``perona-malik/r0/f3``."""
    return f"{arm}/r{int(repeat)}/f{int(fold)}"


def _json(value: Any) -> str:
    return json.dumps(_plain(value), sort_keys=True)


def _plain(value: Any) -> Any:
    """numpy / torch scalars and arrays -> JSON-able Python; NaN/Inf -> None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _same(stored: tuple[str | None, ...], wanted: tuple[str | None, ...]) -> bool:
    """Stored identity fields equal the wanted ones; a wanted None is not compared."""
    return all(w is None or s == w for s, w in zip(stored, wanted))


def _loads(text: Any) -> Any:
    return json.loads(text) if isinstance(text, (str, bytes)) else None  # NULL may read back as NaN


def _npy(array: Any) -> bytes | None:
    """An array as ``.npy`` bytes (dtype and shape included); None stays None."""
    if array is None:
        return None
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _from_npy(blob: Any) -> np.ndarray | None:
    return np.load(io.BytesIO(blob), allow_pickle=False) if isinstance(blob, bytes) else None


class StoreError(RuntimeError):
    """The store cannot be opened or is not a results store."""


class NewerStoreError(StoreError):
    """The store was written by a newer checkout (a higher :data:`SCHEMA_VERSION`): nothing reads or writes it."""


def _check_version(conn: sqlite3.Connection, path: Path) -> None:
    """:class:`NewerStoreError` (one line) when ``conn``'s store has a schema newer than this checkout's
    (another application's SQLite file, without a ``meta`` table, is left to the "not a results store" line)."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION and conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                                                 "name='meta'").fetchone() is not None:
        raise NewerStoreError(f"{path}: written by a newer version of the harness (store schema {version}; this "
                              f"checkout reads schema {SCHEMA_VERSION} and older); nothing was written to it; "
                              "accepted: a newer checkout of the harness, or another --out")


def _refuse_foreign_database(path: Path) -> None:
    """An existing file that is not a results store is left untouched: no tables, no WAL switch."""
    if path.exists() and not path.is_file():
        raise StoreError(f"{path}: not a file; accepted: a results store file or a new path")
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            _check_version(conn, path)  # before the WAL switch, the tables and the migration below
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{path}: not a results store ({err}); nothing was written to it") from None
    if "runs" not in tables or "meta" not in tables:
        found = ", ".join(sorted(tables)[:6]) or "none"
        raise StoreError(f"{path}: an SQLite file that is not a results store (tables: {found}); nothing was "
                         "written to it; accepted: a new output directory or one holding a results store")


class ResultsStore:
    """SQLite results store. ``ResultsStore(dir_or_file)``: a path ending in ``.sqlite``/``.db`` is the
    file, anything else a directory holding ``results.sqlite``.

    ``readonly=True`` opens an existing store without creating or migrating anything.
    """

    def __init__(self, path: str | Path, readonly: bool = False):
        path = Path(path)
        if path.suffix not in (".sqlite", ".db"):  # a directory (existing or to be created)
            path = path / STORE_FILENAME
        self.path = path
        try:
            if readonly:
                if not path.is_file():
                    raise StoreError(f"{path}: no results store here (run a suite first)")
                self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
                self._check_version_or_close()
            else:
                _refuse_foreign_database(path)  # before anything is written to it
                path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(path, timeout=30)
                self._check_version_or_close()  # again: a store created meanwhile by a newer checkout
                self._conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL is durable against process crashes in WAL mode (only power loss drops commits).
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(_SCHEMA)
                self._add_missing_columns()
                if int(self._conn.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
                    self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # created or migrated
            self._conn.execute("SELECT 1 FROM runs LIMIT 1")
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{path}: not a results store ({err})") from None

    def _check_version_or_close(self) -> None:
        try:
            _check_version(self._conn, self.path)
        except NewerStoreError:
            self._conn.close()
            raise

    def check_integrity(self) -> None:
        """Raise :class:`StoreError` (one line) when SQLite finds the file damaged (``PRAGMA quick_check``)."""
        try:
            rows = [r[0] for r in self._conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as err:
            rows = [str(err)]
        if rows != ["ok"]:
            raise StoreError(f"{self.path}: the results store is damaged ({rows[0]}); accepted: an intact store "
                             "(restore it, or run into a new --out)")

    def _add_missing_columns(self) -> None:
        """Stores written before a column existed get it (NULL for their runs)."""
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
        with self._conn:
            for column, kind in _ADDED_RUN_COLUMNS:
                if column not in have:
                    self._conn.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ write API (driver only)

    def set_meta(self, **values: Any) -> None:
        """Store JSON-able values under their keys (replacing older ones)."""
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [(k, _json(v)) for k, v in values.items()],
            )

    def put_samples(self, sample_ids: Iterable[str], groups: Iterable[str], videos: Iterable[str],
                    labels: Iterable[int], metadata: pd.DataFrame | None = None) -> None:
        """Record every frame of the data set (replacing rows with the same sample id)."""
        sample_ids = [str(s) for s in sample_ids]
        meta_rows: list[dict[str, Any]]
        if metadata is None or metadata.shape[1] == 0:
            meta_rows = [{} for _ in sample_ids]
        else:
            meta_rows = [_plain(r) for r in metadata.reset_index(drop=True).to_dict(orient="records")]
        rows = [
            (s, str(g), str(v), int(y), _json(m))
            for s, g, v, y, m in zip(sample_ids, groups, videos, labels, meta_rows, strict=True)
        ]
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO samples(sample_id, group_id, video_id, label, metadata) VALUES (?,?,?,?,?)",
                rows,
            )

    def put_splits(self, splits: Iterable[tuple[int, int, str, str]]) -> None:
        """``(repeat, fold, group_id, role)`` rows; replaces those of the same (repeat, fold)."""
        rows = [(int(r), int(f), str(g), str(role)) for r, f, g, role in splits]
        keys = {(r, f) for r, f, _, _ in rows}
        with self._conn:
            self._conn.executemany("DELETE FROM splits WHERE repeat=? AND fold=?", sorted(keys))
            self._conn.executemany("INSERT INTO splits(repeat, fold, group_id, role) VALUES (?,?,?,?)", rows)

    def run_status(self, run_id: str) -> tuple[str, str] | None:
        """``(status, config_hash)`` of a run, or None if it was never claimed."""
        row = self._conn.execute("SELECT status, config_hash FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else (row[0], row[1])

    def identities(self) -> dict[str, tuple[str, tuple[str | None, ...]]]:
        """``{run_id: (status, (config_hash, data_hash, code_version))}`` of every claimed run
        (data_hash / code_version None for runs recorded before they were stored)."""
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}  # a read-only older store
        fields = ", ".join(f if f in have else "NULL" for f in IDENTITY_FIELDS)
        rows = self._conn.execute(f"SELECT run_id, status, {fields} FROM runs")
        return {rid: (status, tuple(rest)) for rid, status, *rest in rows}

    def is_done(self, arm: str, repeat: int, fold: int, config_hash: str, data_hash: str | None = None,
                code_version: str | None = None) -> bool:
        """Whether the run is ``done`` with this identity; ``data_hash`` / ``code_version`` are
        compared when given (a run recorded without them then does not count as done)."""
        entry = self.identities().get(run_id_for(arm, repeat, fold))
        return entry is not None and entry[0] == "done" and _same(entry[1], (config_hash, data_hash, code_version))

    def mark_stale(self, keep: Iterable[tuple[str | None, ...]]) -> int:
        """Runs not in ``keep`` that are done become ``stale``: kept on disk, left out of the read
        API's results. ``keep`` holds ``(run_id, config_hash[, data_hash, code_version])`` of the
        current plan (fields left out are not compared). Returns how many changed."""
        wanted = {k[0]: tuple(k[1:]) for k in keep}
        stale = [(rid,) for rid, (status, ident) in self.identities().items()
                 if status == "done" and (rid not in wanted or not _same(ident, wanted[rid]))]
        with self._conn:
            self._conn.executemany("UPDATE runs SET status='stale' WHERE run_id=?", stale)
        return len(stale)

    def claim_run(self, arm: str, repeat: int, fold: int, config_hash: str, seed: int,
                  data_hash: str | None = None, code_version: str | None = None) -> str:
        """Mark a run ``running`` (dropping any earlier partial or stale results of it) and record the
        identity it is computed with; returns its id."""
        run_id = run_id_for(arm, repeat, fold)
        with self._conn:
            self._delete_results(run_id)
            self._conn.execute(
                """INSERT INTO runs(run_id, arm, repeat, fold, config_hash, status, seed, started_at, host, attempts,
                                    data_hash, code_version)
                   VALUES (?,?,?,?,?, 'running', ?, ?, ?, 1, ?, ?)
                   ON CONFLICT(run_id) DO UPDATE SET config_hash=excluded.config_hash, status='running',
                     seed=excluded.seed, started_at=excluded.started_at, finished_at=NULL, error=NULL,
                     host=excluded.host, attempts=runs.attempts + 1, timings=NULL, learned_params=NULL,
                     checkpoint=NULL, best_epoch=NULL, device=NULL, leakage_check=NULL, fit=NULL,
                     initial_params=NULL, data_hash=excluded.data_hash, code_version=excluded.code_version""",
                (run_id, arm, int(repeat), int(fold), config_hash, int(seed), time.time(), socket.gethostname(),
                 data_hash, code_version),
            )
        return run_id

    def release_runs(self, run_ids: Iterable[str], reason: str) -> int:
        """Runs among ``run_ids`` still ``running`` (claimed by this driver, never finished) become
        ``interrupted`` with ``reason`` as their error; done or failed runs are left as they are.
        Returns how many changed."""
        rows = [(time.time(), str(reason), str(rid)) for rid in run_ids]
        with self._conn:
            before = self._conn.total_changes
            self._conn.executemany("UPDATE runs SET status='interrupted', finished_at=?, error=? "
                                   "WHERE run_id=? AND status='running'", rows)
            return self._conn.total_changes - before

    def _delete_results(self, run_id: str) -> None:
        for table in ("metrics", "predictions", "epochs", "external_metrics", "external_predictions"):
            self._conn.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))

    def finish_run(self, run_id: str, metrics: Iterable[Mapping[str, Any]] | pd.DataFrame,
                   predictions: Iterable[tuple[str, float, int]] | pd.DataFrame,
                   timings: Mapping[str, Any], learned_params: Mapping[str, Any] | None,
                   epochs: Iterable[Mapping[str, Any]], checkpoint: str | None = None,
                   info: Mapping[str, Any] | None = None,
                   external: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Write a run's results and mark it ``done``, all in ONE transaction.

        ``metrics``: rows with ``level, aggregation, metric, value``; ``predictions``: rows
        ``(sample_id, prob, label)`` (or a frame with those columns); ``epochs``: history records
        (each with an ``epoch`` key); ``info``: optional run columns (``n_train, n_val, n_test,
        n_*_groups, leakage_check, best_epoch, device``); ``external``: ``{dataset: {"metrics": rows,
        "predictions": (sample_id, prob, label) rows}}`` of the external validation sets.
        """
        if isinstance(metrics, pd.DataFrame):
            metrics = metrics.to_dict(orient="records")
        metric_rows = [
            (run_id, str(m["level"]), str(m["aggregation"]), str(m["metric"]), _plain(float(m["value"])))
            for m in metrics
        ]
        if isinstance(predictions, pd.DataFrame):
            predictions = predictions[["sample_id", "prob", "label"]].itertuples(index=False, name=None)
        pred_rows = [(run_id, str(s), float(p), int(y)) for s, p, y in predictions]
        epoch_rows = [(run_id, int(e.get("epoch", i)), _json(e)) for i, e in enumerate(epochs)]
        ext_metric_rows = [(run_id, str(name), str(m["level"]), str(m["aggregation"]), str(m["metric"]),
                            _plain(float(m["value"]))) for name, block in (external or {}).items()
                           for m in block.get("metrics", [])]
        ext_pred_rows = [(run_id, str(name), str(sid), float(p), int(y)) for name, block in (external or {}).items()
                         for sid, p, y in block.get("predictions", [])]
        info = dict(info or {})
        allowed = {"n_train", "n_val", "n_test", "n_train_groups", "n_val_groups", "n_test_groups",
                   "leakage_check", "best_epoch", "device", "host", *_JSON_RUN_FIELDS}
        unknown = set(info) - allowed
        if unknown:
            raise ValueError(f"finish_run: unknown run fields {sorted(unknown)}; accepted: {sorted(allowed)}")
        for key in ("leakage_check", *_JSON_RUN_FIELDS):
            if key in info:
                info[key] = _json(info[key])
        sets = "".join(f", {k}=?" for k in info)
        with self._conn:
            cur = self._conn.execute(
                f"""UPDATE runs SET status='done', finished_at=?, error=NULL, timings=?, learned_params=?,
                    checkpoint=?{sets} WHERE run_id=?""",
                (time.time(), _json(timings), _json(learned_params or {}), checkpoint,
                 *[_plain(v) for v in info.values()], run_id),
            )
            if cur.rowcount != 1:
                raise KeyError(f"finish_run: run {run_id!r} was never claimed")
            self._delete_results(run_id)
            self._conn.executemany("INSERT INTO metrics VALUES (?,?,?,?,?)", metric_rows)
            self._conn.executemany("INSERT INTO predictions VALUES (?,?,?,?)", pred_rows)
            self._conn.executemany("INSERT INTO epochs VALUES (?,?,?)", epoch_rows)
            self._conn.executemany("INSERT INTO external_metrics VALUES (?,?,?,?,?,?)", ext_metric_rows)
            self._conn.executemany("INSERT INTO external_predictions VALUES (?,?,?,?,?)", ext_pred_rows)

    def fail_run(self, run_id: str, error: str) -> None:
        with self._conn:
            self._delete_results(run_id)
            cur = self._conn.execute(
                "UPDATE runs SET status='failed', finished_at=?, error=? WHERE run_id=?",
                (time.time(), str(error), run_id),
            )
            if cur.rowcount != 1:
                raise KeyError(f"fail_run: run {run_id!r} was never claimed")

    def put_external_samples(self, dataset: str, sample_ids: Iterable[str], groups: Iterable[str],
                             videos: Iterable[str], labels: Iterable[int], metadata: pd.DataFrame | None = None) -> None:
        """Record every frame of an external validation set (replacing what the set held before)."""
        sample_ids = [str(s) for s in sample_ids]
        if metadata is None or metadata.shape[1] == 0:
            meta_rows: list[dict[str, Any]] = [{} for _ in sample_ids]
        else:
            meta_rows = [_plain(r) for r in metadata.reset_index(drop=True).to_dict(orient="records")]
        rows = [(str(dataset), s, str(g), str(v), int(y), _json(m))
                for s, g, v, y, m in zip(sample_ids, groups, videos, labels, meta_rows, strict=True)]
        with self._conn:
            self._conn.execute("DELETE FROM external_samples WHERE dataset=?", (str(dataset),))
            self._conn.executemany("INSERT INTO external_samples VALUES (?,?,?,?,?,?)", rows)

    def put_preprocessing(self, arm: str, pipeline_hash: str, seconds: float | None, n_images: int,
                          mode: str = "cached") -> None:
        """Cost of an arm's preprocessing; ``seconds`` None for ``on_the_fly`` (inside training time)."""
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO preprocessing(arm, pipeline_hash, mode, seconds, n_images) VALUES (?,?,?,?,?)",
                (arm, pipeline_hash, mode, None if seconds is None else float(seconds), int(n_images)),
            )

    def put_skipped(self, items: Iterable[Mapping[str, Any]]) -> None:
        """``{"item": ..., "reason": ...}`` records of data left out (``on_error: skip``)."""
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO skipped(item, reason) VALUES (?, ?)",
                [(str(i["item"]), str(i["reason"])) for i in items],
            )

    def put_explanations(self, arm: str, key: str, frames: Iterable[Mapping[str, Any]], note: str | None = None,
                         checkpoint_hash: str | None = None, seconds: float | None = None) -> None:
        """Replace everything stored for ``arm``'s explanations with these, in ONE transaction.

        ``frames`` (in display order): ``sample_id, label, title, raw, processed, cam`` with the
        arrays as numpy arrays (``cam`` None when there is no map); ``key`` identifies what was
        explained, so the explain step can skip an arm whose key is unchanged.
        """
        rows = [(arm, str(f["sample_id"]), i, None if f.get("label") is None else int(f["label"]),
                 str(f.get("title") or f["sample_id"]), _npy(f["raw"]), _npy(f["processed"]), _npy(f.get("cam")))
                for i, f in enumerate(frames)]
        with self._conn:
            self._conn.execute("DELETE FROM explanations WHERE arm=?", (arm,))
            self._conn.executemany("INSERT INTO explanations VALUES (?,?,?,?,?,?,?,?)", rows)
            self._conn.execute(
                "INSERT OR REPLACE INTO explanation_arms(arm, key, checkpoint_hash, note, seconds, created_at) "
                "VALUES (?,?,?,?,?,?)",
                (arm, str(key), checkpoint_hash, note, None if seconds is None else float(seconds), time.time()),
            )

    def keep_explanations(self, arms: Iterable[str]) -> int:
        """Drop the explanations of arms not in ``arms`` (no longer in the suite); returns how many arms."""
        sql = "SELECT arm FROM explanation_arms UNION SELECT arm FROM explanations"
        known = {a for (a,) in self._conn.execute(sql)}
        gone = [(a,) for a in sorted(known - set(arms))]
        with self._conn:
            self._conn.executemany("DELETE FROM explanations WHERE arm=?", gone)
            self._conn.executemany("DELETE FROM explanation_arms WHERE arm=?", gone)
        return len(gone)

    # ------------------------------------------------------------------ read API (report, status)

    def meta(self) -> dict[str, Any]:
        return {k: _loads(v) for k, v in self._conn.execute("SELECT key, value FROM meta")}

    def suite_config(self) -> dict[str, Any]:
        """The validated suite (as a dict) of the latest run of this directory."""
        value = self.meta().get("suite_config")
        if value is None:
            raise StoreError(f"{self.path}: no suite recorded yet")
        return value

    def runs(self, status: str | None = None) -> pd.DataFrame:
        """One row per run; JSON columns (timings, learned_params, leakage_check) decoded to dicts."""
        sql = "SELECT * FROM runs"
        args: tuple[Any, ...] = ()
        if status is not None:
            if status not in RUN_STATUSES:
                raise ValueError(f"status {status!r}; accepted: {', '.join(RUN_STATUSES)}")
            sql += " WHERE status=?"
            args = (status,)
        df = pd.read_sql_query(sql + " ORDER BY arm, repeat, fold", self._conn, params=args)
        for col in ("timings", "learned_params", "leakage_check", *_JSON_RUN_FIELDS):
            # A store opened read-only is not migrated: columns added later may be absent.
            df[col] = df[col].map(_loads).astype(object) if col in df.columns else None
        return df

    def metrics(self) -> pd.DataFrame:
        """``run_id, arm, repeat, fold, level, aggregation, metric, value`` of done runs."""
        return pd.read_sql_query(
            """SELECT m.run_id, r.arm, r.repeat, r.fold, m.level, m.aggregation, m.metric, m.value
               FROM metrics m JOIN runs r USING (run_id) WHERE r.status='done'
               ORDER BY r.arm, r.repeat, r.fold, m.level, m.aggregation, m.metric""",
            self._conn,
        )

    def predictions(self) -> pd.DataFrame:
        """Test-fold predictions of done runs with sample group/video/metadata columns."""
        df = pd.read_sql_query(
            """SELECT p.run_id, r.arm, r.repeat, r.fold, p.sample_id, s.group_id, s.video_id,
                      p.label, p.prob, s.metadata
               FROM predictions p JOIN runs r USING (run_id) LEFT JOIN samples s USING (sample_id)
               WHERE r.status='done' ORDER BY r.arm, r.repeat, r.fold, p.sample_id""",
            self._conn,
        )
        meta = pd.DataFrame([_loads(m) or {} for m in df.pop("metadata")], index=df.index)
        meta = meta.drop(columns=[c for c in meta.columns if c in df.columns])
        return pd.concat([df, meta], axis=1)

    def samples(self) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM samples ORDER BY sample_id", self._conn)
        meta = pd.DataFrame([_loads(m) or {} for m in df.pop("metadata")], index=df.index)
        return pd.concat([df, meta.drop(columns=[c for c in meta.columns if c in df.columns])], axis=1)

    def epochs(self) -> pd.DataFrame:
        """Training history of done runs: ``run_id, arm, repeat, fold, epoch`` + the record's keys."""
        df = pd.read_sql_query(
            """SELECT e.run_id, r.arm, r.repeat, r.fold, e.epoch, e.record
               FROM epochs e JOIN runs r USING (run_id) WHERE r.status='done'
               ORDER BY r.arm, r.repeat, r.fold, e.epoch""",
            self._conn,
        )
        records = pd.DataFrame([_loads(x) for x in df.pop("record")], index=df.index)
        records = records.drop(columns=[c for c in records.columns if c in df.columns])
        return pd.concat([df, records], axis=1)

    def splits(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM splits ORDER BY repeat, fold, role, group_id", self._conn)

    def preprocessing(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM preprocessing ORDER BY arm", self._conn)

    def skipped(self) -> list[dict[str, str]]:
        return [{"item": i, "reason": r} for i, r in self._conn.execute("SELECT item, reason FROM skipped")]

    def explanation_arms(self) -> pd.DataFrame:
        """``arm, key, checkpoint_hash, note, seconds, created_at`` of every explained arm (empty for a
        store written before explanations existed)."""
        if not self._has_table("explanation_arms"):
            return pd.DataFrame(columns=["arm", "key", "checkpoint_hash", "note", "seconds", "created_at"])
        df = pd.read_sql_query("SELECT * FROM explanation_arms ORDER BY arm", self._conn)
        for col in ("checkpoint_hash", "note"):  # NULL reads back as None, never NaN
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        return df

    def explanations(self) -> pd.DataFrame:
        """``arm, position, sample_id, label, title, raw, processed, cam``: one row per arm and sample
        frame in display order; the array columns hold numpy arrays (``cam`` None without a map)."""
        columns = ["arm", "position", "sample_id", "label", "title", "raw", "processed", "cam"]
        if not self._has_table("explanations"):
            return pd.DataFrame(columns=columns)
        df = pd.read_sql_query(f"SELECT {', '.join(columns)} FROM explanations ORDER BY arm, position", self._conn)
        for col in ("raw", "processed", "cam"):
            df[col] = df[col].map(_from_npy).astype(object)
        return df

    def _has_table(self, name: str) -> bool:
        """Whether ``name`` exists (a read-only store of an older version may lack newer tables)."""
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() \
            is not None

    def put_search(self, run_id: str, record: Mapping[str, Any] | None) -> None:
        """Store (or, with None, drop) the nested search record of a run (call before ``finish_run``)."""
        with self._conn:
            self._conn.execute("DELETE FROM searches WHERE run_id=?", (run_id,))
            if record is not None:
                self._conn.execute("INSERT INTO searches(run_id, record) VALUES (?, ?)", (run_id, _json(record)))

    def searches(self) -> pd.DataFrame:
        """``run_id, arm, repeat, fold, record`` (a dict) of done runs that were tuned (empty for a store
        written before searches existed)."""
        columns = ["run_id", "arm", "repeat", "fold", "record"]
        if not self._has_table("searches"):
            return pd.DataFrame(columns=columns)
        df = pd.read_sql_query(
            """SELECT s.run_id, r.arm, r.repeat, r.fold, s.record FROM searches s JOIN runs r USING (run_id)
               WHERE r.status='done' ORDER BY r.arm, r.repeat, r.fold""", self._conn)
        df["record"] = df["record"].map(_loads).astype(object)
        return df

    def external_metrics(self) -> pd.DataFrame:
        """``run_id, arm, repeat, fold, dataset, level, aggregation, metric, value`` of done runs on the
        external validation sets (empty for a store without them)."""
        columns = ["run_id", "arm", "repeat", "fold", "dataset", "level", "aggregation", "metric", "value"]
        if not self._has_table("external_metrics"):
            return pd.DataFrame(columns=columns)
        return pd.read_sql_query(
            """SELECT m.run_id, r.arm, r.repeat, r.fold, m.dataset, m.level, m.aggregation, m.metric, m.value
               FROM external_metrics m JOIN runs r USING (run_id) WHERE r.status='done'
               ORDER BY m.dataset, r.arm, r.repeat, r.fold, m.level, m.aggregation, m.metric""", self._conn)

    def external_predictions(self) -> pd.DataFrame:
        """``run_id, arm, repeat, fold, dataset, sample_id, group_id, video_id, label, prob`` of done runs
        on the external validation sets (empty for a store without them)."""
        columns = ["run_id", "arm", "repeat", "fold", "dataset", "sample_id", "group_id", "video_id", "label", "prob"]
        if not self._has_table("external_predictions"):
            return pd.DataFrame(columns=columns)
        return pd.read_sql_query(
            """SELECT p.run_id, r.arm, r.repeat, r.fold, p.dataset, p.sample_id, s.group_id, s.video_id,
                      p.label, p.prob
               FROM external_predictions p JOIN runs r USING (run_id)
               LEFT JOIN external_samples s ON s.dataset = p.dataset AND s.sample_id = p.sample_id
               WHERE r.status='done' ORDER BY p.dataset, r.arm, r.repeat, r.fold, p.sample_id""", self._conn)

    def external_samples(self) -> pd.DataFrame:
        """``dataset, sample_id, group_id, video_id, label`` + metadata columns of the external sets."""
        if not self._has_table("external_samples"):
            return pd.DataFrame(columns=["dataset", "sample_id", "group_id", "video_id", "label"])
        df = pd.read_sql_query("SELECT * FROM external_samples ORDER BY dataset, sample_id", self._conn)
        meta = pd.DataFrame([_loads(m) or {} for m in df.pop("metadata")], index=df.index)
        return pd.concat([df, meta.drop(columns=[c for c in meta.columns if c in df.columns])], axis=1)

    def progress(self) -> pd.DataFrame:
        """Counts of runs per arm and status (for ``harness status``)."""
        return pd.read_sql_query(
            "SELECT arm, status, COUNT(*) AS n FROM runs GROUP BY arm, status ORDER BY arm, status", self._conn
        )
