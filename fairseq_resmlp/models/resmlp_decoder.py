"""The ResMLP decoder: causal token mixing, encoder-decoder attention and channel MLP in every layer."""

import math
from typing import Any, Dict, List, Optional, Tuple

from fairseq.models import FairseqIncrementalDecoder
from fairseq.modules import FairseqDropout
from torch import Tensor, nn

from ..modules import ResMLPDecoderLayer, align_tokens_left, build_norm, leading_pads, restore_time_first
from .resmlp_encoder import build_positional_embedding


class ResMLPDecoder(FairseqIncrementalDecoder):
    """Decoder with lower-triangular token mixing in place of masked self-attention."""

    def __init__(self, cfg, dictionary, embed_tokens: nn.Embedding) -> None:
        super().__init__(dictionary)
        dim = embed_tokens.embedding_dim
        self.padding_idx = embed_tokens.padding_idx
        self.max_target_positions = cfg.max_target_positions
        self.embed_tokens = embed_tokens
        self.embed_scale = 1.0 if cfg.no_scale_embedding else math.sqrt(dim)
        self.embed_positions = build_positional_embedding(cfg, cfg.max_target_positions, dim, self.padding_idx)
        self.dropout_module = FairseqDropout(cfg.dropout, module_name=type(self).__name__)
        self.layers = nn.ModuleList(
            [ResMLPDecoderLayer(cfg, cfg.max_target_positions) for _ in range(cfg.decoder_layers)]
        )
        self.layer_norm = build_norm(cfg.norm_type, dim)
        if cfg.share_decoder_input_output_embed:
            self.output_projection = nn.Linear(dim, len(dictionary), bias=False)
            self.output_projection.weight = embed_tokens.weight
        else:
            self.output_projection = nn.Linear(dim, len(dictionary), bias=False)
            nn.init.normal_(self.output_projection.weight, mean=0, std=dim**-0.5)

    def forward(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, List[Tensor]]] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        features_only: bool = False,
        **unused: Any,
    ) -> Tuple[Tensor, Dict[str, List[Optional[Tensor]]]]:
        x, extra = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def extract_features(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, List[Tensor]]] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        **unused: Any,
    ) -> Tuple[Tensor, Dict[str, List[Optional[Tensor]]]]:
        """Features (B x T x C) for ``prev_output_tokens`` (B x T); one step when incremental."""
        if prev_output_tokens.size(1) > self.max_target_positions:
            raise ValueError(
                f"target prefix of {prev_output_tokens.size(1)} tokens exceeds --max-target-positions "
                f"{self.max_target_positions} of this model"
            )
        enc: Optional[Tensor] = None
        enc_mask: Optional[Tensor] = None
        if encoder_out is not None and len(encoder_out["encoder_out"]) > 0:
            enc = encoder_out["encoder_out"][0]
            if len(encoder_out["encoder_padding_mask"]) > 0:
                enc_mask = encoder_out["encoder_padding_mask"][0]

        shift: Optional[Tensor] = None
        padding_mask: Optional[Tensor] = None
        positions: Optional[Tensor] = None
        if incremental_state is not None:
            # Generation feeds whole prefixes without padding; the step is the last column.
            if self.embed_positions is not None:
                positions = self.embed_positions(prev_output_tokens, incremental_state=incremental_state)
            tokens = prev_output_tokens[:, -1:]
        else:
            shift = leading_pads(prev_output_tokens, self.padding_idx)
            tokens = prev_output_tokens if shift is None else align_tokens_left(prev_output_tokens, shift)
            if self.embed_positions is not None:
                positions = self.embed_positions(tokens)
            # Trailing padding needs no mask: causal mixing never lets a real position see a later one.

        x = self.embed_scale * self.embed_tokens(tokens)
        if positions is not None:
            x = x + positions
        x = self.dropout_module(x).transpose(0, 1)

        attn: Optional[Tensor] = None
        inner_states: List[Optional[Tensor]] = [x]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x, layer_attn = layer(
                x,
                padding_mask,
                enc,
                enc_mask,
                incremental_state=incremental_state,
                need_attn=(i == last and not self.training),
            )
            inner_states.append(x)
            if layer_attn is not None:
                attn = layer_attn
        x = self.layer_norm(x)
        if shift is not None:
            x = restore_time_first(x, shift)
            if attn is not None:
                attn = restore_time_first(attn.transpose(0, 1), shift).transpose(0, 1)
        return x.transpose(0, 1), {"attn": [attn], "inner_states": inner_states}

    def output_layer(self, features: Tensor) -> Tensor:
        return self.output_projection(features)

    def max_positions(self) -> int:
        return self.max_target_positions
