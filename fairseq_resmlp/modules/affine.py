"""Affine normalisation and LayerScale, the two per-channel maps of ResMLP (Touvron et al., 2021)."""

import torch
import torch.nn.functional as F
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
    """The residual add of a branch, scaled per channel: ``residual + scale * branch`` in one kernel.

    Initialised small (the paper uses 0.2 for translation) so that every block starts near the identity.
    """

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, residual: Tensor, branch: Tensor) -> Tensor:
        return torch.addcmul(residual, self.scale, branch)


def build_norm(norm_type: str, dim: int) -> nn.Module:
    """The pre-normalisation of every sublayer: ResMLP's Affine, or LayerNorm as in the Transformer."""
    if norm_type == "affine":
        return Affine(dim)
    if norm_type == "layernorm":
        return nn.LayerNorm(dim)
    raise ValueError(f"--norm-type must be 'affine' or 'layernorm', got {norm_type!r}")


def norm_then_linear(norm: nn.Module, linear: nn.Module, x: Tensor) -> Tensor:
    """``linear(norm(x))``, with an Affine norm folded into the linear layer when that is cheaper.

    W(alpha * x + beta) + b = x @ (W * alpha)^T + (b + W @ beta): for a training batch (many more activations than
    weights) folding saves a full pass over the activations; for a decoding step it does not. Only a plain
    floating-point ``nn.Linear`` is folded: a quantized or otherwise specialised layer is simply applied.
    """
    if (
        isinstance(norm, Affine)
        and type(linear) is nn.Linear
        and linear.weight.is_floating_point()
        and x.numel() > linear.weight.numel()
    ):
        bias = linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features)
        return F.linear(x, linear.weight * norm.alpha, torch.addmv(bias, linear.weight, norm.beta))
    return linear(norm(x))
