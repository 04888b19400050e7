"""``moelens export DB``: write the public tables as Parquet, or the static dashboard."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  moelens export runs.duckdb --parquet parquet/
  moelens export runs.duckdb --parquet parquet/ --run moelens-mini:eval
  moelens export runs.duckdb --site site/        # static dashboard, opens from file://"""


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("export", help="export tables as Parquet or a static dashboard", formatter_class=formatter,
                       description=__doc__, epilog=EXAMPLES)
    p.add_argument("db", help="trace database")
    p.add_argument("--parquet", metavar="DIR", help="write runs, sites, documents, tokens, routes (+ router_logits)")
    p.add_argument("--site", metavar="DIR", help="write the static dashboard")
    p.add_argument("--run", help="only this run (default: every run; the site opens on the last one traced)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from moelens.errors import ConfigError

    if not args.parquet and not args.site:
        raise ConfigError("say what to export: --parquet DIR and/or --site DIR.")
    if args.parquet:
        from moelens.store.export import export_parquet

        written = export_parquet(args.db, args.parquet, run_id=args.run)
        for name, rows in written.items():
            print(f"{name}: {rows:,} rows -> {args.parquet}/{name}.parquet")
    if args.site:
        from moelens.viz.site import export_site

        path = export_site(args.db, args.site, run_id=args.run)
        print(f"dashboard: {path}")
    return 0
