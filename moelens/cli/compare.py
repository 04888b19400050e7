"""``moelens compare DB RUN_A RUN_B``: how routing moved between two runs over the same tokens."""

from __future__ import annotations

import argparse
import json
import sys

from moelens.cli._types import layer_list, name_list

EXAMPLES = """examples:
  moelens compare runs.duckdb moelens-mini-early:eval moelens-mini:eval
  moelens compare runs.duckdb base:eval finetuned:eval --layers 0-3 --labels domain
  moelens compare runs.duckdb a b --json > drift.json

Router saturation is OLMoE's |top-k(a) ∩ top-k(b)| / k averaged over shared tokens (uniform
baseline k/E); load TV and specialization TV are total-variation distances (0 = unchanged).
Definitions and JSON keys: docs/metrics.md."""


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("compare", help="compare the routing of two runs over the same tokens",
                       formatter_class=formatter, description=__doc__, epilog=EXAMPLES)
    p.add_argument("db", help="trace database holding both runs")
    p.add_argument("run_a", help="first run id (e.g. the earlier checkpoint)")
    p.add_argument("run_b", help="second run id")
    p.add_argument("--layers", type=layer_list, help="only these MoE layers, e.g. 0,3,8-11")
    p.add_argument("--labels", type=name_list, help="labels for specialization shift (default: document labels and position)")
    p.add_argument("--top", type=int, default=20, help="largest shifts listed")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from moelens.analysis.compare import build_comparison
    from moelens.analysis.runs import load_any, require_routing
    from moelens.store import Store

    with Store(args.db, read_only=True) as store:
        a = require_routing(load_any(store, args.run_a, layers=args.layers), "a comparison")
        b = require_routing(load_any(store, args.run_b, layers=args.layers), "a comparison")
    data = build_comparison(a, b, labels=args.labels, top=args.top)
    if args.json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n")
    else:
        from moelens.analysis.render import render_comparison
        from moelens.cli._console import console

        render_comparison(data, console())
    return 0
