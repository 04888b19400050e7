"""End-to-end overhead of `moelens trace` over a plain forward loop on the same documents.

Both variants run in fresh processes, alternately, several rounds; each times itself from before
its heavy imports to the end (imports, model and tokenizer load, tokenization, every forward,
and for the trace: capture, the writer thread and the final commit). The plain loop uses only
transformers: the same windows, batches, padding and forward arguments as the trace.

    python benchmarks/trace_overhead.py                      # embedded model on its eval split
    python benchmarks/trace_overhead.py --model DIR --data FILE.jsonl --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()


def plain(model: str, data: str, batch_size: int, max_length: int) -> float:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moelens.models.loading import resolve_model

    location = resolve_model(model)
    tok = AutoTokenizer.from_pretrained(location)
    net = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32).eval()
    texts = [json.loads(line).get("text", "") for line in open(data, encoding="utf-8") if line.strip()]
    windows = []
    for ids in tok(texts, add_special_tokens=True)["input_ids"]:
        windows += [ids[s:s + max_length] for s in range(0, len(ids), max_length)] if ids else []
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    with torch.inference_mode():
        for b in range(0, len(windows), batch_size):
            batch = windows[b:b + batch_size]
            width = max(len(w) for w in batch)
            ids = np.full((len(batch), width), pad, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for i, w in enumerate(batch):
                ids[i, :len(w)], mask[i, :len(w)] = w, 1
            net(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), use_cache=False,
                logits_to_keep=1)
    return time.perf_counter() - START


def traced(model: str, data: str, batch_size: int, max_length: int, out: str) -> float:
    import moelens

    summary = moelens.trace(model, data, out=out, batch_size=batch_size, max_length=max_length, progress=False)
    assert summary.status == "complete" and summary.documents > 0
    return time.perf_counter() - START


def run_variant(args: argparse.Namespace, variant: str, out: str) -> float:
    cmd = [sys.executable, __file__, "--variant", variant, "--model", args.model, "--data", args.data,
           "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--out", out]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def default_data() -> str:
    from moelens.embedded import eval_split_path

    return str(eval_split_path())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="moelens-mini")
    p.add_argument("--data", default=None, help="jsonl with a text column (default: the embedded eval split)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--copies", type=int, default=1, help="trace the data this many times over (a longer run)")
    p.add_argument("--variant", choices=["plain", "trace"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.data = args.data or default_data()
    if args.variant == "plain":
        print(plain(args.model, args.data, args.batch_size, args.max_length))
        return
    if args.variant == "trace":
        print(traced(args.model, args.data, args.batch_size, args.max_length, args.out))
        return
    times: dict[str, list[float]] = {"plain": [], "trace": []}
    with tempfile.TemporaryDirectory() as tmp:
        if args.copies > 1:
            lines = [line for line in open(args.data, encoding="utf-8") if line.strip()]
            args.data = str(Path(tmp) / "data.jsonl")
            Path(args.data).write_text("".join(lines * args.copies), encoding="utf-8")
        for r in range(args.rounds):
            for variant in ("plain", "trace") if r % 2 == 0 else ("trace", "plain"):
                out = str(Path(tmp) / f"run{r}.duckdb")
                times[variant].append(run_variant(args, variant, out))
    ratios = [t / p for t, p in zip(times["trace"], times["plain"])]
    print(f"model {args.model}, data {args.data} x{args.copies}, batch {args.batch_size}, max_length {args.max_length}")
    for variant, values in times.items():
        print(f"{variant:5s} wall s: " + ", ".join(f"{v:.2f}" for v in values) + f"  (median {statistics.median(values):.2f})")
    print("trace / plain per round: " + ", ".join(f"{r:.3f}" for r in ratios)
          + f"  median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
