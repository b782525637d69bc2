"""``python -m harness``: run / validate / status / report / bench / data.

Bad input (a suite that does not validate, data that cannot be split, a missing directory)
prints one line per problem on stderr and exits with status 2; failed runs exit with 1.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED_RUNS, EXIT_BAD_INPUT = 0, 1, 2


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a suite key (value parsed as YAML; list items by index: arms.1.name=x)")


def _add_run(sub: argparse._SubParsersAction) -> None:
    """``run``: its options, executors and Ray resources."""
    run = sub.add_parser("run", help="run a suite (skipping runs already done) and write the report")
    run.add_argument("suite", type=Path)
    _add_set(run)
    run.add_argument("--out", type=Path, help="output directory (default: reports/<suite name>/)")
    run.add_argument("--workers", type=int, default=1, help="parallel worker processes (cores are divided)")
    run.add_argument("--executor", choices=["local", "ray"], default="local")
    run.add_argument("--address", help="Ray cluster address for --executor ray (e.g. auto, ray://host:10001)")
    run.add_argument("--gpus-per-run", type=float, metavar="G", help="--executor ray: GPUs each run asks for "
                     "(fractional packs runs on a card, e.g. 0.25; default: 1 when the cluster has GPUs and "
                     "training.device is auto or cuda, else 0)")
    run.add_argument("--cpus-per-run", type=float, metavar="C", help="--executor ray: CPUs each run asks for "
                     "(default 1)")
    run.add_argument("--cache-dir", type=Path, help="frame/preprocessing cache (default: $LUS_HARNESS_CACHE "
                     "or ~/.cache/lus-harness)")
    run.add_argument("--dry-run", action="store_true", help="print the plan and a time estimate; train nothing")
    run.add_argument("--no-report", action="store_true", help="do not build the report at the end")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--replace-other-suite", action="store_true",
                     help="run into an --out that holds another suite's results store (that suite's runs are kept "
                          "but set aside as stale; without this flag such an --out is refused)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Does anisotropic diffusion help EfficientNet-B0 "
                                     "detect B-lines in lung ultrasound? Suites, runs, reports.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_run(sub)

    val = sub.add_parser("validate", help="check a suite without running it")
    val.add_argument("suite", type=Path)
    _add_set(val)

    st = sub.add_parser("status", help="progress of a results directory")
    st.add_argument("dir", type=Path)

    rep = sub.add_parser("report", help="build report.html (+ summary.json, metrics.csv) from a results directory")
    rep.add_argument("dir", type=Path)
    rep.add_argument("-o", "--output", type=Path, help="HTML file (default: DIR/report.html); an existing file is "
                     "replaced only when it is a report of this suite written by this tool")
    rep.add_argument("--summary", type=Path, metavar="JSON", help="summary.json path (default: beside the HTML)")
    rep.add_argument("--metrics", type=Path, metavar="CSV", help="metrics.csv path (default: beside the HTML)")
    rep.add_argument("--markdown", type=Path, metavar="PAGE",
                     help="also rewrite the generated block of this Markdown page (between its "
                          "'<!-- harness report: begin/end -->' lines; a new file gets the block alone) "
                          "and write PAGE-stem-forest.png beside it (e.g. docs/results.md)")

    pre = sub.add_parser("pretrain", help="pretrain the network on simulated data -> weights.safetensors + "
                         "model_card.json (harness.pretrain)")
    pre.add_argument("spec", type=Path, help="pretraining spec YAML (e.g. suites/pretrain-simulated.yaml)")
    _add_set(pre)
    pre.add_argument("--out", type=Path, help="output directory (default: pretrained/<spec name>/)")
    pre.add_argument("--cache-dir", type=Path, help="frame cache (default: $LUS_HARNESS_CACHE or ~/.cache/lus-harness)")

    ev = sub.add_parser("evaluate", help="score a weights file on a data set (no training) -> evaluation.html/.json "
                        "(harness.evaluate)")
    ev.add_argument("weights", type=Path, help="a .safetensors/.pth/.pt weights file (harness pretrain, a checkpoint)")
    ev.add_argument("--data", type=Path, required=True, help="a suite YAML (its data section) or a data-section YAML")
    ev.add_argument("--arm", help="with a suite: build this arm's network and preprocessing (default: plain network)")
    ev.add_argument("--out", type=Path, help="output directory (default: reports/evaluate/<weights>-<data>/)")
    ev.add_argument("--bootstrap", type=int, default=500,
                    help="bootstrap resamples over patients (0 to 100000, default 500; ~0.05 s each)")
    ev.add_argument("--cache-dir", type=Path, help="frame cache (default: $LUS_HARNESS_CACHE or ~/.cache/lus-harness)")

    rec = sub.add_parser("recipe", help="score a suite's recipe on inner folds of one outer training part, never "
                         "a test fold (harness.recipe): how a study's recipe is chosen")
    rec.add_argument("suite", type=Path)
    _add_set(rec)
    rec.add_argument("--arm", help="the arm to train (default: the suite's baseline)")
    rec.add_argument("--repeat", type=int, default=0, help="outer split: repeat (default 0)")
    rec.add_argument("--fold", type=int, default=0, help="outer split: fold whose training part is used (default 0)")
    rec.add_argument("--inner-folds", type=int, default=4, help="patient-grouped inner folds (default 4)")
    rec.add_argument("--inner-seed", type=int, default=7, help="seed of the inner folds (default 7)")
    rec.add_argument("--inner", type=int, action="append", help="score only this inner fold (repeatable)")
    rec.add_argument("--log", type=Path, help="append one JSON line per inner fold to this file")
    rec.add_argument("--cache-dir", type=Path, help="frame cache (default: $LUS_HARNESS_CACHE or ~/.cache/lus-harness)")

    bench = sub.add_parser("bench", help="training throughput of the engine vs. a plain timm loop", add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)

    try:
        from harness.data.commands import add_data_commands
    except ImportError:
        pass
    else:
        add_data_commands(sub)
    return parser


def _err(line: str) -> None:
    print(line, file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.suite import load_suite

    from harness.data.columns import manifest_header, metadata_columns
    from harness.data.config import ManifestData
    from harness.prechecks import check_suite
    from harness.runner import check_strata_columns, check_weights

    suite = load_suite(args.suite, args.overrides)
    # report.strata against the columns the data will carry (known without loading a frame)
    header = manifest_header(suite.data, suite.base_dir) if isinstance(suite.data, ManifestData) else None
    check_strata_columns(suite, metadata_columns(suite.data), header)
    # report.sensitivity's exclusions against the same columns (harness.exclusions: the one parser and check)
    from harness.exclusions import column_problems, parse_exclusions
    from harness.suite import SuiteError

    bad = column_problems(parse_exclusions(suite.report.sensitivity), metadata_columns(suite.data))
    if bad:
        raise SuiteError([f"{suite.source_path or args.suite}: {line}" for line in bad])
    check_suite(suite)  # device, filter stencils against data.image_size (the data is not loaded here)
    check_weights(suite, network=False)  # weights files read and fitted to the network (no ImageNet download)
    ev = suite.evaluation
    variants = [r.name for r in suite.run_arms() if r.variant]
    print(f"{args.suite}: valid suite {suite.name!r}: {len(suite.arms)} arms "
          f"({', '.join(a.name for a in suite.arms)}"
          f"{'; variants ' + ', '.join(variants) if variants else ''}), {ev.repeats} repeats x {ev.folds} folds, "
          f"data {suite.data.source}, baseline {suite.baseline}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from harness.runner import run_suite
    from harness.suite import load_suite

    if args.workers < 1:
        _err(f"--workers {args.workers}: accepted: an integer >= 1")
        return EXIT_BAD_INPUT
    for flag, value in (("--address", args.address), ("--gpus-per-run", args.gpus_per_run),
                        ("--cpus-per-run", args.cpus_per_run)):
        if value is not None and args.executor != "ray":
            _err(f"{flag} is for --executor ray (local workers divide this machine's cores and share its GPU)")
            return EXIT_BAD_INPUT
    from harness.ray_cluster import RunResources

    resources = RunResources(cpus=args.cpus_per_run, gpus=args.gpus_per_run)  # ClusterError: one line, exit 2
    cores = os.cpu_count() or 1
    if args.executor == "local" and args.workers > cores:  # a Ray cluster has its own cores
        _err(f"warning: --workers {args.workers} > {cores} cores on this machine: using {cores} (more worker "
             "processes than cores only compete for them)")
        args.workers = cores
    suite = load_suite(args.suite, args.overrides)
    out = args.out or Path("reports") / suite.name
    summary = run_suite(suite, out, executor=args.executor, workers=args.workers, address=args.address,
                        dry_run=args.dry_run, report=not args.no_report, cache_dir=args.cache_dir,
                        progress=not args.no_progress, command=["python", "-m", "harness", *sys.argv[1:]],
                        replace_other_suite=args.replace_other_suite, resources=resources)
    if args.dry_run:
        return EXIT_OK
    print(f"{summary.done} runs done, {summary.skipped} already done, {len(summary.failed)} failed; results in {out}")
    if summary.report:
        print(f"report: {summary.report}")
    elif summary.report_error:
        _err(summary.report_error)
    for run_id, error in summary.failed:
        _err(f"failed {run_id}: {error.splitlines()[0]}")
    return EXIT_OK if summary.ok else EXIT_FAILED_RUNS


def cmd_status(args: argparse.Namespace) -> int:
    from harness.runner import status_lines

    for line in status_lines(args.dir):
        print(line)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from harness.store import STORE_FILENAME, ResultsStore, StoreError

    if not (args.dir / STORE_FILENAME).is_file():
        _err(f"{args.dir}: no {STORE_FILENAME} here (run a suite first: python -m harness run SUITE --out {args.dir})")
        return EXIT_BAD_INPUT
    with ResultsStore(args.dir, readonly=True) as store:  # a damaged or foreign file: StoreError, exit 2
        store.check_integrity()
        store.suite_config()  # a store without its suite record (nothing was run into it): StoreError, exit 2
    from harness.report import build_report
    from harness.report.markdown import MarkdownPageError
    from harness.safe_write import OutputError

    beside = args.output.resolve().parent if args.output is not None else args.dir.resolve()
    existing = [n for n in ("summary.json", "metrics.csv") if (beside / n).is_file()] \
        if beside != args.dir.resolve() else []
    try:
        extra = {} if args.markdown is None else {"markdown": args.markdown, "markdown_command": _report_command(args)}
        path = build_report(args.dir, output=args.output, summary=args.summary, metrics=args.metrics, **extra)
    except (MarkdownPageError, OutputError, StoreError) as err:  # raised before anything is written
        _err(str(err))
        return EXIT_BAD_INPUT
    except Exception as err:  # the results are untouched, and the outputs all replaced or none; one line
        _err(f"report failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        return EXIT_FAILED_RUNS
    print(f"report: {path}")
    if args.markdown is not None:
        print(f"markdown: {args.markdown} (generated block) and its forest plot beside it")
    if beside != args.dir.resolve() and args.summary is None and args.metrics is None:
        # build_report writes them beside the HTML: say so, never silently
        replaced = f" (replaced this suite's earlier {', '.join(existing)})" if existing else ""
        print(f"summary.json and metrics.csv: written to {beside}{replaced}")
    return EXIT_OK


def _report_command(args: argparse.Namespace) -> str:
    parts = ["python -m harness report", shlex.quote(str(args.dir))]
    for flag, value in (("-o", args.output), ("--summary", args.summary), ("--metrics", args.metrics)):
        if value is not None:
            parts += [flag, shlex.quote(str(value))]
    if args.markdown is not None:
        parts += ["--markdown", shlex.quote(str(args.markdown))]
    return " ".join(parts)


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench import main as bench_main

    return int(bench_main(args.bench_args) or 0)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from harness.pretrain import main as pretrain_main

    return pretrain_main(args)


def cmd_recipe(args: argparse.Namespace) -> int:
    from harness.recipe import main as recipe_main

    return recipe_main(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from harness.evaluate import main as evaluate_main

    return evaluate_main(args)


def main(argv: list[str] | None = None) -> int:
    from harness.cv import SplitError
    from harness.executors import ExecutorError
    from harness.store import StoreError
    from harness.suite import SuiteError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # bench parses its own options (argparse.REMAINDER misses leading flags)
        return cmd_bench(argparse.Namespace(bench_args=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"run": cmd_run, "validate": cmd_validate, "status": cmd_status, "report": cmd_report,
                "bench": cmd_bench, "pretrain": cmd_pretrain, "evaluate": cmd_evaluate, "recipe": cmd_recipe}
    handler = handlers.get(args.command) or getattr(args, "func", None)
    if handler is None:
        parser.error(f"unknown command {args.command!r}")
    bad_input: tuple[type[BaseException], ...] = (SuiteError, SplitError, StoreError, ExecutorError, FileNotFoundError)
    from harness.data.frameset import DataError
    from harness.models import ModelError
    from harness.runner import DirectoryBusyError, OutDirError

    from harness.ray_cluster import ClusterError
    from harness.safe_write import OutputError

    bad_input += (DataError, ModelError, DirectoryBusyError, OutDirError, OutputError, ClusterError)
    try:
        return int(handler(args) or 0)
    except bad_input as err:
        for line in str(err).splitlines() or [type(err).__name__]:
            _err(line)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as err:  # Ctrl-C: 130; SIGTERM (harness.runner.StoppedBySignal): 128 + 15 = 143
        _err("interrupted: finished runs are saved; run the same command again to resume")
        return 128 + int(getattr(err, "signum", 2))
    except BrokenPipeError:
        # The reader went away (`harness status DIR | head -1`): stop quietly, as Unix tools do; stdout
        # is pointed at /dev/null so that the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
