"""The transformers source: routing recorded by hooks while a model runs over a dataset.

:meth:`TransformersSource.prepare` does everything that can fail on bad input before the run
touches the database - read and check the data, load the model, plan its routers
(:func:`~moelens.pipeline.plan.make_run_plan`), check token ids against the vocabulary - and
returns the :class:`~moelens.pipeline.types.RunSpec`. :meth:`TransformersSource.stream` then
tokenizes documents in chunks, cuts them into windows, runs batches through the model with a
collector attached and yields the capture mode's write batches of finished documents.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

import numpy as np

from moelens.config import TraceConfig
from moelens.errors import EmptyDatasetError, ModelError, option
from moelens.pipeline.modes import PendingDocument, RoutesMode, StatsMode, documents_only
from moelens.pipeline.plan import RunPlan, make_run_plan
from moelens.pipeline.types import RunSpec
from moelens.pipeline.windows import Batcher, Window, cut_context, document_windows
from moelens.store import WriteBatch

__all__ = ["TransformersSource"]

log = logging.getLogger("moelens")
_CHUNK = 64  # documents tokenized together


class TransformersSource:
    """A transformers model run over a dataset (see the module docstring)."""

    kind = "transformers"

    def __init__(self, cfg: TraceConfig) -> None:
        self.cfg = cfg
        self.docs: Any = None
        self.loaded: Any = None
        self.plan: RunPlan | None = None
        self.labels: dict[str, list[str]] = {}
        self.windowed_documents = 0
        self.cut_tokens = 0

    # -- before the database -------------------------------------------------------------------
    def prepare(self) -> RunSpec:
        from moelens.data import load_documents
        from moelens.models.discover import plan_model

        cfg = self.cfg
        self.docs = load_documents(cfg.data, text_column=cfg.text_column, split=cfg.split, txt_mode=cfg.txt_mode)
        if self.docs.has_text:
            _check_not_all_empty(self.docs, cfg.data)
        self.loaded = self._load_model()
        self.plan = make_run_plan(cfg, self.loaded, plan_model(self.loaded.model))
        if not self.docs.has_text:
            self.docs.check_vocabulary(_vocab_size(self.loaded.model))
        elif self.loaded.tokenizer is None:
            raise ModelError(f"model {cfg.model!r} has no tokenizer; pass {option('tokenizer')} (a tokenizer folder or"
                             " id) or give data with an input_ids column.")
        self.labels = _label_vocabulary(self.docs) if cfg.mode == "stats" else {}
        for note in self.plan.notes:
            log.info(note)
        return self._spec()

    @property
    def total(self) -> int:
        """Documents this run covers: the first ``max_docs``, then this shard's share of them."""
        first = len(self.docs) if self.cfg.max_docs is None else min(self.cfg.max_docs, len(self.docs))
        if self.cfg.shard is None:
            return first
        index, count = self.cfg.shard
        return len(range(index, first, count))

    def _mine(self, doc_id: int) -> bool:
        return self.cfg.shard is None or doc_id % self.cfg.shard[1] == self.cfg.shard[0]

    @property
    def notes(self) -> list[str]:
        notes = list(self.plan.notes) if self.plan else []
        if self.windowed_documents:
            stride = self.plan.stride
            carried = self.cfg.max_length - stride
            how = (f"windows overlap by {carried} tokens of context" if carried else
                   f"a window starts without the earlier context; --stride < {self.cfg.max_length} carries it")
            notes.append(f"{self.windowed_documents} documents are longer than --max-length {self.cfg.max_length} and"
                         f" were traced in windows: {self.cut_tokens:,} tokens saw less context than a full-document"
                         f" run would give them ({how}).")
        return notes

    def _load_model(self) -> Any:
        from moelens.models.loading import load_model, load_remote_model

        cfg = self.cfg
        if cfg.remote:
            return load_remote_model(cfg.model, revision=cfg.revision)
        return load_model(cfg.model, device=cfg.device, dtype=cfg.dtype, revision=cfg.revision, tokenizer=cfg.tokenizer,
                          device_map=cfg.device_map, max_memory=cfg.max_memory, offload_folder=cfg.offload_folder)

    def _spec(self) -> RunSpec:
        plan, cfg, loaded = self.plan, self.cfg, self.loaded
        meta = plan.model.metadata()
        meta["sites"] = [s.as_dict() for s in plan.sites]
        config = {"options": {"batch_size": cfg.batch_size, "device": loaded.device, "backend": cfg.backend,
                              "capture": cfg.capture, "device_map": cfg.device_map},
                  "windows": plan.windows_meta(),
                  "source": {"kind": self.kind, "weights": True, "token_text": self.docs.has_text,
                             "token_ids": True, "per_token": cfg.mode == "routes"},
                  "model_location": loaded.location}
        return RunSpec(model=cfg.model, dataset=cfg.data, dtype=loaded.dtype, revision=cfg.revision, plan_meta=meta,
                       config=config, table_k=plan.table_k, logits_width=plan.logits_width if cfg.logits else None,
                       confidence=cfg.mode == "routes" and plan.capture == "triton")

    # -- the run -------------------------------------------------------------------------------
    def stream(self, done: set[int], done_tokens: int, progress: Callable[[int, int], None],
               run_id: str) -> Iterator[WriteBatch]:
        """Write batches of the documents not in ``done``, in document order."""
        import torch

        plan, cfg = self.plan, self.cfg
        mode = StatsMode(plan, progress) if cfg.mode == "stats" else RoutesMode(plan, progress)
        collector = self._collector(mode, run_id)
        forward, hooks = self._forward(collector)
        pad_id = _pad_id(self.loaded.tokenizer)
        with hooks, torch.inference_mode():
            for item in self._windows(done, done_tokens, mode):
                if isinstance(item, WriteBatch):  # an empty document: recorded, never run
                    yield item
                    continue
                ids, mask = _pad(item, pad_id, self.loaded.device)
                collector.begin_batch(item, tuple(ids.shape))
                forward(ids, mask)
                yield from mode.after_batch(item, collector)
            yield from mode.close(collector)

    def _collector(self, mode: Any, run_id: str) -> Any:
        from moelens.pipeline.collectors import DeviceCollector, HostCollector, StatsCollector

        plan, cfg = self.plan, self.cfg
        if cfg.mode == "stats":
            primary = [s.site for s in plan.sites if s.primary]
            return StatsCollector(plan.model, primary, device=plan.device, backend=plan.capture, labels=self.labels,
                                  label_of=lambda w, kind: mode.pending[w.doc_id].row.get(kind), run_id=run_id)
        if plan.capture == "triton":
            return DeviceCollector(plan.model, sorted(plan.site_ids), max_tokens=cfg.batch_size * cfg.max_length,
                                   device=plan.device, backend="triton")
        return HostCollector(plan.model, logits=cfg.logits)

    def _forward(self, collector: Any) -> tuple[Callable[[Any, Any], None], Any]:
        """The forward call for a batch, and the context that attaches the hooks."""
        plan, model = self.plan, self.loaded.model
        if self.cfg.backend == "nnsight":
            from moelens.hooks.nnsight_backend import NNsightRunner

            runner = NNsightRunner(getattr(self.loaded, "wrapper", None) or model, plan.model, collector,
                                   logits=plan.need_logits, layers=plan.layers, remote=self.cfg.remote)
            extra = _forward_kwargs(model)
            return (lambda ids, mask: runner(input_ids=ids, attention_mask=mask, **extra)), contextlib.nullcontext()
        from moelens.hooks.attach import attach

        hooks = attach(model, plan.model, collector, logits=plan.need_logits, verify=self.cfg.verify,
                       layers=plan.layers)
        return _forward_fn(model, plan), hooks

    def _windows(self, done: set[int], done_tokens: int, mode: Any) -> Iterator[list[Window] | WriteBatch]:
        """Batches of windows (and documents-only batches for empty documents), in document order,
        until the token budget (``max_tokens``, counting what earlier calls traced) is spent."""
        cfg = self.cfg
        batcher = Batcher(cfg.batch_size)
        budget = float("inf") if cfg.max_tokens is None else cfg.max_tokens - done_tokens
        first = len(self.docs) if cfg.max_docs is None else min(cfg.max_docs, len(self.docs))
        todo = (doc for doc in self.docs.iter_documents(0, first) if doc.doc_id not in done and self._mine(doc.doc_id))
        for chunk in _chunks(todo, _CHUNK):
            for doc, ids, texts in _tokenize(chunk, self.loaded.tokenizer):
                row = {"doc_id": doc.doc_id, "domain": doc.domain, "language": doc.language,
                       "n_tokens": int(len(ids)), "source": doc.source, "meta": dict(doc.meta)}
                if len(ids) == 0:
                    row["meta"]["skipped"] = "empty"
                    yield documents_only([row])
                    continue
                if budget <= 0:
                    break
                budget -= len(ids)
                windows = document_windows(doc.doc_id, ids, cfg.max_length, cfg.stride)
                if len(windows) > 1:
                    self.windowed_documents += 1
                    self.cut_tokens += cut_context(len(ids), cfg.max_length, cfg.stride)
                mode.add(PendingDocument(row, ids, texts, len(windows)))
                yield from batcher.add(windows)
            if budget <= 0:
                break
        yield from batcher.flush()


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- helpers ---------------------------------------------------------------------------------------

def _check_not_all_empty(docs: Any, data: str) -> None:
    # stops at the first document with text (usually the first one)
    for part in docs.table.column(docs.text_column).chunks:
        for start in range(0, len(part), 4096):
            if any(t is not None and t.strip() for t in part.slice(start, 4096).to_pylist()):
                return
    raise EmptyDatasetError(f"every document in {data} is empty or whitespace-only; nothing to trace.")


def _label_vocabulary(docs: Any) -> dict[str, list[str]]:
    """Distinct values of the label columns present (language, domain), for stats mode."""
    import pyarrow.compute as pc

    vocab = {}
    for column in ("language", "domain"):
        if column in docs.table.column_names:
            values = sorted(v for v in pc.unique(docs.table.column(column).cast("string")).to_pylist() if v is not None)
            if values:
                vocab[column] = values
    return vocab


def _tokenize(chunk: list[Any], tokenizer: Any) -> Iterator[tuple[Any, np.ndarray, list[str | None] | None]]:
    if chunk and chunk[0].input_ids is not None:
        for doc in chunk:
            ids = np.asarray(doc.input_ids or (), dtype=np.int64)
            texts = None if tokenizer is None else tokenizer.convert_ids_to_tokens(ids.tolist())
            yield doc, ids, texts
        return
    texts = [doc.text or "" for doc in chunk]
    blank = [not t.strip() for t in texts]
    enc = tokenizer([t if not b else "" for t, b in zip(texts, blank)], add_special_tokens=True,
                    return_offsets_mapping=getattr(tokenizer, "is_fast", False), truncation=False)
    for i, doc in enumerate(chunk):
        if blank[i]:
            yield doc, np.empty(0, np.int64), None
            continue
        ids = np.asarray(enc["input_ids"][i], dtype=np.int64)
        pieces = tokenizer.convert_ids_to_tokens(enc["input_ids"][i])
        if "offset_mapping" in enc:
            yield doc, ids, token_texts(texts[i], enc["offset_mapping"][i], pieces)
        else:
            yield doc, ids, pieces


def token_texts(text: str, offsets: list[tuple[int, int]], pieces: list[str]) -> list[str]:
    """Each token's stored text: whole characters as text, a character's bytes that a byte-level
    token holds only part of as ``<0xE7>`` (never an empty string); see :mod:`moelens.tokentext`."""
    from moelens.tokentext import token_texts as stored_texts

    return stored_texts(text, offsets, pieces)


def _vocab_size(model: Any) -> int:
    emb = model.get_input_embeddings()
    return int(emb.num_embeddings if hasattr(emb, "num_embeddings") else emb.weight.shape[0])


def _pad_id(tokenizer: Any) -> int:
    if tokenizer is None:
        return 0
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def _pad(batch: list[Window], pad_id: int, device: str):
    import torch

    width = max(len(w.ids) for w in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for i, w in enumerate(batch):
        ids[i, : len(w.ids)] = w.ids
        mask[i, : len(w.ids)] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def _forward_fn(model: Any, plan: RunPlan) -> Callable[[Any, Any], Any]:
    """The cheapest forward that still runs every router the documents pass through."""
    if any(s.tag == "encoder" for s in plan.model.sites) and hasattr(model, "get_encoder"):
        encoder = model.get_encoder()
        return lambda ids, mask: encoder(input_ids=ids, attention_mask=mask)
    extra = _forward_kwargs(model)
    return lambda ids, mask: model(input_ids=ids, attention_mask=mask, **extra)


def _forward_kwargs(model: Any) -> dict[str, Any]:
    import inspect

    params = inspect.signature(model.forward).parameters
    extra: dict[str, Any] = {"use_cache": False} if "use_cache" in params else {}
    if "logits_to_keep" in params:
        extra["logits_to_keep"] = 1  # the LM head over every position is not needed for routing
    return extra
