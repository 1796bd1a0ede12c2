"""ResMLP encoder and decoder layers: pre-normalised residual sublayers, each scaled by LayerScale.

Names follow the paper and timm: ``norm1 -> linear_tokens -> ls1`` (token mixing), ``norm2 -> encoder_attn -> ls2``
(decoder only), then ``norm -> mlp_channels -> ls`` (channel MLP). ``LayerScale`` performs the residual add.

``--drop-path p`` drops each residual branch (after its dropout) for whole sentences while training (stochastic
depth, ``drop_path.py``); evaluation, the incremental and the fixed-shape steps are unchanged.

``--token-mixing-gate linear`` multiplies the token-mixing output by a gate computed from the same position's input,
``A h ⊙ (h W_g + b_g)`` (``gate_tokens``), as gMLP's spatial gating unit does: the mixing becomes input-dependent.
The gate starts at exactly 1 (W_g = 0, b_g = 1), so every gated block starts as the paper's block. It reads one
position only, so the decoder stays causal and its incremental and fixed-shape steps need no extra state.
"""

from typing import Dict, Optional, Tuple

from fairseq.modules import FairseqDropout
from torch import Tensor, nn

from .affine import LayerScale, build_norm
from .channel_mlp import ChannelMLP
from .cross_attention import CrossAttention
from .drop_path import DropPath
from .token_mixing import TokenMixing

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


def build_token_mixing(cfg, max_positions: int, causal: bool) -> TokenMixing:
    # getattr: configurations saved before these options existed load with the paper's full matrix, no dropout.
    return TokenMixing(
        max_positions,
        causal=causal,
        init=cfg.token_mixing_init,
        matrix=getattr(cfg, "token_mixing_matrix", "full"),
        dropout=getattr(cfg, "token_mixing_dropout", 0.0),
    )


def build_token_gate(cfg, dim: int) -> Optional[nn.Linear]:
    """The ``--token-mixing-gate linear`` projection, or None (checkpoints that predate the option have no gate)."""
    kind = getattr(cfg, "token_mixing_gate", "none")
    if kind == "none":
        return None
    if kind != "linear":
        raise ValueError(f"--token-mixing-gate must be 'none' or 'linear', got {kind!r}")
    gate = nn.Linear(dim, dim)
    # Gate = 1 at the start: the block is the ungated one until W_g learns (gMLP starts its gate near 1 too).
    nn.init.zeros_(gate.weight)
    nn.init.ones_(gate.bias)
    return gate


def gated(mixed: Tensor, gate: Optional[nn.Linear], h: Tensor) -> Tensor:
    """``mixed ⊙ gate(h)`` position by position, or ``mixed`` without a gate."""
    return mixed if gate is None else mixed * gate(h)


class _ResidualLayer(nn.Module):
    """What the encoder and decoder layers share: how a residual branch is regularised while training."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.dropout_module = FairseqDropout(cfg.dropout, module_name=type(self).__name__)
        # getattr: configurations saved before --drop-path existed trained without it.
        self.drop_path = DropPath(getattr(cfg, "drop_path", 0.0))

    def regularised(self, branch: Tensor) -> Tensor:
        """A residual branch after dropout, then stochastic depth (both inactive in evaluation)."""
        return self.drop_path(self.dropout_module(branch))


class ResMLPEncoderLayer(_ResidualLayer):
    """x = x + LS1 * TokenMixing(Aff1(x));  x = x + LS2 * ChannelMLP(Aff2(x))."""

    def __init__(self, cfg, max_positions: int) -> None:
        super().__init__(cfg)
        dim = cfg.encoder_embed_dim
        self.norm1 = build_norm(cfg.norm_type, dim)
        self.linear_tokens = build_token_mixing(cfg, max_positions, causal=False)
        self.gate_tokens = build_token_gate(cfg, dim)
        self.ls1 = LayerScale(dim, cfg.layerscale_init)
        self.norm2 = build_norm(cfg.norm_type, dim)
        self.mlp_channels = ChannelMLP(dim, cfg.encoder_ffn_embed_dim, cfg.activation_dropout)
        self.ls2 = LayerScale(dim, cfg.layerscale_init)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
        """``x``: T x B x C, sentences left-aligned; ``padding_mask``: B x T, True at (trailing) padding."""
        h = self.norm1(x)
        x = self.ls1(x, self.regularised(gated(self.linear_tokens(h, padding_mask), self.gate_tokens, h)))
        x = self.ls2(x, self.regularised(self.mlp_channels(x, norm=self.norm2)))
        return x


class ResMLPDecoderLayer(_ResidualLayer):
    """Causal token mixing, encoder-decoder attention and channel MLP, each a LayerScaled residual branch."""

    def __init__(self, cfg, max_positions: int) -> None:
        super().__init__(cfg)
        dim = cfg.decoder_embed_dim
        self.norm1 = build_norm(cfg.norm_type, dim)
        self.linear_tokens = build_token_mixing(cfg, max_positions, causal=True)
        self.gate_tokens = build_token_gate(cfg, dim)
        self.ls1 = LayerScale(dim, cfg.layerscale_init)
        self.norm2 = build_norm(cfg.norm_type, dim)
        self.encoder_attn = CrossAttention(
            dim, cfg.encoder_embed_dim, cfg.decoder_attention_heads, cfg.attention_dropout
        )
        self.ls2 = LayerScale(dim, cfg.layerscale_init)
        self.norm3 = build_norm(cfg.norm_type, dim)
        self.mlp_channels = ChannelMLP(dim, cfg.decoder_ffn_embed_dim, cfg.activation_dropout)
        self.ls3 = LayerScale(dim, cfg.layerscale_init)

    def forward(
        self,
        x: Tensor,
        encoder_out: Optional[Tensor],
        encoder_padding_mask: Optional[Tensor],
        incremental_state: Optional[IncrementalState] = None,
        need_attn: bool = False,
        group: int = 1,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """``x``: T x B x C (sentences left-aligned; one step when ``incremental_state`` is given)."""
        h = self.norm1(x)
        x = self.ls1(x, self.regularised(gated(self.linear_tokens(h, None, incremental_state), self.gate_tokens, h)))
        attn: Optional[Tensor] = None
        if encoder_out is not None:
            y, attn = self.encoder_attn(
                x, encoder_out, encoder_padding_mask, incremental_state, need_attn, group, norm=self.norm2
            )
            x = self.ls2(x, self.regularised(y))
        x = self.ls3(x, self.regularised(self.mlp_channels(x, norm=self.norm3)))
        return x, attn

    def step(
        self, x: Tensor, inputs: Tensor, step: Tensor, length: int, k: Tensor, v: Tensor, mask_bias: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """One fixed-shape decoding step (inference only) for ``x`` (B x C); see ``TokenMixing.step`` and
        ``CrossAttention.step`` for the buffers. Returns the output and the cross-attention weights (B x S)."""
        h = self.norm1(x)
        x = self.ls1(x, gated(self.linear_tokens.step(h, inputs, step, length), self.gate_tokens, h))
        y, attn = self.encoder_attn.step(x, k, v, mask_bias, self.norm2)
        x = self.ls2(x, y)
        x = self.ls3(x, self.mlp_channels(x, norm=self.norm3))
        return x, attn
