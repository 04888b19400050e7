"""``moelens.capture(model)``: record routing inside a notebook, as Polars frames.

    >>> with moelens.capture(model) as cap:                     # doctest: +SKIP
    ...     model.generate(**inputs, max_new_tokens=5)
    >>> cap.routes()        # step, phase, row, pos, layer, tag, rank, expert, weight
    >>> cap.load()          # tokens and share per (layer, expert)

Every forward of the model inside the block is recorded: a ``generate()`` call gives one
``prefill`` step and one ``decode`` step per new token. Padding tokens (attention mask 0) are
never recorded. The hooks are removed when the block exits, also after an exception.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import numpy as np

from moelens.hooks.attach import attach
from moelens.models.discover import ModelPlan, plan_model
from moelens.pipeline.collectors import HostCollector
from moelens.pipeline.types import HostRoute, HostStep

__all__ = ["capture", "Capture"]


class Capture:
    """What one ``capture()`` block recorded. Frames are built on demand."""

    def __init__(self, plan: ModelPlan, collector: HostCollector) -> None:
        self.plan = plan
        self._collector = collector
        self._steps: list[HostStep] = []
        self._routes: list[HostRoute] = []

    def _sync(self) -> None:
        if self._collector.pending():
            rows = self._collector.finish_batch()
            self._steps.extend(rows.steps)
            self._routes.extend(rows.routes)

    @property
    def metadata(self) -> dict[str, Any]:
        """Family, k, E, shared experts, scoring rule, MoE and dense layers, router sites."""
        return self.plan.metadata()

    @property
    def num_steps(self) -> int:
        self._sync()
        return len(self._steps)

    def routes(self, *, all_sites: bool = False):
        """One row per (token, layer, pass, rank): ``step, phase, row, pos, layer, pass, tag, rank, expert, weight``.

        ``row`` is the token's row in the batch; ``expert`` is null where a capacity router dropped
        the choice (weight 0); ``pass`` is 0 except for the later passes of looped layers.
        ``all_sites`` also includes secondary routers (jetmoe attention).
        """
        import polars as pl

        self._sync()
        steps = {s.step: s for s in self._steps}
        frames = []
        for r in self._routes:
            site = self.plan.sites[r.site]
            if not (site.primary or all_sites):
                continue
            n, k = r.experts.shape
            step = steps.get(r.step)
            seq = step.seq if step else max(n, 1)
            pos = step.positions[r.rows] if step else r.rows
            expert = r.experts.reshape(-1).astype(np.int32)
            frames.append(pl.DataFrame({
                "step": np.full(n * k, r.step, np.int32),
                "phase": [step.phase if step else "prefill"] * (n * k),
                "row": np.repeat(r.rows // seq, k).astype(np.int32),
                "pos": np.repeat(pos, k).astype(np.int64),
                "layer": np.full(n * k, site.layer, np.int32),
                "pass": np.full(n * k, site.loop_pass, np.int32),
                "tag": [site.tag] * (n * k),
                "rank": np.tile(np.arange(k, dtype=np.int32), n),
                "expert": expert,
                "weight": r.weights.reshape(-1),
            }))
        if not frames:
            return pl.DataFrame(schema={"step": pl.Int32, "phase": pl.String, "row": pl.Int32, "pos": pl.Int64,
                                        "layer": pl.Int32, "pass": pl.Int32, "tag": pl.String, "rank": pl.Int32,
                                        "expert": pl.Int32, "weight": pl.Float32})
        routes = pl.concat(frames, how="vertical_relaxed")
        return routes.with_columns(pl.when(pl.col("expert") >= 0).then(pl.col("expert")).alias("expert"))

    def tokens(self):
        """One row per recorded token: ``step, phase, row, pos, token_id``."""
        import polars as pl

        self._sync()
        frames = []
        for s in self._steps:
            rows = np.flatnonzero(s.valid)
            frames.append(pl.DataFrame({
                "step": np.full(len(rows), s.step, np.int32), "phase": [s.phase] * len(rows),
                "row": (rows // s.seq).astype(np.int32), "pos": s.positions[rows],
                "token_id": s.input_ids[rows] if s.input_ids is not None else np.full(len(rows), -1),
            }))
        return pl.concat(frames) if frames else pl.DataFrame()

    def router_logits(self, layer: int) -> np.ndarray:
        """Router logits ``[tokens, E']`` of ``layer`` in recording order (needs ``logits=True``)."""
        self._sync()
        parts = [r.logits for r in self._routes
                 if self.plan.sites[r.site].layer == layer and self.plan.sites[r.site].primary and r.logits is not None]
        if not parts:
            raise ValueError(f"no logits recorded for layer {layer}; capture with logits=True.")
        return np.concatenate(parts)

    def load_chart(self, title: str | None = None):
        """Layer x expert heatmap of utilization of what was captured (needs altair)."""
        from moelens.viz.charts import load_heatmap

        return load_heatmap(self.load(), num_experts=self.plan.num_experts, title=title)

    def load(self):
        """Tokens per (layer, expert) with the expert's share of the layer's routed choices."""
        import polars as pl

        routes = self.routes().drop_nulls("expert")
        counts = routes.group_by("layer", "expert").agg(pl.len().alias("tokens"))
        return counts.with_columns(
            (pl.col("tokens") / pl.col("tokens").sum().over("layer")).alias("share")
        ).sort("layer", "expert")


@contextlib.contextmanager
def capture(model: Any, *, logits: bool = False, layers: Iterable[int] | None = None,
            verify: bool = False) -> Iterator[Capture]:
    """Record the routing decisions of every forward of ``model`` inside the ``with`` block.

    Args:
        model: a transformers MoE model (any of the supported families).
        logits: keep the full router logits (``Capture.router_logits``).
        layers: only these decoder-layer indices.
        verify: cross-check every call against what the experts module received.
    """
    plan = plan_model(model)
    collector = HostCollector(plan, logits=logits)
    result = Capture(plan, collector)
    with attach(model, plan, collector, logits=logits, verify=verify, layers=layers):
        yield result
    result._sync()
