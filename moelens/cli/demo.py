"""``moelens demo``: everything on the embedded model, offline - trace, report, dashboard.

Traces the embedded MoE (``moelens-mini``, and with ``--checkpoints all`` its early and collapsed
variants too) over the evaluation split that ships with moelens, writes the DuckDB database,
prints a short report (per-layer load imbalance, dead experts, the most language- and
domain-specialized experts) and writes the static dashboard.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

EXAMPLES = """examples:
  moelens demo                          # -> demo/moelens-demo.duckdb and demo/site/index.html
  moelens demo --out /tmp/demo --checkpoints all
  moelens demo --max-docs 100 --no-site"""

CHECKPOINTS = {"main": ("moelens-mini",),
               "all": ("moelens-mini", "moelens-mini-early", "moelens-mini-collapsed")}


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("demo", help="trace, report and dashboard on the embedded model (offline)",
                       formatter_class=formatter, description=__doc__, epilog=EXAMPLES)
    p.add_argument("--out", default="demo", help="folder for the database and the dashboard")
    p.add_argument("--checkpoints", choices=sorted(CHECKPOINTS), default="all",
                   help="main: the balanced model; all: also the early and the collapsed checkpoints")
    p.add_argument("--max-docs", type=int, help="trace only the first N documents of the evaluation split")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-site", action="store_true", help="skip the static dashboard")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run)


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _rank(row: dict) -> tuple[float, float]:
    """Support-aware ranking: the lower bound of the lift's interval, then the lift."""
    return (row["ci_low"] if row["ci_low"] is not None else float("-inf"), row["lift"] or 0.0)


def print_summary(data: dict, console) -> None:
    """The short report: per-layer load and the most specialized experts per language / domain."""
    from rich.table import Table

    run = data.get("run", {})
    layers = Table(title=f"load per MoE layer - {run.get('run_id', '')}  (E={run.get('num_experts')}, "
                         f"k={run.get('top_k')}; uniform max/mean = 1)")
    for col in ("layer", "tokens", "max/mean", "imbalance", "effective experts", "dead", "collapsed"):
        layers.add_column(col, justify="right" if col not in ("collapsed",) else "left")
    for row in data.get("layers", []):
        layers.add_row(str(row["layer"]), f"{row['tokens']:,}", _fmt(row["max_over_mean"]),
                       _fmt(row["imbalance_ratio"]), _fmt(row["effective_experts"]), str(row["dead_experts"]),
                       row.get("collapse_reason") or ("yes" if row["collapsed"] else "no"))
    console.print(layers)
    for label in ("language", "domain"):
        rows = data.get("specialization", {}).get(label) or []
        if not rows:
            continue
        best: dict[str, dict] = {}
        for row in rows:  # the best-supported significant expert per label value, over layers
            if row["value"] not in best or _rank(row) > _rank(best[row["value"]]):
                best[row["value"]] = row
        table = Table(title=f"most {label}-specialized experts (significant; share = N(expert, {label}) / "
                            f"N({label}), lift over the expert's overall share, 95% bootstrap interval; "
                            "ranked by the interval's lower bound)")
        for col in (label, "layer", "expert", "share", "lift", "interval"):
            table.add_column(col, justify="left" if col == label else "right")
        for value, row in sorted(best.items(), key=lambda kv: _rank(kv[1]), reverse=True):
            table.add_row(str(value), str(row["layer"]), str(row["expert"]), f"{row['share']:.1%}",
                          _fmt(row["lift"]), f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]")
        console.print(table)


def run(args: argparse.Namespace) -> int:
    from moelens.analysis.report import build_report
    from moelens.cli._console import console as make_console
    from moelens.embedded import eval_split_path
    from moelens.tracing import trace

    console = make_console()
    started = time.perf_counter()
    from moelens.errors import ConfigError, option

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option('out')} {out} is a file; give a folder for the database and the dashboard.")
    for name in ("max_docs", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"{option(name)} must be a positive integer, got {value}.")
    out.mkdir(parents=True, exist_ok=True)
    db = out / "moelens-demo.duckdb"
    data = str(eval_split_path())
    run_ids = []
    for model in CHECKPOINTS[args.checkpoints]:
        summary = trace(model, data, out=str(db), run_id=f"{model}:eval", max_docs=args.max_docs,
                        batch_size=args.batch_size, progress=not args.no_progress)
        run_ids.append(summary.run_id)
        console.print(f"traced [bold]{model}[/]: {summary.documents + summary.resumed} documents, "
                      f"{summary.tokens:,} new tokens in {summary.seconds:.1f}s")
    report = build_report(str(db), run_ids[0])
    print_summary(report.data, console)
    if len(run_ids) > 1:
        for other in run_ids[1:]:
            other_data = build_report(str(db), other).data
            eff = [round(r["effective_experts"], 2) for r in other_data["layers"]]
            console.print(f"[bold]{other}[/]: effective experts per layer {eff}; collapsed layers: "
                          f"{sum(r['collapsed'] for r in other_data['layers'])} of {len(eff)}")
    if not args.no_site:
        from moelens.viz.site import export_site

        site = export_site(str(db), str(out / "site"), default_run=run_ids[0])
        console.print(f"dashboard: [bold]{site}[/] (open it in a browser; it works from file://)")
    console.print(f"database: {db}  -  explore with `moelens report {db} --run {run_ids[0]}` or moelens.open()."
                  f"  ({time.perf_counter() - started:.0f}s)")
    return 0
