"""Persist routing traces in DuckDB: the public schema, the packed layout, the writer thread.

The store knows nothing about models or hooks: it receives numpy arrays (a :class:`WriteBatch`)
and answers SQL. Analysis reads a run back as :class:`RunRouting` (per-token routes,
:func:`load_routing`) or :class:`RunAggregates` (a stats-mode run, :func:`load_aggregates`).
"""

from moelens.store.aggregates import RunAggregates, load_aggregates
from moelens.store.arrays import RunRouting, load_routing
from moelens.store.db import RunInfo, Store, translate_duckdb_error
from moelens.store.schema import SCHEMA_VERSION
from moelens.store.writer import TraceWriter, WriteBatch

__all__ = ["Store", "RunInfo", "SCHEMA_VERSION", "TraceWriter", "WriteBatch", "translate_duckdb_error",
           "RunRouting", "RunAggregates", "load_routing", "load_aggregates"]
