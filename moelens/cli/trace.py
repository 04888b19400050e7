"""``moelens trace MODEL DATA --out DB``: store every routing decision of a model over a dataset."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  moelens trace moelens-mini data.jsonl --out runs.duckdb
  moelens trace ./my-olmoe-folder corpus/ --out runs.duckdb --max-length 1024 --batch-size 4
  moelens trace moelens-mini long-docs.jsonl --out runs.duckdb --max-length 512 --stride 256
  moelens trace moelens-mini data.parquet --out runs.duckdb --text-column body --max-docs 500
  moelens trace org/model-id org/dataset-id --split validation --out runs.duckdb --device cuda

  torchrun --nproc-per-node 4 -m moelens trace ./big-moe corpus.jsonl --out runs.duckdb   # one shard per rank
  moelens trace ./big-moe corpus.jsonl --out runs.duckdb --shard 1/4                        # one shard by hand
  moelens trace ./huge-moe corpus.jsonl --out runs.duckdb --device-map auto --max-memory 0=70GiB,cpu=200GiB

Re-running the same command resumes an interrupted run without duplicating rows.
DATA may be .jsonl, .json, .csv, .parquet or .txt (a file or a folder), or a hub dataset id.
Columns domain and language become document labels; other columns go into documents.meta;
an input_ids column is traced as given (no tokenizer needed)."""


def _layers(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        elif part.strip():
            out.append(int(part))
    return tuple(out)


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, got {text!r}") from None
    return index, count


def _memory(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        device, sep, amount = part.partition("=")
        if not sep or not device.strip() or not amount.strip():
            raise argparse.ArgumentTypeError(f"expected DEVICE=AMOUNT[,...] such as 0=20GiB,cpu=64GiB, got {text!r}")
        out[device.strip()] = amount.strip()
    return out


def add_parser(sub, formatter) -> None:
    p = sub.add_parser("trace", help="trace a model over a dataset into DuckDB", formatter_class=formatter,
                       description=__doc__, epilog=EXAMPLES)
    p.add_argument("model", help="model folder, embedded short name (moelens-mini) or hub id")
    p.add_argument("data", help="dataset file/folder or hub dataset id")
    p.add_argument("--out", required=True, help="DuckDB file to write (created if missing)")
    p.add_argument("--run-id", help="run name (default: MODEL:DATA); the same id resumes")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--max-length", type=int, default=512, help="tokens per window (long documents are windowed)")
    p.add_argument("--stride", type=int, help="tokens between window starts (default: --max-length, no overlap);"
                   " smaller values carry max-length - stride tokens of context into each window")
    p.add_argument("--max-docs", type=int, help="trace only the first N documents")
    p.add_argument("--max-tokens", type=int, help="stop after about N tokens")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--logits", action="store_true", help="also store full router logits (large)")
    p.add_argument("--backend", default="torch", choices=["torch", "nnsight"], help="capture backend")
    p.add_argument("--remote", action="store_true", help="with --backend nnsight: run on NDIF (remote=True)")
    p.add_argument("--capture", default="auto", choices=["auto", "torch", "triton"], help="device-side capture path")
    p.add_argument("--mode", default="routes", choices=["routes", "stats"],
                   help="routes: every decision; stats: bounded on-device aggregates only")
    p.add_argument("--split", default="train", help="split of a hub dataset")
    p.add_argument("--text-column", default="text", help="column holding the document text")
    p.add_argument("--txt-mode", default="file", choices=["file", "line", "paragraph"],
                   help=".txt files: one document per file, line or blank-line paragraph")
    p.add_argument("--tokenizer", help="tokenizer folder or id, if not the model's")
    p.add_argument("--revision", help="model revision (hub models)")
    p.add_argument("--layers", type=_layers, help="only these layers, e.g. 0,3,8-11")
    p.add_argument("--verify", action="store_true", help="cross-check every capture against the experts' inputs")
    p.add_argument("--shard", type=_shard, metavar="I/N",
                   help="trace only documents with doc_id %% N == I into OUT's shard file (set by torchrun)")
    p.add_argument("--no-merge", action="store_true", help="under torchrun: leave the shards unmerged")
    p.add_argument("--device-map", choices=["auto", "balanced", "balanced_low_0", "sequential"],
                   help="spread a model too big for one device over GPUs, CPU and disk (accelerate)")
    p.add_argument("--max-memory", type=_memory, metavar="DEV=SIZE,...", help="memory caps for --device-map")
    p.add_argument("--offload-folder", help="folder for weights offloaded to disk by --device-map")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run with the same id first")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from moelens.config import TraceConfig
    from moelens.tracing import trace

    cfg = TraceConfig(
        model=args.model, data=args.data, out=args.out, run_id=args.run_id, batch_size=args.batch_size,
        max_length=args.max_length, stride=args.stride, max_docs=args.max_docs, max_tokens=args.max_tokens, device=args.device,
        dtype=args.dtype, logits=args.logits, backend=args.backend, capture=args.capture, mode=args.mode,
        split=args.split, text_column=args.text_column, txt_mode=args.txt_mode, tokenizer=args.tokenizer,
        revision=args.revision, layers=args.layers, remote=args.remote, verify=args.verify,
        overwrite=args.overwrite, progress=not args.no_progress, shard=args.shard, device_map=args.device_map,
        max_memory=args.max_memory, offload_folder=args.offload_folder)
    summary = trace(config=cfg, merge_shards=not args.no_merge)
    console = Console(stderr=False)
    for note in summary.notes:
        console.print(note)
    if summary.documents or summary.skipped or not summary.notes:
        rate = summary.tokens / summary.seconds if summary.seconds else 0.0
        resumed = f", resumed after {summary.resumed}" if summary.resumed else ""
        console.print(f"run [bold]{summary.run_id}[/]: {summary.documents} documents, {summary.tokens:,} tokens, "
                      f"{summary.routes:,} routes in {summary.seconds:.1f}s ({rate:,.0f} tok/s)"
                      f"{resumed}; {summary.skipped} empty documents skipped -> {summary.out}")
    return 0
