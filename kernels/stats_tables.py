"""The stats-mode aggregate tables and the checks every update runs (shared by both update kernels).

:class:`StatsTables` holds the tensors described in :mod:`moelens.kernels.stats`; the torch
reference (:func:`moelens.kernels.stats.update_stats_torch`) and the Triton kernel
(:mod:`moelens.kernels.stats_triton`) both validate their inputs with :func:`check_update` and bin
entropies with :func:`entropy_bins`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from moelens.errors import ConfigError

__all__ = ["StatsTables", "check_update", "entropy_bins"]


@dataclass(frozen=True)
class StatsTables:
    """The aggregate tensors (see the module docstring) and the entropy bin scale."""

    expert_counts: torch.Tensor
    coactivation: torch.Tensor
    entropy_hist: torch.Tensor
    tokens: torch.Tensor
    label_expert_counts: torch.Tensor
    label_entropy_hist: torch.Tensor
    label_tokens: torch.Tensor
    bin_scale: float  # B / log E as an exact fp32 value (0 when E == 1: every entropy is 0)

    @classmethod
    def zeros(cls, num_layers: int, num_experts: int, *, num_labels: int = 0, entropy_bins: int = 32,
              device: Any = "cpu", dtype: torch.dtype = torch.int64) -> StatsTables:  # fmt: skip
        L, E, B, NL = num_layers, num_experts, entropy_bins, num_labels

        def z(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        scale = float(np.float32(B / math.log(E))) if E > 1 else 0.0
        return cls(z(L, E), z(L, E, E), z(L, B), z(L), z(L, NL + 1, E), z(L, NL + 1, B), z(L, NL + 1),
                   scale)  # fmt: skip

    @property
    def num_experts(self) -> int:
        return self.expert_counts.shape[1]

    @property
    def num_labels(self) -> int:
        return self.label_tokens.shape[1] - 1

    @property
    def entropy_bins(self) -> int:
        return self.entropy_hist.shape[1]


def check_update(tables: StatsTables, layer, experts, entropy, labels, valid) -> None:
    num_layers = tables.tokens.shape[0]
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < num_layers:
        raise ConfigError(f"layer={layer!r} is not a slot in [0, {num_layers}).")
    if experts.dim() != 2 or experts.dtype not in (torch.int16, torch.int32, torch.int64):
        raise ConfigError("experts must be an integer tensor [tokens, k].")
    rows = experts.shape[0]
    if entropy.shape != (rows,) or not entropy.is_floating_point():
        raise ConfigError(f"entropy must be a float tensor of shape [{rows}].")
    if labels is not None:
        if tables.num_labels == 0:
            raise ConfigError("Labels were given but the accumulator was built with num_labels=0.")
        if labels.shape != (rows,) or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ConfigError(f"labels must be an integer tensor of shape [{rows}].")
    if valid is not None and (valid.shape != (rows,) or valid.dtype != torch.bool):
        raise ConfigError(f"valid must be a bool tensor of shape [{rows}].")
    for name, t in (("experts", experts), ("entropy", entropy), ("labels", labels), ("valid", valid)):
        if t is not None and t.device != tables.tokens.device:
            raise ConfigError(f"{name} is on {t.device} but the statistics are on {tables.tokens.device}.")


def entropy_bins(tables: StatsTables, entropy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(bin index, binnable) per token; NaN entropies are not binnable (index 0, flag False)."""
    h = entropy.float()
    binnable = h == h
    b = (h * tables.bin_scale).floor().clamp(0, tables.entropy_bins - 1)
    return torch.where(binnable, b, torch.zeros_like(b)).long(), binnable
