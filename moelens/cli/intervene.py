"""``moelens intervene MODEL DATA --out DB``: ablate or prune experts and measure what it does to the model."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

EXAMPLES = """examples:
  moelens intervene moelens-mini eval.jsonl --out runs.duckdb --ablate 2:5 --ablate 2:5,7
  moelens intervene moelens-mini eval.jsonl --out runs.duckdb --sweep single-experts --layers 2
  moelens intervene moelens-mini eval.jsonl --out runs.duckdb --sweep top-specialists \\
      --label language=ar --label domain=code --random-baseline 5
  moelens intervene moelens-mini eval.jsonl --out runs.duckdb --sweep size-quality --layers 2 --n 1,2,4,8

Each intervention is measured against the unmodified model on the same tokens: the change in next-token
loss (nats), KL(base || intervened) and top-1 agreement, overall and per domain, language and position
bucket, with 95% intervals that resample documents. Specialists come from the report's ranking of a
traced run of MODEL in DB (traced first when DB has none); --random-baseline N adds N random ablations of
the same layer and size with matching usage per intervention, and the verdict says whether the effect
stands above them. --sweep size-quality removes n experts per layer by merging the most similar pairs
(usage-weighted average), pruning the less used of each pair, pruning the least used, and pruning at
random (--draws, averaged), and prints loss against n (the `whatif_curves` table). Rows go to the
`interventions` table; the same command resumes an interrupted run."""

OPTION_FLAGS = {"n_boot": "--bootstrap", "irun_id": "--run-id"}
_SPEC = re.compile(r"^(\d+):(\d+(?:,\d+)*)$")


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("intervene", help="ablate or prune experts and measure the effect on the model",
                       formatter_class=formatter, description=__doc__, epilog=EXAMPLES)
    p.add_argument("model", help="model: embedded name, local folder or hub id")
    p.add_argument("data", help="documents (the formats of `moelens trace`)")
    p.add_argument("--out", required=True, help="DuckDB file for the results (the trace database)")
    p.add_argument("--ablate", action="append", default=[], metavar="L:E[,E...]",
                   help="ablate these experts of layer L (repeat for more interventions)")
    p.add_argument("--prune", action="append", default=[], metavar="L:E[,E...]",
                   help="prune these experts of layer L (the same computation as ablate, named as a checkpoint)")
    p.add_argument("--sweep", choices=["single-experts", "top-specialists", "size-quality"],
                   help="a family of interventions")
    p.add_argument("--layers", help="layers of --sweep single-experts or size-quality, comma-separated"
                                    " (default: every MoE layer)")
    p.add_argument("--n", default="1,2,4,8", help="experts removed per layer by --sweep size-quality")
    p.add_argument("--draws", type=int, default=3, help="random draws per point of --sweep size-quality")
    p.add_argument("--label", action="append", default=[], metavar="KIND=VALUE",
                   help="label values of --sweep top-specialists, e.g. language=ar")
    p.add_argument("--top", type=int, default=2, help="specialists ablated together per layer")
    p.add_argument("--random-baseline", type=int, default=0, metavar="N",
                   help="N usage-matched random ablations per intervention (the control)")
    p.add_argument("--trace-run", help="traced run of DB to rank specialists and count usage (default: MODEL's)")
    p.add_argument("--run-id", help="id of this intervention run (default: MODEL:DATA)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--max-docs", type=int, help="measure on the first N documents")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates of the intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def _parse(specs: list[str], flag: str) -> list[tuple[int, list[int]]]:
    from moelens.errors import ConfigError

    out = []
    for spec in specs:
        match = _SPEC.match(spec.strip())
        if not match:
            raise ConfigError(f"{flag} {spec!r} is not LAYER:EXPERT[,EXPERT...] (e.g. {flag} 2:5,7).")
        out.append((int(match.group(1)), sorted({int(e) for e in match.group(2).split(",")})))
    return out


def _labels(specs: list[str]) -> list[tuple[str, str]]:
    from moelens.errors import ConfigError

    out = []
    for spec in specs:
        kind, sep, value = spec.partition("=")
        if not sep or kind not in ("domain", "language") or not value:
            raise ConfigError(f"--label {spec!r} is not domain=VALUE or language=VALUE.")
        out.append((kind, value))
    return out


def _trace_run(args: argparse.Namespace) -> str:
    """The traced run of MODEL in OUT (traced now when there is none)."""
    from pathlib import Path

    import moelens
    from moelens.cli._console import console as Console

    if args.trace_run:
        return args.trace_run
    if Path(args.out).exists():
        from moelens.store import Store

        with Store(args.out, read_only=True) as store:
            runs = [r for r in store.run_ids() if r.split(":", 1)[0] == args.model]
        if len(runs) == 1:
            return runs[0]
        if len(runs) > 1:
            from moelens.errors import ConfigError

            raise ConfigError(f"{args.out} holds several runs of {args.model} ({', '.join(runs)}); pick one with"
                              " --trace-run.")
    Console().print(f"tracing {args.model} over {args.data} first (specialists and usage come from a trace)")
    summary = moelens.trace(args.model, args.data, out=args.out, batch_size=args.batch_size,
                            max_length=args.max_length, max_docs=args.max_docs, progress=not args.no_progress)
    return summary.run_id


def _layers(text: str | None, plan) -> list[int]:
    from moelens.errors import ConfigError

    if not text:
        return list(plan.moe_layers)
    try:
        layers = [int(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"--layers {text!r} is not a comma-separated list of layer numbers.") from None
    bad = [x for x in layers if x not in plan.moe_layers]
    if bad:
        raise ConfigError(f"--layers: layer {bad[0]} has no router (MoE layers: {', '.join(map(str, plan.moe_layers))}).")
    return layers


def _sizes(text: str, num_experts: int) -> list[int]:
    from moelens.errors import ConfigError

    try:
        sizes = sorted({int(x) for x in text.split(",")})
    except ValueError:
        raise ConfigError(f"--n {text!r} is not a comma-separated list of counts.") from None
    if not sizes or sizes[0] < 1 or sizes[-1] > num_experts // 2:
        raise ConfigError(f"--n takes counts from 1 to {num_experts // 2} (half the {num_experts} experts), got {text}.")
    return sizes


def experiments(args: argparse.Namespace, model):
    from moelens.errors import ConfigError
    from moelens.interventions.effects import Experiment
    from moelens.interventions.sweeps import expert_usage, matched_controls, single_experts, top_specialists

    for name, value, low in (("--top", args.top, 1), ("--random-baseline", args.random_baseline, 0)):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}.")
    main = [Experiment({"ablate": {layer: experts}}) for layer, experts in _parse(args.ablate, "--ablate")]
    main += [Experiment({"prune": {layer: experts}}) for layer, experts in _parse(args.prune, "--prune")]
    run = None
    if args.sweep == "top-specialists":
        labels = _labels(args.label)
        if not labels:
            raise ConfigError("--sweep top-specialists needs at least one --label KIND=VALUE.")
        run = _trace_run(args)
        for kind, value in labels:
            main += top_specialists(args.out, kind, value, run=run, top=args.top)
    elif args.label:
        raise ConfigError("--label goes with --sweep top-specialists.")
    if args.sweep in ("single-experts", "size-quality"):
        from moelens.models.discover import plan_model

        plan = plan_model(model)
        layers = _layers(args.layers, plan)
        if args.sweep == "single-experts":
            main += single_experts(layers, plan.num_experts)
        else:
            from moelens.interventions.whatif import curve_experiments, weight_similarity

            sizes = _sizes(args.n, plan.num_experts)
            if args.draws < 1:
                raise ConfigError(f"--draws must be at least 1, got {args.draws}.")
            run = run or _trace_run(args)
            usage = expert_usage(args.out, run)
            for layer in layers:
                main += curve_experiments(layer, sizes, weight_similarity(model, layer), usage[layer],
                                          draws=args.draws, seed=args.seed)
    elif args.layers:
        raise ConfigError("--layers goes with --sweep single-experts or size-quality.")
    if not main:
        raise ConfigError("nothing to measure: give --ablate, --prune or --sweep.")
    controls = []
    if args.random_baseline:
        usage = expert_usage(args.out, run or _trace_run(args))
        for i, exp in enumerate(main):
            controls += matched_controls(exp, usage, n=args.random_baseline, seed=args.seed, control_for=i)
    return main + controls


def run(args: argparse.Namespace) -> int:
    from moelens.cli._console import console as Console

    from moelens.interventions.effects import measure
    from moelens.interventions.sweeps import causal_verdicts
    from moelens.models.loading import load_model

    for name, value in (("--batch-size", args.batch_size), ("--max-length", args.max_length), ("--seed", args.seed)):
        if value < (0 if name == "--seed" else 1):
            from moelens.errors import ConfigError

            raise ConfigError(f"{name} must be {'non-negative' if name == '--seed' else 'positive'}, got {value}.")
    loaded = load_model(args.model)
    todo = experiments(args, loaded.model)
    irun_id = args.run_id or f"{args.model}:{Path(args.data).stem}"
    rows = measure(loaded.model, args.data, todo, tokenizer=loaded.tokenizer, batch_size=args.batch_size,
                   max_length=args.max_length, max_docs=args.max_docs, n_boot=args.bootstrap, seed=args.seed,
                   out=args.out, irun_id=irun_id, model_name=args.model, progress=not args.no_progress)
    curve = None
    if args.sweep == "size-quality":
        from moelens.interventions.storage import write_curve
        from moelens.interventions.whatif import curve_rows

        curve = curve_rows(rows, todo)
        write_curve(args.out, irun_id, curve)
    verdicts = causal_verdicts(rows)
    if args.json:
        out = {"interventions": verdicts.to_dicts()}
        if curve is not None:
            out["size_quality"] = curve.to_dicts()
        print(json.dumps(out, default=str))
        return 0
    if curve is not None:
        _print_curve(curve, Console())
    else:
        _print(verdicts, todo, Console())
    return 0


def _print_curve(curve, console) -> None:
    from rich.table import Table

    table = Table(title="size-quality: experts removed per layer -> loss (nats), KL, top-1 agreement")
    for column in ("layer", "removed", "method", "loss", "d_loss", "KL", "top-1 same", "experts"):
        table.add_column(column, justify="left" if column in ("method", "experts") else "right")
    for r in curve.iter_rows(named=True):
        table.add_row(str(r["layer"]), str(r["n_removed"]), r["method"], f"{r['loss']:.4f}", f"{r['d_loss']:+.4f}",
                      f"{r['kl']:.4f}", f"{r['top1_agree']:.1%}",
                      "(mean of draws)" if r["method"] == "random" else ",".join(map(str, r["experts"])))
    console.print(table)


def _print(verdicts, todo, console) -> None:
    import polars as pl
    from rich.table import Table

    table = Table(title=f"effect of {sum(not e.control for e in todo)} interventions"
                        f" ({sum(e.control for e in todo)} random controls) - d_loss in nats, 95% intervals")
    for column in ("intervention", "tokens", "d_loss", "interval", "KL", "top-1 same", "verdict"):
        table.add_column(column, justify="left" if column in ("intervention", "verdict") else "right")
    chosen = verdicts.filter(pl.col("label_kind") == "all")
    for exp_id, exp in enumerate(todo):
        if exp.control:
            continue
        shown = chosen.filter(pl.col("intervention_id") == exp_id)
        if exp.label.startswith("specialists of "):  # also the specialists' own label value
            kind, value = exp.label.removeprefix("specialists of ").split("=", 1)
            shown = pl.concat([shown, verdicts.filter((pl.col("intervention_id") == exp_id)
                                                      & (pl.col("label_kind") == kind) & (pl.col("label_value") == value))])
        for row in shown.iter_rows(named=True):
            where = "" if row["label_kind"] == "all" else f" on {row['label_kind']}={row['label_value']}"
            table.add_row(f"{row['description']}{where}", f"{row['n_tokens']:,}", f"{row['d_loss']:+.4f}",
                          f"[{row['d_loss_lo']:+.4f}, {row['d_loss_hi']:+.4f}]", f"{row['kl']:.4f}",
                          f"{row['top1_agree']:.1%}", row["verdict"])
    console.print(table)
