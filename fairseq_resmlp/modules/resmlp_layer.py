"""ResMLP encoder and decoder layers: pre-normalised residual sublayers, each scaled by LayerScale."""

from typing import Dict, Optional, Tuple

from fairseq.modules import FairseqDropout, MultiheadAttention
from torch import Tensor, nn

from .affine import LayerScale, build_norm
from .channel_mlp import ChannelMLP
from .token_mixing import TokenMixing


class ResidualBranch(nn.Module):
    """x + LayerScale(dropout(sublayer(norm(x)))): the shape shared by every sublayer."""

    def __init__(self, dim: int, norm_type: str, layerscale_init: float, dropout: float) -> None:
        super().__init__()
        self.norm = build_norm(norm_type, dim)
        self.dropout = FairseqDropout(dropout, module_name=type(self).__name__)
        self.layerscale = LayerScale(dim, layerscale_init)

    def finish(self, residual: Tensor, branch: Tensor) -> Tensor:
        return residual + self.layerscale(self.dropout(branch))


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
        return self.mlp.finish(x, self.mlp_channels(self.mlp.norm(x)))


class ResMLPDecoderLayer(nn.Module):
    """Causal token mixing, encoder-decoder attention and channel MLP, each a LayerScaled residual branch."""

    def __init__(self, cfg, max_positions: int) -> None:
        super().__init__()
        dim = cfg.decoder_embed_dim
        self.mix = ResidualBranch(dim, cfg.norm_type, cfg.layerscale_init, cfg.dropout)
        self.linear_tokens = TokenMixing(max_positions, causal=True, init=cfg.token_mixing_init)
        self.cross = ResidualBranch(dim, cfg.norm_type, cfg.layerscale_init, cfg.dropout)
        self.encoder_attn = MultiheadAttention(
            dim,
            cfg.decoder_attention_heads,
            kdim=cfg.encoder_embed_dim,
            vdim=cfg.encoder_embed_dim,
            dropout=cfg.attention_dropout,
            encoder_decoder_attention=True,
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
            y, attn = self.encoder_attn(
                query=self.cross.norm(x),
                key=encoder_out,
                value=encoder_out,
                key_padding_mask=encoder_padding_mask,
                incremental_state=incremental_state,
                static_kv=True,
                need_weights=need_attn,
            )
            x = self.cross.finish(x, y)
        x = self.mlp.finish(x, self.mlp_channels(self.mlp.norm(x)))
        return x, attn
