"""Run numpy's BLAS single-threaded for a while (restored afterwards).

The report's bootstrap multiplies many modest matrices. OpenBLAS's own threads make those
products several times slower when the cores are already busy (our worker processes, or other
programs): 9.5 ms instead of 1.3 ms for six [200 x 330] @ [330 x 128] products on a loaded
2-core machine. The layer pass parallelises over processes instead, so each uses one BLAS thread.
The library is found among the process's loaded shared objects (Linux); elsewhere this is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from typing import Iterator

__all__ = ["single_threaded_blas"]

_NAMES = [("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
          ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
          ("openblas_get_num_threads", "openblas_set_num_threads")]


def _openblas():
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.split()[-1] and ".so" in line.split()[-1]}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get, set_ in _NAMES:
            if hasattr(lib, get) and hasattr(lib, set_):
                return getattr(lib, get), getattr(lib, set_)
    return None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    import numpy  # noqa: F401 - the BLAS must be loaded to be found

    funcs = _openblas()
    if funcs is None:
        yield
        return
    get, set_ = funcs
    previous = int(get())
    set_(1)
    try:
        yield
    finally:
        set_(previous)
