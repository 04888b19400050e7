"""Token-level parts of the dashboard data: documents, the search index, example contexts, token lists.

Pure numpy over a :class:`~moelens.store.arrays.RunRouting` loaded with gate weights and token
text. Everything here is capped (see :class:`~moelens.viz.sitedata.SiteCaps`) so that the site
stays bounded whatever the size of the run:

* :func:`token_views` - how each token is shown: its stored text, or, where it holds only some
  bytes of a character (``<0xE7>``, :mod:`moelens.tokentext`), its parts with each fragment's bytes
  and whole character;
* :func:`export_documents` - the token view's documents: all of them up to ``max_docs`` (beyond,
  chosen round-robin over the (domain, language) groups), each cut to ``max_doc_tokens`` tokens,
  with every layer's experts and weights (per mille), in chunks of ``chunk_docs`` documents that
  the page loads when shown;
* :func:`search_index` - every distinct token of the exported documents: its text, what a search
  matches, its occurrences and the documents that hold it;
* :func:`expert_tokens` - per (layer, expert): gate-weight histogram, the most frequent tokens,
  and example contexts (the highest-weight routings of the expert, at most one per document).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moelens.tokentext import Fragment, describe

__all__ = ["export_documents", "search_index", "expert_tokens", "token_texts", "token_views", "choose_documents",
           "WEIGHT_BINS"]

WEIGHT_BINS = 10  # gate-weight histogram bins over [0, 1]


def token_texts(routing: Any) -> list[str]:
    """Stored text of every token (``⟨id⟩`` where the run stored no text, ``⟨?⟩`` where it has no id either)."""
    def shown(i: int) -> str:
        return f"\u27e8{i}\u27e9" if i >= 0 else "\u27e8?\u27e9"
    if routing.tokens is not None:
        return [t if t is not None else shown(int(i)) for t, i in zip(routing.tokens, routing.token_id)]
    return [shown(int(i)) for i in routing.token_id]


def _part(p: str | Fragment) -> Any:
    return p if isinstance(p, str) else [p.hex, p.char, p.first, p.size]


def token_views(routing: Any, texts: list[str]) -> list[Any]:
    """Per token, what the page shows: the stored text (a string), or for a token holding part of a
    character a list of parts - text strings and fragments ``[hex bytes, whole character or null,
    first byte index, bytes in the character]`` - resolved within its document."""
    views: list[Any] = list(texts)
    _, starts, ends = _doc_bounds(routing)
    for a, b in zip(starts.tolist(), ends.tolist()):
        for i, d in enumerate(describe(texts[a:b])):
            if d is not None:
                views[a + i] = [_part(p) for p in d]
        # the ⟨id⟩ placeholders and ordinary text stay strings
    return views


def _doc_bounds(routing: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    docs = routing.documents["doc_id"].to_numpy().astype(np.int64)
    starts = np.searchsorted(routing.doc_id, docs, side="left")
    ends = np.searchsorted(routing.doc_id, docs, side="right")
    return docs, starts, ends


def choose_documents(routing: Any, max_docs: int) -> list[int]:
    """Row indices into ``routing.documents`` of the documents with tokens: all of them when there are
    at most ``max_docs``, else round-robin over (domain, language) groups in doc_id order."""
    docs = routing.documents
    _, starts, ends = _doc_bounds(routing)
    groups: dict[tuple[Any, Any], list[int]] = {}
    domain = docs["domain"].to_list() if "domain" in docs.columns else [None] * docs.height
    language = docs["language"].to_list() if "language" in docs.columns else [None] * docs.height
    for i in range(docs.height):
        if ends[i] > starts[i]:
            groups.setdefault((domain[i], language[i]), []).append(i)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < max_docs and any(depth < len(g) for g in groups.values()):
        for members in groups.values():
            if depth < len(members) and len(chosen) < max_docs:
                chosen.append(members[depth])
        depth += 1
    return sorted(chosen)


def export_documents(routing: Any, views: list[Any], max_docs: int, max_doc_tokens: int,
                     chunk_docs: int) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]], list[tuple[int, int]]]:
    """``(index, chunks, spans)``: the documents' metadata (with the ``chunk`` that holds each), the
    chunks (``tokens``, ``token_ids`` and ``experts`` / ``weights`` flattened as ``[layer][token][slot]``,
    weights in per mille or ``None`` for a run without gate weights (engine imports), ``-1`` expert = no
    choice) and each document's exported token span."""
    docs = routing.documents
    _, starts, ends = _doc_bounds(routing)
    index, chunks, spans = [], [], []
    for n, i in enumerate(choose_documents(routing, max_docs)):
        a, b = int(starts[i]), int(ends[i])
        shown = min(b - a, max_doc_tokens)
        e = routing.experts[:, a:a + shown].astype(np.int64)
        w = routing.weights[:, a:a + shown] if routing.weights is not None else None  # engine imports: none
        row = docs.row(i, named=True)
        if n % chunk_docs == 0:
            chunks.append([])
        index.append({"doc_id": int(row["doc_id"]), "domain": row.get("domain"), "language": row.get("language"),
                      "source": row.get("source"), "n_tokens": int(b - a), "shown_tokens": int(shown),
                      "chunk": len(chunks) - 1})
        chunks[-1].append({"doc_id": int(row["doc_id"]), "tokens": views[a:a + shown],
                           "token_ids": routing.token_id[a:a + shown].astype(int).tolist(),
                           "experts": e.reshape(-1).tolist(),
                           "weights": None if w is None else
                           np.rint(np.where(e >= 0, w, 0) * 1000).astype(int).reshape(-1).tolist()})
        spans.append((a, a + shown))
    return index, chunks, spans


def search_index(routing: Any, texts: list[str], views: list[Any], spans: list[tuple[int, int]]) -> dict[str, Any]:
    """Every distinct token id of the exported documents (``spans``, in document order):
    ``ids``, ``views`` (as shown), ``match`` (the stored text plus the whole characters its
    fragments belong to; what a text search looks in), ``count`` (occurrences) and ``docs``
    (per token: ``[document index, occurrences, ...]`` flattened, over the exported documents)."""
    if not spans:
        return {"ids": [], "views": [], "match": [], "count": [], "docs": []}
    pos = np.concatenate([np.arange(a, b) for a, b in spans])
    doc = np.concatenate([np.full(b - a, n) for n, (a, b) in enumerate(spans)])
    known = routing.token_id[pos] >= 0  # engine imports may record no token ids: nothing to index
    pos, doc = pos[known], doc[known]
    ids = routing.token_id[pos].astype(np.int64)
    order = np.lexsort((doc, ids))
    ids, doc, pos = ids[order], doc[order], pos[order]
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    out: dict[str, Any] = {"ids": uniq.tolist(), "views": [], "match": [], "count": counts.tolist(), "docs": []}
    for j, (f, c) in enumerate(zip(first.tolist(), counts.tolist())):
        occ = pos[f:f + c]
        view = views[int(occ[0])]
        chars = set()
        for p in occ.tolist():
            v = views[p]
            if not isinstance(v, str):
                chars.update(part[1] for part in v if not isinstance(part, str) and part[1])
        out["views"].append(view)
        out["match"].append(texts[int(occ[0])] + ("".join(sorted(chars)) if chars else ""))
        d, n = np.unique(doc[f:f + c], return_counts=True)
        out["docs"].append(np.column_stack([d, n]).reshape(-1).tolist())
    return out


def _contexts(routing: Any, views: list[Any], li: int, per_expert: int, window: int) -> dict[int, list[dict]]:
    """Per expert: its ``per_expert`` highest-weight routings at layer index ``li``, one per document."""
    e = routing.experts[li].astype(np.int64)
    T, k = e.shape
    w = routing.weights[li] if routing.weights is not None else np.broadcast_to(
        (1.0 - np.arange(k) / max(k, 1)).astype(np.float32), e.shape)  # no weights: prefer first choices
    tok, slot = np.nonzero(e >= 0)
    exp, weight, doc = e[tok, slot], w[tok, slot], routing.doc_id[tok]
    # best routing per (expert, document), then the best documents per expert
    order = np.lexsort((tok, -weight, doc, exp))
    first = np.ones(len(order), bool)
    first[1:] = (exp[order][1:] != exp[order][:-1]) | (doc[order][1:] != doc[order][:-1])
    best = order[first]
    best = best[np.lexsort((tok[best], -weight[best], exp[best]))]
    starts = np.searchsorted(exp[best], np.arange(routing.num_experts))
    ends = np.searchsorted(exp[best], np.arange(routing.num_experts), side="right")
    _, doc_start, doc_end = _doc_bounds(routing)
    docs = routing.documents["doc_id"].to_numpy().astype(np.int64)
    out: dict[int, list[dict]] = {}
    for x in range(routing.num_experts):
        rows = []
        for j in best[starts[x]:min(ends[x], starts[x] + per_expert)]:
            t = int(tok[j])
            d = int(np.searchsorted(docs, routing.doc_id[t]))
            lo, hi = max(int(doc_start[d]), t - window), min(int(doc_end[d]), t + window + 1)
            rows.append({"doc_id": int(routing.doc_id[t]), "pos": int(routing.pos[t]), "slot": int(slot[j]),
                         "weight": float(weight[j]) if routing.weights is not None else None,
                         "before": views[lo:t], "token": views[t], "after": views[t + 1:hi]})
        out[x] = rows
    return out


def expert_tokens(routing: Any, views: list[Any], li: int, *, contexts: int, window: int,
                  frequent: int) -> list[dict[str, Any]]:
    """Per expert at layer index ``li``: ``weight_hist``, ``weight_mean``, ``first_choice`` (slot-0
    count), ``frequent_tokens`` (most frequent token ids routed to it) and ``contexts``."""
    E = routing.num_experts
    e = routing.experts[li].astype(np.int64)
    tok, slot = np.nonzero(e >= 0)
    exp = e[tok, slot]
    w = routing.weights[li][tok, slot] if routing.weights is not None else np.full(len(tok), np.nan, np.float32)
    bins = np.clip((np.nan_to_num(w) * WEIGHT_BINS).astype(np.int64), 0, WEIGHT_BINS - 1)
    hist = np.bincount(exp * WEIGHT_BINS + bins, minlength=E * WEIGHT_BINS).reshape(E, WEIGHT_BINS)
    n = np.bincount(exp, minlength=E)
    wsum = np.bincount(exp, weights=np.nan_to_num(w), minlength=E)
    first = np.bincount(exp[slot == 0], minlength=E)
    known = routing.token_id[tok] >= 0  # engine imports may record no token ids
    ids, tok_known = routing.token_id[tok][known].astype(np.int64), tok[known]
    key = exp[known] * (int(routing.token_id.max(initial=0)) + 1) + ids
    uniq, where, counts = np.unique(key, return_index=True, return_counts=True)
    pair_exp = exp[known][where]
    order = np.lexsort((uniq, -counts, pair_exp))
    p_start = np.searchsorted(pair_exp[order], np.arange(E))
    ctx = _contexts(routing, views, li, contexts, window)
    out = []
    for x in range(E):
        top = order[p_start[x]:p_start[x] + frequent]
        top = top[pair_exp[top] == x]
        out.append({"weight_hist": hist[x].tolist() if routing.weights is not None else None,
                    "weight_mean": float(wsum[x] / n[x]) if n[x] and routing.weights is not None else None,
                    "first_choice": int(first[x]),
                    "frequent_tokens": [{"token_id": int(ids[where[j]]), "token": views[int(tok_known[where[j]])],
                                         "count": int(counts[j]), "share": float(counts[j] / n[x])} for j in top],
                    "contexts": ctx.get(x, [])})
    return out
