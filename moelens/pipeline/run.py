"""The run loop: any source of routing into one run of a trace database, resumably.

:func:`run_source` is the same for every source (a transformers model, an engine's routing dump,
shards of a data-parallel run). The order of work keeps bad input away from the database: check an
existing database and the run's identity, let the source prepare (read and check everything it
needs), and only then create or resume the run. Write batches hold complete documents and are
committed by the writer thread one transaction each; Ctrl-C or a crash keeps every committed
document, and running the same command again skips them, so no row is ever written twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from moelens.errors import RunMismatchError
from moelens.pipeline.types import RunSpec, TraceSummary

__all__ = ["Source", "run_source"]


class Source(Protocol):
    """What the run loop needs from a source of routing."""

    kind: str

    def prepare(self) -> RunSpec: ...  # read and check everything; raise typed errors; no writes

    @property
    def total(self) -> int: ...  # documents this run covers (for progress)

    @property
    def notes(self) -> list[str]: ...  # what the user should know, printed after the run

    def stream(self, done: set[int], done_tokens: int, progress: Any, run_id: str) -> Any: ...

    # optional: ``final_config() -> dict`` of runs.config keys to update once every batch is written


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def run_source(source: Source, out: str, *, run_id: str, identity: dict[str, Any], overwrite: bool = False,
               progress: bool = True) -> TraceSummary:
    """Write ``source``'s routing into run ``run_id`` of the database ``out`` (created if missing).

    ``identity`` holds the options that define what the run records: resuming with other values
    raises :class:`~moelens.errors.RunMismatchError` before anything is written.
    """
    from moelens.store import Store

    summary = TraceSummary(run_id=run_id, out=out)
    identity = {k: _jsonable(v) for k, v in identity.items()}
    store = Store(out) if Path(out).exists() else None
    try:
        if store is not None and _already_complete(store, summary, identity, overwrite):
            return summary
        spec = source.prepare()
        store = store or Store(out)
        run = _create_or_resume(store, summary, spec, identity, overwrite)
        _write(store, run, source, spec, summary, progress)
        summary.notes.extend(source.notes)
        return summary
    finally:
        if store is not None:
            store.close()


def _already_complete(store: Any, summary: TraceSummary, identity: dict[str, Any], overwrite: bool) -> bool:
    """Check a run of the same id: options must match; a complete run needs no work."""
    existing = store.get_run(summary.run_id)
    if existing is None or overwrite:
        return False
    before = existing.config.get("identity", {})
    diffs = [k for k in identity if identity[k] != before.get(k)]
    if diffs:
        k = diffs[0]
        raise RunMismatchError(
            f"run {summary.run_id!r} in {summary.out} was made with {k}={before.get(k)!r}, this command"
            f" has {k}={identity[k]!r}; use another --run-id, or --overwrite to start it again.")
    if existing.status == "complete":
        summary.resumed = len(store.done_documents(existing.run_id))
        summary.notes.append(f"run {existing.run_id!r} is already complete ({summary.resumed} documents); nothing to do.")
        return True
    return False


def _create_or_resume(store: Any, summary: TraceSummary, spec: RunSpec, identity: dict[str, Any], overwrite: bool):
    existing = store.get_run(summary.run_id)
    if existing is not None and overwrite:
        store.delete_run(summary.run_id)
        existing = None
    if existing is not None:  # its identity was checked by _already_complete
        summary.resumed = len(store.done_documents(summary.run_id))
        return existing
    return store.create_run(run_id=summary.run_id, model=spec.model, dataset=spec.dataset, dtype=spec.dtype,
                            revision=spec.revision, plan_meta=spec.plan_meta,
                            config={"identity": identity, **spec.config}, logits_width=spec.logits_width,
                            confidence=spec.confidence, weights=spec.weights)


def _write(store: Any, run: Any, source: Source, spec: RunSpec, summary: TraceSummary, show: bool) -> None:
    from moelens.progress import TraceProgress
    from moelens.store import TraceWriter

    done = store.done_documents(run.run_id)
    done_tokens = int(store.con.execute("SELECT coalesce(sum(n_tokens), 0) FROM documents WHERE run_id = ?",
                                        [run.run_id]).fetchone()[0])
    writer = TraceWriter(store, run, table_k=spec.table_k)
    bar = TraceProgress(total=source.total, done=len(done), enabled=show, label=run.run_id)
    started, status = time.perf_counter(), "failed"
    try:
        with bar:
            for batch in source.stream(done, done_tokens, bar.advance, run.run_id):
                for row in batch.documents:
                    if (row.get("meta") or {}).get("skipped"):
                        summary.skipped += 1
                        bar.advance(1, 0)
                    else:
                        summary.documents += 1
                        summary.tokens += int(row["n_tokens"])
                writer.submit(batch)
        writer.close()
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        _close_quietly(writer)
        summary.seconds = time.perf_counter() - started
        summary.status = status
        summary.routes = writer.routes_written
        final = getattr(source, "final_config", None)
        store.set_status(run.run_id, status, last_summary={
            "documents": summary.documents, "skipped": summary.skipped, "tokens": summary.tokens,
            "seconds": round(summary.seconds, 3), "notes": list(source.notes)},
            **(final() if final is not None and status == "complete" else {}))


def _close_quietly(writer: Any) -> None:
    try:
        writer.close()
    except Exception:  # noqa: BLE001 - the first error is the one that matters
        pass
