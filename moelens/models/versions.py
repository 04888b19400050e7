"""The transformers versions moelens was tested with, and a one-line warning outside them.

Capture reads each family's router output as the family table describes it; a transformers
release can change a router, add a family or rename a keyword (5.24 passes the KV cache as
``cache``). moelens is tested against the oldest and the newest transformers in
:data:`TESTED_TRANSFORMERS` (the same range as ``[tool.moelens]`` in pyproject.toml, checked by a
test). Under another version it still runs - the generic adapter and ``--verify`` catch routing
that changed - but says so once per process.
"""

from __future__ import annotations

import functools
import warnings

from moelens.errors import UntestedVersionWarning

__all__ = ["TESTED_TRANSFORMERS", "check_transformers_version", "version_tuple"]

# (oldest, newest) transformers release the whole test suite passed with
TESTED_TRANSFORMERS = ("5.23.0", "5.25.0")


def version_tuple(version: str) -> tuple[int, ...]:
    """``"5.24.0.dev0"`` -> ``(5, 24, 0)``: the numeric release part."""
    out = []
    for part in version.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def outside_tested_range(version: str, tested: tuple[str, str] = TESTED_TRANSFORMERS) -> bool:
    lo, hi = (version_tuple(v) for v in tested)
    release = version_tuple(version)[:len(hi)]
    return not lo <= release <= hi


@functools.lru_cache(maxsize=1)
def check_transformers_version() -> str | None:
    """Warn (once) when the installed transformers is outside :data:`TESTED_TRANSFORMERS`; return it."""
    try:
        import transformers
    except ImportError:
        return None
    version = transformers.__version__
    if outside_tested_range(version):
        lo, hi = TESTED_TRANSFORMERS
        warnings.warn(f"moelens was tested with transformers {lo} to {hi}, this is {version}: capture checks every"
                      " family it does not know against its experts; pass --verify (verify=True) to check the known"
                      " ones too.", UntestedVersionWarning, stacklevel=3)
    return version
