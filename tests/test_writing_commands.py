"""Every command that writes follows the report's rule (issue 29): a file it did not make is never
overwritten, whatever it is named as; it says so in one line before any work; its own earlier output is
replaced, all of it or none.

The rule per command (docs/usage.md, "What each command writes"):
``report`` (page, summary.json, metrics.csv, Markdown page and its figures), ``evaluate --out``
(evaluation.json / .html, predictions.csv), ``pretrain --out`` (weights.safetensors with the model card
that records its SHA-256), ``data preview -o`` (a PNG marked as a preview), ``bench --json`` (a JSON
with the bench's format).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.safe_write import png_software

SUITE = ("name: t\nseed: 3\ndata: {source: simulated, patients: 4, frames_per_patient: 2, image_size: 32}\n"
         "arms: [{name: plain}]\n")


def _one_line_refusal(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def test_data_preview_never_overwrites_a_file_it_did_not_make(tmp_path, capsys, monkeypatch) -> None:
    import harness.data.commands as commands

    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    cache = str(tmp_path / "cache")
    decoded = []
    real = commands._suite_frames
    monkeypatch.setattr(commands, "_suite_frames", lambda args: decoded.append(1) or real(args))
    victim = tmp_path / "photo.png"
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"somebody's picture")
    for target, needle in [(suite, "not a .png file"), (victim, "not a preview image written by this tool"),
                           (tmp_path / "results.sqlite", "not a .png file")]:
        _one_line_refusal(capsys, ["data", "preview", str(suite), "-o", str(target), "--cache-dir", cache], needle)
    assert suite.read_text() == SUITE and victim.read_bytes() == b"\x89PNG\r\n\x1a\n" + b"somebody's picture"
    assert decoded == []  # refused before any frame was decoded
    ours = tmp_path / "preview.png"
    assert main(["data", "preview", str(suite), "-o", str(ours), "--cache-dir", cache]) == 0
    assert png_software("harness data preview")(ours)
    assert main(["data", "preview", str(suite), "-o", str(ours), "--cache-dir", cache]) == 0  # its own: replaced


def test_bench_json_never_overwrites_a_file_it_did_not_make(tmp_path, capsys) -> None:
    victim = tmp_path / "notes.json"
    victim.write_text('{"my": "notes"}')
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--json", str(victim), "--steps", "1"])
    assert exit_.value.code == 2
    assert "not a bench result written by this tool" in capsys.readouterr().err
    assert victim.read_text() == '{"my": "notes"}'
    with pytest.raises(SystemExit):
        main(["bench", "--json", str(tmp_path / "suite.yaml")])
    assert "not a .json file" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["evaluation.json", "predictions.csv", "evaluation.html"])
def test_evaluate_out_never_overwrites_a_file_it_did_not_make(tmp_path, capsys, name) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    victim = out / name
    victim.write_text("somebody's file\n")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not read: the destination is checked first")
    data = tmp_path / "data.yaml"
    data.write_text("source: simulated\npatients: 4\n")
    _one_line_refusal(capsys, ["evaluate", str(weights), "--data", str(data), "--out", str(out)], str(victim),
                      "written by this tool")
    assert victim.read_text() == "somebody's file\n"
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_pretrain_out_never_overwrites_a_checkpoint_it_did_not_make(tmp_path, capsys) -> None:
    spec = Path(__file__).parent / "data" / "pretrain-tiny.yaml"
    out = tmp_path / "pre"
    out.mkdir()
    checkpoint = out / "weights.safetensors"
    checkpoint.write_bytes(b"a checkpoint trained elsewhere")
    _one_line_refusal(capsys, ["pretrain", str(spec), "--out", str(out)], str(checkpoint), "written by this tool")
    assert checkpoint.read_bytes() == b"a checkpoint trained elsewhere"
    # with a card of ours beside it that records another file's SHA-256, it is still not ours
    (out / "model_card.json").write_text(json.dumps({"format": "lus-harness model card 1",
                                                     "weights": {"sha256": "0" * 64}}))
    _one_line_refusal(capsys, ["pretrain", str(spec), "--out", str(out)], str(checkpoint))
    assert checkpoint.read_bytes() == b"a checkpoint trained elsewhere"


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_pretrain_and_evaluate_replace_their_own_output(tmp_path, cache_dir) -> None:
    spec = Path(__file__).parent / "data" / "pretrain-tiny.yaml"
    out = tmp_path / "pre"
    assert main(["pretrain", str(spec), "--out", str(out), "--cache-dir", str(cache_dir)]) == 0
    card = json.loads((out / "model_card.json").read_text())
    from harness.versions import file_sha256

    assert card["weights"]["sha256"] == file_sha256(out / "weights.safetensors")
    assert main(["pretrain", str(spec), "--out", str(out), "--cache-dir", str(cache_dir)]) == 0  # ours: replaced
    data = tmp_path / "data.yaml"
    data.write_text("source: simulated\npatients: 6\nframes_per_patient: 2\nimage_size: 32\nseed: 3\n")
    ev = tmp_path / "eval"
    for _ in range(2):
        assert main(["evaluate", str(out / "weights.safetensors"), "--data", str(data), "--out", str(ev),
                     "--bootstrap", "0", "--cache-dir", str(cache_dir)]) == 0
    assert json.loads((ev / "evaluation.json").read_text())["format"] == "lus-harness evaluation 1"
    assert sorted(p.name for p in ev.iterdir()) == ["evaluation.html", "evaluation.json", "predictions.csv"]


def test_a_read_only_folder_is_one_line_before_any_work(tmp_path, capsys, monkeypatch) -> None:
    """``data preview -o`` and ``report -o`` into a folder that cannot be written (a read-only file system:
    tests run as root, so it is simulated): one line naming the folder, never a traceback."""
    from test_report_verdicts import build
    from test_stores_and_processes import _read_only

    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    store = build(tmp_path / "store", {"baseline": 1.5, "pm": 2.2},
                  arms=[{"name": "baseline"}, {"name": "pm", "preprocess": [{"gaussian": {"sigma": 1.0}}]}])
    ro = tmp_path / "ro"
    ro.mkdir()
    with monkeypatch.context() as m:
        _read_only(m, ro)
        _one_line_refusal(capsys, ["data", "preview", str(suite), "-o", str(ro / "p.png"),
                                   "--cache-dir", str(tmp_path / "cache")], f"{ro} is not writable")
        _one_line_refusal(capsys, ["report", str(store), "-o", str(ro / "r.html")], f"{ro} is not writable")
        _one_line_refusal(capsys, ["report", str(store), "--markdown", str(ro / "results.md")],
                          f"{ro} is not writable")
    assert list(ro.iterdir()) == [] and not (store / "report.html").exists()
