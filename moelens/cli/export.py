"""``moelens export DB``: write a Parquet dataset, the static dashboard, or a placement for a serving engine."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  moelens export runs.duckdb --parquet dataset/          # hive-partitioned: <view>/run_id=<id>/layer=<n>/
  moelens export runs.duckdb --parquet dataset/ --run moelens-mini:eval
  moelens export runs.duckdb --site site/                # static dashboard, opens from file://
  moelens export runs.duckdb --placement-for sglang --ep 8 --to init_expert_location.json
  moelens export runs.duckdb --placement-for trtllm --ep 8 --to moe_load_balancer.yaml
  moelens export runs.duckdb --placement-for sglang --load-only --to logical_count.json

--placement-for places each MoE layer's experts on --ep GPUs from the run's load (heaviest expert
first onto the lightest GPU with room) and writes the file the engine reads: SGLang
--init-expert-location, TensorRT-LLM moe_config.load_balancer, or vLLM's EplbState tensors
(vLLM reads no placement file yet). --load-only writes the load instead (SGLang logical_count,
TensorRT-LLM EXPERT_STATISTIC_PATH, vLLM expert load) so that the engine places experts itself.
A Parquet dataset opens like a database: moelens report dataset/ (see docs/engines.md)."""

DEFAULT_TO = {("sglang", False): "init_expert_location.json", ("trtllm", False): "moe_load_balancer.yaml",
              ("vllm", False): "vllm_eplb_placement.safetensors", ("sglang", True): "logical_count.json",
              ("trtllm", True): "expert_statistic", ("vllm", True): "vllm_expert_load.safetensors"}


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("export", help="export a Parquet dataset, the static dashboard or an engine placement",
                       formatter_class=formatter, description=__doc__, epilog=EXAMPLES)
    p.add_argument("db", help="trace database")
    p.add_argument("--parquet", metavar="DIR", help="write the public views as a hive-partitioned Parquet dataset")
    p.add_argument("--site", metavar="DIR", help="write the static dashboard")
    p.add_argument("--run", help="only this run (default: every run; the site opens on the last one traced)")
    p.add_argument("--placement-for", choices=["sglang", "vllm", "trtllm"], help="write a placement for this engine")
    p.add_argument("--ep", type=int, help="expert-parallel GPUs of the placement")
    p.add_argument("--load-only", action="store_true", help="write the expert load instead of a placement")
    p.add_argument("--to", metavar="PATH", help="placement or load file (default: the engine's usual name)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from moelens.errors import ConfigError

    if not args.parquet and not args.site and not args.placement_for:
        raise ConfigError("say what to export: --parquet DIR, --site DIR and/or --placement-for ENGINE.")
    if args.parquet:
        from moelens.store.parquet import export_dataset

        written = export_dataset(args.db, args.parquet, run_id=args.run)
        for name, rows in written.items():
            print(f"{name}: {rows:,} rows -> {args.parquet}/{name}/")
    if args.site:
        from moelens.viz.site import export_site

        path = export_site(args.db, args.site, run_id=args.run)
        print(f"dashboard: {path}")
    if args.placement_for:
        _placement(args)
    return 0


def _placement(args: argparse.Namespace) -> None:
    from moelens.errors import ConfigError
    from moelens.placements import greedy_placement, run_load, write_load, write_placement

    layers, counts, meta = run_load(args.db, args.run)
    to = args.to or DEFAULT_TO[(args.placement_for, args.load_only)]
    if args.load_only:
        path = write_load(layers, counts, args.placement_for, to, num_layers=meta["num_layers"], top_k=meta["top_k"])
        print(f"expert load of run {meta['run_id']} ({len(layers)} MoE layers) for {args.placement_for} -> {path}")
        return
    if not args.ep:
        raise ConfigError("a placement needs the number of expert-parallel GPUs: pass --ep N (or --load-only).")
    placement = greedy_placement(counts, layers, args.ep)
    path = write_placement(placement, args.placement_for, to, num_experts=meta["num_experts"],
                           num_layers=meta["num_layers"])
    from moelens.analysis.load import balancedness

    before = min(balancedness(c, args.ep, "contiguous") for c in counts)
    after = min(balancedness(c, args.ep, "greedy") for c in counts)
    print(f"placement of run {meta['run_id']} on {args.ep} GPUs ({len(layers)} MoE layers; worst-layer "
          f"balancedness {before:.3f} contiguous -> {after:.3f}) for {args.placement_for} -> {path}")
