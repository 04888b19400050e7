"""Merge the shards of a data-parallel trace into one run (``moelens merge``).

:class:`MergeSource` checks that the shards belong together before anything is written - the same
run, options and routers, every shard index of ``0..N-1`` exactly once, every shard complete -
then reads each shard's documents in chunks (documents, tokens, unpacked routes, logits, router
confidence; a stats-mode shard's aggregates with all its documents) and yields them as write
batches. The merged run has the identity of a single-process run with the same options, so the
result is indistinguishable from tracing in one process, and merging is resumable like a trace.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import numpy as np

from moelens.errors import StoreError
from moelens.pipeline.types import RunSpec
from moelens.store import Store, WriteBatch, schema
from moelens.store.db import fetch_arrow
from moelens.store.packing import unpack_experts, unpack_weights

__all__ = ["MergeSource", "ShardMismatchError"]

_CHUNK = 256  # documents per write batch


class ShardMismatchError(StoreError):
    """The shard files do not form one complete data-parallel run."""


class _Shard:
    def __init__(self, path: str, run_id: str | None) -> None:
        self.path = path
        self.store = Store(path, read_only=True)
        self.info = self.store.require_run(run_id)
        identity = dict(self.info.config.get("identity", {}))
        shard = identity.pop("shard", None)
        if not shard:
            raise ShardMismatchError(f"{path} holds run {self.info.run_id!r}, which was not traced as a shard.")
        self.index, self.count = int(shard[0]), int(shard[1])
        self.identity = identity

    def close(self) -> None:
        self.store.close()


class MergeSource:
    """The shard databases ``paths`` of one data-parallel run (see the module docstring)."""

    kind = "merge"

    def __init__(self, paths: list[str], run_id: str | None = None) -> None:
        if not paths:
            raise ShardMismatchError("no shard files to merge; give the files written with --shard I/N or torchrun.")
        self.paths, self.run_id = list(paths), run_id
        self.shards: list[_Shard] = []
        self._spec: RunSpec | None = None

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    # -- checks --------------------------------------------------------------------------------
    def prepare(self) -> RunSpec:
        if self._spec is None:
            try:
                self._spec = self._check()
            except BaseException:
                self.close()
                raise
        return self._spec

    def _check(self) -> RunSpec:
        for path in self.paths:
            self.shards.append(_Shard(path, self.run_id))
        first = self.shards[0]
        count = first.count
        indices = sorted(s.index for s in self.shards)
        if any(s.count != count for s in self.shards):
            raise ShardMismatchError(f"the shards split the data different ways ({sorted({s.count for s in self.shards})}"
                                     " shards); merge the files of one run.")
        if indices != list(range(count)):
            missing = sorted(set(range(count)) - set(indices))
            dup = sorted({i for i in indices if indices.count(i) > 1})
            what = [f"shard {', '.join(map(str, dup))} given twice"] if dup else []
            what += [f"shard {', '.join(map(str, missing))} of {count} missing"] if missing else []
            raise ShardMismatchError(f"{' and '.join(what)}; pass every shard file exactly once.")
        for shard in self.shards:
            if shard.info.run_id != first.info.run_id or shard.identity != first.identity:
                diff = next((k for k in first.identity if first.identity.get(k) != shard.identity.get(k)), "run_id")
                raise ShardMismatchError(f"{shard.path} was traced with other options than {first.path} ({diff});"
                                         " merge shards of one command.")
            if shard.info.config.get("routing", {}).get("sites") != first.info.config.get("routing", {}).get("sites"):
                raise ShardMismatchError(f"{shard.path} recorded other routers than {first.path}.")
            if shard.info.status != "complete":
                raise ShardMismatchError(f"shard {shard.index} of {count} ({shard.path}) is {shard.info.status};"
                                         " run its trace command again to finish it, then merge.")
        return self._make_spec()

    @property
    def identity(self) -> dict[str, Any]:
        """The identity of a single-process run with the same options."""
        return {**self.shards[0].identity, "shard": None}

    @property
    def merged_run_id(self) -> str:
        return self.shards[0].info.run_id

    @property
    def total(self) -> int:
        return sum(int(s.store.con.execute("SELECT count(*) FROM documents WHERE run_id = ?",
                                           [s.info.run_id]).fetchall()[0][0]) for s in self.shards)

    @property
    def notes(self) -> list[str]:
        return [f"merged {len(self.shards)} shards"]

    def _make_spec(self) -> RunSpec:
        first = self.shards[0]
        con, info = first.store.con, first.info
        row = con.execute("SELECT model, dataset, dtype, revision FROM runs WHERE run_id = ?", [info.run_id]).fetchall()[0]
        config = {k: v for k, v in info.config.items() if k not in ("identity", "routing", "last_summary")}
        config["merged_from"] = {"shards": len(self.shards), "files": [s.path for s in self.shards]}
        tables = first.store._tables()
        logits = schema.logits_table(info.run_key)
        width = None
        if logits in tables:
            found = con.execute(f"SELECT len(logits) FROM {logits} LIMIT 1").fetchall()
            width = int(found[0][0]) if found else int(info.config.get("routing", {}).get("num_experts", 1))
        table_k = int(con.execute("SELECT max(top_k) FROM sites WHERE run_id = ?", [info.run_id]).fetchall()[0][0])
        return RunSpec(model=row[0], dataset=row[1], dtype=row[2], revision=row[3],
                       plan_meta=info.config["routing"], config=config, table_k=table_k, logits_width=width,
                       confidence=schema.confidence_table(info.run_key) in tables)

    # -- copy ----------------------------------------------------------------------------------
    def stream(self, done: set[int], done_tokens: int, progress: Callable[[int, int], None],
               run_id: str) -> Iterator[WriteBatch]:
        for shard in self.shards:
            yield from self._shard_batches(shard, done, progress)

    def _shard_batches(self, shard: _Shard, done: set[int], progress: Callable[[int, int], None]) -> Iterator[WriteBatch]:
        con, info = shard.store.con, shard.info
        docs = fetch_arrow(con, "SELECT doc_id, domain, language, n_tokens, source, meta FROM documents "
                                "WHERE run_id = $run ORDER BY doc_id", {"run": info.run_id}).to_pylist()
        docs = [d for d in docs if int(d["doc_id"]) not in done]
        if not docs:
            return
        for d in docs:
            d["meta"] = json.loads(d["meta"]) if isinstance(d["meta"], str) else (d["meta"] or {})
        if info.config.get("identity", {}).get("mode") == "stats":
            # aggregates are partial sums over commits, not per document: they move with all the documents
            yield WriteBatch(documents=docs, stats={name: fetch_arrow(
                con, f"SELECT * FROM _stats_{name} WHERE run_id = $run", {"run": info.run_id})
                for name in schema.STATS_TABLES})
            progress(len(docs), sum(int(d["n_tokens"]) for d in docs))
            return
        for lo in range(0, len(docs), _CHUNK):
            part = docs[lo:lo + _CHUNK]
            yield self._chunk(shard, part)
            progress(len(part), sum(int(d["n_tokens"]) for d in part))

    def _chunk(self, shard: _Shard, docs: list[dict[str, Any]]) -> WriteBatch:
        con, info = shard.store.con, shard.info
        ids = [int(d["doc_id"]) for d in docs]
        where = f"doc_id >= {min(ids)} AND doc_id <= {max(ids)}"
        wanted = np.array(ids, dtype=np.int64)
        toks = fetch_arrow(con, f"SELECT doc_id, pos, token_id, token FROM tokens WHERE run_id = $run AND {where}"
                                " ORDER BY doc_id, pos", {"run": info.run_id})
        keep = np.isin(toks.column("doc_id").to_numpy(), wanted)
        k = int(con.execute("SELECT max(top_k) FROM sites WHERE run_id = ?", [info.run_id]).fetchall()[0][0])
        e_cols, w_cols = schema.expert_columns(k), schema.weight_columns(k)
        routes = fetch_arrow(con, f"SELECT doc_id, pos, site, {', '.join(e_cols + w_cols)} "
                                  f"FROM {schema.route_table(info.run_key)} WHERE {where} ORDER BY doc_id, pos, site")
        r_keep = np.isin(routes.column("doc_id").to_numpy(), wanted)

        def words(names: list[str]) -> np.ndarray:
            return np.stack([routes.column(n).to_numpy() for n in names], axis=1)[r_keep]
        tables = shard.store._tables()
        logits = confidence = None
        if schema.logits_table(info.run_key) in tables:
            lg = fetch_arrow(con, f"SELECT doc_id, logits FROM {schema.logits_table(info.run_key)} WHERE {where}"
                                  " ORDER BY doc_id, pos, site")
            width = lg.schema.field("logits").type.list_size
            values = lg.column("logits").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, width)
            logits = values[np.isin(lg.column("doc_id").to_numpy(), wanted)]
        if schema.confidence_table(info.run_key) in tables:
            cf = fetch_arrow(con, f"SELECT doc_id, entropy, margin, lse FROM {schema.confidence_table(info.run_key)} "
                                  f"WHERE {where} ORDER BY doc_id, pos, site")
            sel = np.isin(cf.column("doc_id").to_numpy(), wanted)
            confidence = np.stack([cf.column(n).to_numpy()[sel] for n in ("entropy", "margin", "lse")], axis=1)
        return WriteBatch(
            documents=docs, token_doc=toks.column("doc_id").to_numpy()[keep].astype(np.int64),
            token_pos=toks.column("pos").to_numpy()[keep].astype(np.int32),
            token_id=toks.column("token_id").to_numpy()[keep].astype(np.int32),
            token_text=[t for t, ok in zip(toks.column("token").to_pylist(), keep) if ok],
            route_doc=routes.column("doc_id").to_numpy()[r_keep].astype(np.int64),
            route_pos=routes.column("pos").to_numpy()[r_keep].astype(np.int32),
            route_site=routes.column("site").to_numpy()[r_keep].astype(np.int16),
            experts=np.ascontiguousarray(unpack_experts(words(e_cols), k)),
            weights=np.ascontiguousarray(unpack_weights(words(w_cols), k)),
            logits=logits, confidence=confidence)
