"""moelens.interventions: causal tests of experts on a running model, and what they cost.

* :func:`intervene` - ablate, prune, force, scale or merge experts while a block is open
  (:mod:`.core`, :mod:`.routing`, :mod:`.weights`); :meth:`Intervention.export` saves the result;
* :func:`measure` - the effect of interventions on next-token loss, KL and top-1 agreement against
  the unmodified model on the same tokens, per label value with bootstrap intervals (:mod:`.effects`);
* sweeps and the causal verdict of specialists against matched random experts (:mod:`.sweeps`).

Torch loads when an intervention is made, not on import.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["intervene", "Intervention", "measure"]

_LAZY = {"intervene": "moelens.interventions.core", "Intervention": "moelens.interventions.core",
         "measure": "moelens.interventions.effects"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'moelens.interventions' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
