"""``moelens merge SHARDS... --out DB``: join the shards of a data-parallel trace into one run."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  moelens merge --out runs.duckdb                       # every runs.shard-I-of-N.duckdb beside it
  moelens merge runs.shard-0-of-2.duckdb runs.shard-1-of-2.duckdb --out runs.duckdb

The shards must be one run: every index 0..N-1 once, the same options, each one complete
(re-run a shard's trace command to finish it). Merging is resumable and never duplicates rows."""


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("merge", help="merge the shards of a data-parallel trace", formatter_class=formatter,
                       description=__doc__, epilog=EXAMPLES)
    p.add_argument("shards", nargs="*", help="shard databases (default: OUT's shard files)")
    p.add_argument("--out", required=True, help="DuckDB file to write the merged run into")
    p.add_argument("--run", help="run id inside the shards (default: their only run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from moelens.errors import StoreError
    from moelens.pipeline.shards import find_shards
    from moelens.tracing import merge

    shards = args.shards or find_shards(args.out)
    if not shards:
        raise StoreError(f"no shard files beside {args.out} (expected names like "
                         f"{args.out.rsplit('.', 1)[0]}.shard-0-of-2.duckdb); name them on the command line.")
    summary = merge(shards, args.out, run_id=args.run, progress=not args.no_progress)
    for note in summary.notes:
        Console().print(note)
    Console().print(f"run [bold]{summary.run_id}[/]: {summary.documents} documents, {summary.tokens:,} tokens from"
                    f" {len(shards)} shards in {summary.seconds:.1f}s -> {args.out}")
    return 0
