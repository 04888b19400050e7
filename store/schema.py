"""The public DuckDB schema (version :data:`SCHEMA_VERSION`) and the SQL that builds it.

Public tables and views (users write SQL against these; the column lists are stable):

* ``runs(run_id, model, family, revision, dtype, num_layers, moe_layers, num_experts, top_k,
  num_shared_experts, scoring, dataset, status, created_at, moelens_version, schema_version,
  config)`` - one row per traced run; ``config`` (JSON) holds the options and routing metadata.
* ``sites(run_id, site, layer, tag, path, is_primary, num_experts, top_k, pass)`` - one row per router
  module of the run's model and loop pass (jetmoe has an attention router per layer, seq2seq models
  an encoder and a decoder stack, looped layers one site per pass); ``layer`` is the model's layer
  index (encoder layers first), ``pass`` 0 except for the later passes of looped layers.
* ``documents(run_id, doc_id, domain, language, n_tokens, source, meta)`` - ``doc_id`` is the row
  index in the dataset; skipped (empty) documents have ``n_tokens = 0`` and a reason in ``meta``.
* ``tokens(run_id, doc_id, pos, token_id, token)`` - ``pos`` is the position in the document.
* ``routes(run_id, doc_id, pos, layer, rank, expert, weight)`` (view) - one row per routed
  choice at a primary site; ``rank`` 0 is the router's first slot; ``expert`` is NULL where the
  choice was dropped (capacity routers) or skipped (zaya), with ``weight`` 0. ``weight`` is NULL
  throughout a run whose source records no gate weights (serving-engine imports; version 3).
* ``routes_all`` (view) - as ``routes`` plus ``site``, ``tag``, ``is_primary`` and ``pass``, over every
  site. A looped layer has one row per pass in ``routes`` (same layer), told apart by ``pass`` here.
* ``router_logits(run_id, doc_id, pos, layer, logits)`` (view) - only for runs traced with logits.
* ``router_confidence(run_id, doc_id, pos, layer, entropy, margin, lse)`` (view) - per token and
  layer: entropy of softmax(logits) in nats, top-1 margin p1 - p2, logsumexp (z-loss = mean lse^2);
  recorded by the device capture path (``--capture triton``).
* ``stats_expert_counts(run_id, layer, label_kind, label, expert, count)``,
  ``stats_coactivation(run_id, layer, expert_a, expert_b, count)``,
  ``stats_entropy(run_id, layer, label_kind, label, bin, lo, hi, count)``,
  ``stats_tokens(run_id, layer, label_kind, label, tokens)`` (views) - the aggregates of
  ``--mode stats`` runs (``label_kind`` 'all' with a NULL label for the whole run; co-activation
  counts ordered pairs of a token's experts, both orders, the diagonal being the expert's count).

Physically, routes live in one table per run, ``_routes_<run_key>(doc_id, pos, site, e0.., w0..)``:
one row per token and router site, the k ids bit-packed four to a BIGINT word (``e*``) and the k
float32 weights two to a word (``w*``), see :mod:`moelens.store.packing`. The word columns are
stored uncompressed: random bit patterns do not compress, and skipping the attempt is what lets
ingest keep up with a GPU. A run without gate weights has no ``w*`` columns at all (version 3).
``doc_id`` is a BIGINT in every table, the physical ones included; older files kept it as a 32-bit
INTEGER in the physical tables: they read the same, the upgrade widens them
(:func:`widen_doc_id_sql`), and the writer refuses a larger id for a run whose table is still
narrow (:data:`NARROW_DOC_ID`).

Version history (``MIGRATIONS`` upgrades older files in place, ``moelens upgrade``): 1 - first
release; 2 - ``sites.pass``; 3 - route tables without weight words for sources that record no
gate weights (``weight`` NULL in the views; nothing changes in existing tables); 4 - the tables of causal
experiments (``intervention_runs``, ``interventions``, ``whatif_curves``; see
:mod:`moelens.interventions`).
"""

from __future__ import annotations

from moelens.store.packing import expert_words, weight_words

SCHEMA_VERSION = 4

# Largest doc_id that the physical tables of runs created before doc_id became BIGINT can hold (the
# public views were BIGINT from the start); upgrading a database widens them (widen_doc_id_sql).
NARROW_DOC_ID = 2 ** 31 - 1

__all__ = ["SCHEMA_VERSION", "MIGRATIONS", "NARROW_DOC_ID", "NARROW_TABLES_SQL", "widen_doc_id_sql", "BASE_DDL", "route_table",
           "logits_table", "confidence_table", "route_table_ddl",
           "expert_columns", "weight_columns", "logits_table_ddl", "confidence_table_ddl", "routes_view_sql",
           "logits_view_sql", "confidence_view_sql", "STATS_TABLES"]

BASE_DDL = [
    "CREATE TABLE IF NOT EXISTS moelens_meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    # causal experiments (version 4): one run of `moelens intervene`, one row per intervention x label value
    """CREATE TABLE IF NOT EXISTS intervention_runs (
        irun_id VARCHAR PRIMARY KEY, model VARCHAR, dataset VARCHAR, status VARCHAR, created_at TIMESTAMP,
        moelens_version VARCHAR, config JSON)""",
    """CREATE TABLE IF NOT EXISTS interventions (
        irun_id VARCHAR, intervention_id INTEGER, kind VARCHAR, layer INTEGER, experts INTEGER[], spec JSON,
        description VARCHAR, control BOOLEAN, control_for INTEGER, label_kind VARCHAR, label_value VARCHAR,
        n_docs INTEGER, n_tokens BIGINT, base_loss DOUBLE, d_loss DOUBLE, d_loss_lo DOUBLE, d_loss_hi DOUBLE,
        kl DOUBLE, kl_lo DOUBLE, kl_hi DOUBLE, top1_agree DOUBLE, top1_lo DOUBLE, top1_hi DOUBLE,
        PRIMARY KEY (irun_id, intervention_id, label_kind, label_value))""",
    """CREATE TABLE IF NOT EXISTS whatif_curves (
        irun_id VARCHAR, method VARCHAR, layer INTEGER, n_removed INTEGER, experts INTEGER[], loss DOUBLE,
        d_loss DOUBLE, kl DOUBLE, top1_agree DOUBLE, PRIMARY KEY (irun_id, method, layer, n_removed))""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY, run_key INTEGER NOT NULL UNIQUE,
        model VARCHAR, family VARCHAR, revision VARCHAR, dtype VARCHAR,
        num_layers INTEGER, moe_layers INTEGER[], num_experts INTEGER, top_k INTEGER,
        num_shared_experts INTEGER, scoring VARCHAR, dataset VARCHAR, status VARCHAR,
        created_at TIMESTAMP, moelens_version VARCHAR, schema_version INTEGER, config JSON)""",
    """CREATE TABLE IF NOT EXISTS sites (
        run_id VARCHAR, site SMALLINT, layer INTEGER, tag VARCHAR, path VARCHAR,
        is_primary BOOLEAN, num_experts INTEGER, top_k INTEGER, pass SMALLINT DEFAULT 0,
        PRIMARY KEY (run_id, site))""",
    """CREATE TABLE IF NOT EXISTS documents (
        run_id VARCHAR, doc_id BIGINT, domain VARCHAR, language VARCHAR, n_tokens INTEGER,
        source VARCHAR, meta JSON, PRIMARY KEY (run_id, doc_id))""",
    """CREATE TABLE IF NOT EXISTS tokens (
        run_id VARCHAR, doc_id BIGINT, pos INTEGER, token_id INTEGER, token VARCHAR)""",
    # stats mode: partial aggregates, each committed with the documents it covers (views sum them)
    """CREATE TABLE IF NOT EXISTS _stats_expert_counts (
        run_id VARCHAR, layer INTEGER, label_kind VARCHAR, label VARCHAR, expert INTEGER, count BIGINT)""",
    """CREATE TABLE IF NOT EXISTS _stats_coactivation (
        run_id VARCHAR, layer INTEGER, expert_a INTEGER, expert_b INTEGER, count BIGINT)""",
    """CREATE TABLE IF NOT EXISTS _stats_entropy (
        run_id VARCHAR, layer INTEGER, label_kind VARCHAR, label VARCHAR, bin INTEGER, lo FLOAT, hi FLOAT,
        count BIGINT)""",
    """CREATE TABLE IF NOT EXISTS _stats_tokens (
        run_id VARCHAR, layer INTEGER, label_kind VARCHAR, label VARCHAR, tokens BIGINT)""",
    """CREATE OR REPLACE VIEW stats_expert_counts AS SELECT run_id, layer, label_kind, label, expert,
        sum(count)::BIGINT AS count FROM _stats_expert_counts GROUP BY ALL""",
    """CREATE OR REPLACE VIEW stats_coactivation AS SELECT run_id, layer, expert_a, expert_b,
        sum(count)::BIGINT AS count FROM _stats_coactivation GROUP BY ALL""",
    """CREATE OR REPLACE VIEW stats_entropy AS SELECT run_id, layer, label_kind, label, bin, lo, hi,
        sum(count)::BIGINT AS count FROM _stats_entropy GROUP BY ALL""",
    """CREATE OR REPLACE VIEW stats_tokens AS SELECT run_id, layer, label_kind, label,
        sum(tokens)::BIGINT AS tokens FROM _stats_tokens GROUP BY ALL""",
    # float32 from its bit pattern (exact for every finite value, subnormals included)
    """CREATE OR REPLACE MACRO moelens_f32(b) AS (CASE
        WHEN ((b >> 23) & 255) = 255 THEN (CASE WHEN (b & 8388607) = 0 THEN 'inf'::DOUBLE ELSE 'nan'::DOUBLE END)
        WHEN ((b >> 23) & 255) = 0 THEN (b & 8388607)::DOUBLE * 1.401298464324817e-45
        ELSE ((b & 8388607) + 8388608)::DOUBLE * pow(2.0, ((b >> 23) & 255) - 150) END
        * (CASE WHEN ((b >> 31) & 1) = 1 THEN -1.0 ELSE 1.0 END))::FLOAT""",
    # int16 from the low 16 bits; -1 (dropped / skipped) becomes NULL
    """CREATE OR REPLACE MACRO moelens_i16(v) AS
        NULLIF(CASE WHEN v >= 32768 THEN v - 65536 ELSE v END, -1)::SMALLINT""",
]


# version -> the statements that bring a database of that version to the next one (views are
# rebuilt after every upgrade). Each step is additive: no row is rewritten or lost.
MIGRATIONS: dict[int, list[str]] = {
    1: ["ALTER TABLE sites ADD COLUMN pass SMALLINT DEFAULT 0"],
    2: [],  # version 3 adds route tables without weight words for new runs; existing tables stay as they are
    3: [],  # version 4 adds the intervention tables (BASE_DDL creates them, IF NOT EXISTS, after every upgrade)
}


def widen_doc_id_sql(narrow_tables: list[str]) -> list[str]:
    """Statements that turn the 32-bit ``doc_id`` of these physical tables into a BIGINT (values kept)."""
    return [f"ALTER TABLE {table} ALTER doc_id TYPE BIGINT" for table in narrow_tables]


NARROW_TABLES_SQL = ("SELECT table_name FROM information_schema.columns WHERE table_schema = 'main' "
                     "AND column_name = 'doc_id' AND data_type = 'INTEGER' "
                     "AND regexp_matches(table_name, '^_(routes|logits|confidence)_[0-9]+$') ORDER BY table_name")


def route_table(run_key: int) -> str:
    return f"_routes_{int(run_key)}"


def logits_table(run_key: int) -> str:
    return f"_logits_{int(run_key)}"


def confidence_table(run_key: int) -> str:
    return f"_confidence_{int(run_key)}"


def confidence_table_ddl(run_key: int) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {confidence_table(run_key)} (doc_id BIGINT, pos INTEGER, site SMALLINT, "
            "entropy FLOAT, margin FLOAT, lse FLOAT)")


STATS_TABLES = ("expert_counts", "coactivation", "entropy", "tokens")


def confidence_view_sql(runs: list[tuple[str, int]]) -> str:
    """``CREATE VIEW router_confidence`` over the runs that recorded it, as ``(run_id, run_key)``."""
    if not runs:
        body = ("SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS doc_id, NULL::INTEGER AS pos, NULL::INTEGER AS layer,"
                " NULL::FLOAT AS entropy, NULL::FLOAT AS margin, NULL::FLOAT AS lse WHERE false")
    else:
        body = "\nUNION ALL\n".join(
            f"SELECT {_quote(run_id)} AS run_id, c.doc_id::BIGINT AS doc_id, c.pos, s.layer, c.entropy, c.margin, c.lse "
            f"FROM {confidence_table(key)} c JOIN sites s ON s.run_id = {_quote(run_id)} AND s.site = c.site "
            f"WHERE s.is_primary"
            for run_id, key in runs)
    return f"CREATE OR REPLACE VIEW router_confidence AS\n{body}"


def expert_columns(k: int) -> list[str]:
    """Names of the packed id words of a run table sized for ``k`` choices."""
    return [f"e{i}" for i in range(expert_words(k))]


def weight_columns(k: int) -> list[str]:
    """Names of the packed weight words of a run table sized for ``k`` choices."""
    return [f"w{i}" for i in range(weight_words(k))]


def route_table_ddl(run_key: int, k: int, weights: bool = True) -> str:
    columns = expert_columns(k) + (weight_columns(k) if weights else [])
    words = ", ".join(f"{c} BIGINT USING COMPRESSION uncompressed" for c in columns)
    return (f"CREATE TABLE IF NOT EXISTS {route_table(run_key)} (doc_id BIGINT, pos INTEGER, site SMALLINT, "
            f"{words})")


def logits_table_ddl(run_key: int, width: int) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {logits_table(run_key)} (doc_id BIGINT, pos INTEGER, site SMALLINT, "
            f"logits FLOAT[{int(width)}])")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _one_run_routes(run_id: str, run_key: int, k: int, weights: bool = True) -> str:
    table = route_table(run_key)
    e_words = "[" + ", ".join(f"r.{c}" for c in expert_columns(k)) + "]"
    w_words = "[" + ", ".join(f"r.{c}" for c in weight_columns(k)) + "]"
    weight = (f"moelens_f32(({w_words}[1 + t.rank // 2] >> (32 * (t.rank % 2))) & 4294967295)" if weights
              else "NULL::FLOAT")
    return f"""SELECT {_quote(run_id)} AS run_id, r.doc_id::BIGINT AS doc_id, r.pos, s.layer, t.rank::INTEGER AS rank,
        moelens_i16(({e_words}[1 + t.rank // 4] >> (16 * (t.rank % 4))) & 65535) AS expert,
        {weight} AS weight,
        r.site, s.tag, s.is_primary, s.pass
    FROM {table} r
    JOIN sites s ON s.run_id = {_quote(run_id)} AND s.site = r.site
    CROSS JOIN range({int(k)}) t(rank)
    WHERE t.rank < s.top_k"""


_EMPTY_ROUTES = """SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS doc_id, NULL::INTEGER AS pos,
    NULL::INTEGER AS layer, NULL::INTEGER AS rank, NULL::SMALLINT AS expert, NULL::FLOAT AS weight,
    NULL::SMALLINT AS site, NULL::VARCHAR AS tag, NULL::BOOLEAN AS is_primary, NULL::SMALLINT AS pass WHERE false"""


def routes_view_sql(runs: list[tuple]) -> list[str]:
    """``CREATE VIEW`` statements for ``routes`` and ``routes_all`` over ``(run_id, run_key, k[, weights])``."""
    body = "\nUNION ALL\n".join(_one_run_routes(*r) for r in runs) if runs else _EMPTY_ROUTES
    return [
        f"CREATE OR REPLACE VIEW routes_all AS\n{body}",
        "CREATE OR REPLACE VIEW routes AS SELECT run_id, doc_id, pos, layer, rank, expert, weight "
        "FROM routes_all WHERE is_primary",
    ]


def logits_view_sql(runs: list[tuple[str, int]]) -> str:
    """``CREATE VIEW router_logits`` over the runs that stored logits, as ``(run_id, run_key)``."""
    if not runs:
        body = ("SELECT NULL::VARCHAR AS run_id, NULL::BIGINT AS doc_id, NULL::INTEGER AS pos, "
                "NULL::INTEGER AS layer, NULL::FLOAT[] AS logits WHERE false")
    else:
        body = "\nUNION ALL\n".join(
            f"SELECT {_quote(run_id)} AS run_id, l.doc_id::BIGINT AS doc_id, l.pos, s.layer, l.logits::FLOAT[] AS logits "
            f"FROM {logits_table(key)} l JOIN sites s ON s.run_id = {_quote(run_id)} AND s.site = l.site "
            f"WHERE s.is_primary"
            for run_id, key in runs)
    return f"CREATE OR REPLACE VIEW router_logits AS\n{body}"
