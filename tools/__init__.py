"""Repository tools that are not part of the moelens wheel (run them from a checkout)."""
