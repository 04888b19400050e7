"""The report's single pass over the layers, run serially or split over worker processes.

Every per-layer metric of the report (load, specialization counts and bootstrap, vocabulary,
co-activation, repeat rates, reuse gaps, cross-layer transitions) is computed in one pass, so
each layer's derived arrays (:class:`~moelens.analysis._common.LayerView`) are built once.
Layers are independent, so on Linux the pass can be split into contiguous blocks of layers run
by forked worker processes: they inherit the loaded routing without copying it and return only
small per-layer results (numpy only in the workers; polars and DuckDB stay in the parent).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from moelens.analysis import coactivation, crosslayer, load, temporal, vocabulary
from moelens.analysis._blas import single_threaded_blas
from moelens.analysis._common import LayerView, Workspace, layer_positions
from moelens.analysis.options import ReportOptions
from moelens.analysis.specialization import SpecializationRun

__all__ = ["LayerPass", "PassResult", "default_workers"]

_ACTIVE: "LayerPass | None" = None  # the pass a forked worker runs (inherited through fork)


@dataclass
class PassResult:
    load: list = field(default_factory=list)
    vocabulary: list = field(default_factory=list)
    coactivation: list = field(default_factory=list)
    rates: list = field(default_factory=list)
    reuse: list = field(default_factory=list)
    crosslayer: list = field(default_factory=list)
    spec_parts: list = field(default_factory=list)  # per label: per-layer test arrays
    spec_nmis: list = field(default_factory=list)  # per label: per-layer NMI rows
    label_rates: dict = field(default_factory=dict)  # label -> repeat-rate rows per (layer, value)
    timings: dict = field(default_factory=dict)

    def extend(self, other: "PassResult") -> None:
        for name in ("load", "vocabulary", "coactivation", "rates", "reuse", "crosslayer"):
            getattr(self, name).extend(getattr(other, name))
        for label, rows in other.label_rates.items():
            self.label_rates.setdefault(label, []).extend(rows)
        if not self.spec_parts:
            self.spec_parts = [[] for _ in other.spec_parts]
            self.spec_nmis = [[] for _ in other.spec_nmis]
        for mine, theirs in zip(self.spec_parts, other.spec_parts):
            mine.extend(theirs)
        for mine, theirs in zip(self.spec_nmis, other.spec_nmis):
            mine.extend(theirs)
        for stage, seconds in other.timings.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds


def default_workers(routing: Any) -> int:
    """2 worker processes on Linux for runs of at least 4 M routes (fork is cheap there), else 1."""
    routes = routing.experts.size
    if not sys.platform.startswith("linux") or routes < 4_000_000:
        return 1
    return max(1, min(2, os.cpu_count() or 1))


class LayerPass:
    def __init__(self, routing: Any, labels: list[str], options: ReportOptions,
                 repeat_labels: list[str] | None = None) -> None:
        self.routing, self.options = routing, options
        sopt = options.specialization
        self.indices = layer_positions(routing.layers, options.layers)
        self.spec = SpecializationRun(routing, labels, sopt) if labels else None
        self.vocab = vocabulary.TokenSpecialization(routing, options.vocabulary)
        self.tempo = temporal.Temporal(routing, None, sopt.seed, labels=repeat_labels or ())
        self.fold = crosslayer.document_folds(routing)

    def run(self, workers: int = 1) -> PassResult:
        blocks = _split(self.indices, workers)
        if len(blocks) <= 1:
            with single_threaded_blas():
                return self._block(self.indices)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        global _ACTIVE
        _ACTIVE = self
        try:
            with ProcessPoolExecutor(len(blocks), mp_context=multiprocessing.get_context("fork")) as pool:
                parts = list(pool.map(_run_block, blocks))
        finally:
            _ACTIVE = None
        out = PassResult()
        for part in parts:
            out.extend(part)
        return out

    def _block(self, indices: list[int]) -> PassResult:
        routing, E = self.routing, self.routing.num_experts
        out = PassResult()
        clock = time.perf_counter
        last = clock()

        def lap(stage: str) -> None:
            nonlocal last
            now = clock()
            out.timings[stage] = out.timings.get(stage, 0.0) + now - last
            last = now

        ws = Workspace()
        position = {i: p for p, i in enumerate(self.indices)}
        for i in indices:
            view = LayerView(routing, i, ws)
            s = load.layer_load_stats(view.counts, self.options.load)
            out.load.append({"layer": view.layer, "tokens": view.n_recorded, **s})
            lap("load metrics")
            if self.spec is not None:
                self.spec.add_layer(view)
            lap("specialization")
            out.vocabulary.append(self.vocab.layer_row(view))
            lap("vocabulary")
            out.coactivation.append(coactivation.summary_row(view, min_count=self.options.coactivation_min_count))
            lap("coactivation")
            rates, by_label = self.tempo.layer_rows(view)
            out.rates.extend(rates)
            for label, rows in by_label.items():
                out.label_rates.setdefault(label, []).extend(rows)
            out.reuse.append(self.tempo.reuse_row(view))
            lap("temporal")
            p = position[i]
            if p > 0:
                j = self.indices[p - 1]
                out.crosslayer.append(crosslayer.pair_row(routing.layers[j], routing.experts[j][:, 0], view.layer,
                                                          view.top1, self.fold, E))
            lap("crosslayer")
        if self.spec is not None:
            out.spec_parts = [prep.parts for prep in self.spec.labels]
            out.spec_nmis = [prep.nmis for prep in self.spec.labels]
        return out

    def specialization(self, result: PassResult):
        """The finished label analyses from the per-layer parts of ``result``."""
        if self.spec is None:
            return []
        for prep, parts, nmis in zip(self.spec.labels, result.spec_parts, result.spec_nmis):
            prep.parts, prep.nmis = parts, nmis
        return self.spec.finish()


def _split(indices: list[int], workers: int) -> list[list[int]]:
    workers = max(1, min(workers, len(indices) // 2 or 1))
    size = -(-len(indices) // workers)
    return [indices[a:a + size] for a in range(0, len(indices), size)]


def _run_block(indices: list[int]) -> PassResult:
    assert _ACTIVE is not None  # set by LayerPass.run before the fork
    with single_threaded_blas():
        return _ACTIVE._block(indices)
