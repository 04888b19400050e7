"""Store ingest: routes per second into DuckDB, packed layout versus one row per route.

A synthetic stream shaped like a large MoE (default 48 MoE layers, top-8 of 128 experts) is
written in document batches through the real writer path (``WriteBatch`` -> Arrow -> one
transaction per batch, tokens and documents included), and the same routes are written side by
side the naive way (one Arrow row per route into a plain table). Both run in this process, one
after the other, on fresh files; the ratio is what matters.

    python benchmarks/store_ingest.py                 # 131,072 tokens = 50 M routes
    python benchmarks/store_ingest.py --tokens 32768  # quicker
    python benchmarks/store_ingest.py --doc-id-width  # also: BIGINT doc_id vs the former 32-bit column

``--doc-id-width`` writes the same stream a third time into a run table whose ``doc_id`` column is
the 32-bit INTEGER that runs used before doc_id became BIGINT (alternating with the BIGINT one)
and prints the ratio: the cost of the wider key.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from moelens.store import Store, TraceWriter, WriteBatch


def synthetic_batches(tokens: int, layers: int, k: int, experts: int, doc_len: int, docs_per_batch: int, seed: int):
    rng = np.random.default_rng(seed)
    n_docs = tokens // doc_len
    for first in range(0, n_docs, docs_per_batch):
        docs = list(range(first, min(first + docs_per_batch, n_docs)))
        n_tok = len(docs) * doc_len
        # sorted top-k ids without repeats per token, weights that sum to 1
        ids = np.argsort(rng.random((n_tok * layers, experts), dtype=np.float32), axis=1)[:, :k].astype(np.int16)
        w = rng.random((n_tok * layers, k), dtype=np.float32)
        w /= w.sum(1, keepdims=True)
        tok_doc = np.repeat(np.array(docs, np.int64), doc_len)
        tok_pos = np.tile(np.arange(doc_len, dtype=np.int32), len(docs))
        yield WriteBatch(
            documents=[{"doc_id": d, "domain": "synthetic", "language": "xx", "n_tokens": doc_len, "source": None,
                        "meta": None} for d in docs],
            token_doc=tok_doc, token_pos=tok_pos, token_id=rng.integers(0, 32000, n_tok).astype(np.int32),
            route_doc=np.tile(tok_doc, layers).astype(np.int64), route_pos=np.tile(tok_pos, layers),
            route_site=np.repeat(np.arange(layers, dtype=np.int16), n_tok), experts=ids, weights=w)


def plan_meta(layers: int, k: int, experts: int) -> dict:
    return {"family": "synthetic", "num_layers": layers, "moe_layers": list(range(layers)), "num_experts": experts,
            "top_k": k, "num_shared_experts": 0, "scoring": "softmax",
            "sites": [{"site": i, "path": f"layers.{i}.mlp.gate", "layer": i, "tag": "mlp", "primary": True,
                       "num_experts": experts, "top_k": k} for i in range(layers)]}


def packed(path: Path, batches: list[WriteBatch], layers: int, k: int, experts: int, narrow: bool = False) -> float:
    store = Store(path)
    run = store.create_run(run_id="bench", model="synthetic", dataset="synthetic", dtype="float32", revision=None,
                           plan_meta=plan_meta(layers, k, experts), config={}, logits_width=None)
    if narrow:  # the physical layout of runs made before doc_id became BIGINT
        store.con.execute(f"ALTER TABLE _routes_{run.run_key} ALTER doc_id TYPE INTEGER")
    writer = TraceWriter(store, run, table_k=k)
    start = time.perf_counter()
    for batch in batches:
        writer.submit(batch)
    writer.close()
    store.con.execute("CHECKPOINT")
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def naive(path: Path, batches: list[WriteBatch]) -> float:
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE routes (run_id VARCHAR, doc_id BIGINT, pos INTEGER, layer INTEGER, rank INTEGER, "
                "expert SMALLINT, weight FLOAT)")
    start = time.perf_counter()
    for b in batches:
        n, k = b.experts.shape
        table = pa.table({
            "run_id": pa.array(["bench"] * (n * k)), "doc_id": np.repeat(b.route_doc.astype(np.int64), k),
            "pos": np.repeat(b.route_pos, k), "layer": np.repeat(b.route_site.astype(np.int32), k),
            "rank": np.tile(np.arange(k, dtype=np.int32), n), "expert": b.experts.reshape(-1),
            "weight": b.weights.reshape(-1)})
        con.execute("BEGIN")
        con.register("t", table)
        con.execute("INSERT INTO routes SELECT * FROM t")
        con.execute("COMMIT")
    con.execute("CHECKPOINT")
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=131072)
    p.add_argument("--layers", type=int, default=48)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--experts", type=int, default=128)
    p.add_argument("--doc-len", type=int, default=512)
    p.add_argument("--docs-per-batch", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3, help="alternating repetitions; medians are reported")
    p.add_argument("--doc-id-width", action="store_true", help="also time a 32-bit doc_id route table")
    args = p.parse_args()
    batches = list(synthetic_batches(args.tokens, args.layers, args.k, args.experts, args.doc_len,
                                     args.docs_per_batch, seed=0))
    routes = sum(b.num_routes for b in batches)
    packed_times, naive_times, narrow_times = [], [], []
    for r in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            if args.doc_id_width and r % 2:  # alternate which layout goes first
                narrow_times.append(packed(Path(tmp) / "narrow.duckdb", batches, args.layers, args.k, args.experts, True))
            packed_times.append(packed(Path(tmp) / "packed.duckdb", batches, args.layers, args.k, args.experts))
            size_packed = os.path.getsize(Path(tmp) / "packed.duckdb")
            if args.doc_id_width and not r % 2:
                narrow_times.append(packed(Path(tmp) / "narrow.duckdb", batches, args.layers, args.k, args.experts, True))
            naive_times.append(naive(Path(tmp) / "naive.duckdb", batches))
            size_naive = os.path.getsize(Path(tmp) / "naive.duckdb")
    t_packed, t_naive = statistics.median(packed_times), statistics.median(naive_times)
    print(f"stream: {args.tokens:,} tokens x {args.layers} layers x top-{args.k} of {args.experts} = {routes:,} routes "
          f"in {len(batches)} transactions; {os.cpu_count()} CPUs")
    print(f"packed (moelens writer, tokens+documents included): {t_packed:6.2f} s  {routes / t_packed / 1e6:6.1f} M routes/s"
          f"  {args.tokens / t_packed:9,.0f} tokens/s  {size_packed / routes:.2f} B/route")
    print(f"naive (one Arrow row per route):                    {t_naive:6.2f} s  {routes / t_naive / 1e6:6.1f} M routes/s"
          f"  {args.tokens / t_naive:9,.0f} tokens/s  {size_naive / routes:.2f} B/route")
    print(f"speed-up packed / naive: {t_naive / t_packed:.2f}x  (medians of {args.repeat}; packed runs: "
          + ", ".join(f"{routes / t / 1e6:.1f}" for t in packed_times) + " M routes/s)")
    if narrow_times:
        t_narrow = statistics.median(narrow_times)
        print(f"32-bit doc_id table: {routes / t_narrow / 1e6:6.1f} M routes/s; BIGINT / 32-bit time: "
              f"{t_packed / t_narrow:.3f}  (runs: " + ", ".join(f"{routes / t / 1e6:.1f}" for t in narrow_times) + ")")


if __name__ == "__main__":
    main()
