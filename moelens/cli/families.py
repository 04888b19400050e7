"""``moelens families``: list the supported MoE families and how each routes."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  moelens families
  moelens families --json
  moelens families --markdown      # the README's table (a test keeps the README equal to it)"""

_CONVENTIONS = {
    "A": "router returns (logits, weights, indices)",
    "A+": "as A with extra outputs",
    "B": "bare linear router; ids and weights from the experts call",
    "C": "dense scores (every expert sees every token, scaled)",
    "D": "sorted dispatch",
    "E": "capacity router with dispatch masks (dropped tokens)",
    "F": "inline product-key routing in the MoE block",
}


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("families", help="list supported MoE families", formatter_class=formatter,
                       description=__doc__, epilog=EXAMPLES)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--markdown", action="store_true", help="print the README's markdown summary and table")
    p.set_defaults(handler=run)


def markdown() -> str:
    """A summary by convention and one table row per family, generated from the family table."""
    from moelens.models.families import FAMILIES
    from moelens.models.family_spec import CONVENTIONS
    from moelens.models.versions import TESTED_TRANSFORMERS

    by_convention: dict[str, list[str]] = {c: [] for c in CONVENTIONS}
    for name, f in FAMILIES.items():
        by_convention[f.convention].append(name)
    lines = [f"moelens captures **{len(FAMILIES)} MoE text families** (every one of transformers"
             f" {TESTED_TRANSFORMERS[1]}, tested down to {TESTED_TRANSFORMERS[0]}), by routing convention:", ""]
    for conv, names in by_convention.items():
        if names:
            lines.append(f"* **{conv}** ({len(names)}): {_CONVENTIONS[conv]}")
    lines += ["", "| family | convention | scoring | model class | notes |", "|---|---|---|---|---|"]
    for name, f in FAMILIES.items():
        extra = []
        if f.loop is not None:
            extra.append("looped layers: every pass recorded")
        if f.skip_class:
            extra.append("skip class recorded as NULL")
        if f.zero_experts_key:
            extra.append("zero-compute experts keep their ids")
        if f.capacity:
            extra.append("capacity drops recorded as NULL")
        if f.secondary_tags:
            extra.append(f"secondary routers: {', '.join(f.secondary_tags)}")
        lines.append(f"| {name} | {f.convention} | {f.scoring} | `{f.model}` | {'; '.join(extra)} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import json

    from moelens.models.families import FAMILIES

    if args.json:
        print(json.dumps({name: {"convention": f.convention, "scoring": f.scoring, "rule": f.rule,
                                 "routers": list(f.routers), "model": f.model, "config": f.config}
                          for name, f in FAMILIES.items()}, indent=1))
        return 0
    if args.markdown:
        print(markdown(), end="")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(FAMILIES)} supported MoE families")
    for col in ("family", "conv.", "scoring", "rule"):
        table.add_column(col, overflow="fold")
    for name, f in FAMILIES.items():
        table.add_row(name, f.convention, f.scoring, f.rule)
    Console().print(table)
    return 0
