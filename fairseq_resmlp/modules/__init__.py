"""Building blocks of the ResMLP translation model."""

from .affine import Affine, LayerScale, build_norm, norm_then_linear
from .channel_mlp import ChannelMLP
from .cross_attention import CrossAttention
from .embedding import Embedding, build_positional_embedding
from .padding import align_tokens_left, leading_pads, restore_time_first
from .resmlp_layer import ResMLPDecoderLayer, ResMLPEncoderLayer
from .token_mixing import TOKEN_MIXING_INITS, TokenMixing

__all__ = [
    "Affine",
    "ChannelMLP",
    "CrossAttention",
    "Embedding",
    "LayerScale",
    "ResMLPDecoderLayer",
    "ResMLPEncoderLayer",
    "TOKEN_MIXING_INITS",
    "TokenMixing",
    "align_tokens_left",
    "build_norm",
    "build_positional_embedding",
    "leading_pads",
    "norm_then_linear",
    "restore_time_first",
]
