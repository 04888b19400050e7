"""What the CLI prints for an error: one mapping from typed library errors to one-line messages.

As in huggingface_hub's ``hf`` CLI, the commands raise library errors and this module alone turns
them into text. A :class:`~moelens.errors.MoelensError` names options through
:func:`moelens.errors.option`; here they are spelled as the running command's flags (``--batch-size``,
``--run``), so the CLI never shows a Python field name and the library never a flag. Errors of the
environment that a user can fix (a folder where a file should be, no permission) are one line too.
"""

from __future__ import annotations

import argparse
from typing import Callable

from moelens.errors import MoelensError

__all__ = ["UsageError", "flag_names", "format_known_exception"]


class UsageError(Exception):
    """argparse rejected the command line (unknown flag, wrong type, missing argument)."""


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{dest: how the command line spells it}``: ``--long-flag`` for options, ``NAME`` for positionals."""
    out: dict[str, str] = {}
    for action in parser._actions:  # noqa: SLF001 - argparse keeps its actions here
        if action.dest in (argparse.SUPPRESS, "help"):
            continue
        if action.option_strings:
            longest = max(action.option_strings, key=len)
            if isinstance(action, argparse._StoreFalseAction) or longest.startswith("--no-"):  # noqa: SLF001
                continue  # --no-progress spells "progress=False"; the positive name has no flag
            out.setdefault(action.dest, longest)
        else:
            out.setdefault(action.dest, (action.metavar or action.dest).upper())
    return out


def _path_error(error: OSError) -> str:
    where = f" {error.filename}" if error.filename else ""
    reason = {IsADirectoryError: "is a folder, not a file", NotADirectoryError: "is not a folder (a part of the path is a file)",
              FileExistsError: "already exists and is not a folder", PermissionError: "cannot be written or read (permission denied)",
              FileNotFoundError: "does not exist"}
    for kind, text in reason.items():
        if isinstance(error, kind):
            return f"{where.strip()} {text}; choose another path."
    return f"{error.strerror or error}:{where}."


CLI_ERROR_MAPPINGS: dict[type[BaseException], Callable[[BaseException, Callable[[str], str | None]], str]] = {
    MoelensError: lambda e, flag: e.render(flag),  # type: ignore[attr-defined]
    UsageError: lambda e, flag: str(e),
    # a path the user gave that the system refuses (a file where a folder is needed, no permission)
    IsADirectoryError: lambda e, flag: _path_error(e),  # type: ignore[arg-type]
    NotADirectoryError: lambda e, flag: _path_error(e),  # type: ignore[arg-type]
    FileExistsError: lambda e, flag: _path_error(e),  # type: ignore[arg-type]
    PermissionError: lambda e, flag: _path_error(e),  # type: ignore[arg-type]
}


def format_known_exception(error: BaseException, flags: dict[str, str]) -> tuple[str, int] | None:
    """``(one-line message, exit code)`` for an error a user can fix, ``None`` for an internal one."""
    for kind, formatter in CLI_ERROR_MAPPINGS.items():
        if isinstance(error, kind):
            text = " ".join(formatter(error, flags.get).split())
            return text, getattr(error, "exit_code", 2)
    return None
