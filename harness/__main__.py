"""``python -m harness compare OLD NEW`` | ``report RESULTS_DIR`` | ``calibrate RUN_DIR ...`` |
``accept CELL... --from RUN_ID -m WHY`` | ``changes [RESULTS_DIR]`` | ``ingest RESULTS_DIR --store URL`` |
``merge [SHARD_DIR...] [--night ID]`` | ``submit --shards N --executor local|slurm -- PYTEST_ARGS`` |
``ab SPEC_A SPEC_B`` | ``bisect PACKAGE --good V1 --bad V2`` | ``gpu-kit`` | ``ceilings --out FILE``.

Wherever history is read (``report``, ``changes``, ``compare``, ``merge``), ``--store URL``
reads it from a database instead of a results folder (default: ``$HARNESS_STORE``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .results import ResultsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description="Trainer fine-tune benchmark harness")
    sub = parser.add_subparsers(dest="command", required=True)

    store_help = "read from this database (sqlite:///FILE or postgresql://...) instead of a results folder"
    cmp_ = sub.add_parser("compare", help="two result sets side by side")
    cmp_.add_argument("old", help="run folder, results folder or --benchmark-json file; with --store, a run id")
    cmp_.add_argument("new", help="run folder, results folder or --benchmark-json file; with --store, a run id "
                      "(or latest)")
    cmp_.add_argument("--store", metavar="URL", help=store_help)
    cmp_.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    cmp_.add_argument("--only-changed", action="store_true", help="leave out the cells whose verdict is unchanged")
    cmp_.add_argument("--sort", choices=("name", "ratio"), default="name", help="order of the rows (ratio: worst first)")
    cmp_.add_argument("--wide", action="store_true", help="full cell ids (the table is otherwise at most 120 columns)")
    cmp_.add_argument("--output", type=Path, help="write here instead of standard output")
    cmp_.add_argument("--fail-on", choices=("regression", "never"), default="never",
                      help="exit 1 when a cell is slower, uses more memory or drops out of its quality band")

    rep = sub.add_parser("report", help="an HTML report of every stored run")
    rep.add_argument("results_dir", type=Path, nargs="?", help="a results folder (or give --store URL)")
    rep.add_argument("--store", metavar="URL", help=store_help + "; RESULTS_DIR then only supplies baselines "
                     "and accepted changes")
    rep.add_argument("--output", type=Path, help="default: RESULTS_DIR/report.html")
    rep.add_argument("--csv", type=Path, help="also write the DataFrame (one row per cell per run) as CSV")
    rep.add_argument("--matrix", metavar="NAME_OR_PATH", help="the matrix whose [gate] window and confidence the "
                     "bands are drawn with (default: benchmarks/NAME.toml for the matrix each run names, else the "
                     "gate's defaults)")

    cal = sub.add_parser("calibrate", help="false alarms and the smallest caught slowdown, from unchanged runs")
    cal.add_argument("runs", nargs="+", type=Path)
    cal.add_argument("--baselines", type=Path, default=Path("results/baselines"))
    cal.add_argument("--confirm", type=int, default=2)
    cal.add_argument("--matrix", type=Path, help="judge with the thresholds this matrix declares now")

    acc = sub.add_parser("accept", help="accept a change of level: the cells' history windows restart at RUN_ID")
    acc.add_argument("cells", nargs="+", metavar="CELL", help="cell ids (see the run folder's file names)")
    acc.add_argument("--from", dest="from_run", required=True, metavar="RUN_ID", help="the first run of the new level")
    acc.add_argument("-m", "--message", required=True, help="why the change is accepted (kept with it, shown in the report)")
    acc.add_argument("--results-dir", type=Path, default=Path("results"))

    chg = sub.add_parser("changes", help="where each cell's level changed over its whole history (change points)")
    chg.add_argument("results_dir", type=Path, nargs="?", default=Path("results"))
    chg.add_argument("--store", metavar="URL", help=store_help)
    chg.add_argument("--format", choices=("table", "json"), default="table")
    chg.add_argument("--output", type=Path, help="write here instead of standard output")

    ing = sub.add_parser("ingest", help="load run folders into a database (idempotent: twice changes nothing)")
    ing.add_argument("results_dir", type=Path, help="a results folder (runs/<run-id>/...)")
    ing.add_argument("--store", metavar="URL", required=True, help="sqlite:///FILE or postgresql://USER@HOST/DB")
    ing.add_argument("--run", dest="runs", action="append", metavar="RUN_ID", help="only these runs (repeatable)")

    mrg = sub.add_parser("merge", help="one verdict table for a night run in shards (--shard I/N)")
    mrg.add_argument("sources", nargs="*", type=Path,
                     help="shard artifacts (results folders or run folders), copied into --into")
    mrg.add_argument("--into", type=Path, default=Path("results"), help="the results folder to gather them in")
    mrg.add_argument("--night", help="the night's id (pytest --night); default: the runs given as sources")
    mrg.add_argument("--store", metavar="URL", help="read the night's runs from this database instead")
    mrg.add_argument("--format", choices=("table", "markdown"), default="table")

    smt = sub.add_parser("submit", help="run a night in N shards as jobs (submitit: SLURM, or local processes), "
                         "then merge")
    smt.add_argument("--shards", type=int, required=True, help="how many parts (jobs)")
    smt.add_argument("--executor", choices=("local", "slurm"), default="local")
    smt.add_argument("--folder", type=Path, default=Path("results/submitit"), help="job logs")
    smt.add_argument("--night", help="default: a UTC time stamp")
    smt.add_argument("--timeout-min", type=int, default=360)
    smt.add_argument("--slurm-partition")
    smt.add_argument("--gpus-per-node", type=int)
    smt.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                     help="any other submitit slurm_* parameter, e.g. account=ml (repeatable)")
    smt.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then the pytest arguments of every shard")

    from .cli.ab import add_parsers

    add_parsers(sub)

    kit = sub.add_parser("gpu-kit", help="build what a GPU machine without network needs, to carry there")
    kit.add_argument("--out", type=Path, default=Path("gpu-kit"), help="the folder (git-ignored; replaced)")
    kit.add_argument("--glue-dir", type=Path, help="where MRPC lies (default: $GLUE_DIR)")
    kit.add_argument("--no-wheels", action="store_true", help="leave out the wheels (the machine has them)")

    ceil = sub.add_parser("ceilings", help="measure this GPU's matmul rates and copy bandwidth (for MFU against them)")
    ceil.add_argument("--out", type=Path, required=True, help="the JSON file; name it in HARNESS_MEASURED_PEAKS")

    sim = sub.add_parser("simulate", help="the history gate on simulated nights: false alarms and detection")
    sim.add_argument("rest", nargs=argparse.REMAINDER, help="see python -m harness simulate -- --help")

    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            from .report.compare import compare
            from .report.compare_text import render
            from .report.sides import load_run_from_store, load_side

            if args.store:
                from .store import open_store

                with open_store(args.store) as store:
                    old, new = load_run_from_store(store, args.old), load_run_from_store(store, args.new)
            else:
                old, new = load_side(args.old), load_side(args.new)
            comparison = compare(old, new)
            text = render(comparison, args.format, only_changed=args.only_changed, sort=args.sort,
                          width=None if args.wide else 120)
            if args.output:
                args.output.write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
            return 1 if args.fail_on == "regression" and comparison.regressions() else 0
        if args.command == "simulate":
            from .judge.simulate import main as simulate_main

            return simulate_main([a for a in args.rest if a != "--"])
        if args.command == "changes":
            from .judge.changes import find_changes
            from .judge.changes import render as render_changes

            text = render_changes(find_changes(args.store or args.results_dir), args.format)
            if args.output:
                args.output.write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
            return 0
        if args.command == "accept":
            from .judge.accept import accept

            for cell in args.cells:
                entry = accept(args.results_dir, cell, args.from_run, args.message)
                print(f"accepted: {entry['cell']} from {entry['from_run']}: {entry['why']}")
            return 0
        if args.command == "report":
            from .report.html import write_report

            if not args.store and not args.results_dir:
                parser.error("report needs a results folder or --store URL")
            out = write_report(args.store or args.results_dir, args.output, csv_path=args.csv,
                               results_dir=args.results_dir, matrix=args.matrix)
            print(f"report: {out}")
            return 0
        if args.command == "ingest":
            from .store.ingest import ingest
            from .store.sql import SqlStore

            store = SqlStore(args.store)
            try:
                print(ingest(args.results_dir, store, args.runs).line(store))
            finally:
                store.close()
            return 0
        if args.command == "gpu-kit":
            from .gpukit import KitError, build

            try:
                manifest = build(args.out, args.glue_dir, wheels=not args.no_wheels)
            except KitError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"kit: {args.out} ({manifest['bytes'] / 2**20:.1f} MiB); run there: bash {args.out}/first_light.sh")
            return 0
        if args.command == "ceilings":
            from .measure.ceilings import write

            try:
                figures = write(args.out)
            except RuntimeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            rates = ", ".join(f"{k} {v:.1f}" for k, v in figures["matmul_tflops"].items())
            print(f"{figures['device']}: matmul TFLOP/s {rates}; copy {figures['copy']['gbps']:.0f} GB/s -> {args.out}")
            return 0
        if args.command in ("ab", "bisect"):
            from .cli.ab import main as upgrade_main

            return upgrade_main(args)
        if args.command == "merge":
            from .store.shards import main_merge

            return main_merge(args.sources, into=args.into, night=args.night, store_url=args.store, fmt=args.format)
        if args.command == "submit":
            from .cli.submit import submit

            return submit(args.shards, args.pytest_args, executor=args.executor, folder=args.folder, night=args.night,
                          timeout_min=args.timeout_min, partition=args.slurm_partition,
                          gpus_per_node=args.gpus_per_node, slurm_args=args.slurm_arg)
        from .judge.calibrate import main as calibrate_main

        extra = ["--matrix", str(args.matrix)] if args.matrix else []
        return calibrate_main(
            [*map(str, args.runs), "--baselines", str(args.baselines), "--confirm", str(args.confirm), *extra]
        )
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
