"""Token-level parts of the dashboard data: sampled documents, example contexts, per-expert token lists.

Pure numpy over a :class:`~moelens.store.arrays.RunRouting` loaded with gate weights and token
text. Everything here is capped (see :class:`~moelens.viz.sitedata.SiteCaps`) so that the site
stays small whatever the size of the run:

* :func:`sample_documents` - up to ``max_docs`` documents, chosen round-robin over the
  (domain, language) groups in doc_id order so that every group appears, each cut to its first
  ``max_doc_tokens`` tokens, with every layer's experts and weights (per mille);
* :func:`expert_tokens` - per (layer, expert): gate-weight histogram, the most frequent tokens,
  and example contexts (the highest-weight routings of the expert, at most one per document).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["sample_documents", "expert_tokens", "token_texts", "WEIGHT_BINS"]

WEIGHT_BINS = 10  # gate-weight histogram bins over [0, 1]


def token_texts(routing: Any) -> list[str]:
    """Text of every token (``⟨id⟩`` where the run stored no text, ``⟨?⟩`` where it has no id either)."""
    def shown(i: int) -> str:
        return f"\u27e8{i}\u27e9" if i >= 0 else "\u27e8?\u27e9"
    if routing.tokens is not None:
        return [t if t is not None else shown(int(i)) for t, i in zip(routing.tokens, routing.token_id)]
    return [shown(int(i)) for i in routing.token_id]


def _doc_bounds(routing: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    docs = routing.documents["doc_id"].to_numpy().astype(np.int64)
    starts = np.searchsorted(routing.doc_id, docs, side="left")
    ends = np.searchsorted(routing.doc_id, docs, side="right")
    return docs, starts, ends


def choose_documents(routing: Any, max_docs: int) -> list[int]:
    """Row indices into ``routing.documents``: round-robin over (domain, language) groups, doc_id order."""
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


def sample_documents(routing: Any, texts: list[str], max_docs: int, max_doc_tokens: int) -> list[dict[str, Any]]:
    """The token view's documents: text, token ids and ``experts`` / ``weights`` flattened as
    ``[layer][token][rank]`` (weights in per mille, ``-1`` expert = no choice)."""
    docs = routing.documents
    _, starts, ends = _doc_bounds(routing)
    L, _, k = routing.experts.shape
    out = []
    for i in choose_documents(routing, max_docs):
        a, b = int(starts[i]), int(ends[i])
        shown = min(b - a, max_doc_tokens)
        e = routing.experts[:, a:a + shown].astype(np.int64)
        w = routing.weights[:, a:a + shown] if routing.weights is not None else None  # engine imports: none
        row = docs.row(i, named=True)
        out.append({"doc_id": int(row["doc_id"]), "domain": row.get("domain"), "language": row.get("language"),
                    "source": row.get("source"), "n_tokens": int(b - a), "shown_tokens": int(shown),
                    "tokens": texts[a:a + shown], "token_ids": routing.token_id[a:a + shown].astype(int).tolist(),
                    "experts": e.reshape(-1).tolist(),
                    "weights": None if w is None else np.rint(np.where(e >= 0, w, 0) * 1000).astype(int).reshape(-1).tolist()})
    return out


def _contexts(routing: Any, texts: list[str], li: int, per_expert: int, window: int) -> dict[int, list[dict]]:
    """Per expert: its ``per_expert`` highest-weight routings at layer index ``li``, one per document."""
    e = routing.experts[li].astype(np.int64)
    T, k = e.shape
    w = routing.weights[li] if routing.weights is not None else np.broadcast_to(
        (1.0 - np.arange(k) / max(k, 1)).astype(np.float32), e.shape)  # no weights: prefer first choices
    tok, rank = np.nonzero(e >= 0)
    exp, weight, doc = e[tok, rank], w[tok, rank], routing.doc_id[tok]
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
            rows.append({"doc_id": int(routing.doc_id[t]), "pos": int(routing.pos[t]), "rank": int(rank[j]),
                         "weight": float(weight[j]) if routing.weights is not None else None,
                         "before": texts[lo:t], "token": texts[t],
                         "after": texts[t + 1:hi]})
        out[x] = rows
    return out


def expert_tokens(routing: Any, texts: list[str], li: int, *, contexts: int, window: int,
                  frequent: int) -> list[dict[str, Any]]:
    """Per expert at layer index ``li``: ``weight_hist``, ``weight_mean``, ``first_choice`` (rank-0
    count), ``frequent_tokens`` (most frequent token ids routed to it) and ``contexts``."""
    E = routing.num_experts
    e = routing.experts[li].astype(np.int64)
    tok, rank = np.nonzero(e >= 0)
    exp = e[tok, rank]
    w = routing.weights[li][tok, rank] if routing.weights is not None else np.full(len(tok), np.nan, np.float32)
    bins = np.clip((np.nan_to_num(w) * WEIGHT_BINS).astype(np.int64), 0, WEIGHT_BINS - 1)
    hist = np.bincount(exp * WEIGHT_BINS + bins, minlength=E * WEIGHT_BINS).reshape(E, WEIGHT_BINS)
    n = np.bincount(exp, minlength=E)
    wsum = np.bincount(exp, weights=np.nan_to_num(w), minlength=E)
    first = np.bincount(exp[rank == 0], minlength=E)
    known = routing.token_id[tok] >= 0  # engine imports may record no token ids
    ids, tok_known = routing.token_id[tok][known].astype(np.int64), tok[known]
    key = exp[known] * (int(routing.token_id.max(initial=0)) + 1) + ids
    uniq, where, counts = np.unique(key, return_index=True, return_counts=True)
    pair_exp = exp[known][where]
    order = np.lexsort((uniq, -counts, pair_exp))
    p_start = np.searchsorted(pair_exp[order], np.arange(E))
    ctx = _contexts(routing, texts, li, contexts, window)
    out = []
    for x in range(E):
        top = order[p_start[x]:p_start[x] + frequent]
        top = top[pair_exp[top] == x]
        out.append({"weight_hist": hist[x].tolist() if routing.weights is not None else None,
                    "weight_mean": float(wsum[x] / n[x]) if n[x] and routing.weights is not None else None,
                    "first_choice": int(first[x]),
                    "frequent_tokens": [{"token_id": int(ids[where[j]]), "token": texts[int(tok_known[where[j]])],
                                         "count": int(counts[j]), "share": float(counts[j] / n[x])} for j in top],
                    "contexts": ctx.get(x, [])})
    return out
