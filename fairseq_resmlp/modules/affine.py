"""Affine normalisation and LayerScale, the two per-channel maps of ResMLP (Touvron et al., 2021)."""

import torch
from torch import Tensor, nn


class Affine(nn.Module):
    """Aff(x) = alpha * x + beta per channel; ResMLP's replacement for LayerNorm (starts as identity)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.beta, self.alpha, x)


class LayerScale(nn.Module):
    """Per-channel scale on a residual branch, initialised small so each block starts near identity."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def build_norm(norm_type: str, dim: int) -> nn.Module:
    """The pre-normalisation of every sublayer: ResMLP's Affine, or LayerNorm as in the Transformer."""
    if norm_type == "affine":
        return Affine(dim)
    if norm_type == "layernorm":
        return nn.LayerNorm(dim)
    raise ValueError(f"--norm-type must be 'affine' or 'layernorm', got {norm_type!r}")
