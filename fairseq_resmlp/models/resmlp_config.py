"""Every option of the ResMLP translation model, with its help text and default, in one place.

Names follow fairseq's Transformer wherever the concept is the same, so that recipes carry over.
Defaults are those of ``resmlp_6``; the choices the paper leaves open are options documented here.
"""

import argparse
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from ..modules.token_mixing import TOKEN_MIXING_INITS, TOKEN_MIXING_MATRICES

NORM_TYPE_CHOICES = ChoiceEnum(["affine", "layernorm"])
TOKEN_MIXING_INIT_CHOICES = ChoiceEnum(list(TOKEN_MIXING_INITS))
TOKEN_MIXING_MATRIX_CHOICES = ChoiceEnum(list(TOKEN_MIXING_MATRICES))
POSITIONAL_EMBEDDINGS_CHOICES = ChoiceEnum(["none", "sinusoidal"])
# A choice, not a flag: fairseq makes a bool option a store_true flag, which could not turn off resmlp_small's gate.
TOKEN_MIXING_GATE_CHOICES = ChoiceEnum(["none", "linear"])


# The options that are probabilities. On fairseq's command line they are checked as they are parsed, so that a wrong
# one is a one-line usage error naming it, not a traceback from building the model (the token-mixing and drop-path
# modules also refuse one, with a ValueError, for the Python API).
RATE_OPTIONS = ("dropout", "attention_dropout", "activation_dropout", "token_mixing_dropout", "drop_path")


def parse_rate(text: str) -> float:
    """argparse type of a RATE_OPTIONS option: a float in [0, 1)."""
    value = float(text)  # not a number: argparse says "invalid parse_rate value"
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


@dataclass
class ResMLPConfig(FairseqDataclass):
    """Options of the ``resmlp`` model; architectures (``--arch resmlp_6`` ...) set only what differs."""

    dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings and every residual branch"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on encoder-decoder attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the GELU inside the channel MLP"})
    encoder_embed_dim: int = field(default=512, metadata={"help": "encoder width d"})
    encoder_ffn_embed_dim: int = field(default=2048, metadata={"help": "encoder channel-MLP hidden size"})
    encoder_layers: int = field(default=6, metadata={"help": "number of encoder layers"})
    decoder_embed_dim: int = field(default=512, metadata={"help": "decoder width d"})
    decoder_ffn_embed_dim: int = field(default=2048, metadata={"help": "decoder channel-MLP hidden size"})
    decoder_layers: int = field(default=6, metadata={"help": "number of decoder layers"})
    decoder_attention_heads: int = field(
        default=8, metadata={"help": "heads of the encoder-decoder (cross) attention, the only attention left"}
    )
    max_source_positions: int = field(
        default=256,
        metadata={
            "help": "size of the encoder's token-mixing matrix: the longest source in tokens (incl. EOS). "
            "Not stated in the paper; memory is L^2 per layer (256 -> 65k weights)"
        },
    )
    max_target_positions: int = field(
        default=256, metadata={"help": "size of the decoder's (causal) token-mixing matrix"}
    )
    share_decoder_input_output_embed: bool = field(
        default=False, metadata={"help": "share decoder input and output embeddings"}
    )
    share_all_embeddings: bool = field(
        default=False,
        metadata={"help": "share encoder, decoder and output embeddings (needs a joined dictionary)"},
    )
    no_scale_embedding: bool = field(default=False, metadata={"help": "do not scale embeddings by sqrt(d)"})
    layerscale_init: float = field(
        default=0.2, metadata={"help": "initial value of every LayerScale vector (paper: 0.2 for MT)"}
    )
    norm_type: NORM_TYPE_CHOICES = field(  # type: ignore[valid-type]
        default="affine",
        metadata={"help": "pre-normalisation of every sublayer: ResMLP's per-channel Affine, or LayerNorm"},
    )
    token_mixing_init: TOKEN_MIXING_INIT_CHOICES = field(  # type: ignore[valid-type]
        default="linear",
        metadata={
            "help": "initial token-mixing matrix A and bias: 'linear' = nn.Linear's default uniform init; "
            "'trunc_normal' = truncated normal (std 0.02) with zero bias, as the official image code "
            "(deit's resmlp_models.py); 'xavier' = Xavier-uniform with zero bias, as timm; "
            "'identity' = start with no mixing"
        },
    )
    token_mixing_matrix: TOKEN_MIXING_MATRIX_CHOICES = field(  # type: ignore[valid-type]
        default="full",
        metadata={
            "help": "parameterisation of the token-mixing matrix A: 'full' = one weight per pair of absolute "
            "positions (the paper); 'toeplitz' = shift-invariant, A[t, s] = w[t - s], one weight per relative "
            "offset; 'full_plus_toeplitz' = the sum of both (the Toeplitz part starts at zero)"
        },
    )
    compile_layers: bool = field(
        default=False,
        metadata={
            "help": "training only: run every encoder and decoder layer through torch.compile (dynamic shapes), "
            "which fuses each layer's element-wise work into a few kernels, forward and backward; parameters, "
            "checkpoints, evaluation and decoding are unchanged; falls back to eager with a warning where "
            "compilation is unavailable"
        },
    )
    token_mixing_dropout: float = field(
        default=0.0,
        metadata={"help": "dropout on the entries of the token-mixing matrix A while training (DropConnect)"},
    )
    drop_path: float = field(
        default=0.0,
        metadata={
            "help": "stochastic depth: while training, drop every residual branch of a sentence with this "
            "probability (the kept ones scaled by 1/(1-p)), the same rate in every layer, as deit's image ResMLP "
            "trains; evaluation and decoding are unchanged"
        },
    )
    token_mixing_gate: TOKEN_MIXING_GATE_CHOICES = field(  # type: ignore[valid-type]
        default="none",
        metadata={
            "help": "'linear': multiply the token-mixing output by a gate computed from the same position's input, "
            "A h * (h W_g + b_g), as gMLP's spatial gating unit: input-dependent mixing, d^2 + d parameters per "
            "layer; the gate starts at 1, so training starts from the ungated block (resmlp_small's default); "
            "'none': the paper's block"
        },
    )
    positional_embeddings: POSITIONAL_EMBEDDINGS_CHOICES = field(  # type: ignore[valid-type]
        default="none",
        metadata={
            "help": "'none' as in ResMLP (the position-specific rows of the token-mixing matrix carry "
            "position), or fairseq's sinusoidal embeddings added to the token embeddings"
        },
    )
    no_cuda_graphs: bool = field(
        default=False,
        metadata={
            "help": "decode without the fixed-shape, CUDA-graph-replayed decoder step (used by default when "
            "generating on a GPU); at generation time pass --model-overrides \"{'no_cuda_graphs': True}\""
        },
    )
    int8: bool = field(
        default=False,
        metadata={
            "help": "quantize the linear layers to int8 when the weights are loaded, for translation on the CPU "
            "only (fairseq_resmlp.quantize_int8); at generation time pass --cpu --model-overrides "
            "\"{'int8': True}\" (checkpoints that predate this option: ResMLPModel.from_pretrained(..., int8=True))"
        },
    )
    # Set by the model; verified at load (fairseq_resmlp/models/data_record.py). Not options to give.
    source_dict_sha256: Optional[str] = field(
        default=None,
        metadata={
            "help": "set by the model; verified at load: SHA-256 of the source dictionary's symbols it was trained "
            "with (a checkpoint used with another dictionary is refused)"
        },
    )
    target_dict_sha256: Optional[str] = field(
        default=None,
        metadata={"help": "set by the model; verified at load: SHA-256 of the target dictionary's symbols"},
    )
    direction: Optional[str] = field(
        default=None,
        metadata={
            "help": "set by the model; verified at load: the language direction it was trained in (en-de); "
            "translating the other way is refused"
        },
    )
