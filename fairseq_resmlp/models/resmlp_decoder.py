"""The ResMLP decoder: causal token mixing, encoder-decoder attention and channel MLP in every layer."""

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from fairseq.models import FairseqIncrementalDecoder
from fairseq.modules import FairseqDropout
from torch import Tensor, nn

from ..modules import (
    ResMLPDecoderLayer,
    align_tokens_left,
    build_norm,
    build_positional_embedding,
    leading_pads,
    restore_time_first,
)
from ..modules.compiled import CompiledLayers
from .static_decoding import StaticDecoding

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


class ResMLPDecoder(FairseqIncrementalDecoder):
    """Decoder with lower-triangular token mixing in place of masked self-attention."""

    def __init__(self, cfg, dictionary, embed_tokens: nn.Embedding, left_pad: bool = True) -> None:
        super().__init__(dictionary)
        dim = embed_tokens.embedding_dim
        self.padding_idx = embed_tokens.padding_idx
        self.max_target_positions = cfg.max_target_positions
        # Whether teacher-forced targets may come left-padded (the task's --left-pad-target; True when unknown).
        self.left_pad = left_pad
        self.embed_tokens = embed_tokens
        self.embed_scale = 1.0 if cfg.no_scale_embedding else math.sqrt(dim)
        self.embed_positions = build_positional_embedding(cfg, cfg.max_target_positions, dim, self.padding_idx)
        self.dropout_module = FairseqDropout(cfg.dropout, module_name=type(self).__name__)
        self.layers = nn.ModuleList([self.build_decoder_layer(cfg) for _ in range(cfg.decoder_layers)])
        self.compiled_layers = CompiledLayers(self.layers, enabled=getattr(cfg, "compile_layers", False))
        self.layer_norm = build_norm(cfg.norm_type, dim)
        self.output_projection = self.build_output_projection(cfg, dictionary, embed_tokens)
        # Fixed-shape decoding steps, replayed as CUDA graphs on a GPU (--no-cuda-graphs turns them off).
        self.static_decoding = StaticDecoding(self, enabled=not getattr(cfg, "no_cuda_graphs", False))

    def build_decoder_layer(self, cfg) -> nn.Module:
        """One decoder layer (fairseq's hook: a variant overrides this instead of copying the class)."""
        return ResMLPDecoderLayer(cfg, cfg.max_target_positions)

    def build_output_projection(self, cfg, dictionary, embed_tokens: nn.Embedding) -> nn.Linear:
        """The output layer, tied to the input embedding with --share-decoder-input-output-embed."""
        dim = embed_tokens.embedding_dim
        projection = nn.Linear(dim, len(dictionary), bias=False)
        if cfg.share_decoder_input_output_embed:
            projection.weight = embed_tokens.weight
        else:
            nn.init.normal_(projection.weight, mean=0, std=dim**-0.5)
        return projection

    def forward(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, List[Tensor]]] = None,
        incremental_state: Optional[IncrementalState] = None,
        features_only: bool = False,
        full_context_alignment: bool = False,
        alignment_layer: Optional[int] = None,
        alignment_heads: Optional[int] = None,
        src_lengths: Optional[Any] = None,
        return_all_hiddens: bool = False,
    ) -> Tuple[Tensor, Dict[str, List[Optional[Tensor]]]]:
        """Scores (B x T x V), or features with ``features_only``, for ``prev_output_tokens`` (B x T).

        The arguments are fairseq's Transformer decoder's; ``alignment_layer`` picks the layer whose
        cross-attention is returned (default: the last); per-head alignment and full-context alignment training
        do not exist for ResMLP and raise. ``src_lengths`` and ``return_all_hiddens`` are accepted for
        compatibility (all layers' states are always in ``inner_states``).
        """
        if (
            incremental_state is not None
            and not features_only
            and alignment_layer is None
            and self.static_decoding.applies(prev_output_tokens, encoder_out)
        ):
            assert encoder_out is not None
            return self.static_decoding.step(prev_output_tokens, encoder_out, incremental_state)
        x, extra = self.extract_features(
            prev_output_tokens,
            encoder_out,
            incremental_state,
            full_context_alignment=full_context_alignment,
            alignment_layer=alignment_layer,
            alignment_heads=alignment_heads,
        )
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def extract_features(
        self,
        prev_output_tokens: Tensor,
        encoder_out: Optional[Dict[str, List[Tensor]]] = None,
        incremental_state: Optional[IncrementalState] = None,
        full_context_alignment: bool = False,
        alignment_layer: Optional[int] = None,
        alignment_heads: Optional[int] = None,
    ) -> Tuple[Tensor, Dict[str, List[Optional[Tensor]]]]:
        """Features (B x T x C) for ``prev_output_tokens`` (B x T); one step when incremental."""
        if full_context_alignment:
            raise NotImplementedError("full_context_alignment (alignment training) is not supported by ResMLP")
        if alignment_heads is not None:
            raise NotImplementedError(
                "alignment_heads is not supported by ResMLP: its cross-attention weights are averaged over all heads"
            )
        if alignment_layer is None:
            alignment_layer = len(self.layers) - 1
        if prev_output_tokens.size(1) > self.max_target_positions:
            raise ValueError(
                f"target prefix of {prev_output_tokens.size(1)} tokens exceeds --max-target-positions "
                f"{self.max_target_positions} of this model"
            )
        enc: Optional[Tensor] = None
        enc_mask: Optional[Tensor] = None
        group = 1
        if encoder_out is not None and len(encoder_out["encoder_out"]) > 0:
            enc = encoder_out["encoder_out"][0]
            if len(encoder_out["encoder_padding_mask"]) > 0:
                enc_mask = encoder_out["encoder_padding_mask"][0]
            if incremental_state is not None and len(encoder_out.get("beam_group", [])) > 0:
                group = int(encoder_out["beam_group"][0])  # a CPU scalar: no wait for the device

        shift: Optional[Tensor] = None
        positions: Optional[Tensor] = None
        if incremental_state is not None:
            # Generation feeds whole prefixes without padding; the step is the last column.
            if self.embed_positions is not None:
                positions = self.embed_positions(prev_output_tokens, incremental_state=incremental_state)
            tokens = prev_output_tokens[:, -1:]
        else:
            if self.left_pad:
                shift = leading_pads(prev_output_tokens, self.padding_idx)
                tokens = align_tokens_left(prev_output_tokens, shift)
            else:
                # Right-padded by the task's data: checked on the device, so nothing waits for it.
                torch._assert_async(prev_output_tokens[:, 0].ne(self.padding_idx).all())
                tokens = prev_output_tokens
            if self.embed_positions is not None:
                positions = self.embed_positions(tokens)
            # Trailing padding needs no mask: causal mixing never lets a real position see a later one.

        x = self.embed_scale * self.embed_tokens(tokens)
        if positions is not None:
            x = x + positions
        x = self.dropout_module(x).transpose(0, 1)

        attn: Optional[Tensor] = None
        inner_states: List[Optional[Tensor]] = [x]
        for i in range(len(self.layers)):
            layer = self.compiled_layers(i, self.training and incremental_state is None)
            x, layer_attn = layer(
                x,
                enc,
                enc_mask,
                incremental_state=incremental_state,
                need_attn=(i == alignment_layer and not self.training),
                group=group,
            )
            inner_states.append(x)
            if layer_attn is not None and i == alignment_layer:
                attn = layer_attn
        x = self.layer_norm(x)
        if shift is not None:
            x = restore_time_first(x, shift)
            if attn is not None:
                attn = restore_time_first(attn.transpose(0, 1), shift).transpose(0, 1)
        return x.transpose(0, 1), {"attn": [attn], "inner_states": inner_states}

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor) -> None:
        """The fixed-shape decoding buffers follow beam search (the layers reorder their own caches)."""
        self.static_decoding.reorder(incremental_state, new_order)

    def output_layer(self, features: Tensor) -> Tensor:
        return self.output_projection(features)

    def max_positions(self) -> int:
        return self.max_target_positions
