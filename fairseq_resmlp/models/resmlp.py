"""ResMLP for machine translation (Touvron et al., "ResMLP: Feedforward networks for image classification
with data-efficient training", 2021, section on sequence-to-sequence ResMLP), as a fairseq model.

Vaswani's encoder-decoder with every self-attention sublayer replaced by a token-mixing linear layer across
positions (lower-triangular in the decoder), channel MLPs, Affine pre-normalisation and LayerScale; the
encoder-decoder attention is kept.
"""

import os
from typing import Any, Dict, Optional

import torch
from fairseq.models import FairseqEncoderDecoderModel, register_model, register_model_architecture
from fairseq.utils import safe_getattr, safe_hasattr
from torch import Tensor, nn

from .._compat import load_checkpoint_checked
from ..modules import Embedding
from ..quantize import quantize_int8
from .data_record import RECORD_FIELDS, ResMLPCheckpointError, dictionary_files, verify_or_record
from .resmlp_config import RATE_OPTIONS, ResMLPConfig, parse_rate
from .resmlp_decoder import ResMLPDecoder
from .resmlp_encoder import ResMLPEncoder

# Version 2 renamed the residual-branch wrappers to the paper's / timm's per-sublayer names. Checkpoints written
# with version 1 (fairseq-resmlp 0.1.0) are upgraded on load by these prefix renames, per layer.
# Version 3 came with --token-mixing-gate, 'linear' by default in resmlp_small since: an older checkpoint has no gate
# weights and no value for the option, so the architecture's new default would add gates it never trained; it is
# loaded without them (ResMLPModel.load_state_dict).
STATE_DICT_VERSION = 3
GATE_VERSION = 3
_V1_RENAMES = {
    "encoder": {"mix.norm.": "norm1.", "mix.layerscale.": "ls1.", "mlp.norm.": "norm2.", "mlp.layerscale.": "ls2."},
    "decoder": {
        "mix.norm.": "norm1.",
        "mix.layerscale.": "ls1.",
        "cross.norm.": "norm2.",
        "cross.layerscale.": "ls2.",
        "mlp.norm.": "norm3.",
        "mlp.layerscale.": "ls3.",
    },
}


@register_model("resmlp", dataclass=ResMLPConfig)
class ResMLPModel(FairseqEncoderDecoderModel):
    """ResMLP encoder-decoder: token mixing instead of self-attention, cross-attention kept."""

    def __init__(self, cfg, encoder: ResMLPEncoder, decoder: ResMLPDecoder) -> None:
        super().__init__(encoder, decoder)
        self.cfg = cfg
        # Where the dictionaries came from, to name them when a checkpoint does not fit (see load_state_dict).
        self._dictionary_files: Dict[str, str] = {}
        self.register_buffer("version", torch.tensor([STATE_DICT_VERSION], dtype=torch.float))

    @classmethod
    def add_args(cls, parser) -> None:
        """fairseq's options from ResMLPConfig, with the rates checked as they are parsed (``parse_rate``)."""
        super().add_args(parser)
        for action in getattr(parser, "_group_actions", parser._actions):
            if action.dest in RATE_OPTIONS:
                action.type = parse_rate

    @classmethod
    def build_model(cls, cfg, task) -> "ResMLPModel":
        resmlp_base(cfg)
        # Before anything is built: a checkpoint used with other dictionaries or the other direction stops here.
        verify_or_record(cfg, task)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        if cfg.share_all_embeddings:
            if src_dict != tgt_dict:
                raise ValueError(
                    "--share-all-embeddings needs one dictionary for source and target: "
                    "binarize with `fairseq-preprocess --joined-dictionary`"
                )
            if cfg.encoder_embed_dim != cfg.decoder_embed_dim:
                raise ValueError(
                    "--share-all-embeddings needs --encoder-embed-dim "
                    f"({cfg.encoder_embed_dim}) equal to --decoder-embed-dim ({cfg.decoder_embed_dim})"
                )
            encoder_embed = cls.build_embedding(cfg, src_dict, cfg.encoder_embed_dim)
            decoder_embed = encoder_embed
            cfg.share_decoder_input_output_embed = True
        else:
            encoder_embed = cls.build_embedding(cfg, src_dict, cfg.encoder_embed_dim)
            decoder_embed = cls.build_embedding(cfg, tgt_dict, cfg.decoder_embed_dim)
        task_cfg = getattr(task, "cfg", None)
        encoder = cls.build_encoder(cfg, src_dict, encoder_embed)
        decoder = cls.build_decoder(
            cfg, tgt_dict, decoder_embed, left_pad=safe_getattr(task_cfg, "left_pad_target", True)
        )
        model = cls(cfg, encoder, decoder)
        model._dictionary_files = dictionary_files(task)
        return model

    @classmethod
    def build_embedding(cls, cfg, dictionary, embed_dim: int, path: Optional[str] = None) -> nn.Embedding:
        """Token embedding for ``dictionary`` (fairseq's hook; pretrained ``path`` embeddings are not supported)."""
        if path is not None:
            raise NotImplementedError("pretrained embedding files are not supported by the ResMLP model")
        return Embedding(len(dictionary), embed_dim, dictionary.pad())

    @classmethod
    def build_encoder(cls, cfg, src_dict, embed_tokens: nn.Embedding) -> ResMLPEncoder:
        return ResMLPEncoder(cfg, src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, cfg, tgt_dict, embed_tokens: nn.Embedding, left_pad: bool = True) -> ResMLPDecoder:
        return ResMLPDecoder(cfg, tgt_dict, embed_tokens, left_pad=left_pad)

    def upgrade_state_dict_named(self, state_dict: Dict[str, Tensor], name: str) -> None:
        """Rename version-1 parameters (``layers.N.mix.norm.alpha`` -> ``layers.N.norm1.alpha``, ...)."""
        prefix = f"{name}." if name else ""
        if _state_dict_version(state_dict, prefix) < 2:
            for stack, renames in _V1_RENAMES.items():
                layers = f"{prefix}{stack}.layers."
                for key in [k for k in state_dict if k.startswith(layers)]:
                    index, _, rest = key[len(layers) :].partition(".")
                    for old, new in renames.items():
                        if rest.startswith(old):
                            state_dict[f"{layers}{index}.{new}{rest[len(old) :]}"] = state_dict.pop(key)
                            break
        state_dict[f"{prefix}version"] = torch.tensor([STATE_DICT_VERSION], dtype=torch.float)
        super().upgrade_state_dict_named(state_dict, name)

    def load_state_dict(self, state_dict: Dict[str, Tensor], strict: bool = True, model_cfg=None, args=None):
        """Load weights, with a clear error when the checkpoint's vocabulary or sizes differ from the data's."""
        self._drop_gates_for_older_checkpoint(state_dict)
        self.upgrade_state_dict_named(state_dict, "")
        self._check_fits(state_dict, strict)
        result = super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)
        if safe_getattr(self.cfg, "int8", False):
            quantize_int8(self)  # after the float weights are in: quantization reads them
        return result

    def _drop_gates_for_older_checkpoint(self, state_dict: Dict[str, Tensor]) -> None:
        """A checkpoint written before ``--token-mixing-gate`` existed (state-dict version < 3, no gate weights) was
        trained without gates: remove the gates that the architecture's current default (resmlp_small) added."""
        if _state_dict_version(state_dict) >= GATE_VERSION:
            return
        if any(".gate_tokens." in key for key in state_dict):
            return
        layers = [*self.encoder.layers, *self.decoder.layers]
        if all(layer.gate_tokens is None for layer in layers):
            return
        for layer in layers:
            layer.gate_tokens = None
        self.cfg.token_mixing_gate = "none"  # re-saved, exported or averaged as what it is

    @classmethod
    def from_pretrained(
        cls, model_name_or_path, checkpoint_file="model.pt", data_name_or_path=".", int8=False, **kwargs
    ):
        """fairseq's hub loader; ``int8=True`` quantizes the linear layers for the CPU (any checkpoint, also one
        whose config predates the ``int8`` option, which fairseq's overrides would silently skip).

        The data record of the checkpoint (``source_dict_sha256``, ``target_dict_sha256``, ``direction``) cannot be
        overridden: it is what the dictionaries and languages given here are verified against. A missing, damaged
        or foreign checkpoint file, or one of another model (fairseq's Transformer ...), raises
        :class:`~fairseq_resmlp._compat.CheckpointFileError` with one line naming the file, before fairseq reads it.
        """
        overridden = sorted(set(kwargs) & set(RECORD_FIELDS))
        if overridden:
            raise ResMLPCheckpointError(
                f"{', '.join(overridden)}: set by the model when it was trained and verified at load; "
                "they cannot be overridden (give the data directory and languages the model was trained on)"
            )
        if os.path.isdir(str(model_name_or_path)):
            for name in str(checkpoint_file).split(os.pathsep):
                load_checkpoint_checked(os.path.join(str(model_name_or_path), name), require_model=ResMLPModel)
        hub = super().from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path, **kwargs)
        if int8:
            for model in hub.models:
                quantize_int8(model)
        return hub

    def _check_fits(self, state_dict: Dict[str, Tensor], strict: bool = True) -> None:
        own = self.state_dict()
        if strict:
            # One line naming a parameter, instead of torch's list of every missing or unexpected key.
            missing = [k for k in own if k not in state_dict]
            unexpected = [k for k in state_dict if k not in own]
            for keys, where in (
                (missing, "this model has but the checkpoint lacks"),
                (unexpected, "the checkpoint has but this model lacks"),
            ):
                if keys:
                    raise ResMLPCheckpointError(
                        f"{len(keys)} parameter(s) that {where}, first {keys[0]}: the checkpoint was trained with "
                        "different model options (e.g. --token-mixing-gate, --token-mixing-matrix, "
                        "--positional-embeddings)"
                    )
        vocab = {
            "encoder.embed_tokens.weight": ("source", self.encoder.dictionary),
            "decoder.embed_tokens.weight": ("target", self.decoder.dictionary),
        }
        for key, value in state_dict.items():
            if key not in own or own[key].shape == value.shape:
                continue
            if key in vocab:
                side, dictionary = vocab[key]
                where = self._dictionary_files.get(side, "the task's dictionary")
                raise ResMLPCheckpointError(
                    f"the checkpoint was trained with a {side} dictionary of {value.size(0)} symbols, but "
                    f"{where} has {len(dictionary)}: translate with the data directory (dictionaries) "
                    "the model was trained on"
                )
            raise ResMLPCheckpointError(
                f"checkpoint parameter {key} has shape {tuple(value.shape)} but this model has "
                f"{tuple(own[key].shape)}: the checkpoint was trained with different model options"
            )

    def forward(
        self, src_tokens: Tensor, src_lengths: Tensor, prev_output_tokens: Tensor, features_only: bool = False, **kwargs
    ):
        """Encode then decode; ``features_only`` (decoder only) skips the output projection, for fused criteria."""
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths, **kwargs)
        return self.decoder(prev_output_tokens, encoder_out=encoder_out, features_only=features_only, **kwargs)

    def max_positions(self):
        return (self.encoder.max_positions(), self.decoder.max_positions())


def _state_dict_version(state_dict: Dict[str, Tensor], prefix: str = "") -> float:
    """The plugin's state-dict version a checkpoint was written with (1 before the version entry existed)."""
    version = state_dict.get(f"{prefix}version")
    return 1.0 if version is None else float(version.reshape(-1)[0])


def _set_default(cfg, name: str, value: Any) -> None:
    if not safe_hasattr(cfg, name) or safe_getattr(cfg, name) is None:
        setattr(cfg, name, value)


def _set_defaults(cfg, **defaults: Any) -> None:
    for name, value in defaults.items():
        _set_default(cfg, name, value)


# Architectures: each sets only what differs, then falls back to resmlp_base (the dataclass defaults).


def resmlp_base(cfg) -> None:
    """Defaults of every option: those of ResMLPConfig (resmlp_6's sizes); ``--arch resmlp`` uses them."""
    for name, value in ResMLPConfig().__dict__.items():
        if not name.startswith("_"):
            _set_default(cfg, name, value)


@register_model_architecture("resmlp", "resmlp_6")
def resmlp_6(cfg) -> None:
    """The paper's ResMLP-6: d=512, channel MLP 2048, 6 encoder + 6 decoder layers."""
    _set_defaults(cfg, encoder_layers=6, decoder_layers=6)
    resmlp_base(cfg)


@register_model_architecture("resmlp", "resmlp_12")
def resmlp_12(cfg) -> None:
    """The paper's ResMLP-12: d=512, channel MLP 2048, 12 encoder + 12 decoder layers."""
    _set_defaults(cfg, encoder_layers=12, decoder_layers=12)
    resmlp_base(cfg)


@register_model_architecture("resmlp", "resmlp_small")
def resmlp_small(cfg) -> None:
    """For ~30k-200k sentence pairs, beside fairseq's transformer_iwslt_de_en: d 512, 4 heads, dropout 0.3,
    LayerNorm pre-normalisation, sinusoidal positions, dropout 0.1 on attention and MLP activations,
    shift-invariant (Toeplitz) token mixing, the token-mixing gate and channel MLPs of 2048 (the paper's width;
    the Transformer's 1024 trailed by 0.3-0.65 validation BLEU at equal GPU time, ResMLP having no self-attention
    projections to spend it on), chosen on validation BLEU (measurements in docs/benchmarks.md)."""
    _set_defaults(
        cfg,
        encoder_ffn_embed_dim=2048,
        decoder_ffn_embed_dim=2048,
        decoder_attention_heads=4,
        dropout=0.3,
        attention_dropout=0.1,
        activation_dropout=0.1,
        norm_type="layernorm",
        positional_embeddings="sinusoidal",
        token_mixing_matrix="toeplitz",
        token_mixing_gate="linear",
    )
    resmlp_6(cfg)


@register_model_architecture("resmlp", "resmlp_small_e12d2")
def resmlp_small_e12d2(cfg) -> None:
    """resmlp_small with 12 encoder and 2 decoder layers: the encoder runs once per sentence, the decoder once per
    output token, so a deep encoder and a shallow decoder translate faster at about the same size (51.6M against
    51.1M parameters with a joint 32k vocabulary). On Multi30k En-De it was the best ResMLP on validation BLEU at
    equal GPU time (4 seeds: 40.00 against resmlp_small's 39.70 and the Transformer's 39.93; docs/benchmarks.md,
    session 11). On En-Fr it leads the Transformer (58.07 against 57.31, session 12) but not resmlp_small (58.55,
    session 9), nor on Tatoeba (37.24 against 38.62, session 13), so resmlp_small stays the recommended default;
    this one decodes faster (beam 4, batch 1 on an H100: 21.4 sentences/s against resmlp_small's 17.0 and the
    Transformer's 8.0)."""
    _set_defaults(cfg, encoder_layers=12, decoder_layers=2)
    resmlp_small(cfg)


@register_model_architecture("resmlp", "resmlp_mini")
def resmlp_mini(cfg) -> None:
    """For CPU-sized runs (the quickstart): d=128, MLP 512, 3 encoder + 3 decoder layers, 4 heads."""
    _set_defaults(
        cfg,
        encoder_embed_dim=128,
        encoder_ffn_embed_dim=512,
        encoder_layers=3,
        decoder_embed_dim=128,
        decoder_ffn_embed_dim=512,
        decoder_layers=3,
        decoder_attention_heads=4,
    )
    resmlp_base(cfg)


@register_model_architecture("resmlp", "resmlp_tiny")
def resmlp_tiny(cfg) -> None:
    """For tests: d=32, two layers each side, 128 positions."""
    _set_defaults(
        cfg,
        encoder_embed_dim=32,
        encoder_ffn_embed_dim=64,
        encoder_layers=2,
        decoder_embed_dim=32,
        decoder_ffn_embed_dim=64,
        decoder_layers=2,
        decoder_attention_heads=2,
        max_source_positions=128,
        max_target_positions=128,
        dropout=0.0,
    )
    resmlp_base(cfg)


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (a shared embedding counts once)."""
    seen = {id(p): p for p in model.parameters() if p.requires_grad}
    return sum(p.numel() for p in seen.values())


__all__ = ["ResMLPModel", "ResMLPConfig", "ResMLPCheckpointError", "count_parameters"]
