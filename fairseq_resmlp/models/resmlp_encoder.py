"""The ResMLP encoder: embeddings, a stack of token-mixing + channel-MLP layers, a final normalisation."""

import math
from typing import Dict, List, Optional

import torch
from fairseq.models import FairseqEncoder
from fairseq.modules import FairseqDropout
from torch import Tensor, nn

from ..modules import (
    ResMLPEncoderLayer,
    align_tokens_left,
    build_norm,
    build_positional_embedding,
    leading_pads,
    restore_time_first,
)
from ..modules.compiled import CompiledLayers


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
        self.layers = nn.ModuleList([self.build_encoder_layer(cfg) for _ in range(cfg.encoder_layers)])
        self.compiled_layers = CompiledLayers(self.layers, enabled=getattr(cfg, "compile_layers", False))
        self.layer_norm = build_norm(cfg.norm_type, dim)

    def build_encoder_layer(self, cfg) -> nn.Module:
        """One encoder layer (fairseq's hook: a variant overrides this instead of copying the class)."""
        return ResMLPEncoderLayer(cfg, cfg.max_source_positions)

    def forward(
        self, src_tokens: Tensor, src_lengths: Optional[Tensor] = None, return_all_hiddens: bool = False
    ) -> Dict[str, List[Tensor]]:
        """Encode ``src_tokens`` (B x T, left- or right-padded); output is T x B x C in the input's layout.

        Nothing here reads a value back from the device: padding is handled with masks and a gather whether or
        not the batch has any, so a training step never waits for the GPU.
        """
        if src_tokens.size(1) > self.max_source_positions:
            raise ValueError(
                f"source of {src_tokens.size(1)} tokens exceeds --max-source-positions "
                f"{self.max_source_positions} of this model"
            )
        shift = leading_pads(src_tokens, self.padding_idx)
        tokens = align_tokens_left(src_tokens, shift)
        padding_mask = tokens.eq(self.padding_idx)

        x = self.embed_scale * self.embed_tokens(tokens)
        if self.embed_positions is not None:
            x = x + self.embed_positions(tokens)
        x = self.dropout_module(x).transpose(0, 1)

        states: List[Tensor] = []
        for i in range(len(self.layers)):
            x = self.compiled_layers(i, self.training)(x, padding_mask)
            if return_all_hiddens:
                states.append(restore_time_first(x, shift))
        # Padded outputs are never read (cross-attention masks them); zero them so they are inert.
        x = self.layer_norm(x).masked_fill(padding_mask.t().unsqueeze(-1), 0.0)
        x = restore_time_first(x, shift)

        return {
            "encoder_out": [x],
            "encoder_padding_mask": [src_tokens.eq(self.padding_idx)],
            "encoder_embedding": [],
            "encoder_states": states,
            "src_tokens": [],
            "src_lengths": [] if src_lengths is None else [src_lengths],
            # Filled by the first reorder_encoder_out: hypotheses per sentence in beam search (a CPU scalar).
            "beam_group": [],
        }

    @torch.jit.export
    def reorder_encoder_out(self, encoder_out: Dict[str, List[Tensor]], new_order: Tensor) -> Dict[str, List[Tensor]]:
        """A new encoder output with the batch axis selected by ``new_order`` (beam search).

        The first reorder of a fresh output is how fairseq's generators expand each sentence into its beam
        (``arange(bsz).repeat_interleave(beam)``). When ``new_order`` is exactly that, the output records
        ``beam_group = beam``, so the decoder can keep cross-attention keys and values once per sentence; any
        other first reorder records 1. This is the one value read back from the device, once per generation.
        """
        group_list = encoder_out.get("beam_group", [])
        if len(group_list) == 0:
            bsz = encoder_out["encoder_out"][0].size(1) if len(encoder_out["encoder_out"]) > 0 else 0
            group = 1
            if bsz > 0 and new_order.numel() % bsz == 0 and new_order.numel() > bsz:
                candidate = new_order.numel() // bsz
                expected = torch.arange(bsz, device=new_order.device).repeat_interleave(candidate)
                if torch.equal(new_order, expected):
                    group = candidate
            group_list = [torch.tensor(group, dtype=torch.long)]
        elif int(group_list[0]) > 1:
            group = int(group_list[0])
            if new_order.numel() % group != 0:
                group_list = [torch.tensor(1, dtype=torch.long)]
            else:
                # Later reorders must keep each hypothesis within its sentence (checked on the device, no wait).
                sentence_order = new_order.view(-1, group) // group
                torch._assert_async(sentence_order.eq(sentence_order[:, :1]).all())
        batch_axis = {"encoder_out": 1, "encoder_states": 1}
        reordered = {
            key: [t.index_select(batch_axis.get(key, 0), new_order) for t in values]
            for key, values in encoder_out.items()
            if key != "beam_group"
        }
        reordered["beam_group"] = group_list
        return reordered

    def max_positions(self) -> int:
        return self.max_source_positions
