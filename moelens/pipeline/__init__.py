"""The trace pipeline: small stages with one data type between each, and pluggable sources of routing.

A run is driven by :func:`moelens.pipeline.run.run_source`, which owns the store side (resume,
identity check, the writer thread, the run's status) and reads :class:`~moelens.store.WriteBatch`
objects - complete documents - from a *source*. Sources:

* :class:`~moelens.pipeline.transformers_source.TransformersSource`: a transformers model run over
  a dataset. Its stages: :func:`~moelens.pipeline.plan.make_run_plan` (a frozen
  :class:`~moelens.pipeline.plan.RunPlan` from the config and the model's
  :class:`~moelens.models.discover.ModelPlan`) -> :mod:`~moelens.pipeline.windows` (documents to
  windows and batches, pure) -> a collector (:mod:`~moelens.pipeline.collectors`: hook events of one
  forward in, :class:`~moelens.pipeline.types.RouteRows` or
  :class:`~moelens.pipeline.types.AggregateRows` out) -> a capture mode
  (:mod:`~moelens.pipeline.modes`: rows in, write batches of finished documents out).
* engine importers and shard merges (:mod:`moelens.sources`) produce write batches directly.

``docs/architecture.md`` describes the stages, the types between them and where new pieces go.
"""
