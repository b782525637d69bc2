"""Score a weights file on a data set, no training: ``python -m harness evaluate WEIGHTS --data YAML``.

``WEIGHTS``: a ``.safetensors`` / ``.pth`` / ``.pt`` state dict of the network (``harness pretrain``'s
``weights.safetensors``, a suite's ``checkpoints/<arm>.safetensors``). ``--data``: a suite YAML (its
``data:`` section; with ``--arm NAME`` also that arm's network and preprocessing) or a YAML holding a
data section alone (``source: covid-blues ...``, or ``data: {...}``).

Metrics: :func:`harness.metrics.run_metrics` at frame, video and patient level, each with a 95 %
percentile interval from a bootstrap over patients (patients drawn with replacement, all their frames
kept; a resample where a metric is undefined, e.g. one class only, is left out of that metric's
interval and counted). Writes ``evaluation.json`` (every number), ``predictions.csv`` and a small
self-contained ``evaluation.html`` into ``--out`` (default ``reports/evaluate/<weights>-<data>/``).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.suite import SuiteError, read_yaml_config, validation_lines

#: Most bootstrap resamples: the Monte-Carlo error of a 95 % percentile bound is already negligible at
#: 10,000 (~1/sqrt(n) of its spread); beyond this a value is a mistake that would run for hours or forever.
MAX_BOOTSTRAP = 100_000
LEVELS = (("frame", "none"), ("video", "mean"), ("video", "max"), ("patient", "mean"), ("patient", "max"))
#: ``evaluation.json``'s format and the page's generator line: how an earlier evaluation of ours is
#: recognised before ``--out`` replaces it (harness.safe_write).
EVALUATION_FORMAT = "lus-harness evaluation 1"
GENERATOR = "harness.evaluate"
PREDICTION_COLUMNS = ("sample_id", "group_id", "video_id", "label", "prob")


def evaluation_outputs(out: Path) -> dict[str, Any]:
    """``{file name: Output}`` of an evaluation in ``out``, each replaced only when it is an evaluation's."""
    from harness.safe_write import Output, csv_header, either, html_generator, json_field

    def legacy(path: Path) -> bool:  # pages written before the generator line: their fixed heading
        return b"<h1>Evaluation of a weights file (no training)</h1>" in path.read_bytes()[:8192]

    flag = "--out"
    return {
        "evaluation.json": Output(out / "evaluation.json", "evaluation.json", either(
            json_field("format", lambda v: v == EVALUATION_FORMAT),
            json_field("bootstrap", lambda v: isinstance(v, dict) and "unit" in v)), flag),
        "predictions.csv": Output(out / "predictions.csv", "predictions.csv of an evaluation",
                                  csv_header(PREDICTION_COLUMNS), flag),
        "evaluation.html": Output(out / "evaluation.html", "evaluation page",
                                  either(html_generator(GENERATOR), legacy), flag),
    }


def load_data_section(path: Path) -> tuple[Any, Path, int, Any]:
    """``(DataConfig, base_dir, seed, suite or None)`` of a suite YAML or a data-section YAML."""
    from pydantic import BaseModel, ValidationError

    from harness.data.config import DataConfig
    from harness.suite import load_suite

    label = str(path)
    raw = read_yaml_config(path, (), "data file", ("a suite (with arms)", "a data section (with source)",
                                                   "data + seed"))
    if "arms" in raw:
        suite = load_suite(path)
        return suite.data, suite.base_dir, suite.seed, suite
    section, prefix = (raw["data"], "data.") if "data" in raw and "source" not in raw else (raw, "")
    if prefix and set(raw) - {"data", "seed"}:
        extra = sorted(set(raw) - {"data", "seed"})
        raise SuiteError([f"{label}: {extra[0]}: unknown key; accepted: a suite (with arms), a data section, or "
                          "data: + seed:"])
    class _DataOnly(BaseModel):
        data: DataConfig

    try:
        cfg = _DataOnly.model_validate({"data": section}).data
    except ValidationError as err:
        raise SuiteError([f"{label}: {prefix}{p.removeprefix('data.')}: {m}"
                          for p, m in validation_lines(err, _DataOnly)]) from None
    return cfg, Path(path).resolve().parent, int(raw.get("seed", 0) if prefix else 0), None


def build_model(weights: Path, suite: Any = None, arm: str | None = None):
    """The network with ``weights`` loaded: the plain one, or the suite arm's structure (strict)."""
    from harness.models import ModelError, create_model, load_weights
    from harness.suite import ModelConfig

    if arm is not None:
        if suite is None:
            raise SuiteError([f"--arm {arm}: needs --data to name a suite (it has the arms)"])
        try:
            cfg = suite.arm_model(arm)
        except KeyError as err:
            raise SuiteError([f"--arm {arm}: {err.args[0]}"]) from None
        model = create_model(cfg.model_copy(update={"pretrained": "none"}), in_chans=1)
        try:
            load_weights(model, weights)
        except RuntimeError as err:
            raise ModelError(f"{weights}: does not fit arm {arm}'s network ({str(err).splitlines()[0]})") from None
        return model
    from harness.backbones import infer_architecture
    from harness.models import read_checkpoint

    architecture = infer_architecture(list(read_checkpoint(Path(weights)))) or ModelConfig().architecture
    model = create_model(ModelConfig(architecture=architecture, pretrained=str(weights)), in_chans=1)
    report = model.weights_report
    if report["unexpected"]:
        raise ModelError(f"{weights}: holds layers the plain network lacks ({', '.join(report['unexpected'][:3])}, "
                         "...); accepted: --data SUITE --arm NAME for an arm with a diffusion stem or blocks")
    if any(str(k).startswith("classifier") for k in report["new"]):
        raise ModelError(f"{weights}: no 2-class classifier in the file, so there is nothing to score; accepted: "
                         "weights trained on the B-line label (harness pretrain, a suite checkpoint)")
    return model


def predict(model, images: np.ndarray, batch_size: int = 128, on_the_fly=None) -> np.ndarray:
    """Probability of B-lines per image (N, H, W) float32 in [0, 1], as a run predicts its test fold
    (:func:`harness.training.epochs.predict_logits`); an on-the-fly filter is applied chunk by chunk."""
    import torch

    from harness.training.device import Precision, resolve_device
    from harness.training.epochs import predict_logits, probabilities

    device = resolve_device("auto")
    model = model.to(device)
    precision = Precision.for_run(device, channels_last=False, amp=False)
    logits = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[i:i + batch_size], dtype=np.float32)).unsqueeze(1)
        if on_the_fly is not None:
            with torch.no_grad():
                x = on_the_fly(x)
        logits.append(predict_logits(model, x, precision, device, batch_size))
    return probabilities(torch.cat(logits), 2) if logits else np.empty(0)


def _by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], float]:
    return {(r["level"], r["aggregation"], r["metric"]): float(r["value"]) for r in rows}


def bootstrap_by_patient(labels: np.ndarray, probs: np.ndarray, videos: np.ndarray, groups: np.ndarray,
                         n_boot: int, seed: int = 0) -> dict[tuple[str, str, str], dict[str, Any]]:
    """95 % percentile intervals of every metric over ``n_boot`` resamples of the patients."""
    from harness.metrics import run_metrics

    groups = np.asarray(groups).astype(str)
    patients = np.unique(groups)
    members = {p: np.flatnonzero(groups == p) for p in patients}
    rng = np.random.default_rng(seed)
    draws: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(n_boot):
        chosen = rng.choice(patients, size=len(patients), replace=True)
        idx = np.concatenate([members[p] for p in chosen])
        copy = np.concatenate([np.full(len(members[p]), k) for k, p in enumerate(chosen)]).astype(str)
        # a patient drawn twice counts as two patients (and its videos as two videos)
        try:
            rows = run_metrics(labels[idx], probs[idx], np.char.add(np.asarray(videos)[idx].astype(str), "#" + copy),
                               np.char.add(groups[idx], "#" + copy))
        except ValueError:
            continue
        for key, value in _by_key(rows).items():
            draws.setdefault(key, []).append(value)
    out = {}
    for key, values in draws.items():
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        out[key] = {"ci95": [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) >= 10 else None,
                    "n_valid": int(len(v))}
    return out


def evaluate(weights: str | Path, data: str | Path, out_dir: str | Path | None = None, arm: str | None = None,
             n_boot: int = 500, cache_dir: str | Path | None = None, echo=print) -> dict[str, Any]:
    """Score ``weights`` on the data of ``data``; writes evaluation.json / .html and predictions.csv; returns the result."""
    import pandas as pd

    from harness.data import load_frames
    from harness.data.cache import default_cache_dir
    from harness.metrics import run_metrics
    from harness.pretrain import read_model_card
    from harness.versions import file_sha256

    t0 = time.perf_counter()
    weights, data = Path(weights), Path(data)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: weights file not found; accepted: a .safetensors/.pth/.pt file")
    cfg, base_dir, seed, suite = load_data_section(data)
    out = Path(out_dir) if out_dir else Path("reports") / "evaluate" / f"{_stem(weights)}-{data.stem}"
    from harness.safe_write import OutputError, check_outputs, write_all

    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: a file; nothing was written; accepted: a directory for the evaluation")
    outputs = evaluation_outputs(out)
    check_outputs(list(outputs.values()))  # before the weights are read or the data decoded
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    model = build_model(weights, suite, arm)
    frames = load_frames(cfg, base_dir=base_dir, cache_dir=cache, seed=seed)
    steps = list(suite.arm(arm).preprocess) if arm else []
    on_the_fly = None
    if steps and suite.arm(arm).on_the_fly:
        from harness.preprocess import on_the_fly_filter

        on_the_fly, steps = on_the_fly_filter(steps, suite.base_dir), []
    from harness.preprocess import preprocess_frames

    images = preprocess_frames(frames.images, frames.content_hash, steps, cache,
                               base_dir=suite.base_dir if suite is not None else None).images
    probs = predict(model, images, on_the_fly=on_the_fly)
    rows = run_metrics(frames.labels, probs, frames.videos, frames.groups)
    intervals = bootstrap_by_patient(frames.labels, probs, frames.videos, frames.groups, n_boot, seed)
    metrics: dict[str, dict[str, Any]] = {}
    for (level, agg, metric), value in _by_key(rows).items():
        iv = intervals.get((level, agg, metric), {})
        metrics.setdefault(f"{level}/{agg}", {})[metric] = {"value": value if value == value else None,
                                                             "ci95": iv.get("ci95"), "n_valid": iv.get("n_valid", 0)}
    result = {
        "format": EVALUATION_FORMAT,
        "weights": {"path": str(weights.resolve()), "sha256": file_sha256(weights)},
        "model_card": read_model_card(weights),
        "arm": arm,
        "data": {"path": str(data.resolve()), "source": cfg.source, "description": frames.description,
                 "n_frames": len(frames), "n_videos": int(len(np.unique(frames.videos))),
                 "n_patients": int(len(np.unique(frames.groups))), "n_positive": int(frames.labels.sum()),
                 "content_hash": frames.content_hash, "skipped": len(frames.skipped)},
        "metrics": metrics,
        "bootstrap": {"n": n_boot, "unit": "patient", "method": "95 % percentile interval; resamples where a "
                      "metric is undefined are left out of it (n_valid)", "seed": seed},
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - t0,
    }
    from harness.jsonable import jsonable

    predictions = pd.DataFrame(dict(zip(PREDICTION_COLUMNS, (frames.sample_ids, frames.groups, frames.videos,
                                                             frames.labels, probs))))
    write_all({  # all three or none
        outputs["evaluation.json"].path: json.dumps(jsonable(result), indent=2, allow_nan=False) + "\n",
        outputs["predictions.csv"].path: predictions.to_csv(index=False, float_format="%.6g", lineterminator="\n"),
        outputs["evaluation.html"].path: render_html(result),
    })
    for key in ("frame/none", "video/mean"):
        auc = metrics.get(key, {}).get("roc_auc")
        if auc:
            ci = auc["ci95"]
            echo(f"{key.split('/')[0]} ROC-AUC {_f(auc['value'])} "
                 f"[{_f(ci[0]) if ci else 'n/a'}, {_f(ci[1]) if ci else 'n/a'}]")
    echo(f"{len(frames)} frames of {result['data']['n_patients']} patients; wrote {out / 'evaluation.html'}, "
         f"evaluation.json, predictions.csv")
    return result


def _stem(weights: Path) -> str:
    return weights.parent.name if weights.stem == "weights" else weights.stem


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and value == value else "n/a"


def render_html(result: dict[str, Any]) -> str:
    """A small self-contained page: what was scored, on what, and the table of metrics with intervals."""
    e = html.escape
    d = result["data"]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><meta name=\"generator\" content=\"{GENERATOR}\">"
        "<title>Evaluation</title><style>"
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}td:first-child{text-align:left}</style>"
        "</head><body>",
        "<h1>Evaluation of a weights file (no training)</h1>",
        f"<p>Weights: {e(result['weights']['path'])} (sha256 {e(result['weights']['sha256'][:16])}…)"
        + (f"; arm {e(result['arm'])}" if result.get("arm") else "") + "</p>",
        f"<p>Data: {e(d['description'])} — {d['n_frames']} frames, {d['n_videos']} videos, {d['n_patients']} "
        f"patients, {d['n_positive']} positive frames.</p>",
        f"<p>Intervals: {e(result['bootstrap']['method'])}, {result['bootstrap']['n']} resamples of the patients.</p>",
    ]
    for key, block in result["metrics"].items():
        parts.append(f"<h2>{e(key)}</h2><table><tr><th>metric</th><th>value</th><th>95 % interval</th></tr>")
        for metric, v in block.items():
            ci = v.get("ci95")
            parts.append(f"<tr><td>{e(metric)}</td><td>{_f(v['value'])}</td>"
                         f"<td>{'[' + _f(ci[0]) + ', ' + _f(ci[1]) + ']' if ci else 'n/a'}</td></tr>")
        parts.append("</table>")
    card = result.get("model_card")
    if card:
        held = card.get("held_out") or {}
        parts.append(f"<h2>Model card</h2><p>{e(str(card.get('name')))}: trained on "
                     f"{(card.get('data') or {}).get('n_frames', '?')} simulated frames; held-out ROC-AUC "
                     f"{_f(held.get('roc_auc'))} (frame), {_f(held.get('video_roc_auc'))} (video).</p>")
    parts.append(f"<p>Written {e(result['created_at'])} in {result['seconds']:.1f} s.</p></body></html>")
    return "\n".join(parts)


def main(args: Any) -> int:
    """``python -m harness evaluate`` (see harness.cli)."""
    if not 0 <= args.bootstrap <= MAX_BOOTSTRAP:
        print(f"--bootstrap {args.bootstrap}: accepted: an integer from 0 to {MAX_BOOTSTRAP} (more resamples do not "
              "move a 95 % percentile interval; at ~0.05 s each that many take ~1.4 h)", file=sys.stderr)
        return 2
    evaluate(args.weights, args.data, args.out, arm=args.arm, n_boot=args.bootstrap, cache_dir=args.cache_dir)
    return 0


__all__ = ["bootstrap_by_patient", "build_model", "evaluate", "load_data_section", "predict", "render_html"]
