"""The Rich console the commands print through.

On a terminal Rich fits tables to the window. Piped or redirected, Rich would assume 80 columns
and cut cells (``lay…``, ``82,…``); there the console is made wide enough for every table to keep
its natural width, unless ``COLUMNS`` says otherwise.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["console", "UNBOUNDED_WIDTH"]

UNBOUNDED_WIDTH = 4096


def console(*, stderr: bool = False) -> Any:
    from rich.console import Console

    out = Console(stderr=stderr)
    if out.is_terminal or os.environ.get("COLUMNS"):
        return out
    return Console(stderr=stderr, width=UNBOUNDED_WIDTH)
