"""Stochastic depth (``--drop-path``): while training, each residual branch is dropped for whole sentences.

The image ResMLP trains with it (deit's ``resmlp_models.py``, the same rate in every layer, as here): a sentence
whose branch is dropped passes through that sublayer unchanged, and the kept ones are scaled by 1 / (1 - p), so
that the expected output is the one of evaluation, where it does nothing. It regularises the depth of the network,
where ``--dropout`` regularises its width.
"""

from torch import Tensor, nn


class DropPath(nn.Module):
    """Zeroes a T x B x C residual branch for each sentence (batch index) with probability ``p`` while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"--drop-path must be in [0, 1), got {p}")
        self.p = p

    def forward(self, branch: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return branch
        # One draw per sentence (dimension 1 of T x B x C), shared by its positions and channels.
        keep = branch.new_empty(1, branch.size(1), 1).bernoulli_(1.0 - self.p)
        return branch * keep.div_(1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
