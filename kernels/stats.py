"""Stats capture mode: bounded on-device aggregates of routing, whatever the dataset size.

This module owns :class:`StatsTables` (the aggregate tensors), :func:`update_stats_torch`
(the reference update, a few ``scatter_add_`` calls; the fused Triton kernel in
:mod:`moelens.kernels.stats_triton` must match it exactly) and :class:`StatsAccumulator`.

Tables (``L`` layer slots, ``E`` experts, ``B`` entropy bins, ``NL`` labels; label tables have
``NL + 1`` rows, the last one collecting labels outside ``[0, NL)``, e.g. -1 for "unlabelled"):

- ``expert_counts [L, E]``: tokens routed to each expert (dropped ids -1 not counted);
- ``coactivation [L, E, E]``: for each token, +1 at ``(a, b)`` for every ordered pair of its
  recorded experts, both orders and ``a == b``, so the diagonal equals ``expert_counts``;
- ``entropy_hist [L, B]``: router entropies in ``B`` equal bins over ``[0, log E]`` (bin
  ``floor(H * (B / log E))`` in fp32, clamped to ``[0, B-1]``; NaN entropies not binned);
- ``tokens [L]``: valid tokens seen;
- ``label_expert_counts [L, NL+1, E]``, ``label_entropy_hist [L, NL+1, B]``,
  ``label_tokens [L, NL+1]``: the same split by an integer label per token (layer first, like
  every table, so one layer's slice is contiguous).

Every update is device-side with no host synchronisation; padding rows (``valid`` False) add
nothing.
"""

from __future__ import annotations

import math
import logging
from typing import Any

import numpy as np
import torch

from moelens.errors import ConfigError
from moelens.kernels.backend import choose_backend
from moelens.kernels.buffer import record_function
from moelens.kernels.records_torch import RouteRecords
from moelens.kernels.stats_tables import StatsTables, check_update, entropy_bins

__all__ = ["StatsAccumulator", "StatsTables", "update_stats_torch"]

logger = logging.getLogger(__name__)

TABLES = ("expert_counts", "coactivation", "entropy_hist", "tokens",
          "label_expert_counts", "label_entropy_hist", "label_tokens")  # fmt: skip


def update_stats_torch(tables: StatsTables, layer: int, experts: torch.Tensor, entropy: torch.Tensor,
                       labels: torch.Tensor | None = None, valid: torch.Tensor | None = None, *,
                       main: bool = True) -> None:  # fmt: skip
    """Add one layer call's tokens to ``tables`` in place (reference implementation).

    ``main=False`` updates only the label tables: a second label kind of the same tokens, whose
    counts, co-activation and entropy were added by the first call.
    """
    check_update(tables, layer, experts, entropy, labels, valid)
    if not main and labels is None:
        raise ConfigError("main=False updates the label tables only: pass labels.")
    rows, E, dtype = experts.shape[0], tables.num_experts, tables.tokens.dtype
    if rows == 0:
        return
    ids = experts.long()
    row_ok = valid if valid is not None else torch.ones(rows, dtype=torch.bool, device=ids.device)
    hit = row_ok[:, None] & (ids >= 0) & (ids < E)
    safe = ids.clamp(0, E - 1)
    bins, binnable = entropy_bins(tables, entropy)
    binned = (row_ok & binnable).to(dtype)
    if main:
        tables.expert_counts[layer].scatter_add_(0, safe.reshape(-1), hit.reshape(-1).to(dtype))
        pairs = (hit[:, :, None] & hit[:, None, :]).reshape(-1).to(dtype)
        tables.coactivation[layer].view(-1).scatter_add_(0, (safe[:, :, None] * E + safe[:, None, :]).reshape(-1),
                                                         pairs)
        tables.entropy_hist[layer].scatter_add_(0, bins, binned)
        tables.tokens[layer] += row_ok.sum().to(dtype)
    if labels is None:
        return
    lab = labels.long()
    lab = torch.where((lab >= 0) & (lab < tables.num_labels), lab, tables.num_labels)
    flat = (lab[:, None] * E + safe).reshape(-1)
    tables.label_expert_counts[layer].view(-1).scatter_add_(0, flat, hit.reshape(-1).to(dtype))
    tables.label_entropy_hist[layer].view(-1).scatter_add_(0, lab * tables.entropy_bins + bins, binned)
    tables.label_tokens[layer].scatter_add_(0, lab, row_ok.to(dtype))


class StatsAccumulator:
    """Device-resident aggregates of a whole run (module docstring), updated per layer call.

    ``backend`` (``auto|torch|triton``) picks the update and record kernels; ``num_labels``
    enables the per-label tables; ``entropy_bins`` fixes the histogram resolution.
    """

    def __init__(self, num_layers: int, num_experts: int, *, num_labels: int = 0, entropy_bins: int = 32,
                 device: Any = "cpu", backend: str = "auto") -> None:  # fmt: skip
        for name, value, low in (("num_layers", num_layers, 1), ("num_experts", num_experts, 1),
                                 ("num_labels", num_labels, 0), ("entropy_bins", entropy_bins, 1)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name}={value!r} must be an int >= {low}.")
        self.device = torch.device(device)
        self.backend = choose_backend(backend, self.device)
        logger.info("%s: kernel backend %s (requested %s, device %s)", type(self).__name__, self.backend, backend,
                    self.device)  # fmt: skip
        self.tables = StatsTables.zeros(num_layers, num_experts, num_labels=num_labels,
                                        entropy_bins=entropy_bins, device=self.device)  # fmt: skip
        if self.backend == "triton":
            from moelens.kernels.stats_triton import update_stats as update
        else:
            update = update_stats_torch
        self._update = update
        self._record = record_function(self.backend)
        self._scratch: RouteRecords | None = None

    def update(self, layer: int, experts: torch.Tensor, entropy: torch.Tensor,
               labels: torch.Tensor | None = None, valid: torch.Tensor | None = None, *,
               main: bool = True) -> None:  # fmt: skip
        """Add ``experts [T, k]`` (int, -1 = dropped) and ``entropy [T]`` of layer slot ``layer``
        (``main=False``: only the label tables, for a further label kind of the same tokens)."""
        self._update(self.tables, layer, experts, entropy, labels, valid, main=main)

    def observe(self, layer: int, logits: torch.Tensor, topk_ids: torch.Tensor | None = None,
                topk_weights: torch.Tensor | None = None, *, k: int | None = None,
                labels: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> RouteRecords:  # fmt: skip
        """Compute a router call's records on the device, then :meth:`update` with them.

        Returns the records (a scratch buffer reused by the next call).
        """
        rows = logits.shape[0]
        slots = topk_ids.shape[1] if topk_ids is not None and topk_ids.dim() == 2 else k
        if not isinstance(slots, int) or slots < 1:
            raise ConfigError("Pass k (or topk_ids) to say how many experts each token records.")
        if self._scratch is None or self._scratch.num_rows < rows or self._scratch.k != slots:
            self._scratch = RouteRecords.empty(max(rows, 1), slots, device=logits.device)
        out = self._scratch.rows(0, rows)
        self._record(logits, topk_ids, topk_weights, k=k, out=out, valid=valid)
        self.update(layer, out.ids, out.entropy, labels, valid)
        return out

    def reset(self) -> None:
        for name in TABLES:
            getattr(self.tables, name).zero_()

    @property
    def bin_edges(self) -> np.ndarray:
        """The ``B + 1`` entropy bin edges in nats, from 0 to ``log E``."""
        return np.linspace(0.0, math.log(self.tables.num_experts), self.tables.entropy_bins + 1)

    def to_host(self) -> dict[str, np.ndarray]:
        """Dense numpy copies of every table (module docstring) plus ``entropy_bin_edges``.

        Label tables are present only when ``num_labels > 0``. Synchronises once.
        """
        names = TABLES if self.tables.num_labels else TABLES[:4]
        # copies, also on CPU (where .cpu() is the same tensor): reset() must not zero what was returned
        host = {name: getattr(self.tables, name).to("cpu", copy=True).numpy() for name in names}
        host["entropy_bin_edges"] = self.bin_edges
        return host

    def to_columns(self) -> dict[str, dict[str, np.ndarray]]:
        """Long-format columns per table, ready for ``polars.DataFrame(columns)``.

        ``expert_counts``: layer, expert, count; ``coactivation`` (non-zero cells): layer,
        expert_a, expert_b, count; ``entropy_hist``: layer, bin, lo, hi, count; with labels
        also ``label_expert_counts`` (layer, label, expert, count; label NL = out of range).
        """
        host = self.to_host()
        edges = host["entropy_bin_edges"]
        out = {"expert_counts": _long(host["expert_counts"], ("layer", "expert"))}
        co = _long(host["coactivation"], ("layer", "expert_a", "expert_b"))
        keep = co["count"] != 0
        out["coactivation"] = {name: col[keep] for name, col in co.items()}
        hist = _long(host["entropy_hist"], ("layer", "bin"))
        hist["lo"], hist["hi"] = edges[hist["bin"]], edges[hist["bin"] + 1]
        out["entropy_hist"] = hist
        if "label_expert_counts" in host:
            out["label_expert_counts"] = _long(host["label_expert_counts"], ("layer", "label", "expert"))
        return out


def _long(array: np.ndarray, axes: tuple[str, ...]) -> dict[str, np.ndarray]:
    grids = np.meshgrid(*(np.arange(n) for n in array.shape), indexing="ij")
    cols = {name: grid.reshape(-1) for name, grid in zip(axes, grids)}
    cols["count"] = array.reshape(-1)
    return cols
