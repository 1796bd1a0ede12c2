"""Left-aligning padded batches, so that position 0 of the token-mixing matrix is every sentence's first token.

fairseq left-pads sources (and can left-pad targets). A ResMLP layer's weights are position-specific, so a
sentence must see the same rows of A whatever its padding: we rotate each row of the batch so its real tokens
come first, run the layers, and rotate the outputs back into the caller's layout. Everything here works on the
device without reading values back to the host, so a training step never waits for the GPU.
"""

import torch
from torch import Tensor


def leading_pads(tokens: Tensor, pad: int) -> Tensor:
    """Number of leading pad tokens of each row (B,); zeros for right-padded or unpadded batches."""
    return tokens.ne(pad).cumsum(dim=1).eq(0).sum(dim=1)


def _rotation(shift: Tensor, length: int) -> Tensor:
    positions = torch.arange(length, device=shift.device).unsqueeze(0)
    return (positions + shift.unsqueeze(1)) % length


def align_tokens_left(tokens: Tensor, shift: Tensor) -> Tensor:
    """Rotate each row (B x T) left by its shift: leading padding moves to the end."""
    return tokens.gather(1, _rotation(shift, tokens.size(1)))


def restore_time_first(x: Tensor, shift: Tensor) -> Tensor:
    """Undo :func:`align_tokens_left` on time-first features (T x B x C)."""
    length = x.size(0)
    index = _rotation(-shift, length).t().unsqueeze(-1).expand_as(x)
    return x.gather(0, index)
