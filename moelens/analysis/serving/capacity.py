"""Capacity-factor drop simulation: which token-expert assignments a capacity limit would drop.

Each batch of ``T`` consecutive tokens (documents concatenated in stored order, as packed prefill
or training batches are) gives every expert ``capacity = ceil(CF * T * k / E)`` places
(Megatron-Core ``moe_utils.py::get_capacity`` with ``num_tokens = T * topk``; GShard and Switch use
the same formula). An expert asked for more drops the excess; how many are dropped does not
depend on the policy, *which* are dropped does:

* ``position`` - GShard / Switch Transformer: places are taken in batch order, every token's first
  choice before any second choice (GShard's top-2 dispatch, generalised to top-k); Switch (k = 1)
  is the plain batch order. Late tokens of a batch lose.
* ``score`` - Megatron-Core's ``drop_policy="probs"`` (``moe_utils.py::apply_router_token_dropping``:
  each expert keeps the ``capacity`` assignments with the highest routing probability); ties go
  to the earlier (token, slot). Needs the gate weights, so it is unavailable for runs that did
  not record them (engine imports).

At ``CF = E / k`` the capacity is ``T`` and nothing can be dropped (an expert is chosen at most once
per token). The drop rate is the dropped fraction of the layer's routed assignments.
"""

from __future__ import annotations

import math

import numpy as np

from moelens.analysis.serving._kernels import capacity_ranks

__all__ = ["DROP_POLICIES", "capacity", "batch_capacity", "drop_counts", "drop_ranks"]

DROP_POLICIES = ("position", "score")


def capacity(capacity_factor: float, tokens: int, top_k: int, num_experts: int) -> int:
    """``ceil(CF * tokens * k / E)`` places per expert (Megatron-Core ``get_capacity``)."""
    return int(math.ceil(capacity_factor * tokens * top_k / num_experts))


def batch_capacity(num_tokens: int, batch_tokens: int, capacity_factor: float, top_k: int,
                   num_experts: int) -> np.ndarray:
    """``[batches]`` capacity of each batch (the last one may be shorter)."""
    sizes = np.full(-(-num_tokens // batch_tokens), batch_tokens, np.int64)
    if num_tokens % batch_tokens:
        sizes[-1] = num_tokens % batch_tokens
    return np.array([capacity(capacity_factor, int(n), top_k, num_experts) for n in sizes], np.int64)


def drop_counts(experts: np.ndarray, num_experts: int, batch_tokens: int, capacity_factors) -> tuple[np.ndarray, int]:
    """``([len(CF)] dropped assignments, routed assignments)`` of one layer's ``experts[T, k]``,
    the same under every policy: ``sum over (batch, expert) of max(0, demand - capacity)``."""
    T, k = experts.shape
    E = int(num_experts)
    nb = -(-T // batch_tokens) if T else 0
    batch = np.repeat(np.arange(nb, dtype=np.int64), batch_tokens)[:T]
    e = experts.astype(np.int64)
    valid = (e >= 0) & (e < E)
    key = np.where(valid, batch[:, None] * E + e, nb * E)
    demand = np.bincount(key.ravel(), minlength=nb * E + 1)[:nb * E].reshape(nb, E)
    out = []
    for cf in capacity_factors:
        cap = batch_capacity(T, batch_tokens, float(cf), k, E)
        out.append(int(np.maximum(demand - cap[:, None], 0).sum()))
    return np.array(out, np.int64), int(valid.sum())


def drop_ranks(experts: np.ndarray, weights: np.ndarray | None, num_experts: int, batch_tokens: int,
               policy: str, min_caps: np.ndarray | None = None, ws=None) -> np.ndarray:
    """``[T, k]`` queue place of every assignment under ``policy`` (``-1``: empty slot); the assignment
    is dropped at capacity factor CF iff its place is at least its batch's capacity. ``min_caps[batch]``
    (the smallest capacity that will be asked about) lets the score policy skip ordering places that
    no capacity asked about can cut; without it every place is exact."""
    if policy not in DROP_POLICIES:
        from moelens.errors import ConfigError

        raise ConfigError(f"drop policy must be one of {', '.join(DROP_POLICIES)}; got {policy!r}.")
    return capacity_ranks(experts, weights, num_experts, batch_tokens, policy == "score", min_caps, ws)
