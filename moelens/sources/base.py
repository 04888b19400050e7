"""The boundary between an engine reader and the store: run metadata plus per-document routing.

A reader turns an engine's files or objects into an :class:`ImportedRun`: a frozen
:class:`ImportSpec` (experts, k, MoE layers, what the source lacks, the engine's options) and either
per-token :class:`Doc` objects or per-layer expert counts (counts-only dumps). Everything is
validated while the run is built, so a bad input raises before anything is written;
:mod:`moelens.sources.write` then stores the run through the same writer as a trace
(:meth:`ImportedRun.batches` yields :class:`moelens.store.WriteBatch` objects).

The id conventions shared by every reader live here too: :func:`logical_ids` maps an engine's
``[tokens, layers, slots]`` id array to logical expert ids (fused shared-expert slots dropped,
sentinels and padding as ``-1``, physical ids through a ``physical_to_logical`` map) and checks
every id against the number of experts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from moelens.errors import ConfigError, EngineFormatError

__all__ = ["ImportOptions", "ImportSpec", "Doc", "ImportedRun", "logical_ids", "moe_layer_mask", "parse_layers",
           "SOURCE_KINDS"]

SOURCE_KINDS = ("vllm", "sglang", "sglang-dump", "megatron", "trtllm")
_RANKS = ("auto", "distinct", "replicated")


def parse_layers(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"1-3,7"`` or a sequence of ints -> sorted unique layer indices (None stays None)."""
    if text is None:
        return None
    if not isinstance(text, str):
        return tuple(sorted({int(x) for x in text}))
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ConfigError(f"cannot read layers {text!r}; write them like 1-3,7.") from None
    return tuple(sorted(out))


@dataclass(frozen=True)
class ImportOptions:
    """What an import needs to know beyond the engine's own files. Built without I/O.

    Attributes:
        num_experts: routed experts per layer (logical). Required where the engine does not
            record it (routed-expert arrays, Megatron traces).
        top_k: routed experts per token; inferred where the data shows it.
        moe_layers: decoder-layer indices that are MoE layers. Default: the layers that carry
            routing (engines fill dense layers with 0 or -1).
        physical_to_logical: ``[layers, physical]`` map of an expert-parallel deployment with
            redundant experts (SGLang's ``physical_to_logical_map``); ids are mapped through it.
        fused_shared_experts: trailing slots that hold fused shared experts (ids ``E .. E+n-1``,
            SGLang's shared-expert fusion); they are checked and dropped.
        sentinels: extra id values that mean "no expert" besides ``-1`` (e.g. 255).
        ranks: ``auto`` | ``distinct`` | ``replicated``: whether the ranks of a multi-rank dump saw
            different tokens (data/attention parallel) or the same ones (tensor parallel, kept
            once). ``auto`` keeps one copy when every rank's data is identical.
        world_size: the number of ranks the dump must have (default: the highest rank + 1).
        model: model name stored in ``runs.model``.
        micro_batch_size: Megatron: sequences per micro-batch (rows are ``[seq, batch]`` order).
        placement: TensorRT-LLM: the EPLB config (YAML) that mapped experts to slots.
    """

    num_experts: int | None = None
    top_k: int | None = None
    moe_layers: tuple[int, ...] | None = None
    physical_to_logical: Any = field(default=None, compare=False, repr=False)
    fused_shared_experts: int = 0
    sentinels: tuple[int, ...] = ()
    ranks: str = "auto"
    world_size: int | None = None
    model: str | None = None
    micro_batch_size: int = 1
    placement: str | None = None

    def __post_init__(self) -> None:
        for name in ("num_experts", "top_k", "world_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.fused_shared_experts < 0 or self.micro_batch_size < 1:
            raise ConfigError("fused_shared_experts must be >= 0 and micro_batch_size >= 1.")
        if self.ranks not in _RANKS:
            raise ConfigError(f"ranks must be one of {', '.join(_RANKS)}, got {self.ranks!r}.")
        object.__setattr__(self, "moe_layers", parse_layers(self.moe_layers))
        object.__setattr__(self, "sentinels", tuple(int(x) for x in self.sentinels))
        if self.physical_to_logical is not None:
            p2l = np.asarray(self.physical_to_logical)
            if p2l.ndim != 2 or not np.issubdtype(p2l.dtype, np.integer):
                raise ConfigError(f"physical_to_logical must be an integer [layers, physical] array, got shape "
                                  f"{p2l.shape} of {p2l.dtype}.")
            object.__setattr__(self, "physical_to_logical", p2l.astype(np.int64))

    def replace(self, **changes: Any) -> "ImportOptions":
        return dataclasses.replace(self, **changes)

    def described(self) -> dict[str, Any]:
        """The options as JSON-able values, for ``runs.config.source.engine``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "physical_to_logical"}
        out["moe_layers"] = list(self.moe_layers) if self.moe_layers is not None else None
        out["sentinels"] = list(self.sentinels)
        out["physical_to_logical"] = None if self.physical_to_logical is None else list(self.physical_to_logical.shape)
        return out


@dataclass(frozen=True)
class ImportSpec:
    """What an imported run is: written to ``runs`` and ``runs.config.source`` (contract 1)."""

    kind: str
    num_experts: int
    top_k: int
    layers: tuple[int, ...]  # decoder-layer index of each MoE layer, ascending
    num_layers: int  # decoder layers including dense ones
    dataset: str
    model: str | None = None
    weights: bool = False
    token_ids: bool = True
    token_text: bool = False
    per_token: bool = True
    engine: dict[str, Any] = field(default_factory=dict, compare=False)

    def source(self) -> dict[str, Any]:
        """``runs.config.source``: where the routing came from and what it lacks."""
        return {"kind": self.kind, "weights": self.weights, "token_text": self.token_text,
                "token_ids": self.token_ids, "per_token": self.per_token, "engine": self.engine}

    def plan_meta(self) -> dict[str, Any]:
        """The routing metadata ``Store.create_run`` records (one primary site per MoE layer)."""
        sites = [{"site": i, "layer": layer, "tag": "mlp", "path": f"{self.kind}:layers.{layer}", "primary": True,
                  "num_experts": self.num_experts, "top_k": self.top_k} for i, layer in enumerate(self.layers)]
        dense = sorted(set(range(self.num_layers)) - set(self.layers))
        return {"family": None, "convention": "import", "scoring": None, "logits_kind": None,
                "num_layers": self.num_layers, "moe_layers": list(self.layers), "dense_layers": dense,
                "num_experts": self.num_experts, "top_k": self.top_k, "num_shared_experts": 0, "sites": sites}


@dataclass
class Doc:
    """One imported document: ``experts[l, t, r]`` for the run's ``layers`` (``-1``: no choice)."""

    doc_id: int
    experts: np.ndarray  # [L, n, k] int16
    token_ids: np.ndarray | None = None  # [n]; None or -1 where the engine gives no id
    meta: dict[str, Any] = field(default_factory=dict)
    domain: str | None = None
    language: str | None = None
    source: str | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.experts.shape[1])

    def row(self) -> dict[str, Any]:
        return {"doc_id": int(self.doc_id), "domain": self.domain, "language": self.language,
                "n_tokens": self.n_tokens, "source": self.source, "meta": self.meta}


@dataclass
class ImportedRun:
    """A validated import, ready to write: per-token documents or per-layer counts."""

    spec: ImportSpec
    docs: list[Doc] = field(default_factory=list)
    counts: np.ndarray | None = None  # [L, E] int64, counts-only runs
    layer_tokens: np.ndarray | None = None  # [L] tokens per layer, counts-only runs
    count_documents: list[dict[str, Any]] = field(default_factory=list)  # documents rows, counts-only runs
    zero_rows_unrecorded: bool = False  # rows of k >= 2 zeros are an engine's fill: written as -1
    unrecorded_rows: int = 0  # such rows found while the batches were built

    @property
    def num_tokens(self) -> int:
        if self.spec.per_token:
            return sum(d.n_tokens for d in self.docs)
        return int(self.layer_tokens.max()) if self.layer_tokens is not None and len(self.layer_tokens) else 0

    def batches(self, docs_per_batch: int = 256, tokens_per_batch: int = 8192) -> Iterator[Any]:
        """:class:`~moelens.store.WriteBatch` objects of complete documents (per-token runs)."""
        from moelens.store import WriteBatch

        L, k = len(self.spec.layers), self.spec.top_k
        group: list[Doc] = []
        size = 0
        for doc in self.docs:
            group.append(doc)
            size += doc.n_tokens
            if len(group) >= docs_per_batch or size >= tokens_per_batch:
                yield self._batch(group, L, k, WriteBatch)
                group, size = [], 0
        if group:
            yield self._batch(group, L, k, WriteBatch)

    def _batch(self, docs: list[Doc], L: int, k: int, WriteBatch: Any) -> Any:
        batch = _batch(docs, L, k, WriteBatch)
        if self.zero_rows_unrecorded and k >= 2:
            zero = ~batch.experts.any(axis=1)
            n = int(zero.sum())
            if n:
                batch.experts[zero] = -1
                self.unrecorded_rows += n
        return batch


def _batch(docs: list[Doc], L: int, k: int, WriteBatch: Any) -> Any:
    n = np.array([d.n_tokens for d in docs], dtype=np.int64)
    N = int(n.sum())
    tok_doc = np.repeat(np.array([d.doc_id for d in docs], dtype=np.int64), n)
    starts = np.repeat(np.cumsum(n) - n, n)
    tok_pos = (np.arange(N, dtype=np.int64) - starts).astype(np.int32)
    ids = np.concatenate([d.token_ids if d.token_ids is not None else np.full(d.n_tokens, -1) for d in docs])
    # docs may hold views of the engine's own arrays: the int16 copy happens here, batch by batch
    experts = (np.concatenate([d.experts for d in docs], axis=1, dtype=np.int16, casting="same_kind") if docs
               else np.empty((L, 0, k), np.int16))
    return WriteBatch(
        documents=[d.row() for d in docs], token_doc=tok_doc, token_pos=tok_pos,
        token_id=ids.astype(np.int32, copy=False), token_text=None,
        route_doc=np.tile(tok_doc, L), route_pos=np.tile(tok_pos, L),
        route_site=np.repeat(np.arange(L, dtype=np.int16), N),
        experts=experts.reshape(L * N, k), weights=np.empty((0, k), np.float32))


def logical_ids(raw: Any, *, what: str, num_experts: int | None, options: ImportOptions,
                layer_axis: int = 1) -> np.ndarray:
    """An engine's ``[tokens, layers, slots]`` ids (``layer_axis=1``; ``0`` for ``[layers, tokens,
    slots]``) as logical ids ``[layers, tokens, k]`` int16, ``-1`` for no choice.

    In order: fused shared-expert slots (the last ``options.fused_shared_experts`` columns, ids
    ``E + j``) are checked and dropped; ``-1`` and ``options.sentinels`` become ``-1``; physical
    ids go through ``options.physical_to_logical`` (one row per layer); every remaining id must
    lie in ``[0, num_experts)``. ``what`` names the input in error messages.
    """
    ids = np.asarray(raw)
    if ids.ndim != 3:
        raise EngineFormatError(f"{what}: expected a [tokens, layers, top_k] array, got shape {tuple(ids.shape)}.")
    if not (np.issubdtype(ids.dtype, np.integer)):
        raise EngineFormatError(f"{what}: expert ids must be integers, got {ids.dtype}.")
    if layer_axis == 1:
        ids = ids.transpose(1, 0, 2)
    F = options.fused_shared_experts
    if not F and options.physical_to_logical is None and not options.sentinels and num_experts is not None \
            and ids.size and ids.dtype.itemsize <= 8:  # the common case, without an int64 copy
        lo, hi = int(ids.min()), int(ids.max())
        if hi < num_experts and lo >= -1:
            return ids.astype(np.int16)
    ids = ids.astype(np.int64, copy=False)
    if F:
        if ids.shape[2] <= F:
            raise EngineFormatError(f"{what}: {ids.shape[2]} slots cannot hold {F} fused shared experts and a routed one.")
        fused = ids[:, :, -F:]
        E = num_experts if num_experts is not None else -1
        want = E + np.arange(F)
        present = fused >= 0
        if E >= 0 and not (np.where(present, fused, want) == want).all():
            bad = fused[present & (fused != want)]
            raise EngineFormatError(f"{what}: the last {F} slot(s) should hold the fused shared expert id(s) "
                                    f"{want.tolist()}, found {int(bad[0])}; check --fused-shared-experts.")
        ids = ids[:, :, :-F]
    none = ids < 0
    for s in options.sentinels:
        none |= ids == s
    p2l = options.physical_to_logical
    if p2l is not None:
        L = ids.shape[0]
        if p2l.shape[0] < L:
            raise EngineFormatError(f"{what}: {L} layers but the physical-to-logical map has {p2l.shape[0]} rows.")
        P = p2l.shape[1]
        if ids.size and (ids[~none] >= P).any():
            raise EngineFormatError(f"{what}: physical expert id {int(ids[~none].max())} >= {P} physical experts in "
                                    "the physical-to-logical map.")
        safe = np.where(none, 0, ids)
        ids = p2l[np.arange(L)[:, None, None], safe]
    ids = np.where(none, -1, ids)
    if num_experts is not None and ids.size and int(ids.max()) >= num_experts:
        layer, token, slot = (int(x[0]) for x in np.nonzero(ids >= num_experts))
        hint = (" (a fused shared expert? pass --fused-shared-experts)" if ids.max() == num_experts else
                " (physical ids of redundant experts? pass --physical-to-logical)")
        raise EngineFormatError(f"{what}: expert id {int(ids[layer, token, slot])} at token {token}, layer {layer}, "
                                f"slot {slot} is >= num_experts={num_experts}{hint}.")
    return ids.astype(np.int16)


def moe_layer_mask(docs_experts: Sequence[np.ndarray], num_layers: int, k: int) -> np.ndarray:
    """``[num_layers]`` bool: the layer carries routing somewhere. Engines fill a dense layer with
    ``-1`` or ``0``; a row of ``k >= 2`` zeros is no routing (a top-k never repeats an expert)."""
    mask = np.zeros(num_layers, dtype=bool)
    for e in docs_experts:
        if not e.size:
            continue
        filled = (e >= 0).any(axis=2)
        if k >= 2:
            filled &= (e != 0).any(axis=2)
        mask |= filled.any(axis=1)
    return mask

