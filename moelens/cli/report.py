"""``moelens report DB``: load, collapse, specialization, confidence, temporal and cross-layer structure of a run."""

from __future__ import annotations

import argparse
import json
import sys

from moelens.cli._types import int_list, layer_list, name_list

EXAMPLES = """examples:
  moelens report runs.duckdb
  moelens report runs.duckdb --run moelens-mini:eval --layers 0,4,8-11
  moelens report runs.duckdb --labels language,position --bootstrap 500 --top 20
  moelens report runs.duckdb --json > report.json
  moelens report runs.duckdb --devices 8,16 --timings

Specialization is reported only when significant: bootstrap over documents, Benjamini-Hochberg
q <= --alpha, interval above 1, lift >= --min-lift, and enough support (count, share, and an
expert that is not dead or near-dead at the layer); specialists are ranked by the lower bound of
the lift's interval. A run that is not complete (interrupted) says so in the header and in
"run.status" of --json. Every metric, threshold and JSON key is defined in docs/metrics.md."""


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("report", help="analyse a traced run (tables, or --json)", formatter_class=formatter,
                       description=__doc__, epilog=EXAMPLES)
    p.add_argument("db", help="trace database written by `moelens trace`")
    p.add_argument("--run", help="run id (default: the only run in DB)")
    p.add_argument("--layers", type=layer_list, help="only these MoE layers, e.g. 0,3,8-11")
    p.add_argument("--labels", type=name_list, help="labels to test (default: every label present, and position)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--top", type=int, default=5, help="specialized experts kept per (label value, layer)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates (documents resampled)")
    p.add_argument("--alpha", type=float, default=0.01, help="false-discovery rate of the specialization tests")
    p.add_argument("--min-lift", type=float, default=1.25, help="smallest lift reported as specialization")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the shuffled baselines")
    p.add_argument("--devices", type=int_list, default=(8,), help="expert-parallel sizes for balancedness, e.g. 8,16")
    p.add_argument("--dead-threshold", type=float, default=0.1, help="dead below this utilization (load / fair load)")
    p.add_argument("--collapse-effective", type=float, default=0.3, help="collapsed below this exp(H)/E")
    p.add_argument("--collapse-dead", type=float, default=0.5, help="collapsed at this dead-expert fraction")
    p.add_argument("--no-confidence", action="store_true", help="skip router confidence even when logits exist")
    p.add_argument("--workers", type=int, help="processes for the per-layer pass (default: 2 on Linux for large runs)")
    p.add_argument("--timings", action="store_true", help="print the time of each stage to stderr")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import time

    from moelens.analysis.options import LoadOptions, ReportOptions, SpecializationOptions
    from moelens.analysis.report import build_report

    started = time.perf_counter()
    options = ReportOptions(
        layers=args.layers, labels=args.labels, top=args.top, confidence_section=not args.no_confidence,
        workers=args.workers,
        load=LoadOptions(dead_threshold=args.dead_threshold, collapse_effective=args.collapse_effective,
                         collapse_dead=args.collapse_dead, devices=args.devices),
        specialization=SpecializationOptions(bootstrap=args.bootstrap, alpha=args.alpha, min_lift=args.min_lift,
                                             seed=args.seed))
    report = build_report(args.db, args.run, options)
    if args.json:
        sys.stdout.write(json.dumps(report.data, ensure_ascii=False, allow_nan=False) + "\n")
    else:
        from moelens.analysis.render import render_report
        from moelens.cli._console import console

        render_report(report.data, console(), top=max(args.top, 10))
    if args.timings:
        stages = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in report.timings.items())
        print(f"timings: {stages}; total {time.perf_counter() - started:.2f}s", file=sys.stderr)
    return 0
