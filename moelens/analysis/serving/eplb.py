"""Expert-parallel load balancing: moelens' own implementation of DeepSeek's published EPLB algorithm.

The algorithm is the one of ``deepseek-ai/EPLB`` (``eplb.py``: ``balanced_packing``,
``replicate_experts``, ``rebalance_experts_hierarchical``, ``rebalance_experts``), re-implemented
over numpy with the same tie rules so that its plans come out identical (the README example is a
test). Given an estimated load ``weight[L, E]`` per logical expert:

* **replication** - ``num_replicas - E`` redundant copies go, one at a time, to the expert whose
  load per copy is largest (first such expert on ties); a token of an expert with ``r`` copies
  is assumed to go to each copy with probability ``1/r`` (the engines pick a copy at random or in
  turn), so each copy carries ``load / r``;
* **balanced packing** - items sorted by weight (heaviest first, ties by index) go to the lightest
  pack that still has room, each pack holding ``n / m`` items (first pack on ties);
* **hierarchical policy** (used when ``num_nodes`` divides ``num_groups``, as DeepSeek does for
  prefill): expert groups are packed onto nodes, experts are replicated within each node, and the
  node's physical experts are packed onto its GPUs;
* **global policy** (otherwise, e.g. decode with large EP): the same with one group and one node.

Weights are handled in float32, as ``eplb.py`` does (``weight.float()``), so near-ties resolve the
same way. :class:`EPPlacement` carries the result with DeepSeek's field names (``phy2log``,
``log2phy``, ``logcnt``) and is what the engine exporters consume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moelens.errors import ConfigError

__all__ = ["EPPlacement", "balanced_packing", "replicate_experts", "rebalance_experts", "contiguous_placement"]


@dataclass(frozen=True)
class EPPlacement:
    """An expert-parallel placement of every MoE layer (physical slot ``p`` lives on GPU ``p // (P / num_gpus)``).

    Attributes:
        phy2log: ``[L, P]`` logical expert held by each physical slot.
        log2phy: ``[L, E, R]`` physical slots of each logical expert, ``-1`` padded.
        logcnt: ``[L, E]`` number of copies of each logical expert.
        layers: ``[L]`` decoder-layer index of each row.
        num_gpus, num_nodes, num_groups: the layout the plan was made for.
        policy: ``"hierarchical"``, ``"global"`` or ``"contiguous"`` (no balancing).
    """

    phy2log: np.ndarray
    log2phy: np.ndarray
    logcnt: np.ndarray
    layers: np.ndarray
    num_gpus: int
    num_nodes: int
    num_groups: int
    policy: str = "global"

    @property
    def num_physical(self) -> int:
        return int(self.phy2log.shape[1])

    @property
    def num_redundant(self) -> int:
        return int(self.phy2log.shape[1] - self.logcnt.shape[1])

    def gpu_loads(self, weight: np.ndarray) -> np.ndarray:
        """``[L, num_gpus]`` load of each GPU when ``weight[L, E]`` is served with this placement
        (each copy of an expert takes an equal share of its load)."""
        w = np.asarray(weight, dtype=np.float64)
        if w.shape != self.logcnt.shape:
            raise ConfigError(f"weight has shape {w.shape}; the placement is for {self.logcnt.shape} (layers x experts).")
        per_copy = w / np.maximum(self.logcnt, 1)
        phy = np.take_along_axis(per_copy, self.phy2log, axis=1)
        return phy.reshape(len(w), self.num_gpus, -1).sum(axis=2)

    def to_dict(self) -> dict:
        """JSON-able form (lists), field names as DeepSeek EPLB."""
        return {"phy2log": self.phy2log.tolist(), "log2phy": self.log2phy.tolist(), "logcnt": self.logcnt.tolist(),
                "layers": [int(x) for x in self.layers], "num_gpus": self.num_gpus, "num_nodes": self.num_nodes,
                "num_groups": self.num_groups, "policy": self.policy}


def balanced_packing(weight: np.ndarray, num_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """Pack the ``n`` items of each row of ``weight[X, n]`` into ``num_packs`` packs of ``n / num_packs``
    items each, heaviest item first onto the lightest pack with room (``eplb.py::balanced_packing``).

    When ``num_packs`` does not divide ``n`` the first ``n % num_packs`` packs get one more item (and
    with more packs than items some stay empty): an extension, EPLB itself requires divisibility.
    Returns ``(pack_index, rank_in_pack)``, both ``[X, n]``.
    """
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 2:
        raise ConfigError(f"weight must be [rows, items], got shape {w.shape}.")
    rows, n = w.shape
    if num_packs < 1:
        raise ConfigError(f"cannot pack {n} items into {num_packs} packs.")
    if n == num_packs:  # one item per pack: item i goes to pack i (eplb.py's shortcut)
        return np.broadcast_to(np.arange(n), (rows, n)).copy(), np.zeros((rows, n), np.int64)
    room0 = np.full(num_packs, n // num_packs) + (np.arange(num_packs) < n % num_packs)
    pack_index = np.full((rows, n), -1, np.int64)
    rank_in_pack = np.full((rows, n), -1, np.int64)
    for r in range(rows):
        load = np.zeros(num_packs, np.float32)  # float32 sums, as eplb.py accumulates weight.float() items
        room = room0.copy()
        items = np.zeros(num_packs, np.int64)
        for i in np.argsort(-w[r], kind="stable"):  # heaviest first, ties by index
            pack = int(np.argmin(np.where(room > 0, load, np.inf)))  # lightest with room, lowest index on ties
            pack_index[r, i] = pack
            rank_in_pack[r, i] = items[pack]
            load[pack] += w[r, i]
            items[pack] += 1
            room[pack] -= 1
    return pack_index, rank_in_pack


def replicate_experts(weight: np.ndarray, num_phy: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add ``num_phy - E`` copies, each to the expert with the largest load per copy
    (``eplb.py::replicate_experts``). Returns ``(phy2log [X, num_phy], rank [X, num_phy], logcnt [X, E])``."""
    w = np.asarray(weight, dtype=np.float32)
    rows, num_log = w.shape
    if num_phy < num_log:
        raise ConfigError(f"{num_phy} physical slots cannot hold {num_log} experts.")
    phy2log = np.tile(np.arange(num_phy, dtype=np.int64), (rows, 1))
    rank = np.zeros((rows, num_phy), np.int64)
    logcnt = np.ones((rows, num_log), np.int64)
    arange = np.arange(rows)
    for i in range(num_log, num_phy):
        best = np.argmax(w / logcnt.astype(np.float32), axis=1)  # first maximum on ties, as torch.max
        phy2log[:, i] = best
        rank[:, i] = logcnt[arange, best]
        logcnt[arange, best] += 1
    return phy2log, rank, logcnt


def _inverse(perm: np.ndarray) -> np.ndarray:
    inv = np.empty_like(perm)
    np.put_along_axis(inv, perm, np.broadcast_to(np.arange(perm.shape[1]), perm.shape), axis=1)
    return inv


def _hierarchical(weight: np.ndarray, num_phy: int, num_groups: int, num_nodes: int, num_gpus: int):
    """``eplb.py::rebalance_experts_hierarchical``: groups -> nodes, replicas within nodes, copies -> GPUs."""
    L, E = weight.shape
    group_size = E // num_groups
    groups_per_node = num_groups // num_nodes
    phy_per_gpu = num_phy // num_gpus
    # 1. pack expert groups onto nodes
    per_group = weight.reshape(L, num_groups, group_size).sum(-1, dtype=np.float32)
    gpack, grank = balanced_packing(per_group, num_nodes)
    log2mlog = (((gpack * groups_per_node + grank) * group_size)[:, :, None] + np.arange(group_size)).reshape(L, E)
    mlog2log = _inverse(log2mlog)
    # 2. replicate experts within each node
    per_mlog = np.take_along_axis(weight, mlog2log, axis=1).reshape(L * num_nodes, E // num_nodes)
    phy2mlog, phyrank, mlogcnt = replicate_experts(per_mlog, num_phy // num_nodes)
    # 3. pack each node's physical experts onto its GPUs
    per_phy = np.take_along_axis(per_mlog / mlogcnt.astype(np.float32), phy2mlog, axis=1)
    pack, rank = balanced_packing(per_phy, num_gpus // num_nodes)
    pphy2phy = _inverse(pack * phy_per_gpu + rank)
    pphy2mlog = np.take_along_axis(phy2mlog, pphy2phy, axis=1)
    offsets = np.arange(0, E, E // num_nodes)[None, :, None]
    pphy2mlog = (pphy2mlog.reshape(L, num_nodes, -1) + offsets).reshape(L, -1)
    phy2log = np.take_along_axis(mlog2log, pphy2mlog, axis=1)
    phyrank_out = np.take_along_axis(phyrank, pphy2phy, axis=1).reshape(L, -1)
    logcnt = np.take_along_axis(mlogcnt.reshape(L, -1), log2mlog, axis=1)
    return phy2log, phyrank_out, logcnt


def rebalance_experts(weight: np.ndarray, num_replicas: int, num_groups: int = 1, num_nodes: int = 1,
                      num_gpus: int = 1, layers: np.ndarray | None = None) -> EPPlacement:
    """DeepSeek EPLB's plan for ``weight[L, E]`` on ``num_gpus`` GPUs with ``num_replicas`` physical slots.

    Hierarchical when ``num_nodes`` divides ``num_groups``, global otherwise (``eplb.py::rebalance_experts``).
    """
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 2:
        raise ConfigError(f"weight must be [layers, experts], got shape {w.shape}.")
    L, E = w.shape
    if num_gpus < 1 or num_nodes < 1 or num_groups < 1:
        raise ConfigError("num_gpus, num_nodes and num_groups must be positive.")
    if num_replicas < E:
        raise ConfigError(f"num_replicas ({num_replicas}) must be at least the number of experts ({E}).")
    if num_replicas % num_gpus:
        raise ConfigError(f"num_replicas ({num_replicas}) must be a multiple of num_gpus ({num_gpus}).")
    hierarchical = num_groups % num_nodes == 0
    if hierarchical:
        if E % num_groups:
            raise ConfigError(f"{E} experts do not split into {num_groups} groups.")
        if num_gpus % num_nodes:
            raise ConfigError(f"num_gpus ({num_gpus}) must be a multiple of num_nodes ({num_nodes}).")
        if (E // num_nodes) > num_replicas // num_nodes or num_replicas % num_nodes:
            raise ConfigError(f"num_replicas ({num_replicas}) must split evenly over {num_nodes} nodes.")
        phy2log, phyrank, logcnt = _hierarchical(w, num_replicas, num_groups, num_nodes, num_gpus)
    else:
        phy2log, phyrank, logcnt = _hierarchical(w, num_replicas, 1, 1, num_gpus)
    width = int(logcnt.max()) if logcnt.size else 1
    log2phy = np.full((L, E * width), -1, np.int64)
    np.put_along_axis(log2phy, phy2log * width + phyrank, np.broadcast_to(np.arange(num_replicas), (L, num_replicas)),
                      axis=1)
    lay = np.arange(L, dtype=np.int64) if layers is None else np.asarray(layers, dtype=np.int64)
    # with one group on one node the hierarchical steps are the global policy exactly: name it so
    policy = "hierarchical" if hierarchical and (num_groups > 1 or num_nodes > 1) else "global"
    return EPPlacement(phy2log, log2phy.reshape(L, E, width), logcnt, lay, int(num_gpus), int(num_nodes),
                       int(num_groups), policy)


def contiguous_placement(num_layers: int, num_experts: int, num_gpus: int,
                         layers: np.ndarray | None = None) -> EPPlacement:
    """The engines' default layout: no copies, expert ``e`` on GPU ``e // (E / num_gpus)``."""
    if num_experts % num_gpus:
        raise ConfigError(f"{num_experts} experts do not split evenly over {num_gpus} GPUs; add replicas.")
    phy2log = np.tile(np.arange(num_experts, dtype=np.int64), (num_layers, 1))
    log2phy = phy2log[:, :, None].copy()
    lay = np.arange(num_layers, dtype=np.int64) if layers is None else np.asarray(layers, dtype=np.int64)
    return EPPlacement(phy2log, log2phy, np.ones((num_layers, num_experts), np.int64), lay, int(num_gpus), 1, 1,
                       "contiguous")
