"""Import speed: engine routing arrays into DuckDB, side by side with the store's own ingest rate.

One synthetic stream shaped like a large MoE (default 48 MoE layers + 1 dense, top-8 of 128
experts, 512-token requests) is written in this process, one after the other on fresh files:

* ``ingest``: the store's writer alone (``WriteBatch`` with gate weights -> DuckDB), as in
  ``benchmarks/store_ingest.py`` - the baseline;
* ``vllm``: ``RequestOutput``-like objects (int32 ``routed_experts [tokens, layers, k]``) through
  ``moelens.sources.from_vllm`` + ``write`` (validation, id mapping, dense-layer detection included);
* ``sglang``: ``/generate`` responses (base64 int32) through ``from_sglang`` + ``write``;
* ``sglang-dump``: recorder ``per_token`` ``.pt`` files (physical ids, 8 slots) read from disk.

Routes/s counts routed choices (tokens x MoE layers x k). Engine imports carry no gate weights,
so they write a third of the values per route that ``ingest`` writes.

    python benchmarks/import_speed.py                  # 131,072 tokens = 50 M routes
    python benchmarks/import_speed.py --tokens 32768   # quicker
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_ingest import packed, plan_meta, synthetic_batches  # noqa: E402


def engine_arrays(tokens: int, layers: int, k: int, experts: int, doc_len: int, seed: int):
    """Per request: token ids and ``[doc_len, layers + 1, k]`` int32 ids (layer 0 dense, zero-filled)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(tokens // doc_len):
        ids = np.zeros((doc_len, layers + 1, k), np.int32)
        ids[:, 1:] = np.argsort(rng.random((doc_len, layers, experts), dtype=np.float32), axis=2)[:, :, :k]
        out.append((rng.integers(0, 32000, doc_len + 1), ids))  # +1: the final token is never routed
    return out


def vllm_objects(requests):
    return [SimpleNamespace(request_id=str(i), prompt_token_ids=list(t[:16]),
                            outputs=[SimpleNamespace(index=0, token_ids=list(t[16:]), routed_experts=r)])
            for i, (t, r) in enumerate(requests)]


def sglang_responses(requests):
    return [{"output_ids": [int(x) for x in t[16:]],
             "meta_info": {"id": str(i), "prompt_tokens": 16, "completion_tokens": len(t) - 16,
                           "routed_experts": base64.b64encode(r.tobytes()).decode()}}
            for i, (t, r) in enumerate(requests)]


def sglang_dump(folder: Path, requests, k: int, experts: int) -> None:
    import torch

    passes, per_pass = [], 8
    for first in range(0, len(requests), per_pass):
        group = requests[first:first + per_pass]
        ids = np.concatenate([t[:-1] for t, _ in group])
        topk = np.full((group[0][1].shape[1], len(ids), 8), -1, np.int32)
        topk[:, :, :k] = np.concatenate([r for _, r in group]).transpose(1, 0, 2)
        topk[0] = -1  # the dense layer records nothing
        passes.append(dict(forward_pass_id=first, rank=0, gatherer_key="primary", input_ids=ids.tolist(),
                           positions=np.concatenate([np.arange(len(t) - 1) for t, _ in group]).tolist(),
                           extend_seq_lens=[len(t) - 1 for t, _ in group], forward_mode=1,
                           topk_ids_of_layer=torch.from_numpy(topk), misc_objects=[],
                           global_physical_count=torch.zeros(1)))
    p2l = torch.arange(experts).repeat(group[0][1].shape[1], 1)
    torch.save(dict(records=passes, last_physical_to_logical_map=p2l), folder / "expert_distribution_recorder_1.0_0.pt")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=131072)
    p.add_argument("--layers", type=int, default=48)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--experts", type=int, default=128)
    p.add_argument("--doc-len", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3, help="alternating repetitions; medians are reported")
    args = p.parse_args()
    from moelens import sources

    batches = list(synthetic_batches(args.tokens, args.layers, args.k, args.experts, args.doc_len, 16, seed=0))
    requests = engine_arrays(args.tokens, args.layers, args.k, args.experts, args.doc_len, seed=1)
    routes = (args.tokens // args.doc_len) * args.doc_len * args.layers * args.k
    objects, responses = vllm_objects(requests), sglang_responses(requests)
    readers = {"vllm": lambda: sources.from_vllm(objects, num_experts=args.experts),
               "sglang": lambda: sources.from_sglang(responses, num_experts=args.experts, top_k=args.k),
               "sglang-dump": lambda: sources.read("sglang-dump", [dumps])}
    times: dict[str, list[tuple[float, float]]] = {"ingest": [], **{name: [] for name in readers}}
    with tempfile.TemporaryDirectory() as tmp:
        dumps = Path(tmp) / "dumps"
        dumps.mkdir()
        sglang_dump(dumps, requests, args.k, args.experts)
        for r in range(args.repeat):
            times["ingest"].append((0.0, packed(Path(tmp) / f"ingest{r}.duckdb", batches, args.layers, args.k,
                                                args.experts)))
            for name, reader in readers.items():
                start = time.perf_counter()
                run = reader()
                read = time.perf_counter() - start
                write = timed(lambda: sources.write(run, Path(tmp) / f"{name}{r}.duckdb"))
                times[name].append((read, write))
                del run
    base = statistics.median(w for _, w in times["ingest"])
    print(f"stream: {args.tokens:,} tokens x {args.layers} MoE layers x top-{args.k} of {args.experts} = {routes:,} "
          f"routes in {args.doc_len}-token requests; {os.cpu_count()} CPUs; medians of {args.repeat}")
    print("             read+check   write   total   M routes/s (total)   vs ingest (total / write only)")
    for name, values in times.items():
        read = statistics.median(v[0] for v in values)
        write = statistics.median(v[1] for v in values)
        total = statistics.median(v[0] + v[1] for v in values)
        print(f"{name:12s} {read:8.2f} s {write:6.2f} s {total:6.2f} s   {routes / total / 1e6:6.1f}"
              f"               {base / total:5.2f}x / {base / write:5.2f}x")


if __name__ == "__main__":
    main()
