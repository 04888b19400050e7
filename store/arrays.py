"""Read a run back as dense numpy arrays: the input format of the analysis suite.

:func:`load_routing` selects a run's rows in SQL (run, layers, documents) and decodes the packed
layout with zero-copy numpy views into a :class:`RunRouting`: tokens in (document, position)
order and, per primary MoE layer, an ``[T, k]`` block of expert ids and weights aligned with them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from moelens.store import schema
from moelens.store.db import Store, fetch_arrow
from moelens.store.packing import unpack_experts, unpack_weights

__all__ = ["RunRouting", "load_routing"]


@dataclass
class RunRouting:
    """One run's routing as arrays. ``experts[l, t, r]`` is the rank-``r`` expert of token ``t`` at
    ``layers[l]`` (``-1``: dropped, skipped, or not recorded); ``weights`` is aligned with it."""

    run_id: str
    num_experts: int
    top_k: int
    layers: np.ndarray  # [L] decoder-layer index of each primary MoE layer
    doc_id: np.ndarray  # [T] int64, sorted by (doc_id, pos)
    pos: np.ndarray  # [T] int32
    token_id: np.ndarray  # [T] int32
    experts: np.ndarray  # [L, T, k] int16
    weights: np.ndarray | None  # [L, T, k] float32 (None if not loaded)
    documents: Any  # polars DataFrame: doc_id, domain, language, n_tokens, source, meta
    config: dict[str, Any] = field(default_factory=dict)
    tokens: list[str | None] | None = None  # token text per token, when loaded

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


def load_routing(db: str | os.PathLike | Store, run_id: str | None = None, *, layers: Iterable[int] | None = None,
                 weights: bool = True, token_text: bool = False, max_docs: int | None = None) -> RunRouting:
    """Load ``run_id`` (or the only run) from a trace database into a :class:`RunRouting`."""
    import polars as pl

    store = db if isinstance(db, Store) else Store(db, read_only=True)
    try:
        info = store.require_run(run_id)
        con = store.con
        sites = con.execute("SELECT site, layer, top_k FROM sites WHERE run_id = ? AND is_primary ORDER BY layer, site",
                            [info.run_id]).fetchall()
        wanted = None if layers is None else {int(x) for x in layers}
        sites = [s for s in sites if wanted is None or s[1] in wanted]
        layer_list = np.array(sorted({s[1] for s in sites}), dtype=np.int64)
        site_to_layer = np.full(max([s[0] for s in sites], default=0) + 1, -1, dtype=np.int64)
        for s in sites:
            site_to_layer[s[0]] = int(np.searchsorted(layer_list, s[1]))
        doc_filter = "" if max_docs is None else f" AND doc_id < (SELECT min(doc_id) FROM documents WHERE run_id = $run) + {int(max_docs)}"
        documents = pl.from_arrow(fetch_arrow(
            con, "SELECT doc_id, domain, language, n_tokens, source, meta FROM documents WHERE run_id = $run"
            f"{doc_filter} ORDER BY doc_id", {"run": info.run_id}))
        tok_cols = "doc_id, pos, token_id" + (", token" if token_text else "")
        toks = fetch_arrow(con, f"SELECT {tok_cols} FROM tokens WHERE run_id = $run{doc_filter} ORDER BY doc_id, pos",
                           {"run": info.run_id})
        doc_id = toks.column("doc_id").to_numpy().astype(np.int64)
        pos = toks.column("pos").to_numpy().astype(np.int32)
        T, k, L = len(doc_id), info.top_k, len(layer_list)
        experts = np.full((L, T, k), -1, dtype=np.int16)
        weight_arr = np.zeros((L, T, k), dtype=np.float32) if weights else None
        if sites and T:
            docs_sorted = documents["doc_id"].to_numpy().astype(np.int64)
            counts = documents["n_tokens"].to_numpy().astype(np.int64)
            offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
            site_list = ", ".join(str(int(s[0])) for s in sites)
            cols = "doc_id, pos, site, experts" + (", weights" if weights else "")
            table = fetch_arrow(
                con, f"SELECT {cols} FROM {schema.route_table(info.run_key)} WHERE site IN ({site_list}){doc_filter}",
                {"run": info.run_id} if doc_filter else None)
            for batch in table.to_batches(max_chunksize=1 << 22):
                r_doc = batch.column(0).to_numpy().astype(np.int64)
                r_pos = batch.column(1).to_numpy().astype(np.int64)
                r_site = batch.column(2).to_numpy()
                tok = offsets[np.searchsorted(docs_sorted, r_doc)] + r_pos
                lay = site_to_layer[r_site]
                words = batch.column(3)
                ew = words.type.list_size
                e = unpack_experts(words.values.to_numpy(zero_copy_only=False).reshape(-1, ew), k)
                experts[lay, tok] = e
                if weights:
                    wcol = batch.column(4)
                    w = unpack_weights(wcol.values.to_numpy(zero_copy_only=False).reshape(-1, wcol.type.list_size), k)
                    weight_arr[lay, tok] = w
        token_list = toks.column("token").to_pylist() if token_text else None
        return RunRouting(info.run_id, info.num_experts, k, layer_list, doc_id, pos,
                          toks.column("token_id").to_numpy().astype(np.int32), experts, weight_arr, documents,
                          info.config, token_list)
    finally:
        if not isinstance(db, Store):
            store.close()
