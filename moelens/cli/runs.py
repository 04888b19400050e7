"""``moelens runs DB``: the runs of a trace database with their status, kind, size and labels."""

from __future__ import annotations

import argparse
import json
import sys

EXAMPLES = """examples:
  moelens runs runs.duckdb
  moelens runs demo/moelens-demo.duckdb --json

A run whose status is not "complete" was interrupted (or is still being written): run the same
`moelens trace` command again to resume it."""


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("runs", help="list the runs of a database (status, size, labels)", formatter_class=formatter,
                       description=__doc__, epilog=EXAMPLES)
    p.add_argument("db", help="trace database")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(handler=run)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def run(args: argparse.Namespace) -> int:
    from moelens.analysis.runs import run_table
    from moelens.analysis.sections import clean
    from moelens.store import Store

    with Store(args.db, read_only=True) as store:
        table = run_table(store)
    if args.json:
        rows = [{**r, "created_at": r["created_at"].isoformat() if r["created_at"] else None}
                for r in table.to_dicts()]
        sys.stdout.write(json.dumps({"schema": "moelens.runs/1", "database": str(args.db), "runs": clean(rows)},
                                    ensure_ascii=False, allow_nan=False) + "\n")
        return 0
    from rich.markup import escape
    from rich.table import Table

    from moelens.cli._console import console

    out = console()
    t = Table(title=f"{table.height} run{'s' if table.height != 1 else ''} in {escape(str(args.db))}", title_justify="left")
    for col in ("run", "status", "mode", "source", "model", "E", "k", "layers", "documents", "tokens", "on disk",
                "labels"):
        t.add_column(col, justify="right" if col in ("E", "k", "layers", "documents", "tokens", "on disk") else "left")
    for r in table.iter_rows(named=True):
        status = r["status"] if r["status"] == "complete" else f"[yellow]{escape(r['status'])} (incomplete)[/]"
        t.add_row(escape(r["run_id"]), status, r["mode"], escape(r["source"]), escape(str(r["model"])),
                  str(r["num_experts"]), str(r["top_k"]), str(r["layers"]), f"{r['documents']:,}", f"{r['tokens']:,}",
                  _size(r["disk_bytes"]), escape(", ".join(r["labels"])) or "-")
    if not table.height:
        t.add_row("-", "no runs yet", *[""] * 10)
    out.print(t)
    return 0
