"""The serving report: every what-if of one run in one pass over its layers.

:func:`serving_report` returns a :class:`ServingReport` whose attributes are polars frames
(``placement``, ``placement_layers``, ``capacity``, ``capacity_labels``, ``cache``,
``cache_summary``, ``prefetch``, ``coverage``), the EPLB plans and ``notes`` (what was unavailable and
why); :meth:`ServingReport.to_dict` is its JSON form (the CLI's ``--json`` and the dashboard's data).
Layers are independent, so the per-layer work (capacity, cache, coverage) is split over forked
worker processes on Linux for large runs, as the main report does.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moelens.analysis._common import layer_positions
from moelens.analysis.serving import cache as _cache
from moelens.analysis.serving import capacity as _capacity
from moelens.analysis.serving import coverage as _coverage
from moelens.analysis.serving import placement as _placement
from moelens.analysis.serving import prefetch as _prefetch
from moelens.analysis.serving._kernels import compiled, drop_tally
from moelens.analysis.serving.options import ServingOptions
from moelens.analysis.serving.schedule import decode_schedule

__all__ = ["ServingReport", "serving_report", "serving_stats_report", "expert_bytes_from_config",
           "default_cache_sizes"]

_DTYPE_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
                "int8": 1, "fp8": 1}
_PYTHON_LIMIT = 20_000_000  # requests or assignments per section beyond which the uncompiled kernels are too slow
_ACTIVE: "_Pass | None" = None


@dataclass
class ServingReport:
    run_id: str
    num_experts: int
    top_k: int
    options: ServingOptions
    frames: dict[str, Any] = field(default_factory=dict)
    plans: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    expert_bytes: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        frames = self.__dict__.get("frames", {})
        if name in frames:
            return frames[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: every frame as a list of rows, plus the run, options and notes."""
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v
        return {"run_id": self.run_id, "num_experts": self.num_experts, "top_k": self.top_k,
                "timings": {k: round(v, 3) for k, v in self.timings.items()},
                "expert_bytes": self.expert_bytes, "notes": list(self.notes),
                "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.options.__dict__.items()},
                **{name: [{k: clean(v) for k, v in row.items()} for row in frame.to_dicts()]
                   for name, frame in self.frames.items()}}


def default_cache_sizes(num_experts: int, top_k: int) -> tuple[int, ...]:
    """``2k, E/4, E/2`` (at most ``E``, at least ``k``): LRU and LFU give every size anyway; Belady
    costs one pass per size."""
    E, k = num_experts, top_k
    return tuple(sorted({min(E, max(k, c)) for c in (2 * k, E // 4, E // 2)}))


def expert_bytes_from_config(config: dict, dtype: str | None) -> int | None:
    """Bytes of one routed expert's weights from a transformers ``config.json`` dict (``None`` if unknown):
    ``matrices x hidden x expert_ffn x bytes per weight``, 3 matrices for gated (SwiGLU) experts, 2 for
    Switch/NLLB-style ones."""
    cfg = config.get("text_config") or config
    hidden = cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("n_embd")
    ffn = None
    for key in ("moe_intermediate_size", "expert_intermediate_size", "expert_ffn_hidden_size", "d_ff", "intermediate_size"):
        if cfg.get(key):
            ffn = cfg[key]
            break
    if ffn is None and isinstance(cfg.get("ffn_config"), dict):
        ffn = cfg["ffn_config"].get("ffn_hidden_size")
    if isinstance(ffn, (list, tuple)):
        ffn = ffn[0] if ffn else None
    width = _DTYPE_BYTES.get(str(dtype or cfg.get("torch_dtype") or cfg.get("dtype") or "").replace("torch.", ""))
    if not hidden or not ffn or not width:
        return None
    matrices = 2 if cfg.get("model_type") in ("switch_transformers", "nllb_moe") else 3
    return int(matrices * int(hidden) * int(ffn) * width)


def _run_expert_bytes(routing: Any, dtype: str | None) -> int | None:
    location = (routing.config or {}).get("model_location")
    if not location:
        return None
    path = Path(location) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return expert_bytes_from_config(config, dtype)


class _Pass:
    """Per-layer work (capacity ranks, caches, prefetch, coverage), for workers to share by fork."""

    def __init__(self, routing: Any, options: ServingOptions, sizes: tuple[int, ...], doc_idx: np.ndarray,
                 use_weights: bool, python_ok: bool, indices: list[int]) -> None:
        from moelens.analysis._common import same_doc_next
        from moelens.analysis.crosslayer import document_folds

        self.r, self.o, self.sizes, self.doc_idx = routing, options, sizes, doc_idx
        self.use_weights, self.python_ok, self.indices = use_weights, python_ok, indices
        T = routing.num_tokens
        self.schedules = {b: decode_schedule(doc_idx, b) for b in {options.cache_batch, *options.batch_sizes}} if T else {}
        self.by_step = {b: s.by_step() for b, s in self.schedules.items() if b in options.batch_sizes}
        self.policies = ("position", "score") if use_weights else ("position",)
        self.combos = [(p, cf, ct) for p in self.policies for cf in options.capacity_factors
                       for ct in options.capacity_tokens]
        self.fold = document_folds(routing) if T else np.zeros(0, bool)
        self.next_tok = same_doc_next(doc_idx, routing.pos) if T else np.zeros(0, bool)
        self._masks: dict[int, np.ndarray] = {}
        from moelens.analysis._common import Workspace

        self.ws = Workspace()  # scratch reused from layer to layer: no page faults per layer

    def masks(self, i: int) -> np.ndarray:
        if i not in self._masks:
            from moelens.analysis.serving.prefetch import layer_masks

            self._masks = {j: m for j, m in self._masks.items() if j > i - 1}  # keep the block's last one only
            self._masks[i] = layer_masks(self.r.experts[i], self.r.num_experts)
        return self._masks[i]

    def block(self, indices: list[int]) -> dict:
        T = self.r.num_tokens
        out = {"capacity": [], "cache": [], "coverage": [], "prefetch": [], "timings": {},
               "dropped": np.zeros((len(self.combos), T), np.int32)}
        for i in indices:
            for name, fn in (("capacity", self._capacity), ("cache", self._cache), ("prefetch", self._prefetch),
                             ("coverage", self._coverage)):
                if name in self.o.sections:
                    t0 = time.perf_counter()
                    fn(i, out)
                    out["timings"][name] = out["timings"].get(name, 0.0) + time.perf_counter() - t0
        return out

    def _capacity(self, i: int, out: dict) -> None:
        r, o = self.r, self.o
        e = r.experts[i]
        T, k = e.shape
        E = int(r.num_experts)
        for ct in o.capacity_tokens:
            caps = np.stack([_capacity.batch_capacity(T, ct, cf, k, E) for cf in o.capacity_factors])
            smallest = caps.min(0)
            for p in self.policies:
                ranks = _capacity.drop_ranks(e, r.weights[i] if p == "score" else None, E, ct, p, smallest, self.ws)
                rows = [self.combos.index((p, cf, ct)) for cf in o.capacity_factors]
                dropped = self.ws.get("dropped", (len(rows), T), np.int32)
                dropped.fill(0)
                total, tokens = drop_tally(ranks, caps, ct, dropped)
                out["dropped"][rows] += dropped
                if p != "position":  # the count is the same under every policy
                    continue
                valid = int((ranks >= 0).sum())
                for c, cf in enumerate(o.capacity_factors):
                    out["capacity"].append({"layer": int(r.layers[i]), "capacity_factor": cf, "batch_tokens": ct,
                                            "capacity": int(caps[c, 0]) if caps.shape[1] else 0, "assignments": valid,
                                            "dropped": int(total[c]),
                                            "drop_rate": int(total[c]) / valid if valid else float("nan"),
                                            "tokens_hit": int(tokens[c])})

    def _cache(self, i: int, out: dict) -> None:
        r = self.r
        sched = self.schedules[self.o.cache_batch]
        req = _cache.requests(sched.grid(r.experts[i]), r.num_experts, ws=self.ws)
        tokens = int((r.experts[i] >= 0).any(1).sum())
        for policy in _cache.POLICIES:
            if policy != "lru" and not self.python_ok:
                continue
            hits = _cache.hits_by_size(req, policy, list(self.sizes), self.ws)
            for c, h in zip(self.sizes, hits):
                out["cache"].append({"layer": int(r.layers[i]), "policy": policy, "cache_size": int(c),
                                     "requests": req.count, "compulsory": req.compulsory, "hits": int(h),
                                     "tokens": tokens})

    def _prefetch(self, i: int, out: dict) -> None:
        r = self.r
        E, k = int(r.num_experts), int(r.top_k)
        pos = self.indices.index(i)
        if pos + 1 < len(self.indices):
            j = self.indices[pos + 1]
            h, p, n = _prefetch.prefetch_accuracy(r.experts[i][:, 0], self.masks(j), r.experts[j], self.fold, E, k)
            out["prefetch"].append(_prefetch.row("next_layer", r.layers[i], r.layers[j], h, p, n, E, k))
        nxt = self.next_tok
        e = r.experts[i]
        h, p, n = _prefetch.prefetch_accuracy(e[:-1, 0][nxt], self.masks(i)[:, 1:][:, nxt], e[1:][nxt],
                                              self.fold[1:][nxt], E, k)
        out["prefetch"].append(_prefetch.row("previous_token", r.layers[i], r.layers[i], h, p, n, E, k))

    def _coverage(self, i: int, out: dict) -> None:
        r = self.r
        E, k = int(r.num_experts), int(r.top_k)
        masks = self.masks(i)
        for b in self.o.batch_sizes:
            order, starts = self.by_step[b]
            distinct, busy = _coverage.step_distinct(masks, order, starts, b)
            full = busy == b
            n = int(full.sum())
            out["coverage"].append({"layer": int(r.layers[i]), "batch": int(b), "full_steps": n,
                                    "distinct": float(distinct[full].mean()) if n else float("nan"),
                                    "uniform": _coverage.uniform_distinct(E, k, b),
                                    "activation": float(distinct[full].mean()) / E if n else float("nan")})


def _worker(indices: list[int]) -> dict:
    assert _ACTIVE is not None
    return _ACTIVE.block(indices)


def _run_pass(p: _Pass, indices: list[int], workers: int) -> dict:
    global _ACTIVE
    blocks = [list(b) for b in np.array_split(np.array(indices, dtype=np.int64), workers) if len(b)] if indices else []
    if len(blocks) <= 1:
        return p.block(indices)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from moelens.analysis.serving._kernels import warm_up

    warm_up()  # the workers inherit the compiled kernels
    _ACTIVE = p
    try:
        with ProcessPoolExecutor(len(blocks), mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(pool.map(_worker, blocks))
    finally:
        _ACTIVE = None
    merged = parts[0]
    for part in parts[1:]:
        for key in ("capacity", "cache", "prefetch", "coverage"):
            merged[key].extend(part[key])
        merged["dropped"] += part["dropped"]
        for stage, seconds in part["timings"].items():
            merged["timings"][stage] = merged["timings"].get(stage, 0.0) + seconds
    return merged


def _default_workers(routing: Any) -> int:
    if not sys.platform.startswith("linux") or routing.experts.size < 4_000_000:
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def serving_report(routing: Any, options: ServingOptions = ServingOptions(), *, dtype: str | None = None) -> ServingReport:
    """Every serving what-if of ``routing`` (a :class:`~moelens.store.arrays.RunRouting`)."""
    import polars as pl

    from moelens.analysis.routing import doc_index
    from moelens.store.arrays import regular_pages

    o = options
    E, k = int(routing.num_experts), int(routing.top_k)
    rep = ServingReport(routing.run_id, E, k, o)
    indices = layer_positions(routing.layers, o.layers)
    layers = np.asarray(routing.layers)[indices]
    doc_idx = doc_index(routing)
    started = time.perf_counter()
    source = (routing.config or {}).get("source") or {}
    has_weights = routing.weights is not None and source.get("weights", True)
    if not has_weights and "capacity" in o.sections:
        rep.notes.append("capacity by score: unavailable: the run has no gate weights")
    rep.expert_bytes = o.expert_bytes or _run_expert_bytes(routing, dtype)
    if rep.expert_bytes is None and "cache" in o.sections:
        rep.notes.append("bytes moved: unavailable: the expert size is unknown (pass expert_bytes / --expert-bytes)")
    if source.get("per_token") is False or not routing.num_tokens:
        rep.notes.append("capacity, cache, prefetch, coverage: unavailable: the run has no per-token routing")
        sections = tuple(s for s in o.sections if s == "placement")
    else:
        sections = o.sections
    sizes = o.cache_sizes or default_cache_sizes(E, k)
    sizes = tuple(c for c in sizes if c <= E)
    requests = routing.num_tokens * k * len(indices)
    python_ok = compiled() or requests <= _PYTHON_LIMIT
    if not python_ok:
        rep.notes.append("LFU, Belady and capacity: unavailable: numba is not installed and the run is too large "
                         "for the uncompiled kernels (pip install numba)")
        sections = tuple(s for s in sections if s != "capacity")
    with regular_pages():
        if "placement" in sections:
            t0 = time.perf_counter()
            _placement_section(routing, o, indices, layers, doc_idx, rep)
            rep.timings["placement"] = time.perf_counter() - t0
        per_layer = [s for s in sections if s in ("capacity", "cache", "prefetch", "coverage")]
        if per_layer:
            p = _Pass(routing, ServingOptions(**{**o.__dict__, "sections": tuple(per_layer)}), sizes, doc_idx,
                      has_weights, python_ok, indices)
            res = _run_pass(p, indices, o.workers or _default_workers(routing))
            rep.timings.update(res["timings"])
            _assemble(rep, p, res, routing, doc_idx)
    rep.timings["total"] = time.perf_counter() - started
    return rep


def _placement_section(routing, o, indices, layers, doc_idx, rep) -> None:
    fit_mask = _placement.split_mask(routing, o.fit_on, doc_idx)
    ev_spec = o.eval_on or ("rest" if o.fit_on else "all")
    ev_mask = _placement.split_mask(routing, ev_spec, doc_idx, fit_mask)
    if not fit_mask.any() or not ev_mask.any():
        from moelens.errors import ConfigError

        which = "fit" if not fit_mask.any() else "evaluation"
        raise ConfigError(f"the {which} split selects no tokens (fit_on={o.fit_on!r}, eval_on={ev_spec!r}).")
    fit = _placement.layer_loads(routing, indices, None if fit_mask.all() else fit_mask)
    ev = fit if (fit_mask.all() and ev_mask.all()) or np.array_equal(fit_mask, ev_mask) else \
        _placement.layer_loads(routing, indices, None if ev_mask.all() else ev_mask)
    _placement_frames(rep, o, fit, ev, layers, {"fit_on": o.fit_on or "all", "eval_on": ev_spec,
                                                "fit_tokens": int(fit_mask.sum()), "eval_tokens": int(ev_mask.sum())})


def _placement_frames(rep, o, fit, ev, layers, info) -> None:
    import polars as pl

    rows, summary, plans, notes = _placement.placement_rows(fit, ev, layers, o.ep, o.replicas, o.num_groups,
                                                            o.num_nodes)
    rep.plans = plans
    rep.notes += [f"placement: unavailable: {n}" for n in notes]
    rep.frames["placement"] = pl.DataFrame([{**r, **info} for r in summary]) if summary else pl.DataFrame()
    rep.frames["placement_layers"] = pl.DataFrame(rows) if rows else pl.DataFrame()


def _stats_loads(store: Any, run_id: str, layers: list[int], E: int, spec: str | None, complement: str | None = None):
    """``([L, E] loads, tokens)`` of a stats-mode run for a split spec (``all``, ``LABEL=V``, ``LABEL!=V``)."""
    from moelens.errors import ConfigError

    spec = (spec or "all").strip()
    if spec == "rest":
        if not complement or "=" not in complement:
            raise ConfigError("eval_on='rest' of a stats-mode run needs fit_on='LABEL=V'.")
        spec = complement.replace("!=", "=") if "!=" in complement else complement.replace("=", "!=", 1)
    where, params = "label_kind = 'all'", []
    if spec != "all":
        if spec.startswith(("first:", "last:")) or "=" not in spec:
            raise ConfigError(f"split {spec!r} needs per-token routing; a stats-mode run keeps per-label counts only "
                              "(use all, LABEL=V or LABEL!=V).")
        negate = "!=" in spec
        name, _, values = spec.partition("!=" if negate else "=")
        wanted = [v.strip() for v in values.split("+") if v.strip()]
        known = [r[0] for r in store.con.execute("SELECT DISTINCT label FROM stats_expert_counts WHERE run_id = ? "
                                                 "AND label_kind = ?", [run_id, name.strip()]).fetchall()]
        if not known:
            raise ConfigError(f"split {spec!r}: the stats-mode run has no counts by {name.strip()!r}.")
        missing = [v for v in wanted if v not in known]
        if missing:
            raise ConfigError(f"split {spec!r}: {name.strip()} has no value {missing[0]!r}; values: "
                              f"{', '.join(sorted(str(k) for k in known))}.")
        where = f"label_kind = ? AND label {'NOT ' if negate else ''}IN (SELECT unnest(?::VARCHAR[]))"
        params = [name.strip(), wanted]
    loads = np.zeros((len(layers), E), np.int64)
    index = {layer: i for i, layer in enumerate(layers)}
    for layer, expert, count in store.con.execute(
            f"SELECT layer, expert, sum(count) FROM stats_expert_counts WHERE run_id = ? AND {where} GROUP BY ALL",
            [run_id, *params]).fetchall():
        if layer in index and 0 <= expert < E:
            loads[index[layer], expert] = count
    tokens = store.con.execute(f"SELECT coalesce(max(t), 0) FROM (SELECT layer, sum(tokens) AS t FROM stats_tokens "
                               f"WHERE run_id = ? AND {where} GROUP BY layer)", [run_id, *params]).fetchone()[0]
    return loads, int(tokens)


def serving_stats_report(store: Any, run_id: str | None, options: ServingOptions = ServingOptions()) -> ServingReport:
    """The serving report of a ``--mode stats`` run: placement from its expert counts (per label for
    splits); the per-token sections are unavailable."""
    info = store.require_run(run_id)
    rep = ServingReport(info.run_id, int(info.num_experts), int(info.top_k), options)
    started = time.perf_counter()
    layers = [r[0] for r in store.con.execute("SELECT DISTINCT layer FROM stats_tokens WHERE run_id = ? ORDER BY layer",
                                              [info.run_id]).fetchall()]
    if options.layers is not None:
        layers = [x for x in layers if x in set(options.layers)]
    if "placement" in options.sections:
        ev_spec = options.eval_on or ("rest" if options.fit_on else "all")
        fit, fit_tokens = _stats_loads(store, info.run_id, layers, rep.num_experts, options.fit_on)
        ev, ev_tokens = _stats_loads(store, info.run_id, layers, rep.num_experts, ev_spec, options.fit_on)
        _placement_frames(rep, options, fit, ev, np.array(layers, np.int64),
                          {"fit_on": options.fit_on or "all", "eval_on": ev_spec, "fit_tokens": fit_tokens,
                           "eval_tokens": ev_tokens})
    others = [s for s in options.sections if s != "placement"]
    if others:
        rep.notes.append(f"{', '.join(others)}: unavailable: the run is a stats-mode run (counts only, no per-token routing)")
    rep.timings["total"] = time.perf_counter() - started
    return rep


def _assemble(rep: ServingReport, p: _Pass, res: dict, routing: Any, doc_idx: np.ndarray) -> None:
    import polars as pl

    if res["capacity"]:
        rep.frames["capacity"] = pl.DataFrame(res["capacity"]).sort(["batch_tokens", "capacity_factor", "layer"])
        rep.frames["capacity_labels"] = _capacity_labels(p, res["dropped"], routing, doc_idx)
    if res["cache"]:
        cache = pl.DataFrame(res["cache"]).with_columns(
            hit_rate=pl.col("hits") / pl.col("requests"),
            hit_rate_warm=pl.col("hits") / (pl.col("requests") - pl.col("compulsory")))
        if rep.expert_bytes:
            cache = cache.with_columns(bytes_per_token=(pl.col("requests") - pl.col("hits")) * rep.expert_bytes
                                       / pl.col("tokens"))
        rep.frames["cache"] = cache.sort(["policy", "cache_size", "layer"])
        agg = [pl.col("requests").sum(), pl.col("hits").sum(), (pl.col("hits").sum() / pl.col("requests").sum())
               .alias("hit_rate")]
        if rep.expert_bytes:
            agg.append(pl.col("bytes_per_token").sum().alias("bytes_per_token"))
        rep.frames["cache_summary"] = cache.group_by(["policy", "cache_size"]).agg(agg).sort(["policy", "cache_size"])
    if res["prefetch"]:
        rep.frames["prefetch"] = pl.DataFrame(res["prefetch"]).sort(["predictor", "layer"])
    if res["coverage"]:
        rep.frames["coverage"] = pl.DataFrame(res["coverage"]).sort(["batch", "layer"])


def _capacity_labels(p: _Pass, dropped: np.ndarray, routing: Any, doc_idx: np.ndarray):
    """Drop rate per value of every document label, position bucket, place in the batch and token id."""
    import polars as pl

    from moelens.analysis.labels import available_labels, position_bucket, position_bucket_names, resolve_label

    T = routing.num_tokens
    assigned = np.zeros(T, np.int64)
    for i in layer_positions(routing.layers, p.o.layers):
        assigned += (routing.experts[i] >= 0).sum(1)
    groups: list[tuple[str, tuple[str, ...], np.ndarray]] = []
    for name, kind in available_labels(routing).items():
        if kind == "document":
            lab = resolve_label(routing, name)
            if 1 <= len(lab.values) <= 64:
                groups.append((name, lab.values, lab.codes[doc_idx]))
    pb = position_bucket(routing.pos)
    groups.append(("position", position_bucket_names(int(pb.max()) + 1 if T else 0), pb))
    rows = []
    for c, (policy, cf, ct) in enumerate(p.combos):
        d = dropped[c].astype(np.int64)
        place = (np.arange(T) % ct) * 10 // ct
        all_groups = groups + [("batch_position", tuple(f"{10 * j}-{10 * j + 10}%" for j in range(10)), place)]
        for name, values, codes in all_groups:
            ok = codes >= 0
            n = np.bincount(codes[ok], weights=assigned[ok], minlength=len(values))
            x = np.bincount(codes[ok], weights=d[ok], minlength=len(values))
            for v, (nv, xv) in enumerate(zip(n, x)):
                if nv:
                    rows.append({"policy": policy, "capacity_factor": cf, "batch_tokens": ct, "label": name,
                                 "value": values[v], "assignments": int(nv), "dropped": int(xv), "drop_rate": xv / nv})
        tok = routing.token_id.astype(np.int64)
        n = np.bincount(tok, weights=assigned)
        x = np.bincount(tok, weights=d, minlength=len(n))
        seen = np.flatnonzero(n >= 20 * max(int(routing.top_k), 1))
        top = seen[np.argsort(-(x[seen] / n[seen]), kind="stable")[:10]]
        for t in top:
            if x[t]:
                rows.append({"policy": policy, "capacity_factor": cf, "batch_tokens": ct, "label": "token_id",
                             "value": str(int(t)), "assignments": int(n[t]), "dropped": int(x[t]),
                             "drop_rate": x[t] / n[t]})
    return pl.DataFrame(rows) if rows else pl.DataFrame()
