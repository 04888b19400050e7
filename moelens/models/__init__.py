"""Model adapters: per-family structure tables, tiny random models for tests and demos."""
