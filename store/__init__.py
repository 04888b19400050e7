"""Persist routing traces in DuckDB: the public schema, the packed layout, the writer thread.

The store knows nothing about models or hooks: it receives numpy arrays (a :class:`WriteBatch`)
and answers SQL. Analysis reads it back through :func:`load_routing`.
"""

from moelens.store.db import RunInfo, Store, translate_duckdb_error
from moelens.store.schema import SCHEMA_VERSION
from moelens.store.writer import TraceWriter, WriteBatch

__all__ = ["Store", "RunInfo", "SCHEMA_VERSION", "TraceWriter", "WriteBatch", "translate_duckdb_error"]
