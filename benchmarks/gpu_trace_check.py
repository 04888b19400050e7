"""End-to-end check of `moelens trace` on a CUDA device: Triton path = torch path; stats = routes.

Saves a random OLMoE-shaped model (bf16), writes token-id documents of varying length, and traces
them on the GPU three times: ``--capture torch``, ``--capture triton`` (compiled kernels) and
``--mode stats``. The Triton run must store exactly the rows of the torch run, and the stats
run's expert counts must equal the counts of the routes. Prints wall times of the three runs.

    python benchmarks/gpu_trace_check.py [--docs 400] [--layers 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    import duckdb
    import numpy as np
    import torch
    import transformers

    import moelens

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=400)
    p.add_argument("--layers", type=int, default=8)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check runs the compiled Triton capture path")
    torch.manual_seed(0)
    cfg = transformers.OlmoeConfig(vocab_size=32000, hidden_size=512, intermediate_size=256, num_hidden_layers=args.layers,
                                   num_attention_heads=8, num_key_value_heads=8, num_experts=64, num_experts_per_tok=8,
                                   max_position_embeddings=2048)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        transformers.OlmoeForCausalLM(cfg).to(torch.bfloat16).save_pretrained(tmp / "model")
        rng = np.random.default_rng(0)
        with open(tmp / "docs.jsonl", "w") as f:
            for i in range(args.docs):
                n = int(rng.integers(16, 700))
                f.write(json.dumps({"input_ids": rng.integers(0, 32000, n).tolist(), "language": f"l{i % 5}"}) + "\n")
        times = {}
        for name, opts in (("torch", {"capture": "torch"}), ("triton", {"capture": "triton"}),
                           ("stats", {"mode": "stats", "capture": "triton"})):
            start = time.perf_counter()
            summary = moelens.trace(str(tmp / "model"), str(tmp / "docs.jsonl"), out=str(tmp / f"{name}.duckdb"),
                                    device="cuda", batch_size=16, max_length=512, progress=False, **opts)
            times[name] = time.perf_counter() - start
            print(f"{name:6s}: {summary.tokens:,} tokens in {times[name]:.1f}s ({summary.tokens / times[name]:,.0f} tok/s)"
                  f"  {'; '.join(summary.notes)}")
        q = "SELECT doc_id, pos, layer, rank, expert, weight FROM routes ORDER BY doc_id, pos, layer, rank"
        a = duckdb.connect(str(tmp / "torch.duckdb"), read_only=True).execute(q).fetchnumpy()
        b = duckdb.connect(str(tmp / "triton.duckdb"), read_only=True).execute(q).fetchnumpy()
        same = all(np.array_equal(a[c], b[c]) for c in a)
        counts = duckdb.connect(str(tmp / "torch.duckdb"), read_only=True).execute(
            "SELECT layer, expert, count(*) FROM routes GROUP BY ALL ORDER BY ALL").fetchall()
        stats = duckdb.connect(str(tmp / "stats.duckdb"), read_only=True).execute(
            "SELECT layer, expert, count FROM stats_expert_counts WHERE label_kind = 'all' ORDER BY ALL").fetchall()
        conf = duckdb.connect(str(tmp / "triton.duckdb"), read_only=True).execute(
            "SELECT count(*), avg(entropy), avg(margin) FROM router_confidence").fetchone()
        print(f"routes rows: {len(a['expert']):,}; triton rows == torch rows: {same}; "
              f"stats counts == routes counts: {counts == stats}; router_confidence rows {conf[0]:,} "
              f"(mean entropy {conf[1]:.3f} nats, mean margin {conf[2]:.3f})")
        if not (same and counts == stats):
            raise SystemExit(1)


if __name__ == "__main__":
    main()
