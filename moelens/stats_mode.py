"""Stats mode wiring: per-token labels in, bounded aggregates out, as rows for the store.

``moelens trace --mode stats`` keeps no per-token rows: every router call updates on-device
aggregates (:class:`moelens.kernels.sinks.StatsSink`) - expert counts, co-activation, router
entropy histograms, split by the documents' ``language`` and ``domain`` labels - and the trace
loop commits them, together with the documents they cover, as partial sums that the
``stats_*`` views add up. Memory stays bounded whatever the dataset size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from moelens.collect import logits_transform
from moelens.hooks.events import RouterEvent, StepContext
from moelens.models.discover import ModelPlan

__all__ = ["StatsCollector"]


class StatsCollector:
    """Sink for ``--mode stats``; ``sites`` are the primary router sites to aggregate."""

    def __init__(self, plan: ModelPlan, sites: list[int], *, device: str, backend: str,
                 labels: dict[str, list[str]], entropy_bins: int = 32) -> None:
        from moelens.kernels.sinks import StatsSink

        self.plan = plan
        self.slots = {site: slot for slot, site in enumerate(sorted(sites, key=lambda s: plan.sites[s].layer))}
        self.layer_of_slot = np.array([plan.sites[s].layer for s in self.slots], dtype=np.int64)
        self.labels = labels
        self._index = {kind: {v: i for i, v in enumerate(values)} for kind, values in labels.items()}
        chosen = [plan.sites[s] for s in self.slots]
        self.sink = StatsSink(self.slots, num_experts=max(s.num_experts for s in chosen), k=max(s.top_k for s in chosen),
                              device=device, label_sizes={k: len(v) for k, v in labels.items()},
                              entropy_bins=entropy_bins, backend=backend, logits_transform=logits_transform(plan))
        self.backend = self.sink.backend
        self.device = device

    # -- sink -------------------------------------------------------------------------------
    def on_step(self, ctx: StepContext) -> None:
        self.sink.on_step(ctx)

    def on_route(self, event: RouterEvent) -> None:
        if not self.plan.family.logits_per_expert:  # product-key scores are not [tokens, experts]
            event = RouterEvent(event.site, event.step, event.experts, event.weights, None)
        self.sink.on_route(event)

    def begin_batch(self, batch: list[Any], pending: dict[int, Any], shape: tuple[int, ...]) -> None:
        """Label every row of the next forward with its document's labels (-1 where absent)."""
        seq = int(shape[1])
        out = {}
        for kind, index in self._index.items():
            ids = np.full((len(batch), seq), -1, dtype=np.int64)
            for b, window in enumerate(batch):
                value = pending[window.doc_id].row.get(kind)
                ids[b] = index.get(value, -1) if value is not None else -1
            out[kind] = torch.from_numpy(ids.reshape(-1)).to(self.device)
        self.sink.set_labels(out)

    # -- rows for the store -----------------------------------------------------------------
    def drain_tables(self, run_id: str) -> dict[str, pa.Table]:
        """Partial aggregates since the last call, as rows of the ``_stats_*`` tables."""
        host = self.sink.drain()
        first = next(iter(host.values()))
        layer = self.layer_of_slot
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

        label_none = np.full(L, None, dtype=object)
        label_rows("all", label_none, first["expert_counts"], first["entropy_hist"], first["tokens"])
        for kind, tables in host.items():
            if not kind:
                continue
            names = self.labels[kind] + [None]  # the last row collects rows without this label
            for li, name in enumerate(names):
                lab = np.full(L, name, dtype=object)
                label_rows(kind, lab, tables["label_expert_counts"][:, li], tables["label_entropy_hist"][:, li],
                           tables["label_tokens"][:, li])
        co = first["coactivation"]
        la, ea, eb = np.nonzero(co)
        coactivation = dict(layer=layer[la], expert_a=ea, expert_b=eb, count=co[la, ea, eb])
        return {
            "expert_counts": _table(run_id, counts, ["layer", "label_kind", "label", "expert", "count"]),
            "coactivation": _table(run_id, [coactivation], ["layer", "expert_a", "expert_b", "count"]),
            "entropy": _table(run_id, entropy, ["layer", "label_kind", "label", "bin", "lo", "hi", "count"]),
            "tokens": _table(run_id, tokens, ["layer", "label_kind", "label", "tokens"]),
        }


_TYPES = {"layer": pa.int32(), "label_kind": pa.string(), "label": pa.string(), "expert": pa.int32(),
          "expert_a": pa.int32(), "expert_b": pa.int32(), "bin": pa.int32(), "lo": pa.float32(), "hi": pa.float32(),
          "count": pa.int64(), "tokens": pa.int64()}


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
