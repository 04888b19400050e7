"""Stats-mode aggregates as rows of the store's ``_stats_*`` tables (partial sums the views add up).

``--mode stats`` keeps no per-token rows: every router call updates on-device aggregates - expert
counts, co-activation, router-entropy histograms, split by the documents' ``language`` and
``domain`` labels - and each flush turns what accumulated since the previous one into rows that are
committed together with exactly the documents they cover.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["aggregate_tables"]

_TYPES = {"layer": pa.int32(), "label_kind": pa.string(), "label": pa.string(), "expert": pa.int32(),
          "expert_a": pa.int32(), "expert_b": pa.int32(), "bin": pa.int32(), "lo": pa.float32(), "hi": pa.float32(),
          "count": pa.int64(), "tokens": pa.int64()}


def aggregate_tables(host: dict[str, dict[str, np.ndarray]], layer_of_slot: np.ndarray,
                     labels: dict[str, list[str]], run_id: str) -> dict[str, pa.Table]:
    """Rows of ``_stats_expert_counts``, ``_stats_coactivation``, ``_stats_entropy``, ``_stats_tokens``.

    ``host`` is :meth:`moelens.kernels.sinks.StatsSink.drain`'s result (by label kind; the key ""
    when there are no labels); ``label_kind`` 'all' with a NULL label holds the whole run.
    """
    first = next(iter(host.values()))
    layer = layer_of_slot
    L, E = first["expert_counts"].shape
    edges = first["entropy_bin_edges"]
    B = first["entropy_hist"].shape[1]
    counts, entropy, tokens = [], [], []

    def label_rows(kind: str, label: np.ndarray, cnt: np.ndarray, ent: np.ndarray, tok: np.ndarray) -> None:
        lab = np.asarray(label, dtype=object)
        ll, ee = np.meshgrid(np.arange(L), np.arange(E), indexing="ij")
        nz = cnt.reshape(-1) != 0
        counts.append(dict(layer=layer[ll.reshape(-1)][nz], label_kind=[kind] * int(nz.sum()),
                           label=lab[ll.reshape(-1)][nz], expert=ee.reshape(-1)[nz], count=cnt.reshape(-1)[nz]))
        lb, bb = np.meshgrid(np.arange(L), np.arange(B), indexing="ij")
        nz = ent.reshape(-1) != 0
        entropy.append(dict(layer=layer[lb.reshape(-1)][nz], label_kind=[kind] * int(nz.sum()),
                            label=lab[lb.reshape(-1)][nz], bin=bb.reshape(-1)[nz], lo=edges[bb.reshape(-1)][nz],
                            hi=edges[bb.reshape(-1) + 1][nz], count=ent.reshape(-1)[nz]))
        tokens.append(dict(layer=layer, label_kind=[kind] * L, label=lab, tokens=tok))

    label_rows("all", np.full(L, None, dtype=object), first["expert_counts"], first["entropy_hist"], first["tokens"])
    for kind, tables in host.items():
        if not kind:
            continue
        names = labels[kind] + [None]  # the last row collects rows without this label
        for li, name in enumerate(names):
            label_rows(kind, np.full(L, name, dtype=object), tables["label_expert_counts"][:, li],
                       tables["label_entropy_hist"][:, li], tables["label_tokens"][:, li])
    co = first["coactivation"]
    la, ea, eb = np.nonzero(co)
    coactivation = dict(layer=layer[la], expert_a=ea, expert_b=eb, count=co[la, ea, eb])
    return {
        "expert_counts": _table(run_id, counts, ["layer", "label_kind", "label", "expert", "count"]),
        "coactivation": _table(run_id, [coactivation], ["layer", "expert_a", "expert_b", "count"]),
        "entropy": _table(run_id, entropy, ["layer", "label_kind", "label", "bin", "lo", "hi", "count"]),
        "tokens": _table(run_id, tokens, ["layer", "label_kind", "label", "tokens"]),
    }


def _table(run_id: str, parts: list[dict[str, Any]], columns: list[str]) -> pa.Table:
    merged = {c: np.concatenate([np.asarray(p[c], dtype=object if c in ("label", "label_kind") else None)
                                 for p in parts]) if parts else np.empty(0) for c in columns}
    n = len(merged[columns[0]])
    out = {"run_id": pa.array([run_id] * n, pa.string())}
    for c in columns:
        values = merged[c]
        if c in ("label", "label_kind"):
            out[c] = pa.array([None if v is None else str(v) for v in values], _TYPES[c])
        else:
            out[c] = pa.array(values.astype(np.int64 if _TYPES[c] in (pa.int32(), pa.int64()) else np.float32),
                              type=_TYPES[c])
    return pa.table(out)
