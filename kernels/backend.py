"""Backend choice for the capture kernels: ``torch`` (reference, runs anywhere) or ``triton``.

This module owns the one decision "which implementation runs the routing kernels on this device"
and the lazy probe for Triton. It imports neither torch nor triton at module import time; Triton
is imported only when a caller asks for it (``auto`` on a CUDA device, or ``triton`` explicitly).

Rules (:func:`choose_backend`):

- ``torch`` always works.
- ``auto`` picks ``triton`` on a CUDA device when ``import triton`` succeeds and
  ``MOELENS_DISABLE_TRITON`` is not set to a true value; otherwise ``torch``. The caller logs it.
- ``triton`` requires Triton to import, not to be disabled, and either a CUDA device or the
  Triton interpreter (``TRITON_INTERPRET=1`` set before triton was first imported: that is how
  the kernels are tested on CPU). Anything else raises :class:`moelens.errors.ConfigError`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from moelens.errors import ConfigError

__all__ = [
    "BACKENDS",
    "choose_backend",
    "require_triton_device",
    "triton_available",
    "triton_disabled",
    "triton_interpreted",
]

BACKENDS = ("auto", "torch", "triton")
_TRUE = {"1", "true", "yes", "on"}


def triton_disabled() -> bool:
    """True when ``MOELENS_DISABLE_TRITON`` is set to 1/true/yes/on."""
    return os.environ.get("MOELENS_DISABLE_TRITON", "").strip().lower() in _TRUE


def triton_available() -> bool:
    """True when ``import triton`` succeeds (imports it; call only when Triton may be used)."""
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install (missing libcuda, ABI mismatch) counts as absent
        return False
    return True


def triton_interpreted() -> bool:
    """True when the imported Triton runs kernels in its CPU interpreter.

    The interpreter is chosen when ``triton`` is first imported (``TRITON_INTERPRET=1`` must be
    set by then), so this checks how Triton's own library functions were built, not the variable.
    """
    if "triton" not in sys.modules and not triton_available():
        return False
    import triton.language as tl

    return type(tl.sigmoid).__name__ == "InterpretedFunction"


def _device_type(device: Any) -> str:
    if device is None:
        return "cpu"
    kind = getattr(device, "type", None)  # torch.device
    if isinstance(kind, str):
        return kind
    return str(device).split(":", 1)[0]


def choose_backend(requested: str = "auto", device: Any = None) -> str:
    """Resolve ``auto|torch|triton`` for tensors on ``device`` to ``"torch"`` or ``"triton"``.

    ``device`` is a ``torch.device``, a string such as ``"cuda:0"``, or None (CPU).
    Raises :class:`ConfigError` for an unknown name or when ``triton`` cannot run here.
    """
    if requested not in BACKENDS:
        raise ConfigError(
            f"Unknown kernel backend {requested!r}.", hint=f"Use one of {', '.join(BACKENDS)}."
        )
    if requested == "torch":
        return "torch"
    on_cuda = _device_type(device) == "cuda"
    if requested == "auto":
        if on_cuda and not triton_disabled() and triton_available():
            return "triton"
        return "torch"
    if triton_disabled():
        raise ConfigError(
            "The triton kernel backend was requested but MOELENS_DISABLE_TRITON is set.",
            hint="Unset MOELENS_DISABLE_TRITON or choose the 'torch' backend.",
        )
    if not triton_available():
        raise ConfigError(
            "The triton kernel backend was requested but triton is not installed.",
            hint="Install it with `pip install 'moelens[triton]'` or choose the 'torch' backend.",
        )
    if not on_cuda and not triton_interpreted():
        raise ConfigError(
            f"The triton kernel backend needs a CUDA device, got {_device_type(device)!r}.",
            hint="Use the 'torch' or 'auto' backend (or TRITON_INTERPRET=1 to test kernels on CPU).",
        )
    return "triton"


def require_triton_device(device: Any) -> None:
    """Raise :class:`ConfigError` unless a Triton kernel can run on tensors on ``device``.

    Called by the Triton wrappers (triton is already imported there), so that a CPU tensor
    outside the interpreter fails with a remedy rather than a driver error.
    """
    if _device_type(device) != "cuda" and not triton_interpreted():
        raise ConfigError(
            f"Triton kernels run on CUDA tensors, got tensors on {_device_type(device)!r}.",
            hint="Use the torch reference (backend 'torch') for these tensors.",
        )
