"""``moelens families``: list the supported MoE families and how each routes."""

from __future__ import annotations

import argparse


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("families", help="list supported MoE families", formatter_class=formatter,
                       description=__doc__, epilog="examples:\n  moelens families\n  moelens families --json")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json

    from moelens.models.families import FAMILIES

    if args.json:
        print(json.dumps({name: {"convention": f.convention, "scoring": f.scoring, "rule": f.rule,
                                 "routers": list(f.routers)} for name, f in FAMILIES.items()}, indent=1))
        return 0
    from rich.table import Table

    from moelens.cli._console import console

    table = Table(title=f"{len(FAMILIES)} supported MoE families")
    for col in ("family", "conv.", "scoring", "rule"):
        table.add_column(col, overflow="fold")
    for name, f in FAMILIES.items():
        table.add_row(name, f.convention, f.scoring, f.rule)
    console().print(table)
    return 0
