"""Sources of routing other than a running transformers model, all feeding the same writer.

Each module here holds a source for :func:`moelens.pipeline.run.run_source`: it reads routing that
something else produced (the shards of a data-parallel trace, a serving engine's routing dump) and
yields write batches of complete documents into the public schema, recording in
``runs.config["source"]`` what the source lacks.
"""
