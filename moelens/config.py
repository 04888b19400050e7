"""Trace configuration: one frozen dataclass, validated on construction, no I/O.

The CLI builds a :class:`TraceConfig` from its flags and the library consumes it; Python users
can build one directly or pass the same names as keyword arguments to :func:`moelens.trace`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from moelens.errors import ConfigError

__all__ = ["TraceConfig", "IDENTITY_FIELDS"]

_DTYPES = ("auto", "float32", "bfloat16", "float16")
_BACKENDS = ("torch", "nnsight")
_CAPTURES = ("auto", "torch", "triton")
_MODES = ("routes", "stats")
_TXT_MODES = ("file", "line", "paragraph")
_DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")

# Options that change what is recorded: a resumed run must match them exactly.
IDENTITY_FIELDS = ("model", "data", "split", "text_column", "txt_mode", "max_length", "stride", "max_docs",
                   "max_tokens", "dtype", "logits", "mode", "tokenizer", "revision", "layers", "shard")


@dataclass(frozen=True)
class TraceConfig:
    """Everything ``moelens trace`` needs. Defaults suit a CPU laptop.

    Attributes:
        model: local folder from ``save_pretrained``, an embedded short name (``moelens-mini``),
            or a hub id.
        data: ``.jsonl``/``.json``/``.csv``/``.parquet``/``.txt`` file or folder, or a hub dataset id.
        out: DuckDB file to write (created if missing; runs accumulate in it).
        run_id: name of the run; default ``<model>:<data>``. Re-running with the same id resumes.
        batch_size: documents (windows) per forward pass.
        max_length: tokens per window; longer documents are traced in windows and positions stay
            absolute within the document.
        stride: tokens between window starts (default ``max_length``: consecutive windows, no carried
            context). With ``stride < max_length`` windows overlap and each records only its new
            tokens, which then see at least ``max_length - stride`` tokens of earlier context.
        max_docs / max_tokens: stop after this many documents / about this many tokens.
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1``...
        dtype: ``auto`` (float32 on CPU, the checkpoint's dtype on GPU) or an explicit dtype.
        logits: also store the full router logits (``router_logits`` view); large.
        backend: ``torch`` hooks, or ``nnsight`` (same records; ``remote=True`` reaches NDIF).
        capture: ``auto`` | ``torch`` | ``triton`` device-side reduction path.
        mode: ``routes`` (every decision) or ``stats`` (bounded on-device aggregates only).
        layers: restrict capture to these decoder-layer indices (default: all MoE layers).
        shard: ``(index, count)``: trace only the documents with ``doc_id % count == index`` (a
            deterministic, disjoint share; ``moelens merge`` joins the shards). Set from ``RANK``
            and ``WORLD_SIZE`` under ``torchrun``.
        device_map: ``auto``, ``balanced``, ``balanced_low_0`` or ``sequential``: spread a model too
            big for one device over the GPUs, the CPU and ``offload_folder`` (accelerate).
        max_memory: per-device memory caps for ``device_map``, e.g. ``{"0": "20GiB", "cpu": "60GiB"}``.
        offload_folder: where weights that fit nowhere else are offloaded to disk.
    """

    model: str
    data: str
    out: str
    run_id: str | None = None
    batch_size: int = 8
    max_length: int = 512
    stride: int | None = None
    max_docs: int | None = None
    max_tokens: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    logits: bool = False
    backend: str = "torch"
    capture: str = "auto"
    mode: str = "routes"
    split: str = "train"
    text_column: str = "text"
    txt_mode: str = "file"
    tokenizer: str | None = None
    revision: str | None = None
    layers: tuple[int, ...] | None = None
    shard: tuple[int, int] | None = None
    device_map: str | None = None
    max_memory: dict[str, str] | None = None
    offload_folder: str | None = None
    remote: bool = False
    verify: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("model", "data", "out"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a non-empty string.")
        _positive("batch_size", self.batch_size)
        _positive("max_length", self.max_length)
        if self.stride is not None:
            _positive("stride", self.stride)
            if self.stride > self.max_length:
                raise ConfigError(f"stride ({self.stride}) must not exceed max_length ({self.max_length}): every"
                                  " token must fall in a window.")
        if self.max_docs is not None:
            _positive("max_docs", self.max_docs)
        if self.max_tokens is not None:
            _positive("max_tokens", self.max_tokens)
        _choice("dtype", self.dtype, _DTYPES)
        _choice("backend", self.backend, _BACKENDS)
        _choice("capture", self.capture, _CAPTURES)
        _choice("mode", self.mode, _MODES)
        _choice("txt_mode", self.txt_mode, _TXT_MODES)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(sorted({int(x) for x in self.layers})))
        if self.shard is not None:
            index, count = (int(x) for x in self.shard)
            if count < 1 or not 0 <= index < count:
                raise ConfigError(f"shard must be I/N with 0 <= I < N, got {index}/{count}.")
            if self.max_tokens is not None:
                raise ConfigError("--max-tokens cannot be split exactly across shards; use --max-docs with --shard.")
            object.__setattr__(self, "shard", (index, count))
        if self.device_map is not None:
            _choice("device_map", self.device_map, _DEVICE_MAPS)
            if self.device != "auto":
                raise ConfigError("--device-map places the model itself; leave --device at auto.")
        elif self.max_memory is not None or self.offload_folder is not None:
            raise ConfigError("--max-memory and --offload-folder need --device-map.")
        if self.remote and self.backend != "nnsight":
            raise ConfigError("remote execution needs --backend nnsight.")
        if self.mode == "stats" and self.logits:
            raise ConfigError("--logits stores per-token logits; it cannot be combined with --mode stats.")

    def identity(self) -> dict[str, Any]:
        """The options that define what a run records (compared when resuming)."""
        return {name: getattr(self, name) for name in IDENTITY_FIELDS}

    def replace(self, **changes: Any) -> "TraceConfig":
        return dataclasses.replace(self, **changes)


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")
