"""``moelens.trace``: run a model over a dataset and store every routing decision in DuckDB.

This is the one module that wires capture to storage. The order of work is chosen so that bad
input never touches the database: check an existing database (lock, corruption, schema), read
and check the data, load the model and find its routers, check token ids against the vocabulary;
only then create (or resume) the run. Documents are tokenized, cut into windows of
``max_length`` tokens (positions stay absolute within the document), batched and run through the
model with hooks attached; finished documents go to the writer thread, which commits them in
transactions. Re-running the same command resumes after the last committed document.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from moelens.config import TraceConfig
from moelens.errors import EmptyDatasetError, RunMismatchError
from moelens.progress import TraceProgress

__all__ = ["trace", "TraceSummary"]


@dataclass
class TraceSummary:
    run_id: str
    out: str
    documents: int = 0  # documents traced by this call
    skipped: int = 0  # empty / whitespace-only documents (recorded with n_tokens = 0)
    tokens: int = 0
    routes: int = 0
    seconds: float = 0.0
    resumed: int = 0  # documents already committed before this call
    status: str = "complete"
    notes: list[str] = field(default_factory=list)


@dataclass
class _Window:
    doc_id: int
    start: int
    ids: np.ndarray


@dataclass
class _Pending:
    """A document whose windows are still being traced."""

    row: dict[str, Any]
    ids: np.ndarray
    tokens: list[str | None] | None
    windows_left: int
    # (positions, sites, experts, weights, logits | None, confidence | None) per router call
    pieces: list[tuple] = field(default_factory=list)


def _default_run_id(model: str, data: str) -> str:
    def stem(x: str) -> str:
        name = Path(x.rstrip("/")).name or x
        return re.sub(r"\.(jsonl|json|csv|parquet|txt)$", "", name)
    return f"{stem(model)}:{stem(data)}"


def trace(model: str | None = None, data: str | None = None, out: str | None = None, *,
          config: TraceConfig | None = None, **options: Any) -> TraceSummary:
    """Trace ``model`` over ``data`` into the DuckDB file ``out``.

    Either pass a :class:`TraceConfig` or the same fields as keyword arguments::

        moelens.trace("moelens-mini", "eval.jsonl", out="runs.duckdb", max_docs=100)

    Returns a :class:`TraceSummary`. Raises typed :class:`~moelens.errors.MoelensError`s for bad
    input, before anything is written. ``KeyboardInterrupt`` leaves every committed document in
    place (the run's status becomes ``interrupted``) and is re-raised.
    """
    if config is None:
        config = TraceConfig(model=model, data=data, out=out, **options)
    return _Tracer(config).run()


class _Tracer:
    def __init__(self, config: TraceConfig) -> None:
        self.cfg = config
        self.summary = TraceSummary(run_id=config.run_id or _default_run_id(config.model, config.data),
                                    out=config.out)

    # -- pre-flight ---------------------------------------------------------------------------
    def _open_existing_store(self):
        from moelens.store import Store

        if Path(self.cfg.out).exists():
            return Store(self.cfg.out)
        return None

    def run(self) -> TraceSummary:
        from moelens.data import load_documents

        cfg = self.cfg
        store = self._open_existing_store()
        try:
            if store is not None and self._already_complete(store):
                return self.summary
            docs = load_documents(cfg.data, text_column=cfg.text_column, split=cfg.split, txt_mode=cfg.txt_mode)
            if docs.has_text:
                self._check_not_all_empty(docs)
            loaded, plan = self._load_model()
            if not docs.has_text:
                docs.check_vocabulary(_vocab_size(loaded.model))
            elif loaded.tokenizer is None:
                from moelens.errors import ModelError

                raise ModelError(f"model {cfg.model!r} has no tokenizer; pass --tokenizer PATH or give data"
                                 " with an input_ids column.")
            if store is None:
                from moelens.store import Store

                store = Store(cfg.out)
            run = self._create_or_resume(store, loaded, plan)
            self._trace(store, run, docs, loaded, plan)
            return self.summary
        finally:
            if store is not None:
                store.close()

    def _already_complete(self, store: Any) -> bool:
        """Check a run of the same id: options must match; a complete run needs no work."""
        existing = store.get_run(self.summary.run_id)
        if existing is None or self.cfg.overwrite:
            return False
        identity = self.cfg.identity()
        before = existing.config.get("identity", {})
        diffs = [k for k in identity if _jsonable(identity[k]) != before.get(k)]
        if diffs:
            k = diffs[0]
            raise RunMismatchError(
                f"run {self.summary.run_id!r} in {self.cfg.out} was traced with {k}={before.get(k)!r}, this command"
                f" has {k}={identity[k]!r}; use another --run-id, or --overwrite to start it again.")
        if existing.status == "complete":
            self.summary.resumed = len(store.done_documents(existing.run_id))
            self.summary.notes.append(f"run {existing.run_id!r} is already complete "
                                      f"({self.summary.resumed} documents); nothing to do.")
            return True
        return False

    def _check_not_all_empty(self, docs: Any) -> None:
        # stops at the first document with text (usually the first one)
        for chunk in docs.table.column(docs.text_column).chunks:
            for start in range(0, len(chunk), 4096):
                if any(t is not None and t.strip() for t in chunk.slice(start, 4096).to_pylist()):
                    return
        raise EmptyDatasetError(f"every document in {self.cfg.data} is empty or whitespace-only; nothing to trace.")

    def _load_model(self):
        from moelens.models.discover import plan_model
        from moelens.models.loading import load_model, load_remote_model

        if self.cfg.remote:
            loaded = load_remote_model(self.cfg.model, revision=self.cfg.revision)
            return loaded, plan_model(loaded.model)
        loaded = load_model(self.cfg.model, device=self.cfg.device, dtype=self.cfg.dtype,
                            revision=self.cfg.revision, tokenizer=self.cfg.tokenizer)
        plan = plan_model(loaded.model)
        return loaded, plan

    def _create_or_resume(self, store: Any, loaded: Any, plan: Any):
        cfg = self.cfg
        run_id = self.summary.run_id
        identity = cfg.identity()
        existing = store.get_run(run_id)
        if existing is not None and cfg.overwrite:
            store.delete_run(run_id)
            existing = None
        if existing is not None:  # options were checked by _already_complete
            self.summary.resumed = len(store.done_documents(run_id))
            return existing
        meta = plan.metadata()
        sites = [s for s in plan.sites if self._keep_site(s)]
        meta["sites"] = [s.as_dict() for s in sites]
        logits_width = _logits_width(plan, {s.site for s in sites}) if cfg.logits else None
        config = {"identity": {k: _jsonable(v) for k, v in identity.items()},
                  "options": {"batch_size": cfg.batch_size, "device": loaded.device, "backend": cfg.backend,
                              "capture": cfg.capture},
                  "model_location": loaded.location}
        confidence = cfg.mode == "routes" and self._backend(plan, loaded) == "triton"
        self.summary.notes.clear()  # the backend note is made again when the loop starts
        return store.create_run(run_id=run_id, model=cfg.model, dataset=cfg.data, dtype=loaded.dtype,
                                revision=cfg.revision, plan_meta=meta, config=config, logits_width=logits_width,
                                confidence=confidence)

    def _keep_site(self, site: Any) -> bool:
        if self.cfg.layers is not None and site.layer not in self.cfg.layers:
            return False
        # Documents go through the encoder of encoder-decoder models; decoder routers never see them.
        return site.tag != "decoder"

    # -- the loop -----------------------------------------------------------------------------
    def _backend(self, plan: Any, loaded: Any) -> str:
        """``torch`` or ``triton``: the kernels that reduce routing on the device for this run."""
        import torch

        from moelens.kernels import choose_backend

        if loaded.dtype == "remote":
            return "torch"
        backend = choose_backend(self.cfg.capture, torch.device(loaded.device))
        if backend == "triton" and self.cfg.mode == "routes" and plan.family.family in ("zaya", "doge"):
            self._note(f"{plan.family.family} routers do not return [tokens, experts] logits; capturing with the"
                       " torch path instead of the Triton record kernels")
            return "torch"
        return backend

    def _collector(self, plan: Any, kept: set[int], loaded: Any) -> tuple[Any, bool]:
        """The sink for this run's capture path, and whether it needs the router logits."""
        from moelens.collect import BatchCollector, DeviceCollector

        cfg = self.cfg
        backend = self._backend(plan, loaded)
        if cfg.mode == "stats":
            from moelens.stats_mode import StatsCollector

            collector = StatsCollector(plan, sorted(s for s in kept if plan.sites[s].primary), device=loaded.device,
                                       backend=backend, labels=self._stats_labels)
            self._note(f"stats mode: aggregates on {loaded.device} with the {collector.backend} kernels")
            return collector, True
        if backend == "triton":
            collector = DeviceCollector(plan, sorted(kept), max_tokens=cfg.batch_size * cfg.max_length,
                                        device=loaded.device, backend="triton")
            self._note(f"capture path: Triton record kernels on {loaded.device}")
            return collector, True
        if cfg.capture != "torch":
            self._note(f"capture path: torch (no CUDA device for the Triton kernels on {loaded.device})")
        return BatchCollector(plan, logits=cfg.logits), cfg.logits

    def _note(self, message: str) -> None:
        import logging

        logging.getLogger("moelens").info(message)
        self.summary.notes.append(message)

    def _trace(self, store: Any, run: Any, docs: Any, loaded: Any, plan: Any) -> None:
        import torch

        from moelens.hooks.attach import attach
        from moelens.store import TraceWriter

        cfg = self.cfg
        model, tokenizer = loaded.model, loaded.tokenizer
        kept = {s.site for s in plan.sites if self._keep_site(s)}
        table_k = max(s.top_k for s in plan.sites if s.site in kept)
        logits_width = _logits_width(plan, kept)
        done = store.done_documents(run.run_id)
        self._done_tokens = int(store.con.execute(
            "SELECT coalesce(sum(n_tokens), 0) FROM documents WHERE run_id = ?", [run.run_id]).fetchone()[0])
        total = len(docs) if cfg.max_docs is None else min(cfg.max_docs, len(docs))
        self._stats_labels = _label_vocabulary(docs) if cfg.mode == "stats" else {}
        collector, need_logits = self._collector(plan, kept, loaded)
        stats = cfg.mode == "stats"
        layers = sorted({s.layer for s in plan.sites if s.site in kept})
        if cfg.backend == "nnsight":
            from moelens.hooks.nnsight_backend import NNsightRunner

            runner = NNsightRunner(getattr(loaded, "wrapper", None) or model, plan, collector, logits=need_logits,
                                   layers=layers, remote=cfg.remote)
            extra = _forward_kwargs(model)

            def forward(ids, mask):
                runner(input_ids=ids, attention_mask=mask, **extra)
            hooks: Any = contextlib.nullcontext()
        else:
            forward = _forward_fn(model, plan)
            hooks = attach(model, plan, collector, logits=need_logits, verify=cfg.verify, layers=layers)
        writer = TraceWriter(store, run, table_k=table_k)
        pad_id = _pad_id(tokenizer)
        started = time.perf_counter()
        progress = TraceProgress(total=total, done=len(done), enabled=cfg.progress, label=self.summary.run_id)
        status = "failed"
        pending: dict[int, _Pending] = {}
        try:
            with progress, hooks, torch.inference_mode():
                for batch in self._batches(docs, tokenizer, done, total, pending, writer, progress):
                    input_ids, mask = _pad(batch, pad_id, loaded.device)
                    if hasattr(collector, "begin_batch"):
                        collector.begin_batch(batch, pending, input_ids.shape)
                    forward(input_ids, mask)
                    if stats:
                        for window in batch:
                            pending[window.doc_id].windows_left -= 1
                    else:
                        steps, routes = collector.drain()
                        self._assign(batch, steps, routes, kept, pending, logits_width)
                    finished = [d for d in {w.doc_id for w in batch} if pending[d].windows_left == 0]
                    if stats:
                        self._flush_stats(finished, pending, writer, progress, collector, final=False)
                    else:
                        self._flush(finished, pending, writer, progress, table_k)
                if stats:
                    self._flush_stats([], pending, writer, progress, collector, final=True)
            writer.close()
            status = "complete"
        except KeyboardInterrupt:
            status = "interrupted"
            _close_quietly(writer)
            raise
        finally:
            _close_quietly(writer)
            self.summary.seconds = time.perf_counter() - started
            self.summary.status = status
            self.summary.routes = writer.routes_written
            store.set_status(run.run_id, status, last_summary={
                "documents": self.summary.documents, "skipped": self.summary.skipped,
                "tokens": self.summary.tokens, "seconds": round(self.summary.seconds, 3)})

    def _flush_stats(self, finished: list[int], pending: dict[int, _Pending], writer: Any,
                     progress: TraceProgress, collector: Any, *, final: bool) -> None:
        """Commit the aggregates with exactly the documents they cover (never a partial document)."""
        from moelens.store import WriteBatch

        self._stats_done = getattr(self, "_stats_done", [])
        for d in sorted(finished):
            entry = pending.pop(d)
            self._stats_done.append(entry.row)
            self.summary.tokens += len(entry.ids)
            progress.advance(1, len(entry.ids))
        if not self._stats_done or pending or not (final or len(self._stats_done) >= 256):
            return
        writer.submit(WriteBatch(documents=self._stats_done, stats=collector.drain_tables(self.summary.run_id)))
        self.summary.documents += len(self._stats_done)
        self._stats_done = []

    def _batches(self, docs: Any, tokenizer: Any, done: set[int], total: int, pending: dict[int, _Pending],
                 writer: Any, progress: TraceProgress) -> Iterator[list[_Window]]:
        cfg = self.cfg
        budget = cfg.max_tokens
        windows: list[_Window] = []
        chunk: list[Any] = []
        used = self._done_tokens

        def emit_chunk() -> Iterator[list[_Window]]:
            nonlocal windows, used
            for doc, ids, toks in self._tokenize(chunk, tokenizer):
                row = {"doc_id": doc.doc_id, "domain": doc.domain, "language": doc.language,
                       "n_tokens": int(len(ids)), "source": doc.source, "meta": dict(doc.meta)}
                if len(ids) == 0:
                    row["meta"]["skipped"] = "empty"
                    self.summary.skipped += 1
                    writer.submit(_documents_only([row]))
                    progress.advance(1, 0)
                    continue
                if budget is not None and used >= budget:
                    return
                used += len(ids)
                starts = range(0, len(ids), cfg.max_length)
                pending[doc.doc_id] = _Pending(row, ids, toks, len(starts))
                for s in starts:
                    windows.append(_Window(doc.doc_id, s, ids[s:s + cfg.max_length]))
                    while len(windows) >= cfg.batch_size:
                        yield windows[:cfg.batch_size]
                        windows = windows[cfg.batch_size:]
            chunk.clear()

        for doc in docs.iter_documents(0, total):
            if doc.doc_id in done:
                continue
            chunk.append(doc)
            if len(chunk) >= 64:
                yield from emit_chunk()
                if budget is not None and used >= budget:
                    break
        if chunk and (budget is None or used < budget):
            yield from emit_chunk()
        if windows:
            yield windows

    def _tokenize(self, chunk: list[Any], tokenizer: Any):
        if chunk and chunk[0].input_ids is not None:
            for doc in chunk:
                ids = np.asarray(doc.input_ids or (), dtype=np.int64)
                toks = None if tokenizer is None else tokenizer.convert_ids_to_tokens(ids.tolist())
                yield doc, ids, toks
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
            if "offset_mapping" in enc:
                toks = _token_texts(texts[i], enc["offset_mapping"][i],
                                    tokenizer.convert_ids_to_tokens(enc["input_ids"][i]))
            else:
                toks = tokenizer.convert_ids_to_tokens(enc["input_ids"][i])
            yield doc, ids, toks

    def _assign(self, batch: list[_Window], steps: list[Any], routes: list[Any], kept: set[int],
                pending: dict[int, _Pending], logits_width: int) -> None:
        step = next((s for s in steps if s.batch == len(batch)), None)
        seq = step.seq if step is not None else max(len(w.ids) for w in batch)
        by_row: dict[int, list[tuple]] = {}
        for r in routes:
            if r.site not in kept:
                continue
            b = r.rows // seq
            s = r.rows % seq
            for bi in np.unique(b):
                sel = b == bi
                lg = r.logits[sel] if r.logits is not None else None
                if lg is not None and lg.shape[1] < logits_width:
                    lg = np.pad(lg, ((0, 0), (0, logits_width - lg.shape[1])), constant_values=np.nan)
                conf = r.confidence[sel] if r.confidence is not None else None
                by_row.setdefault(int(bi), []).append((s[sel], r.site, r.experts[sel], r.weights[sel], lg, conf))
        for bi, window in enumerate(batch):
            entry = pending[window.doc_id]
            for s, site, e, w, lg, conf in by_row.get(bi, []):
                entry.pieces.append((s + window.start, np.full(len(s), site, np.int16), e, w, lg, conf))
            entry.windows_left -= 1

    def _flush(self, finished: list[int], pending: dict[int, _Pending], writer: Any,
               progress: TraceProgress, table_k: int) -> None:
        from moelens.store import WriteBatch

        if not finished:
            return
        rows, tok_doc, tok_pos, tok_id, tok_text = [], [], [], [], []
        r_doc, r_pos, r_site, r_e, r_w, r_l, r_c = [], [], [], [], [], [], []
        n_tokens = 0
        for d in sorted(finished):
            entry = pending.pop(d)
            rows.append(entry.row)
            n = len(entry.ids)
            n_tokens += n
            tok_doc.append(np.full(n, d, np.int64))
            tok_pos.append(np.arange(n, dtype=np.int32))
            tok_id.append(entry.ids.astype(np.int32))
            tok_text.extend(entry.tokens if entry.tokens is not None else [None] * n)
            for pos, site, e, w, lg, conf in entry.pieces:
                r_doc.append(np.full(len(pos), d, np.int32))
                r_pos.append(pos.astype(np.int32))
                r_site.append(site)
                r_e.append(_pad_cols(e, table_k, -1))
                r_w.append(_pad_cols(w, table_k, 0.0))
                if lg is not None:
                    r_l.append(lg)
                if conf is not None:
                    r_c.append(conf)
        batch = WriteBatch(
            documents=rows, token_doc=np.concatenate(tok_doc), token_pos=np.concatenate(tok_pos),
            token_id=np.concatenate(tok_id), token_text=tok_text,
            route_doc=_cat(r_doc, np.int32), route_pos=_cat(r_pos, np.int32), route_site=_cat(r_site, np.int16),
            experts=np.concatenate(r_e) if r_e else np.empty((0, table_k), np.int16),
            weights=np.concatenate(r_w) if r_w else np.empty((0, table_k), np.float32),
            logits=np.concatenate(r_l) if r_l else None, confidence=np.concatenate(r_c) if r_c else None)
        writer.submit(batch)
        self.summary.documents += len(rows)
        self.summary.tokens += n_tokens
        progress.advance(len(rows), n_tokens)


def _logits_width(plan: Any, sites: set[int]) -> int:
    """Columns of a stored logits row: E (plus zero/skip experts), or doge's 2 x sqrt(E) key scores."""
    if plan.family.family == "doge":
        return 2 * int(round(plan.num_experts ** 0.5))
    skip_class = 1 if plan.family.family == "zaya" else 0  # zaya's router scores a "skip" class too
    return max(s.num_experts for s in plan.sites if s.site in sites) + skip_class


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


def _token_texts(text: str, offsets: list[tuple[int, int]], pieces: list[str]) -> list[str]:
    """Each token's stored text: whole characters as text, a character's bytes that a byte-level
    token holds only part of as ``<0xE7>`` (never an empty string); see :mod:`moelens.tokentext`."""
    from moelens.tokentext import token_texts

    return token_texts(text, offsets, pieces)


def _documents_only(rows: list[dict[str, Any]]):
    from moelens.store import WriteBatch

    return WriteBatch(documents=rows)


def _pad_cols(a: np.ndarray, width: int, fill: float) -> np.ndarray:
    if a.shape[1] == width:
        return a
    out = np.full((a.shape[0], width), fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)


def _close_quietly(writer: Any) -> None:
    try:
        writer.close()
    except Exception:  # noqa: BLE001 - the first error is the one that matters
        pass


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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


def _pad(batch: list[_Window], pad_id: int, device: str):
    import torch

    width = max(len(w.ids) for w in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for i, w in enumerate(batch):
        ids[i, : len(w.ids)] = w.ids
        mask[i, : len(w.ids)] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def _forward_fn(model: Any, plan: Any):
    """The cheapest forward that still runs every router the documents pass through."""
    if any(s.tag == "encoder" for s in plan.sites) and hasattr(model, "get_encoder"):
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
