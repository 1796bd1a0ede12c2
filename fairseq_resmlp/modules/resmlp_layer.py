"""ResMLP encoder and decoder layers: pre-normalised residual sublayers, each scaled by LayerScale."""

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.modules import FairseqDropout
from torch import Tensor, nn

from .affine import Affine, LayerScale, build_norm
from .channel_mlp import ChannelMLP
from .cross_attention import CrossAttention
from .token_mixing import TokenMixing


class ResidualBranch(nn.Module):
    """x + LayerScale(dropout(sublayer(norm(x)))): the shape shared by every sublayer."""

    def __init__(self, dim: int, norm_type: str, layerscale_init: float, dropout: float) -> None:
        super().__init__()
        self.norm = build_norm(norm_type, dim)
        self.dropout = FairseqDropout(dropout, module_name=type(self).__name__)
        self.layerscale = LayerScale(dim, layerscale_init)

    def finish(self, residual: Tensor, branch: Tensor) -> Tensor:
        # One fused kernel for "scale and add" instead of two passes over the activations.
        return torch.addcmul(residual, self.layerscale.scale, self.dropout(branch))

    def norm_then_linear(self, x: Tensor, linear: nn.Linear) -> Tensor:
        """linear(norm(x)); an Affine norm is folded into the linear layer's weight when that is cheaper.

        W(alpha * x + beta) + b = x @ (W * alpha)^T + (b + W @ beta): for a training batch (many more
        activations than weights) this saves a full pass over the activations; for a decoding step it does not.
        """
        norm = self.norm
        if isinstance(norm, Affine) and x.numel() > linear.weight.numel():
            return F.linear(x, linear.weight * norm.alpha, torch.addmv(linear.bias, linear.weight, norm.beta))
        return linear(norm(x))


class ResMLPEncoderLayer(nn.Module):
    """Affine -> token mixing -> LayerScale -> residual; Affine -> channel MLP -> LayerScale -> residual."""

    def __init__(self, cfg, max_positions: int) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.mix = ResidualBranch(dim, cfg.norm_type, cfg.layerscale_init, cfg.dropout)
        self.linear_tokens = TokenMixing(max_positions, causal=False, init=cfg.token_mixing_init)
        self.mlp = ResidualBranch(dim, cfg.norm_type, cfg.layerscale_init, cfg.dropout)
        self.mlp_channels = ChannelMLP(dim, cfg.encoder_ffn_embed_dim, cfg.activation_dropout)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        x = self.mix.finish(x, self.linear_tokens(self.mix.norm(x), padding_mask))
        return self.mlp.finish(x, self.mlp_channels.from_hidden(self.mlp.norm_then_linear(x, self.mlp_channels.fc1)))


class ResMLPDecoderLayer(nn.Module):
    """Causal token mixing, encoder-decoder attention and channel MLP, each a LayerScaled residual branch."""

    def __init__(self, cfg, max_positions: int) -> None:
        super().__init__()
        dim = cfg.decoder_embed_dim
        self.mix = ResidualBranch(dim, cfg.norm_type, cfg.layerscale_init, cfg.dropout)
        self.linear_tokens = TokenMixing(max_positions, causal=True, init=cfg.token_mixing_init)
        self.cross = ResidualBranch(dim, cfg.norm_type, cfg.layerscale_init, cfg.dropout)
        self.encoder_attn = CrossAttention(
            dim, cfg.encoder_embed_dim, cfg.decoder_attention_heads, cfg.attention_dropout
        )
        self.mlp = ResidualBranch(dim, cfg.norm_type, cfg.layerscale_init, cfg.dropout)
        self.mlp_channels = ChannelMLP(dim, cfg.decoder_ffn_embed_dim, cfg.activation_dropout)

    def forward(
        self,
        x: Tensor,
        padding_mask: Optional[Tensor],
        encoder_out: Optional[Tensor],
        encoder_padding_mask: Optional[Tensor],
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        need_attn: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        x = self.mix.finish(x, self.linear_tokens(self.mix.norm(x), padding_mask, incremental_state))
        attn: Optional[Tensor] = None
        if encoder_out is not None:
            y, attn = self.encoder_attn.attend(
                self.cross.norm_then_linear(x, self.encoder_attn.q_proj),
                encoder_out,
                encoder_padding_mask,
                incremental_state=incremental_state,
                need_weights=need_attn,
            )
            x = self.cross.finish(x, y)
        x = self.mlp.finish(x, self.mlp_channels.from_hidden(self.mlp.norm_then_linear(x, self.mlp_channels.fc1)))
        return x, attn
