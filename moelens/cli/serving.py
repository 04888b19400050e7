"""``moelens serving DB``: expert placement, capacity drops, expert caches and batch coverage of a run."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from moelens.cli.trace import _layers

EXAMPLES = """examples:
  moelens serving runs.duckdb
  moelens serving runs.duckdb --run moelens-mini:eval --ep 8,16,32 --replicas 0,8
  moelens serving runs.duckdb --fit-on domain=code --eval-on domain!=code
  moelens serving runs.duckdb --fit-on first:0.5            # fit on the first half of the documents
  moelens serving runs.duckdb --cf 1.0,1.25,2 --cf-tokens 4096,16384
  moelens serving runs.duckdb --cache 2,4,8 --cache-batch 4 --expert-bytes 3145728
  moelens serving runs.duckdb --batch 1,8,32 --json > serving.json

Balancedness: vLLM (sum of per-layer mean / sum of per-layer max GPU load), SGLang (mean / max per
layer), TensorRT-LLM imbalance ((max - mean) / mean). Every definition is in docs/serving.md."""


def _csv(cast):
    def parse(text: str) -> tuple:
        try:
            return tuple(cast(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
    return parse


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("serving", help="serving what-ifs: EP placement, capacity drops, expert caches",
                       formatter_class=formatter, description=__doc__, epilog=EXAMPLES)
    p.add_argument("db", help="trace database written by `moelens trace`")
    p.add_argument("--run", help="run id; unset: the only run in DB")
    p.add_argument("--layers", type=_layers, help="only these MoE layers, e.g. 0,3,8-11")
    p.add_argument("--ep", type=_csv(int), default=(8, 16, 32), help="expert-parallel sizes (GPUs)")
    p.add_argument("--replicas", type=_csv(int), help="redundant experts per layer; unset: 0 and one per GPU")
    p.add_argument("--groups", type=int, default=1, help="expert groups (EPLB hierarchical policy)")
    p.add_argument("--nodes", type=int, default=1, help="server nodes (EPLB hierarchical policy)")
    p.add_argument("--fit-on", help="traffic the placement is fitted on: all, first:F, last:F, LABEL=V, LABEL!=V")
    p.add_argument("--eval-on", help="traffic it is evaluated on; unset: the rest of --fit-on, or all")
    p.add_argument("--cf", type=_csv(float), default=(1.0, 1.25, 2.0), help="capacity factors")
    p.add_argument("--cf-tokens", type=_csv(int), default=(4096,), help="tokens per batch sharing one capacity")
    p.add_argument("--cache", type=_csv(int), help="experts per layer in GPU memory; unset: 2k, E/4, E/2")
    p.add_argument("--cache-batch", type=int, default=1, help="documents decoded together in the cache simulation")
    p.add_argument("--batch", type=_csv(int), default=(1, 8, 32, 128), help="decode batch sizes for coverage")
    p.add_argument("--expert-bytes", type=int, help="bytes of one expert; unset: from the model config and dtype")
    p.add_argument("--only", type=_csv(str), help="sections: placement,capacity,cache,prefetch,coverage")
    p.add_argument("--workers", type=int, help="processes for the per-layer pass")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--timings", action="store_true", help="print the time of each section to stderr")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from moelens.analysis.facade import Trace
    from moelens.analysis.serving.options import SECTIONS, ServingOptions

    options = ServingOptions(
        ep=args.ep, replicas=args.replicas, num_groups=args.groups, num_nodes=args.nodes, fit_on=args.fit_on,
        eval_on=args.eval_on, capacity_factors=args.cf, capacity_tokens=args.cf_tokens, cache_sizes=args.cache,
        cache_batch=args.cache_batch, batch_sizes=args.batch, expert_bytes=args.expert_bytes, layers=args.layers,
        sections=args.only or SECTIONS, workers=args.workers)
    with Trace(args.db) as trace:
        report = trace.serving(args.run, options)
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False, allow_nan=False) + "\n")
    else:
        from rich.console import Console

        render(report.to_dict(), Console())
    if args.timings:
        print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in report.timings.items()), file=sys.stderr)
    return 0


def _f(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _bytes(x: Any) -> str:
    if x is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(x) < 1024 or unit == "GiB":
            return f"{x:.1f} {unit}"
        x /= 1024
    return str(x)


def render(data: dict, console: Any) -> None:
    """Rich tables of a serving report's JSON (nothing shown that the JSON lacks)."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]serving what-ifs: {escape(str(data['run_id']))}[/]  E={data['num_experts']} k={data['top_k']}"
                  + (f"  expert size {_bytes(data['expert_bytes'])}" if data.get("expert_bytes") else ""))
    if data.get("placement"):
        first = data["placement"][0]
        t = Table(title=f"Expert-parallel balance (fit on {escape(first['fit_on'])}, evaluated on "
                        f"{escape(first['eval_on'])}; 1 = balanced)", title_justify="left")
        for col in ("EP", "redundant", "placement", "vLLM bal.", "SGLang bal.", "TRT imbalance", "worst layer"):
            t.add_column(col, justify="left" if col == "placement" else "right")
        for r in data["placement"]:
            t.add_row(str(r["ep"]), str(r["redundant"]), r["placement"], _f(r["vllm_balancedness"]),
                      _f(r["sglang_balancedness"]), _f(r["trtllm_imbalance"]), str(r["worst_layer"]))
        console.print(t)
    if data.get("capacity"):
        t = Table(title="Capacity drops (all layers; same count under both policies)", title_justify="left")
        for col in ("CF", "batch tokens", "capacity", "dropped", "drop rate", "worst layer", "worst rate"):
            t.add_column(col, justify="right")
        groups: dict = {}
        for r in data["capacity"]:
            groups.setdefault((r["capacity_factor"], r["batch_tokens"]), []).append(r)
        for (cf, ct), rows in groups.items():
            dropped = sum(r["dropped"] for r in rows)
            total = sum(r["assignments"] for r in rows)
            worst = max(rows, key=lambda r: r["drop_rate"] or 0)
            t.add_row(_f(cf, 2), str(ct), str(rows[0]["capacity"]), f"{dropped:,}", _pct(dropped / total if total else None),
                      str(worst["layer"]), _pct(worst["drop_rate"]))
        console.print(t)
    labels = [r for r in data.get("capacity_labels", []) if r["label"] not in ("token_id",)]
    if labels:
        t = Table(title="Who loses most (highest drop rate per label and policy, smallest CF)", title_justify="left")
        for col in ("policy", "label", "value", "drop rate", "assignments"):
            t.add_column(col, justify="right" if col in ("drop rate", "assignments") else "left")
        cf0 = min(r["capacity_factor"] for r in labels)
        best: dict = {}
        for r in labels:
            if r["capacity_factor"] == cf0:
                key = (r["policy"], r["label"])
                if key not in best or r["drop_rate"] > best[key]["drop_rate"]:
                    best[key] = r
        for (policy, label), r in sorted(best.items()):
            t.add_row(policy, escape(label), escape(str(r["value"])), _pct(r["drop_rate"]), f"{r['assignments']:,}")
        console.print(t)
    if data.get("cache_summary"):
        t = Table(title="Expert cache per layer (hit rate over all layers; Belady = the optimum)", title_justify="left")
        t.add_column("cache size", justify="right")
        policies = sorted({r["policy"] for r in data["cache_summary"]}, key=["lru", "lfu", "belady"].index)
        for p in policies:
            t.add_column(p.upper() if p != "belady" else "Belady", justify="right")
        has_bytes = any(r.get("bytes_per_token") is not None for r in data["cache_summary"])
        if has_bytes:
            t.add_column("LRU bytes/token", justify="right")
        by = {(r["policy"], r["cache_size"]): r for r in data["cache_summary"]}
        for c in sorted({r["cache_size"] for r in data["cache_summary"]}):
            cells = [_pct(by[(p, c)]["hit_rate"]) if (p, c) in by else "-" for p in policies]
            if has_bytes:
                cells.append(_bytes(by.get(("lru", c), {}).get("bytes_per_token")))
            t.add_row(str(c), *cells)
        console.print(t)
    if data.get("prefetch"):
        t = Table(title="Prefetch accuracy (fraction of a token's experts guessed; cross-fitted)", title_justify="left")
        for col in ("predictor", "layer", "accuracy", "popular", "uniform"):
            t.add_column(col, justify="left" if col == "predictor" else "right")
        for r in data["prefetch"]:
            t.add_row(r["predictor"], str(r["layer"]), _pct(r["accuracy"]), _pct(r["popular"]), _pct(r["uniform"]))
        console.print(t)
    if data.get("coverage"):
        t = Table(title="Distinct experts per decode step (mean over layers) vs uniform E(1-(1-k/E)^B)",
                  title_justify="left")
        for col in ("batch", "distinct", "uniform", "activation"):
            t.add_column(col, justify="right")
        groups = {}
        for r in data["coverage"]:
            groups.setdefault(r["batch"], []).append(r)
        for b, rows in sorted(groups.items()):
            vals = [r["distinct"] for r in rows if r["distinct"] is not None]
            d = sum(vals) / len(vals) if vals else None
            t.add_row(str(b), _f(d, 2), _f(rows[0]["uniform"], 2), _pct(d / data["num_experts"] if d is not None else None))
        console.print(t)
    for note in data.get("notes", []):
        console.print(f"[yellow]note:[/] {escape(note)}")
