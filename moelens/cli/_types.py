"""argparse types for list-valued flags; a malformed value is an ``argument --flag: ...`` usage error."""

from __future__ import annotations

import argparse

__all__ = ["layer_list", "name_list", "int_list", "MAX_RANGE"]

MAX_RANGE = 100_000  # no model has more layers; a bigger range is a typo (0-99999999)


def _int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be integers like 0,3,8-11; got {text.strip()!r}") from None


def layer_list(text: str) -> tuple[int, ...]:
    """``"0,3,8-11"`` -> ``(0, 3, 8, 9, 10, 11)``."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            cut = part.index("-", 1)
            lo, hi = _int(part[:cut], "layers"), _int(part[cut + 1:], "layers")
            if hi < lo:
                raise argparse.ArgumentTypeError(f"layer range {part!r} runs backwards; write it as {hi}-{lo}")
            if hi - lo >= MAX_RANGE:
                raise argparse.ArgumentTypeError(f"layer range {part!r} spans more than {MAX_RANGE:,} layers")
            out.extend(range(lo, hi + 1))
        else:
            out.append(_int(part, "layers"))
    if not out:
        raise argparse.ArgumentTypeError("give at least one layer, e.g. 0,3,8-11")
    return tuple(out)


def name_list(text: str) -> tuple[str, ...]:
    """``"language, position"`` -> ``("language", "position")``."""
    out = tuple(x.strip() for x in text.split(",") if x.strip())
    if not out:
        raise argparse.ArgumentTypeError("give at least one name, e.g. language,position")
    return out


def int_list(text: str) -> tuple[int, ...]:
    """``"8,16"`` -> ``(8, 16)``."""
    out = tuple(_int(x, "values") for x in text.split(",") if x.strip())
    if not out:
        raise argparse.ArgumentTypeError("give at least one integer, e.g. 8,16")
    return out
