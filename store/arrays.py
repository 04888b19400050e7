"""Read a run back as dense numpy arrays: the input format of the analysis suite.

:func:`load_routing` selects a run's rows in SQL (run, layers, documents) and decodes the packed
layout with zero-copy numpy views into a :class:`RunRouting`: tokens in (document, position)
order and, per primary MoE layer, an ``[T, k]`` block of expert ids and weights aligned with them.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from moelens.store import schema
from moelens.store.db import Store, fetch_arrow
from moelens.store.packing import unpack_experts, unpack_weights

__all__ = ["RunRouting", "load_routing", "load_logits", "save_routing", "regular_pages"]


@contextlib.contextmanager
def regular_pages():
    """Turn off numpy's transparent-huge-page advice for large arrays while inside.

    With THP in ``madvise`` mode and ``defrag=madvise`` (a common Linux default), every first
    touch of a large numpy array can stall in the kernel's memory compaction: allocating the
    768 MB expert array of a 1 M-token x 48-layer run took 4-5 s instead of 0.9 s. Restored on exit.
    """
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # pragma: no cover - numpy < 2
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            yield
            return
    previous = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(previous)


@dataclass
class RunRouting:
    """One run's routing as arrays. ``experts[l, t, r]`` is the rank-``r`` expert of token ``t`` at
    ``layers[l]`` (``-1``: dropped, skipped, or not recorded); ``weights`` is aligned with it.

    A looped layer (a router that runs several times per forward) has one slot per pass: its layer
    appears once per pass in ``layers``, and ``passes`` (all 0 otherwise) tells the passes apart.
    """

    run_id: str
    num_experts: int
    top_k: int
    layers: np.ndarray  # [L] decoder-layer index of each primary MoE layer
    doc_id: np.ndarray  # [T] int64, sorted by (doc_id, pos)
    pos: np.ndarray  # [T] int32
    token_id: np.ndarray  # [T] int32
    experts: np.ndarray  # [L, T, k] int16
    weights: np.ndarray | None  # [L, T, k] float32 (None if not loaded, or the run has none)
    documents: Any  # polars DataFrame: doc_id, domain, language, n_tokens, source, meta
    config: dict[str, Any] = field(default_factory=dict)
    tokens: list[str | None] | None = None  # token text per token, when loaded
    passes: np.ndarray | None = None  # [L] loop pass of each slot (None: no looped layer)

    @property
    def num_tokens(self) -> int:
        return int(self.doc_id.shape[0])

    def layer_index(self, layer: int) -> int:
        hits = np.flatnonzero(self.layers == layer)
        if not len(hits):
            raise KeyError(f"layer {layer} is not a traced MoE layer (layers: {self.layers.tolist()})")
        return int(hits[0])

    def doc_index(self) -> np.ndarray:
        """``[T]`` index of each token's document in ``documents`` (sorted by doc_id)."""
        docs = np.asarray(self.documents["doc_id"].to_numpy(), dtype=np.int64)
        return np.searchsorted(docs, self.doc_id)


def _token_index(docs_sorted: np.ndarray, counts: np.ndarray) -> Any:
    """A function mapping (doc_id, pos) arrays to row indices in the (doc_id, pos)-sorted token
    arrays, ``-1`` for a document or position that has no token row."""
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    if len(docs_sorted) and docs_sorted[0] >= 0 and docs_sorted[-1] < 4 * len(docs_sorted) + (1 << 20):
        size = int(docs_sorted[-1]) + 1  # doc ids are row indices in the data: a dense lookup table
        start = np.full(size + 1, -1, dtype=np.int64)
        length = np.zeros(size + 1, dtype=np.int64)
        start[docs_sorted], length[docs_sorted] = offsets, counts

        def index(doc: np.ndarray, pos: np.ndarray) -> np.ndarray:
            d = np.where((doc >= 0) & (doc < size), doc, size)
            return np.where((pos >= 0) & (pos < length[d]), start[d] + pos, -1)
        return index

    def index_sorted(doc: np.ndarray, pos: np.ndarray) -> np.ndarray:
        i = np.minimum(np.searchsorted(docs_sorted, doc), max(len(docs_sorted) - 1, 0))
        ok = (docs_sorted[i] == doc) & (pos >= 0) & (pos < counts[i]) if len(docs_sorted) else np.zeros(len(doc), bool)
        return np.where(ok, offsets[i] + pos, -1)
    return index_sorted


def _place(dest: np.ndarray, tok: np.ndarray, values: np.ndarray) -> None:
    """``dest[tok] = values``, as a straight copy when the rows already come in token order."""
    n = len(tok)
    if n == len(dest) and n and tok[0] == 0 and tok[-1] == n - 1 and (n == 1 or bool((np.diff(tok) == 1).all())):
        dest[...] = values
    else:
        dest[tok] = values


def _words(part: Any, names: list[str]) -> np.ndarray:
    """``[n, words]`` int64 packed words from the named scalar columns of an Arrow table."""
    if len(names) == 1:
        return part.column(names[0]).to_numpy().reshape(-1, 1)
    return np.stack([part.column(name).to_numpy() for name in names], axis=1)


def load_routing(db: str | os.PathLike | Store, run_id: str | None = None, *, layers: Iterable[int] | None = None,
                 weights: bool = True, token_text: bool = False, max_docs: int | None = None) -> RunRouting:
    """Load ``run_id`` (or the only run) from a trace database into a :class:`RunRouting`.

    Each layer's rows are read with one query on the run's physical table (DuckDB skips the row
    groups of other sites) and copied into place; rows for tokens that are not in ``tokens``
    (none in a consistent database) are ignored.
    """
    store = db if isinstance(db, Store) else Store(db, read_only=True)
    try:
        with regular_pages():
            return _load(store, run_id, layers, weights, token_text, max_docs)
    finally:
        if not isinstance(db, Store):
            store.close()


def _load(store: Store, run_id: str | None, layers: Iterable[int] | None, weights: bool, token_text: bool,
          max_docs: int | None) -> RunRouting:
    import polars as pl

    info = store.require_run(run_id)
    con = store.con
    sites = con.execute("SELECT site, layer, top_k, pass FROM sites WHERE run_id = ? AND is_primary"
                        " ORDER BY layer, pass, site", [info.run_id]).fetchall()
    wanted = None if layers is None else {int(x) for x in layers}
    sites = [s for s in sites if wanted is None or s[1] in wanted]
    slots = sorted({(int(s[1]), int(s[3] or 0)) for s in sites})  # one slot per (layer, loop pass)
    slot_of = {slot: i for i, slot in enumerate(slots)}
    layer_list = np.array([layer for layer, _ in slots], dtype=np.int64)
    pass_list = np.array([p for _, p in slots], dtype=np.int64) if any(p for _, p in slots) else None
    doc_filter = ""
    if max_docs is not None:  # the first max_docs documents by doc_id, as a range the scans can prune on
        last = con.execute("SELECT doc_id FROM documents WHERE run_id = ? ORDER BY doc_id LIMIT 1 OFFSET ?",
                           [info.run_id, max(int(max_docs), 1) - 1]).fetchall()
        doc_filter = f" AND doc_id <= {int(last[0][0])}" if last else ""
    documents = pl.from_arrow(fetch_arrow(
        con, "SELECT doc_id, domain, language, n_tokens, source, meta FROM documents WHERE run_id = $run"
        f"{doc_filter} ORDER BY doc_id", {"run": info.run_id}))
    tok_cols = "doc_id, pos, token_id" + (", token" if token_text else "")
    toks = fetch_arrow(con, f"SELECT {tok_cols} FROM tokens WHERE run_id = $run{doc_filter} ORDER BY doc_id, pos",
                       {"run": info.run_id})
    doc_id = toks.column("doc_id").to_numpy().astype(np.int64)
    pos = toks.column("pos").to_numpy().astype(np.int32)
    T, L = len(doc_id), len(layer_list)
    k = max([int(s[2]) for s in sites], default=info.top_k)
    weights = weights and info.weights  # engine imports store no gate weights
    experts = np.full((L, T, k), -1, dtype=np.int16)
    weight_arr = np.zeros((L, T, k), dtype=np.float32) if weights else None
    if sites and T:
        docs_sorted = documents["doc_id"].to_numpy().astype(np.int64)
        counts = documents["n_tokens"].to_numpy().astype(np.int64)
        index = _token_index(docs_sorted, counts)
        table_k = max(int(s[2]) for s in store.con.execute(
            "SELECT site, layer, top_k FROM sites WHERE run_id = ?", [info.run_id]).fetchall())
        if store.dataset is not None:  # a Parquet dataset holds the unpacked public view
            _load_unpacked(con, info.run_id, [(slot_of[(int(layer), int(p or 0))], layer, int(p or 0))
                                             for _, layer, _, p in sites], index, experts, weight_arr, doc_filter)
        else:
            table = schema.route_table(info.run_key)
            e_cols, w_cols = schema.expert_columns(table_k), schema.weight_columns(table_k)
            cols = ", ".join(["doc_id", "pos", *e_cols, *(w_cols if weights else [])])
            params = None
            queries = [(slot_of[(int(layer), int(loop_pass or 0))],
                        f"SELECT {cols} FROM {table} WHERE site = {int(site)}{doc_filter}")
                       for site, layer, _, loop_pass in sites]
            # DuckDB reads the next layer (in a thread, on its own cursor) while numpy places this one
            with ThreadPoolExecutor(max_workers=1) as pool, contextlib.closing(con.cursor()) as cursor:
                pending = pool.submit(fetch_arrow, cursor, queries[0][1], params)
                for n, (li, _) in enumerate(queries):
                    part = pending.result()
                    if n + 1 < len(queries):
                        pending = pool.submit(fetch_arrow, cursor, queries[n + 1][1], params)
                    if part.num_rows == 0:
                        continue
                    part = part.combine_chunks()
                    tok = index(part.column(0).to_numpy().astype(np.int64), part.column(1).to_numpy().astype(np.int64))
                    keep = tok >= 0
                    complete = bool(keep.all())
                    if not complete:
                        tok = tok[keep]
                    e = unpack_experts(_words(part, e_cols), k)
                    _place(experts[li], tok, e if complete else e[keep])
                    if weights:
                        w = unpack_weights(_words(part, w_cols), k)
                        _place(weight_arr[li], tok, w if complete else w[keep])
    token_list = toks.column("token").to_pylist() if token_text else None
    token_ids = toks.column("token_id").fill_null(-1).to_numpy().astype(np.int32)  # -1: no id recorded
    return RunRouting(info.run_id, info.num_experts, k, layer_list, doc_id, pos, token_ids, experts, weight_arr,
                      documents, info.config, token_list, pass_list)


def _load_unpacked(con: Any, run_id: str, slots: list[tuple[int, int, int]], index: Any, experts: Any, weights: Any,
                  doc_filter: str) -> None:
    """Fill ``experts[li]`` (and ``weights[li]``) from the unpacked ``routes`` rows of a dataset;
    ``slots`` holds ``(li, layer, pass)`` and ``index`` maps (doc_id, pos) to token rows."""
    k = experts.shape[2]
    for li, layer, loop_pass in slots:
        part = fetch_arrow(con, "SELECT doc_id, pos, rank, expert, weight FROM routes WHERE run_id = $run AND "
                           f"layer = $layer AND coalesce(pass, 0) = $pass{doc_filter}",
                           {"run": run_id, "layer": int(layer), "pass": int(loop_pass)})
        if not part.num_rows:
            continue
        tok = index(part.column("doc_id").to_numpy().astype(np.int64), part.column("pos").to_numpy().astype(np.int64))
        rank = part.column("rank").to_numpy().astype(np.int64)
        keep = (tok >= 0) & (rank >= 0) & (rank < k)
        expert = part.column("expert").fill_null(-1).to_numpy().astype(np.int16)
        experts[li, tok[keep], rank[keep]] = expert[keep]
        if weights is not None:
            weight = part.column("weight").fill_null(0.0).to_numpy().astype(np.float32)
            weights[li, tok[keep], rank[keep]] = weight[keep]


def load_logits(db: str | os.PathLike | Store, routing: RunRouting, layer: int) -> np.ndarray:
    """``[T, width]`` float32 router logits of ``layer`` aligned with ``routing``'s tokens.

    Rows of tokens without stored logits are ``nan``; columns past a router's own width are
    ``nan`` padding. Raises :class:`~moelens.errors.StoreError` when the run stored no logits.
    """
    from moelens.errors import StoreError

    store = db if isinstance(db, Store) else Store(db, read_only=True)
    try:
        info = store.require_run(routing.run_id)
        table = schema.logits_table(info.run_key)
        if table not in store._tables():
            raise StoreError(f"run {info.run_id!r} has no router logits; trace it again with --logits.")
        site = store.con.execute("SELECT site FROM sites WHERE run_id = ? AND layer = ? AND is_primary ORDER BY site",
                                 [info.run_id, int(layer)]).fetchall()
        if not site:
            raise StoreError(f"run {info.run_id!r} has no router at layer {layer}.")
        with regular_pages():
            part = fetch_arrow(store.con, f"SELECT doc_id, pos, logits FROM {table} WHERE site = {int(site[0][0])}")
            width = part.schema.field("logits").type.list_size
            out = np.full((routing.num_tokens, width), np.nan, dtype=np.float32)
            if part.num_rows:
                part = part.combine_chunks()
                docs = routing.documents
                index = _token_index(docs["doc_id"].to_numpy().astype(np.int64), docs["n_tokens"].to_numpy().astype(np.int64))
                tok = index(part.column(0).to_numpy().astype(np.int64), part.column(1).to_numpy().astype(np.int64))
                values = part.column(2).combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, width)
                keep = tok >= 0
                _place(out, tok[keep], values[keep])
        return out
    finally:
        if not isinstance(db, Store):
            store.close()


def save_routing(routing: RunRouting, db: str | os.PathLike | Store, *, run_id: str | None = None,
                 model: str = "arrays", dataset: str = "arrays", docs_per_batch: int = 256) -> str:
    """Write a :class:`RunRouting` as a new complete run (the inverse of :func:`load_routing`).

    For routing that was not traced by moelens (tests, benchmarks, serving engines' routed-experts
    arrays). Documents are written with their labels and ``meta``; weights default to 0.
    Returns the run id.
    """
    import json

    from moelens.store.writer import TraceWriter, WriteBatch

    store = db if isinstance(db, Store) else Store(db)
    try:
        run_id = run_id or routing.run_id
        L, T, k = routing.experts.shape
        meta = dict((routing.config or {}).get("routing", {}))
        layers = [int(x) for x in routing.layers]
        sites = [{"site": i, "path": f"layers.{layer}.router", "layer": layer, "tag": "mlp", "primary": True,
                  "num_experts": int(routing.num_experts), "top_k": int(k)} for i, layer in enumerate(layers)]
        plan_meta = {"family": meta.get("family", "arrays"), "convention": meta.get("convention", "A"),
                     "scoring": meta.get("scoring", "softmax"), "logits_kind": meta.get("logits_kind", "logits"),
                     "num_layers": max(layers, default=-1) + 1, "moe_layers": layers, "dense_layers": [],
                     "num_experts": int(routing.num_experts), "top_k": int(k), "num_shared_experts": 0, "sites": sites}
        run = store.create_run(run_id=run_id, model=model, dataset=dataset, dtype="float32", revision=None,
                               plan_meta=plan_meta, config={}, logits_width=None)
        docs = routing.documents
        doc_ids = docs["doc_id"].to_numpy().astype(np.int64)
        starts = np.searchsorted(routing.doc_id, doc_ids, side="left")
        ends = np.searchsorted(routing.doc_id, doc_ids, side="right")
        weights = routing.weights if routing.weights is not None else np.zeros(routing.experts.shape, np.float32)
        writer = TraceWriter(store, run, table_k=k)
        rows = docs.to_dicts()
        for lo in range(0, len(rows), docs_per_batch):
            hi = min(len(rows), lo + docs_per_batch)
            a, b = int(starts[lo]), int(ends[hi - 1])
            n = b - a
            batch_docs = [{**r, "n_tokens": int(ends[i] - starts[i]),
                           "meta": json.loads(r["meta"]) if isinstance(r.get("meta"), str) else (r.get("meta") or {})}
                          for i, r in zip(range(lo, hi), rows[lo:hi])]
            writer.submit(WriteBatch(
                documents=batch_docs, token_doc=routing.doc_id[a:b], token_pos=routing.pos[a:b],
                token_id=routing.token_id[a:b], token_text=None if routing.tokens is None else routing.tokens[a:b],
                route_doc=np.tile(routing.doc_id[a:b], L).astype(np.int32), route_pos=np.tile(routing.pos[a:b], L),
                route_site=np.repeat(np.arange(L, dtype=np.int16), n),
                experts=routing.experts[:, a:b].reshape(L * n, k), weights=weights[:, a:b].reshape(L * n, k)))
        writer.close()
        store.set_status(run_id, "complete")
        return run_id
    finally:
        if not isinstance(db, Store):
            store.close()
