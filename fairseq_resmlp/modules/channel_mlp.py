"""The channel MLP of a ResMLP block: the Transformer's position-wise feed-forward network with GELU."""

import torch.nn.functional as F
from fairseq.modules import FairseqDropout
from torch import Tensor, nn


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

    def forward(self, x: Tensor) -> Tensor:
        return self.from_hidden(self.fc1(x))

    def from_hidden(self, hidden: Tensor) -> Tensor:
        """The rest of the MLP after fc1 (so callers may compute fc1 differently)."""
        return self.fc2(self.activation_dropout(F.gelu(hidden)))
