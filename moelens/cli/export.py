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
    p.add_argument("--parquet", metavar="DIR",
                   help="write runs, sites, documents, tokens, routes (+ router_logits) and share_matrix (analysis)")
    p.add_argument("--site", metavar="DIR", help="write the static dashboard")
    p.add_argument("--run", help="only this run (default: every run; the site opens on the last one traced)")
    p.set_defaults(handler=run)


def _folder(path: str, name: str) -> None:
    """A folder to write into: refuse an existing file before anything is written."""
    from pathlib import Path

    from moelens.errors import ConfigError, option

    if Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{option(name)} {path} is a file; give a folder to write into.")


def run(args: argparse.Namespace) -> int:
    from moelens.errors import ConfigError, option

    if not args.parquet and not args.site:
        raise ConfigError(f"say what to export: {option('parquet')} DIR and/or {option('site')} DIR.")
    for name in ("parquet", "site"):
        if getattr(args, name):
            _folder(getattr(args, name), name)
    if args.parquet:
        from moelens.analysis.export import export_analysis_parquet
        from moelens.store import Store
        from moelens.store.export import export_parquet

        with Store(args.db, read_only=True) as store:  # a missing database or run fails before any file is written
            if args.run is not None:
                store.require_run(args.run)
        written = export_parquet(args.db, args.parquet, run_id=args.run)
        written.update(export_analysis_parquet(args.db, args.parquet, run_id=args.run))
        for name, rows in written.items():
            print(f"{name}: {rows:,} rows -> {args.parquet}/{name}.parquet")
    if args.site:
        from moelens.viz.site import export_site

        path = export_site(args.db, args.site, run_id=args.run)
        print(f"dashboard: {path}")
    return 0
