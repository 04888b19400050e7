"""``moelens upgrade DB``: bring a trace database written by an older moelens to the current schema."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  moelens upgrade runs.duckdb

The upgrade is additive and runs in one transaction: every run, document, token and route is kept.
Older moelens versions cannot open the database afterwards."""


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("upgrade", help="upgrade a trace database to the current schema", formatter_class=formatter,
                       description=__doc__, epilog=EXAMPLES)
    p.add_argument("db", help="DuckDB file written by moelens")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from moelens.errors import StoreError
    from moelens.store import SCHEMA_VERSION, Store

    if not Path(args.db).is_file():
        raise StoreError(f"no database at {args.db}.")
    with Store(args.db, upgrade=True) as store:
        found = store.upgraded_from
    if found is None:
        print(f"{args.db} is already at schema version {SCHEMA_VERSION}; nothing to do.")
    else:
        print(f"upgraded {args.db} from schema version {found} to {SCHEMA_VERSION}.")
    return 0
