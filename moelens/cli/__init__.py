"""The ``moelens`` command line: one module per command, errors as one actionable line.

Known errors (:class:`~moelens.errors.MoelensError`, a bad command line, a path the system
refuses) print ``error: <what to do>`` on one line and exit 2 - :mod:`moelens.cli._errors` maps
each to its message, with options spelled as this command's flags; Ctrl-C exits 130 after the
work already committed is safe; anything unexpected prints one line and exits 1. Set
``MOELENS_DEBUG=1`` (or pass ``--debug``) to see full tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

__all__ = ["main", "build_parser"]

# command -> module under moelens.cli; each module has add_parser(subparsers) and run(args)
COMMANDS = {
    "demo": "demo",
    "trace": "trace",
    "import": "import_",
    "report": "report",
    "compare": "compare",
    "serving": "serving",
    "intervene": "intervene",
    "export": "export",
    "families": "families",
    "runs": "runs",
    "upgrade": "upgrade",
    "merge": "merge",
}


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors raised as one line instead of a usage block and ``sys.exit``."""

    def error(self, message: str):  # type: ignore[override]
        from moelens.cli._errors import UsageError

        raise UsageError(f"{message} (see `{self.prog} --help`).")


def build_parser() -> argparse.ArgumentParser:
    from moelens._version import __version__

    parser = _Parser(
        prog="moelens", formatter_class=_Formatter,
        description="Capture, store and analyse the routing of Mixture-of-Experts models.",
        epilog="examples:\n  moelens demo\n  moelens trace moelens-mini data.jsonl --out runs.duckdb\n"
               "  moelens import vllm outputs.jsonl --out runs.duckdb --num-experts 64\n"
               "  moelens report runs.duckdb\n  moelens export runs.duckdb --site site/")
    parser.add_argument("--version", action="version", version=f"moelens {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        import_module(f"moelens.cli.{module}").add_parser(sub, _Formatter)
    from moelens.cli._errors import flag_names

    every: dict[str, str] = {}
    own: dict[str, dict[str, str]] = {}
    for name, command in sub.choices.items():  # a name another command has a flag for is spelled as that flag
        # a command module may map option fields whose names differ from its flags (OPTION_FLAGS)
        own[name] = {**flag_names(command), **getattr(import_module(f"moelens.cli.{COMMANDS[name]}"), "OPTION_FLAGS", {})}
        every.update({k: v for k, v in own[name].items() if v.startswith("--")})
    for name, command in sub.choices.items():
        command.set_defaults(flags={**every, **own[name]})
    return parser


def main(argv: list[str] | None = None) -> int:
    from moelens.cli._errors import format_known_exception

    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("MOELENS_DEBUG", "") not in ("", "0")
    flags: dict[str, str] = {}
    try:
        args = build_parser().parse_args(argv)
        flags = args.flags
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("\ninterrupted: everything committed so far is kept; run the same command again to resume.",
              file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line for people, traceback for developers
        if debug:
            raise
        known = format_known_exception(error, flags)
        if known is not None:
            print(f"error: {known[0]}", file=sys.stderr)
            return known[1]
        message = " ".join(str(error).split())[:300]
        print(f"internal error: {type(error).__name__}: {message} (set MOELENS_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
