"""``python -m harness data inspect|preview|fetch``: look at a suite's data before running it.

Example::

    python -m harness data inspect suites/quick.yaml --set data.patients=10
    python -m harness data preview suites/covid_blues.yaml -o preview.png
    python -m harness data fetch covid-blues --dest ~/data/covid-blues
"""

from __future__ import annotations

import argparse
import io
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np

from harness.data.frameset import FrameSet
from harness.safe_write import Output, OutputError, check_outputs, png_software, write_all

CLASS_NAMES = {0: "no B-lines", 1: "B-lines"}
PREVIEW_SOFTWARE = "harness data preview"  # the PNG's Software chunk: how a preview of ours is recognised


def _video_labels(frames: FrameSet) -> dict[str, int]:
    return {v: int(l) for v, l in zip(frames.videos.tolist(), frames.labels.tolist())}


def inspect_text(frames: FrameSet) -> str:
    """Counts per class and per group, videos, frames per video, image size, skipped items."""
    n = len(frames)
    lines = [frames.description or "frames", ""]
    videos = _video_labels(frames)
    groups = sorted(set(frames.groups.tolist()))
    per_video = Counter(frames.videos.tolist())
    counts = np.array(list(per_video.values()))
    lines.append(f"frames: {n}   videos: {len(videos)}   patients (groups): {len(groups)}   "
                 f"image size: {frames.images.shape[1]}x{frames.images.shape[2]} uint8")
    lines.append("")
    lines.append(f"{'class':<12}{'frames':>8}{'videos':>8}{'patients':>10}")
    for label in (1, 0):
        sel = frames.labels == label
        vids = sum(1 for v in videos.values() if v == label)
        pats = len(set(frames.groups[sel].tolist()))
        lines.append(f"{CLASS_NAMES[label]:<12}{int(sel.sum()):>8}{vids:>8}{pats:>10}")
    lines.append("")
    lines.append(f"frames per video: min {counts.min()}  median {np.median(counts):g}  max {counts.max()}")
    per_group = Counter(frames.groups.tolist())
    gcounts = np.array(list(per_group.values()))
    lines.append(f"frames per patient: min {gcounts.min()}  median {np.median(gcounts):g}  max {gcounts.max()}")
    mixed = sum(1 for g in groups if len(set(frames.labels[frames.groups == g].tolist())) > 1)
    lines.append(f"patients with both classes: {mixed} of {len(groups)}")
    lines.append("")
    lines.append("per patient (frames: positive/total, videos):")
    group_videos = Counter(g for g in dict(zip(frames.videos.tolist(), frames.groups.tolist())).values())
    cells = []
    for g in groups:
        sel = frames.groups == g
        cells.append(f"{g} {int(frames.labels[sel].sum())}/{int(sel.sum())} ({group_videos[g]})")
    width = max(len(c) for c in cells) + 2
    per_row = max(1, 100 // width)
    for i in range(0, len(cells), per_row):
        lines.append("  " + "".join(c.ljust(width) for c in cells[i:i + per_row]).rstrip())
    for column in frames.metadata.columns:
        values = frames.metadata[column]
        if column == "patient" or values.nunique() > 12:
            continue
        tally = ", ".join(f"{k}: {v}" for k, v in sorted(Counter(map(str, values)).items()))
        lines.append(f"metadata {column}: {tally}  (frames)")
    lines.append("")
    lines.append(f"skipped items: {len(frames.skipped)}")
    for entry in frames.skipped:
        lines.append(f"  {entry['item']}: {entry['reason']}")
    lines.append(f"content hash: {frames.content_hash[:16]}")
    return "\n".join(lines)


def write_preview(frames: FrameSet, path: str | Path, per_class: int = 8) -> Path:
    """A PNG montage: one row per class, ``per_class`` frames from distinct videos, titled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    picks: dict[int, list[int]] = {}
    for label in (1, 0):
        index = np.flatnonzero(frames.labels == label)
        # one frame per video first, so the montage shows variety
        _, first = np.unique(frames.videos[index], return_index=True)
        order = list(rng.permutation(index[first])) + list(rng.permutation(index))
        chosen: list[int] = []
        for i in order:
            if i not in chosen:
                chosen.append(int(i))
            if len(chosen) == per_class:
                break
        picks[label] = chosen
    cols = max(1, max(len(v) for v in picks.values()))
    fig, axes = plt.subplots(2, cols, figsize=(1.8 * cols, 4.2), squeeze=False)
    for r, label in enumerate((1, 0)):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(picks[label]):
                i = picks[label][c]
                ax.imshow(frames.images[i], cmap="gray", vmin=0, vmax=255)
                ax.set_title(str(frames.sample_ids[i])[-22:], fontsize=6)
        axes[r][0].text(-0.08, 0.5, CLASS_NAMES[label], transform=axes[r][0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=9)
    fig.suptitle("\n".join(textwrap.wrap(frames.description or "", width=16 * cols)[:3]), fontsize=7)
    fig.tight_layout()
    out = Path(path)
    check_outputs([preview_output(out)])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": PREVIEW_SOFTWARE})
    plt.close(fig)
    write_all({out: buf.getvalue()})
    return out


def preview_output(path: Path) -> Output:
    """``-o`` of ``data preview``: a ``.png`` path; an existing file is replaced only when it is a preview of ours."""
    if path.suffix.lower() != ".png":
        raise OutputError(f"-o {path}: not a .png file; nothing was written; accepted: a path ending in .png")
    return Output(path, "preview image", png_software(PREVIEW_SOFTWARE), "-o")


def _suite_frames(args: argparse.Namespace) -> FrameSet:
    from harness.data import load_frames
    from harness.suite import load_suite

    suite = load_suite(args.suite, args.overrides or [])
    cache = Path(args.cache_dir) if getattr(args, "cache_dir", None) else None
    bars = []

    def progress(done: int, total: int) -> None:  # files decoded or found in the cache
        if not bars:
            from tqdm import tqdm

            bars.append(tqdm(total=total, desc="loading", unit="file", leave=False, file=sys.stderr,
                             disable=not sys.stderr.isatty()))  # no carriage-return lines in logs
        bars[0].update(done - bars[0].n)

    try:
        return load_frames(suite.data, base_dir=suite.base_dir, cache_dir=cache, seed=suite.seed, progress=progress)
    finally:
        for bar in bars:
            bar.close()


def cmd_inspect(args: argparse.Namespace) -> int:
    print(inspect_text(_suite_frames(args)))
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    check_outputs([preview_output(args.output)])  # before the frames are decoded
    out = write_preview(_suite_frames(args), args.output, per_class=args.per_class)
    print(f"wrote {out}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from harness.data.fetch import fetch_dataset

    root = fetch_dataset(args.name, Path(args.dest), url=args.url, sha256=args.sha256)
    print(f"COVID-BLUES ready in {root}; use it with: export LUS_COVID_BLUES={root}")
    return 0


def add_data_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``data inspect|preview|fetch`` on the CLI's subparsers."""
    data = subparsers.add_parser("data", help="inspect, preview or download datasets")
    sub = data.add_subparsers(dest="data_command", required=True)

    def suite_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("suite", type=Path, help="suite YAML file (its data: section is used)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a suite key, e.g. data.image_size=64 (repeatable)")
        p.add_argument("--cache-dir", default=None, help="decoded-frame cache (default: $LUS_HARNESS_CACHE or ~/.cache/lus-harness)")

    ins = sub.add_parser("inspect", help="counts per class and patient, frames per video, image size")
    suite_args(ins)
    ins.set_defaults(func=cmd_inspect)
    pre = sub.add_parser("preview", help="PNG montage of frames of each class")
    suite_args(pre)
    pre.add_argument("-o", "--output", required=True, type=Path, help="PNG file to write")
    pre.add_argument("--per-class", type=int, default=8)
    pre.set_defaults(func=cmd_preview)
    fet = sub.add_parser("fetch", help="download a public dataset (checksum-checked)")
    fet.add_argument("name", choices=["covid-blues"])
    fet.add_argument("--dest", required=True, help="folder to put the dataset in")
    fet.add_argument("--url", default=None, help="archive URL (default: the dataset's public archive)")
    fet.add_argument("--sha256", default=None, help="expected SHA-256 of the archive")
    fet.set_defaults(func=cmd_fetch)
    return data


if __name__ == "__main__":  # pragma: no cover - convenience: python -m harness.data.commands ...
    parser = argparse.ArgumentParser(prog="harness")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
