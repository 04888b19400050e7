"""``moelens import ENGINE FILES... --out DB``: store routing recorded by a serving or training engine."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  moelens import vllm outputs.jsonl --out runs.duckdb --num-experts 64
  moelens import sglang responses.jsonl --out runs.duckdb --num-experts 256 --top-k 8
  moelens import sglang-dump dumps/ --out runs.duckdb --top-k 8            # stat, per_pass or per_token .pt
  moelens import megatron traces/ --out runs.duckdb --num-experts 64 --micro-batch-size 4
  moelens import trtllm expert_statistic/ --out runs.duckdb --placement moe_load_balancer.yaml
  moelens import vllm outputs.jsonl --out runs.duckdb --num-experts 64 --documents labels.jsonl

ENGINE is vllm (moelens's JSONL dump of RequestOutputs, see moelens.sources.dump_vllm), sglang
(/generate responses, one JSON per line), sglang-dump (expert-distribution recorder .pt files),
megatron (RouterTracer router_trace_rank*.jsonl) or trtllm (EXPERT_STATISTIC_PATH: meta_info.json
and rank*.safetensors). Directories are searched for the engine's file names. Engines record no
gate weights: routes.weight is NULL. Counts-only dumps (sglang-dump stat/per_pass, trtllm) become
stats-mode runs. --documents attaches labels: one JSON per line with doc_id (or request_id/rid)
and domain, language, source or any other key. A bad file is reported in one line and nothing
is written. The engines' formats: docs/engines.md."""


ENGINES = ("vllm", "sglang", "sglang-dump", "megatron", "trtllm")  # moelens.sources.SOURCE_KINDS


def add_parser(sub, formatter) -> None:
    from moelens.cli.trace import _layers

    p = sub.add_parser("import", help="import routing recorded by vLLM, SGLang, Megatron-Core or TensorRT-LLM",
                       formatter_class=formatter, description=__doc__, epilog=EXAMPLES)
    p.add_argument("engine", choices=ENGINES, help="the engine that wrote FILES")
    p.add_argument("files", nargs="+", help="the engine's files or directories")
    p.add_argument("--out", required=True, help="DuckDB file to write (created if missing)")
    p.add_argument("--run-id", help="run name (default: ENGINE:<first file>)")
    p.add_argument("--documents", metavar="JSONL", help="labels for the imported documents")
    p.add_argument("--model", help="model name stored with the run")
    p.add_argument("--num-experts", type=int, help="routed experts per layer (required where the engine omits it)")
    p.add_argument("--top-k", type=int, help="routed experts per token (required for SGLang responses and counts)")
    p.add_argument("--moe-layers", type=_layers, help="decoder layers that are MoE, e.g. 1-47 (default: those "
                   "with routing)")
    p.add_argument("--physical-to-logical", metavar="FILE", help="map physical expert ids (redundant experts) to "
                   "logical ones: a .pt/.json/.npy physical_to_logical_map [layers, physical]")
    p.add_argument("--fused-shared-experts", type=int, default=0, help="trailing slots holding fused shared experts")
    p.add_argument("--sentinel", type=int, action="append", default=[], help="an id meaning 'no expert' (repeatable)")
    p.add_argument("--ranks", default="auto", choices=["auto", "distinct", "replicated"],
                   help="multi-rank dumps: different tokens per rank, or the same (kept once)")
    p.add_argument("--world-size", type=int, help="ranks the dump must have (default: highest rank + 1)")
    p.add_argument("--micro-batch-size", type=int, default=1, help="megatron: sequences per micro-batch")
    p.add_argument("--placement", metavar="YAML", help="trtllm: the EPLB config that mapped experts to slots")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run with the same id")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from moelens import sources
    from moelens.sources import ImportOptions

    p2l = None
    if args.physical_to_logical:
        from moelens.sources.sglang_dump import load_physical_to_logical

        p2l = load_physical_to_logical(args.physical_to_logical)
    options = ImportOptions(num_experts=args.num_experts, top_k=args.top_k, moe_layers=args.moe_layers,
                            physical_to_logical=p2l, fused_shared_experts=args.fused_shared_experts,
                            sentinels=tuple(args.sentinel), ranks=args.ranks, world_size=args.world_size,
                            model=args.model, micro_batch_size=args.micro_batch_size, placement=args.placement)
    imported = sources.read(args.engine, args.files, options)
    summary = sources.write(imported, args.out, run_id=args.run_id, documents=args.documents,
                            overwrite=args.overwrite, progress=not args.no_progress)
    spec = imported.spec
    lacks = [name for name, has in (("gate weights", spec.weights), ("token ids", spec.token_ids),
                                    ("token text", spec.token_text), ("per-token routes", spec.per_token)) if not has]
    what = (f"{summary.documents} documents, {summary.tokens:,} tokens, {summary.routes:,} routes" if spec.per_token
            else f"counts of {summary.routes:,} routed slots ({len(spec.layers)} layers) as a stats-mode run")
    Console().print(f"run [bold]{summary.run_id}[/] ({spec.kind}, E={spec.num_experts}, k={spec.top_k}, MoE layers "
                    f"{_span(spec.layers)}): {what} in {summary.seconds:.1f}s -> {summary.out}; "
                    f"unavailable: {', '.join(lacks) or 'nothing'}")
    return 0


def _span(layers: tuple[int, ...]) -> str:
    if layers and list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
    return ",".join(str(x) for x in layers)
