"""Time a full ``moelens report`` on a large synthetic trace (1 M tokens x 48 layers x top-8 of 128).

The database is written through :mod:`moelens.store` (``Store.create_run`` + ``TraceWriter``) and
cached under ``/tmp/moelens_bench/`` so later runs only time the report. Its routing has planted
structure so that every section of the report has something to find:

* every layer: a per-domain expert in slot 0 for 30 % of the domain's tokens, a per-language
  expert in slot 1 for 20 % of its tokens, a per-token-id expert in slot 2 for half of the
  tokens, a first-token expert, and slot 0 copied from the previous token 25 % of the time;
* layers 1, 5, 9, ...: skewed load; layer 5: experts 120-127 never used (dead);
  the last layer collapsed onto 10 experts;
* the ``topic`` key of ``documents.meta`` is assigned at random (must show no specialization).

Usage::

    nice -n 10 python benchmarks/report_speed.py              # build once (cached), then time the report
    nice -n 10 python benchmarks/report_speed.py --rebuild    # rebuild the database first
    python benchmarks/report_speed.py --tokens 100000 --layers 8   # a quick small run

The report runs as a subprocess (``python -m moelens report DB --json --timings``) so the time
includes start-up and imports, exactly what a user waits for; the per-stage times come from the
report's ``--timings`` output on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DOMAINS = ("web", "code", "math", "books", "wiki")
LANGUAGES = ("en", "fr", "de", "ja")
TOPICS = ("alpha", "beta", "gamma")


def _force_slot(rows: np.ndarray, mask: np.ndarray, slot: int, value: np.ndarray) -> None:
    """Put ``value`` in column ``slot`` of the masked rows, keeping each row's experts distinct."""
    sub, val = rows[mask], value[mask].astype(rows.dtype)
    eq = sub == val[:, None]
    has = eq.any(1)
    j = eq.argmax(1)
    r = np.flatnonzero(has)
    sub[r, j[r]] = sub[r, slot]
    sub[:, slot] = val
    rows[mask] = sub


def synth_layer(rng: np.random.Generator, layer: int, n_layers: int, E: int, k: int, doc_of: np.ndarray,
                pos: np.ndarray, token_id: np.ndarray, domain_of_doc: np.ndarray, lang_of_doc: np.ndarray) -> np.ndarray:
    """``[T, k]`` int16 expert ids of one layer, with the structure described in the module docstring."""
    T = len(pos)
    live = E
    if layer == 5:
        live = E - 8  # experts E-8..E-1 dead
    if layer == n_layers - 1:
        live = 10  # collapsed
    subsets = np.argsort(rng.random((4096, live)), axis=1)[:, :k].astype(np.int32)
    if layer % 4 == 1:  # skewed load: rotations drawn from a peaked distribution
        rot = (rng.standard_normal(T) * live / 6).astype(np.int64) % live
    else:
        rot = rng.integers(0, live, T)
    rows = (subsets[rng.integers(0, 4096, T)] + rot[:, None]) % live
    dom = domain_of_doc[doc_of]
    lang = lang_of_doc[doc_of]
    _force_slot(rows, rng.random(T) < 0.5, 2, (token_id.astype(np.int64) * 2654435761 + layer) % live)
    _force_slot(rows, rng.random(T) < 0.2, 1, (layer * 5 + lang * 13 + 3) % live)
    _force_slot(rows, rng.random(T) < 0.3, 0, (layer * 7 + dom * 11) % live)
    same_doc = np.r_[False, doc_of[1:] == doc_of[:-1]]
    copy = same_doc & (rng.random(T) < 0.25)
    prev = np.r_[rows[:1, 0], rows[:-1, 0]]
    _force_slot(rows, copy, 0, prev)
    _force_slot(rows, pos == 0, 0, np.full(T, (layer * 3 + 1) % live))
    return rows.astype(np.int16)


def build(path: Path, *, tokens: int, layers: int, experts: int, k: int, seed: int = 0) -> None:
    from moelens.store import Store, TraceWriter, WriteBatch

    rng = np.random.default_rng(seed)
    lengths = rng.integers(250, 751, size=tokens // 250 + 1)
    ends = np.cumsum(lengths)
    n_docs = int(np.searchsorted(ends, tokens) + 1)
    lengths = lengths[:n_docs]
    lengths[-1] -= int(ends[n_docs - 1] - tokens)
    doc_of = np.repeat(np.arange(n_docs), lengths)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    pos = (np.arange(tokens) - starts[doc_of]).astype(np.int32)
    domain_of_doc = rng.integers(0, len(DOMAINS), n_docs)
    lang_of_doc = rng.integers(0, len(LANGUAGES), n_docs)
    topic_of_doc = rng.integers(0, len(TOPICS), n_docs)
    zipf = np.minimum(rng.zipf(1.3, tokens), 8000) - 1
    token_id = (zipf + 8000 * lang_of_doc[doc_of]).astype(np.int32)
    token_id[pos == 0] = 1  # a BOS token

    print(f"building {path}: {tokens:,} tokens, {n_docs:,} documents, {layers} layers, top-{k} of {experts}", flush=True)
    t0 = time.perf_counter()
    routing = np.empty((layers, tokens, k), np.int16)
    for layer in range(layers):
        routing[layer] = synth_layer(rng, layer, layers, experts, k, doc_of, pos, token_id, domain_of_doc, lang_of_doc)
    print(f"  routing generated in {time.perf_counter() - t0:.1f}s", flush=True)
    weights_row = np.sort(rng.random(k).astype(np.float32))[::-1] / k

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    for p in (tmp, Path(str(tmp) + ".wal")):
        if p.exists():
            p.unlink()
    store = Store(tmp)
    sites = [{"site": i, "path": f"model.layers.{i}.mlp.gate", "layer": i, "tag": "mlp", "primary": True,
              "num_experts": experts, "top_k": k} for i in range(layers)]
    plan_meta = {"family": "synthetic", "convention": "A", "scoring": "softmax", "logits_kind": "logits",
                 "num_layers": layers, "moe_layers": list(range(layers)), "dense_layers": [],
                 "num_experts": experts, "top_k": k, "num_shared_experts": 0, "sites": sites}
    run = store.create_run(run_id="synthetic", model="synthetic-planted", dataset="synthetic", dtype="float32",
                           revision=None, plan_meta=plan_meta, config={}, logits_width=None)
    writer = TraceWriter(store, run, table_k=k)
    per_batch = 200
    for lo in range(0, n_docs, per_batch):
        hi = min(n_docs, lo + per_batch)
        t_lo, t_hi = int(starts[lo]), int(starts[hi - 1] + lengths[hi - 1])
        n = t_hi - t_lo
        docs = [{"doc_id": d, "domain": DOMAINS[domain_of_doc[d]], "language": LANGUAGES[lang_of_doc[d]],
                 "n_tokens": int(lengths[d]), "source": None, "meta": {"topic": TOPICS[topic_of_doc[d]]}}
                for d in range(lo, hi)]
        e = routing[:, t_lo:t_hi].reshape(layers * n, k)
        writer.submit(WriteBatch(
            documents=docs, token_doc=doc_of[t_lo:t_hi].astype(np.int64), token_pos=pos[t_lo:t_hi],
            token_id=token_id[t_lo:t_hi], token_text=None,
            route_doc=np.tile(doc_of[t_lo:t_hi], layers).astype(np.int64), route_pos=np.tile(pos[t_lo:t_hi], layers),
            route_site=np.repeat(np.arange(layers, dtype=np.int16), n), experts=e,
            weights=np.broadcast_to(weights_row, (layers * n, k))))
        print(f"\r  written {hi:,}/{n_docs:,} documents ({time.perf_counter() - t0:.0f}s)", end="", flush=True)
    writer.close()
    store.set_status("synthetic", "complete")
    store.con.execute("CHECKPOINT")
    store.close()
    tmp.rename(path)
    print(f"\n  built in {time.perf_counter() - t0:.1f}s, {path.stat().st_size / 2**30:.2f} GiB", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--experts", type=int, default=128)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--db", help="database path (default: cached under /tmp/moelens_bench/)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached database")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="time the report this many times")
    parser.add_argument("--report-args", default="", help="extra arguments for moelens report")
    args = parser.parse_args(argv)
    # the cache key includes the physical layout, so a store change never reads a stale file
    from moelens.store import schema

    layout = hashlib.sha1(f"{schema.SCHEMA_VERSION}:{schema.route_table_ddl(1, args.k)}".encode()).hexdigest()[:8]
    path = Path(args.db or f"/tmp/moelens_bench/report_{args.tokens}x{args.layers}x{args.experts}k{args.k}_{layout}.duckdb")
    if args.db is None:
        for stale in path.parent.glob(f"report_{args.tokens}x{args.layers}x{args.experts}k{args.k}_*.duckdb"):
            if stale != path:
                stale.unlink()  # an older layout: several GB
    if args.rebuild and path.exists():
        path.unlink()
    if not path.exists():
        build(path, tokens=args.tokens, layers=args.layers, experts=args.experts, k=args.k)
    if args.build_only:
        return 0
    routes = args.tokens * args.layers * args.k
    cmd = [sys.executable, "-m", "moelens", "report", str(path), "--json", "--timings", *args.report_args.split()]
    print(f"$ {' '.join(cmd)}  ({routes / 1e6:.0f} M routes)", flush=True)
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MOELENS_DEBUG": "1"})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        report = json.loads(proc.stdout)
        print(proc.stderr.strip())
        found = {label: len(rows) for label, rows in report["specialization"].items()}
        collapsed = [x["layer"] for x in report["layers"] if x["collapsed"]]
        print(f"report: {wall:.1f}s wall end-to-end; significant specializations {found}; collapsed layers {collapsed}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
