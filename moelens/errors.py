"""Typed errors a user can cause, each rendered as one line that says what to do.

Every exception raised for bad input derives from :class:`MoelensError`. ``str(error)`` is a
single line naming the problem and the fix; the CLI prints exactly that line (tracebacks only
with ``MOELENS_DEBUG=1`` or ``--debug``) and exits with :attr:`MoelensError.exit_code`.

A message names options through :func:`option`, never as command-line flags or as Python
keywords directly: ``str(error)`` (what a Python caller sees) spells them as parameters
(``run='base'``), and the CLI renders the same error with its flags (``--run base``) through
:meth:`MoelensError.render`. So the library never speaks in flags, and the CLI never in Python
field names.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Callable


_OPEN, _SEP, _CLOSE = "\u2063", "\u2064", "\u2062"  # invisible characters that no user message holds
_OPTION = re.compile(f"{_OPEN}([A-Za-z_][A-Za-z0-9_]*)(?:{_SEP}([^{_CLOSE}]*))?{_CLOSE}", re.S)
_NO_VALUE = object()


def option(name: str, value: Any = _NO_VALUE) -> str:
    """An option named in an error message, with an optional example value.

    Rendered ``name`` / ``name=value!r`` for Python callers and ``--name`` / ``--name value`` on
    the command line (the CLI maps each name to its flag; ``True`` gives the bare flag, ``None`` and
    ``False`` give "no --flag").
    """
    if value is _NO_VALUE:
        return f"{_OPEN}{name}{_CLOSE}"
    return f"{_OPEN}{name}{_SEP}{value!r}{_CLOSE}"


def _python(name: str, value: str | None) -> str:
    return name if value is None else f"{name}={value}"


class MoelensError(Exception):
    """Base class for errors caused by input, configuration or environment."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        message = " ".join(message.split())
        if hint:
            message = f"{message} {' '.join(hint.split())}"
        self.template = message
        self.options = tuple(m.group(1) for m in _OPTION.finditer(message))
        super().__init__(_OPTION.sub(lambda m: _python(m.group(1), m.group(2)), message))

    def render(self, flag: Callable[[str], str | None]) -> str:
        """The message with every option spelled by ``flag(name)`` (e.g. ``"--batch-size"``).

        ``flag`` returns ``None`` for a name the caller has no spelling for: it keeps its Python form.
        """
        def spell(m: re.Match) -> str:
            name, value = m.group(1), m.group(2)
            text = flag(name)
            if text is None:
                return _python(name, value)
            if value is None:
                return text
            try:
                literal = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                literal = value
            if literal is True:
                return text
            if literal is None or literal is False:
                return f"no {text}"
            if isinstance(literal, (list, tuple)):
                literal = ",".join(str(x) for x in literal)
            return f"{text} {literal}"
        return _OPTION.sub(spell, self.template)


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


class InterventionError(MoelensError):
    """An intervention (ablate, prune, force, scale, merge) cannot be applied as asked."""


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


class UnavailableError(MoelensError):
    """The analysis needs data that this run does not have (per-token routes, gate weights, token text)."""


__all__ = ["option", "MoelensError", "ConfigError", "ModelError", "ModelNotFoundError", "NotMoEModelError",
           "UnknownArchitectureError", "CaptureError", "InterventionError", "MoelensWarning", "GenericAdapterWarning",
           "UntestedVersionWarning", "DataError", "DataNotFoundError", "ColumnNotFoundError",
           "EmptyDatasetError", "DataEncodingError", "VocabularyError", "StoreError", "SchemaVersionError",
           "DatabaseLockedError", "CorruptDatabaseError", "RunNotFoundError", "RunMismatchError", "UnavailableError"]
