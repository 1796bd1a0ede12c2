"""The channel MLP of a ResMLP block: the Transformer's position-wise feed-forward network with GELU."""

from typing import Optional

import torch.nn.functional as F
from fairseq.modules import FairseqDropout
from torch import Tensor, nn

from .affine import norm_then_linear


class ChannelMLP(nn.Module):
    """d -> hidden -> d, applied to every position independently."""

    def __init__(self, dim: int, hidden_dim: int, activation_dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.activation_dropout = FairseqDropout(activation_dropout, module_name=type(self).__name__)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor, norm: Optional[nn.Module] = None) -> Tensor:
        """``fc2(dropout(gelu(fc1(norm(x)))))``; the block's pre-norm is passed in so it can be folded into fc1."""
        hidden = self.fc1(x) if norm is None else norm_then_linear(norm, self.fc1, x)
        return self.fc2(self.activation_dropout(F.gelu(hidden)))
