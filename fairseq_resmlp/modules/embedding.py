"""Token and positional embeddings, initialised as fairseq's Transformer does."""

from typing import Optional

from fairseq.modules import PositionalEmbedding
from torch import nn


def Embedding(num_embeddings: int, embedding_dim: int, padding_idx: int) -> nn.Embedding:
    """Token embedding initialised as fairseq's Transformer does (so --no-scale-embedding means the same)."""
    m = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
    nn.init.normal_(m.weight, mean=0, std=embedding_dim**-0.5)
    nn.init.constant_(m.weight[padding_idx], 0)
    return m


def build_positional_embedding(cfg, max_positions: int, dim: int, padding_idx: int) -> Optional[nn.Module]:
    """fairseq's sinusoidal embeddings when asked for; ResMLP itself needs none."""
    if cfg.positional_embeddings == "none":
        return None
    return PositionalEmbedding(max_positions, dim, padding_idx, learned=False)
