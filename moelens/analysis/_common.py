"""Small numeric helpers shared by the analysis modules (no I/O, no polars).

Conventions used everywhere in :mod:`moelens.analysis`:

* a layer's routing is an ``[T, k]`` integer array of expert ids in slot order (slot 0 is the
  router's first choice), ``-1`` where a choice was dropped or not recorded;
* a token is *recorded* at a layer when at least one of its slots is ``>= 0``;
* ``k_eff`` = routed assignments / recorded tokens (``k`` unless choices were dropped) and the
  uniform-routing baseline of an expert's token share is ``k_eff / E``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["entropy", "normalized_entropy", "gini", "counts_per_expert", "recorded", "k_eff", "layer_positions",
           "bh_qvalues", "normal_sf", "comb", "same_doc_next", "set_bitmasks", "popcount_and", "LayerView",
           "layer_views", "Workspace"]


def counts_per_expert(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """``[E]`` number of tokens with each expert among their slots (``-1`` ignored)."""
    flat = experts.reshape(-1)
    return np.bincount(flat.astype(np.intp) + 1, minlength=num_experts + 1)[1:num_experts + 1].astype(np.int64)


def recorded(experts: np.ndarray) -> np.ndarray:
    """``[T]`` bool: the token has at least one routed expert at this layer."""
    return (experts >= 0).any(axis=1)


def k_eff(experts: np.ndarray) -> float:
    """Routed assignments per recorded token (``k`` when nothing was dropped)."""
    n = int(recorded(experts).sum())
    return float((experts >= 0).sum()) / n if n else 0.0


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats of distributions along ``axis`` (``0 log 0 = 0``); ``p`` need not be normalised."""
    p = np.asarray(p, dtype=np.float64)
    total = p.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(total > 0, p / total, 0.0)
        terms = np.where(q > 0, -q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    return terms.sum(axis=axis)


def normalized_entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Entropy divided by ``log(n)`` where ``n`` is the number of categories (1 = uniform)."""
    n = np.asarray(p).shape[axis]
    h = entropy(p, axis)
    return h / math.log(n) if n > 1 else np.zeros_like(h)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when equal, ``(n-1)/n`` when one holds everything."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(2.0 * (ranks * x).sum() / (n * total) - (n + 1) / n)


def layer_positions(layers: np.ndarray, wanted) -> list[int]:
    """Indices into ``layers`` of the decoder-layer numbers in ``wanted`` (all when None)."""
    if wanted is None:
        return list(range(len(layers)))
    from moelens.errors import ConfigError

    out = []
    for layer in wanted:
        hits = np.flatnonzero(np.asarray(layers) == int(layer))
        if not len(hits):
            raise ConfigError(f"layer {layer} is not a traced MoE layer; traced layers: "
                              f"{', '.join(str(int(x)) for x in layers)}.")
        out.append(int(hits[0]))
    return out


def same_doc_next(doc_index: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``[T-1]`` bool: token ``t+1`` is the next position of token ``t``'s document."""
    return (doc_index[1:] == doc_index[:-1]) & (pos[1:] == pos[:-1] + 1)


def normal_sf(z: np.ndarray) -> np.ndarray:
    """Upper tail of the standard normal, ``P(Z > z)``, elementwise (``nan`` stays ``nan``)."""
    z = np.asarray(z, dtype=np.float64)
    erfc = np.frompyfunc(math.erfc, 1, 1)
    out = np.full(z.shape, np.nan)
    ok = ~np.isnan(z)
    out[ok] = 0.5 * erfc(z[ok] / math.sqrt(2.0)).astype(np.float64)
    return out


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) over the non-``nan`` entries of ``p``."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if not m:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    ranked = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    return q


def comb(n: int, r: int) -> int:
    return math.comb(n, r) if 0 <= r <= n else 0


def set_bitmasks(experts: np.ndarray, num_experts: int) -> np.ndarray:
    """``[ceil(E/64), T]`` uint64: bit ``e`` set when expert ``e`` is among the token's slots."""
    slots = np.ascontiguousarray(np.asarray(experts).T)
    return _bitmasks_from_slots(slots, num_experts)


CHUNK = 1 << 15  # tokens per chunk: keeps the temporaries of streaming passes in cache (5-8x faster)


def _bitmasks_from_slots(slots: np.ndarray, num_experts: int, workspace=None) -> np.ndarray:
    words = max(1, -(-num_experts // 64))
    index = np.ascontiguousarray(slots, dtype=np.int16).view(np.uint16)  # -1 (dropped) -> 65535: no bit
    ids = np.arange(num_experts)
    k, T = slots.shape
    masks = np.empty((words, T), np.uint64) if workspace is None else workspace.get("masks", (words, T), np.uint64)
    tables = []
    for w in range(words):
        table = np.zeros(1 << 16, np.uint64)
        mine = (ids >> 6) == w
        table[ids[mine]] = np.left_shift(np.uint64(1), (ids[mine] & 63).astype(np.uint64))
        tables.append(table)
    gathered = np.empty((k, CHUNK), np.uint64)
    for lo in range(0, T, CHUNK):
        hi = min(T, lo + CHUNK)
        part = gathered[:, :hi - lo]
        for w, table in enumerate(tables):
            np.take(table, index[:, lo:hi], out=part)
            np.bitwise_or.reduce(part, axis=0, out=masks[w, lo:hi])
    return masks


def popcount_and(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per column, the number of bits set in both ``a[:, t]`` and ``b[:, t]`` (set-intersection size)."""
    out = np.zeros(a.shape[1], np.int64)
    for w in range(a.shape[0]):
        out += _popcount(a[w] & b[w])
    return out


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _BYTE_BITS[np.ascontiguousarray(x).view(np.uint8)].reshape(len(x), 8).sum(1)


class Workspace:
    """Scratch arrays reused from layer to layer.

    A million-token layer needs temporaries of tens of MB; allocated fresh for each layer, every
    one costs page faults (a third of the run time was system time before these were reused).
    ``get`` hands out a view of a persistent buffer, grown when needed.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        dt = np.dtype(dtype)
        size = int(np.prod(shape)) * dt.itemsize
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < size:
            buf = self._buffers[name] = np.empty(max(size, 1), np.uint8)
        return buf[:size].view(dt).reshape(shape)


class LayerView:
    """One layer of a RunRouting with the derived arrays that several metrics need, computed once.

    ``e`` is the ``[T, k]`` int16 expert array; ``slots`` the same as contiguous ``[k, T]``;
    ``counts`` tokens per expert; ``masks`` the top-k sets as bitmasks; :meth:`keys` builds
    ``base[t] + e[t, r]`` bincount keys (``-1`` slots sent to a sentinel) in a reused buffer.
    """

    def __init__(self, routing, index: int, workspace: Workspace | None = None) -> None:
        self.routing, self.index = routing, index
        self.layer = int(routing.layers[index])
        self.E = int(routing.num_experts)
        self.e = routing.experts[index]
        self.T, self.k = (int(x) for x in self.e.shape)
        self.ws = workspace or Workspace()
        self._cache: dict[str, object] = {}

    def _get(self, name: str, build):
        if name not in self._cache:
            self._cache[name] = build()
        return self._cache[name]

    @property
    def slots(self) -> np.ndarray:
        def build():
            out = self.ws.get("slots", (self.k, self.T), np.int16)
            np.copyto(out, self.e.T)
            return out
        return self._get("slots", build)

    @property
    def dropped(self) -> bool:
        """Some slot is not a routed expert id in ``[0, E)`` (dropped, skipped or an extra expert)."""
        return self._get("dropped", lambda: bool(self.counts.sum() < self.T * self.k))

    @property
    def invalid(self) -> np.ndarray:
        """``[T, k]`` bool: slots that are not routed experts (all False when nothing was dropped)."""
        return self._get("invalid", lambda: (self.e < 0) | (self.e >= self.E) if self.dropped
                         else np.zeros((self.T, self.k), bool))

    @property
    def top1(self) -> np.ndarray:
        return self.slots[0]

    @property
    def recorded(self) -> np.ndarray:
        return self._get("recorded", lambda: (~self.invalid).any(axis=1) if self.dropped
                         else np.ones(self.T, bool))

    @property
    def n_recorded(self) -> int:
        return self._get("n_recorded", lambda: int(self.recorded.sum()) if self.dropped else self.T)

    @property
    def counts(self) -> np.ndarray:
        def build():
            flat = self.slots.reshape(-1).view(np.uint16)  # -1 -> 65535, past every expert id
            out = np.zeros(self.E, np.int64)
            for lo in range(0, len(flat), 32 * CHUNK):
                out += np.bincount(flat[lo:lo + 32 * CHUNK], minlength=self.E)[:self.E]
            return out
        return self._get("counts", build)

    @property
    def k_eff(self) -> float:
        n = self.n_recorded
        return float(self.counts.sum()) / n if n else 0.0

    @property
    def masks(self) -> np.ndarray:
        return self._get("masks", lambda: _bitmasks_from_slots(self.slots, self.E, self.ws))

    def keys(self, base: np.ndarray, sentinel: int, slot: int | None = None) -> np.ndarray:
        """``base[t] + e[t, r]`` as int64 (all slots, ``[T, k]``, or one ``slot``, ``[T]``); invalid slots ->
        ``sentinel``. The buffer is reused by the next call."""
        if slot is None:
            out = self.ws.get("keys", (self.T, self.k), np.int64)
            np.add(base[:, None], self.e, out=out)
            if self.dropped:
                np.copyto(out, sentinel, where=self.invalid)
        else:
            out = self.ws.get("keys1", (self.T,), np.int64)
            col = self.slots[slot]
            np.add(base, col, out=out)
            if self.dropped:
                np.copyto(out, sentinel, where=self.invalid[:, slot])
        return out


def layer_views(routing, layers=None, workspace: Workspace | None = None):
    """A :class:`LayerView` per selected layer, in order, sharing one workspace."""
    ws = workspace or Workspace()
    for index in layer_positions(routing.layers, layers):
        yield LayerView(routing, index, ws)
