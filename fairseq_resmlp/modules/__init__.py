"""Building blocks of the ResMLP translation model."""

from .affine import Affine, LayerScale, build_norm
from .alignment import align_tokens_left, leading_pads, restore_time_first
from .channel_mlp import ChannelMLP
from .resmlp_layer import ResMLPDecoderLayer, ResMLPEncoderLayer
from .token_mixing import TOKEN_MIXING_INITS, TokenMixing

__all__ = [
    "Affine",
    "ChannelMLP",
    "LayerScale",
    "ResMLPDecoderLayer",
    "ResMLPEncoderLayer",
    "TOKEN_MIXING_INITS",
    "TokenMixing",
    "align_tokens_left",
    "build_norm",
    "leading_pads",
    "restore_time_first",
]
