"""Typed errors a user can cause, each rendered as one line that says what to do.

Every exception raised for bad input derives from :class:`MoelensError`. ``str(error)`` is a
single line naming the problem and the fix; the CLI prints exactly that line (tracebacks only
with ``MOELENS_DEBUG=1`` or ``--debug``) and exits with :attr:`MoelensError.exit_code`.
"""

from __future__ import annotations


class MoelensError(Exception):
    """Base class for errors caused by input, configuration or environment."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        message = " ".join(message.split())
        if hint:
            message = f"{message} {' '.join(hint.split())}"
        super().__init__(message)


class ConfigError(MoelensError):
    """An option or a combination of options is invalid."""


# --- models -----------------------------------------------------------------------------------


class ModelError(MoelensError):
    """The model cannot be loaded or captured."""


class ModelNotFoundError(ModelError):
    """The model path or hub id does not resolve to a model."""


class NotMoEModelError(ModelError):
    """The model has no Mixture-of-Experts layers."""


class UnknownArchitectureError(ModelError):
    """The model's architecture is not in the family table."""


class CaptureError(MoelensError):
    """A router produced output that its adapter cannot read."""


class MoelensWarning(UserWarning):
    """Something works, but not the way moelens was tested; the message says what and why."""


class GenericAdapterWarning(MoelensWarning):
    """A model's family is not in the family table; the generic adapter captures it, verified."""


class UntestedVersionWarning(MoelensWarning):
    """A dependency (transformers) is outside the version range moelens was tested with."""


# --- data -------------------------------------------------------------------------------------


class DataError(MoelensError):
    """The dataset cannot be read as asked."""


class DataNotFoundError(DataError):
    """The dataset path does not exist."""


class ColumnNotFoundError(DataError):
    """A requested column is missing from the dataset."""


class EmptyDatasetError(DataError):
    """The dataset has no usable documents."""


class DataEncodingError(DataError):
    """A text file is not valid UTF-8."""


class VocabularyError(DataError):
    """Token ids fall outside the model's vocabulary."""


class EngineFormatError(DataError):
    """A serving or training engine's routing file (or object) is not what that engine writes."""


class MissingRankError(EngineFormatError):
    """A multi-rank dump lacks the files of some ranks."""


class UnavailableError(MoelensError):
    """The run's source does not record what an analysis needs (gate weights, token ids, per-token routes)."""


# --- store ------------------------------------------------------------------------------------


class StoreError(MoelensError):
    """The trace database cannot be used."""


class SchemaVersionError(StoreError):
    """The database was written with another schema version."""


class DatabaseLockedError(StoreError):
    """Another process holds the database open for writing."""


class CorruptDatabaseError(StoreError):
    """The file is not a readable DuckDB database."""


class RunNotFoundError(StoreError):
    """The database has no run with the requested id."""


class RunMismatchError(StoreError):
    """A resumed run was started with a different model, data or options."""
