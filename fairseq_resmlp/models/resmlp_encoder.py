"""The ResMLP encoder: embeddings, a stack of token-mixing + channel-MLP layers, a final normalisation."""

import math
from typing import Dict, List, Optional

import torch
from fairseq.models import FairseqEncoder
from fairseq.modules import FairseqDropout, PositionalEmbedding
from torch import Tensor, nn

from ..modules import ResMLPEncoderLayer, align_tokens_left, build_norm, leading_pads, restore_time_first


def build_positional_embedding(cfg, max_positions: int, dim: int, padding_idx: int) -> Optional[nn.Module]:
    """fairseq's sinusoidal embeddings when asked for; ResMLP itself needs none."""
    if cfg.positional_embeddings == "none":
        return None
    return PositionalEmbedding(max_positions, dim, padding_idx, learned=False)


class ResMLPEncoder(FairseqEncoder):
    """Encoder whose self-attention sublayers are replaced by token mixing across positions."""

    def __init__(self, cfg, dictionary, embed_tokens: nn.Embedding) -> None:
        super().__init__(dictionary)
        dim = embed_tokens.embedding_dim
        self.padding_idx = embed_tokens.padding_idx
        self.max_source_positions = cfg.max_source_positions
        self.embed_tokens = embed_tokens
        self.embed_scale = 1.0 if cfg.no_scale_embedding else math.sqrt(dim)
        self.embed_positions = build_positional_embedding(cfg, cfg.max_source_positions, dim, self.padding_idx)
        self.dropout_module = FairseqDropout(cfg.dropout, module_name=type(self).__name__)
        self.layers = nn.ModuleList(
            [ResMLPEncoderLayer(cfg, cfg.max_source_positions) for _ in range(cfg.encoder_layers)]
        )
        self.layer_norm = build_norm(cfg.norm_type, dim)

    def forward(
        self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None, return_all_hiddens: bool = False
    ) -> Dict[str, List[Tensor]]:
        """Encode ``src_tokens`` (B x T, left- or right-padded); output is T x B x C in the input's layout."""
        if src_tokens.size(1) > self.max_source_positions:
            raise ValueError(
                f"source of {src_tokens.size(1)} tokens exceeds --max-source-positions "
                f"{self.max_source_positions} of this model"
            )
        shift = leading_pads(src_tokens, self.padding_idx)
        tokens = src_tokens if shift is None else align_tokens_left(src_tokens, shift)
        padding_mask = tokens.eq(self.padding_idx)
        has_pads = bool(padding_mask.any())

        x = self.embed_scale * self.embed_tokens(tokens)
        if self.embed_positions is not None:
            x = x + self.embed_positions(tokens)
        x = self.dropout_module(x).transpose(0, 1)

        states: List[Tensor] = []
        for layer in self.layers:
            x = layer(x, padding_mask if has_pads else None)
            if return_all_hiddens:
                states.append(x if shift is None else restore_time_first(x, shift))
        x = self.layer_norm(x)
        if has_pads:
            # Padded outputs are never read (cross-attention masks them); zero them so they are inert.
            x = x.masked_fill(padding_mask.t().unsqueeze(-1), 0.0)
        if shift is not None:
            x = restore_time_first(x, shift)

        return {
            "encoder_out": [x],
            "encoder_padding_mask": [src_tokens.eq(self.padding_idx)],
            "encoder_embedding": [],
            "encoder_states": states,
            "src_tokens": [],
            "src_lengths": [] if src_lengths is None else [src_lengths],
        }

    @torch.jit.export
    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor) -> Dict[str, List[Tensor]]:
        """A new encoder output with the batch axis selected by ``new_order`` (beam search)."""
        batch_axis = {"encoder_out": 1, "encoder_states": 1}
        return {
            key: [t.index_select(batch_axis.get(key, 0), new_order) for t in values]
            for key, values in encoder_out.items()
        }

    def max_positions(self) -> int:
        return self.max_source_positions
