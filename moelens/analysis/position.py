"""Routing by position in the document: log-spaced position buckets and the experts of the first token.

Buckets are 0 (the first token), 1, 2-3, 4-7, 8-15, ... (:func:`moelens.analysis.labels.position_bucket`).
Per (layer, bucket): tokens, the normalized entropy of the bucket's expert distribution (1 =
uniform), its effective experts ``exp(H)``, and the expert with the largest share
``N(e, bucket) / N(bucket)`` with its lift over the expert's overall share. First-token experts
are the experts with the largest share of position-0 tokens (uniform baseline ``k/E``). For
intervals and significance use ``specialization(routing, "position")``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from moelens.analysis._common import entropy, layer_positions
from moelens.analysis.labels import position_bucket, position_bucket_names

__all__ = ["position_profile", "first_token_experts", "bucket_counts"]


def bucket_counts(experts: np.ndarray, buckets: np.ndarray, n_buckets: int, num_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """``(N[bucket, expert], tokens[bucket])`` for one layer's ``[T, k]`` experts."""
    E = num_experts
    key = np.where(experts >= 0, buckets[:, None].astype(np.int64) * E + experts, n_buckets * E)
    N = np.bincount(key.ravel(), minlength=n_buckets * E + 1)[:-1].reshape(n_buckets, E)
    tokens = np.bincount(buckets[(experts >= 0).any(1)], minlength=n_buckets)
    return N, tokens


def position_profile(routing: Any, layers: Iterable[int] | None = None):
    """One row per (layer, position bucket): tokens, entropy_norm, effective experts, top expert, share, lift."""
    import polars as pl

    b = position_bucket(routing.pos)
    nb = int(b.max()) + 1 if len(b) else 1
    names = position_bucket_names(nb)
    E = routing.num_experts
    rows = []
    for li in layer_positions(routing.layers, layers):
        N, tokens = bucket_counts(routing.experts[li], b, nb, E)
        overall = N.sum(0) / max(tokens.sum(), 1)
        for j in range(nb):
            if tokens[j] == 0:
                continue
            share = N[j] / tokens[j]
            top = int(share.argmax())
            H = float(entropy(N[j]))
            rows.append({"layer": int(routing.layers[li]), "bucket": names[j], "bucket_start": 0 if j == 0 else 2 ** (j - 1),
                         "tokens": int(tokens[j]), "entropy_norm": H / math.log(E) if E > 1 else 0.0,
                         "effective_experts": math.exp(H), "top_expert": top, "top_share": float(share[top]),
                         "top_lift": float(share[top] / overall[top]) if overall[top] > 0 else float("nan")})
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def first_token_experts(routing: Any, layers: Iterable[int] | None = None, top: int = 3):
    """Per layer, the ``top`` experts with the largest share of first tokens (position 0)."""
    import polars as pl

    first = routing.pos == 0
    E = routing.num_experts
    rows = []
    for li in layer_positions(routing.layers, layers):
        e = routing.experts[li]
        N, tokens = bucket_counts(e, first.astype(np.int64), 2, E)
        if tokens[1] == 0:
            continue
        share = N[1] / tokens[1]
        overall = N.sum(0) / tokens.sum()
        k_eff = float((e >= 0).sum()) / max(int((e >= 0).any(1).sum()), 1)
        for rank, x in enumerate(np.argsort(-share, kind="stable")[:top]):
            rows.append({"layer": int(routing.layers[li]), "rank": rank, "expert": int(x), "first_tokens": int(tokens[1]),
                         "share": float(share[x]), "lift": float(share[x] / overall[x]) if overall[x] > 0 else float("nan"),
                         "baseline_share": k_eff / E})
    return pl.DataFrame(rows) if rows else pl.DataFrame()
