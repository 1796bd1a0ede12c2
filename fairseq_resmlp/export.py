"""Export a trained ResMLP translation model with ``torch.export``, to be run without fairseq.

Three programs are written, each a pure function of explicit tensors (no fairseq objects, no dicts of optional
tensors, no value read back to the host), plus ``model.json`` (dictionaries, special ids and sizes):

- ``encoder.pt2``: ``src_tokens`` (B x S, left- or right-padded) -> ``encoder_out`` (S x B x C, fairseq's layout),
  ``padding_mask`` (B x S, True at padding);
- ``decoder_init.pt2``: ``(encoder_out, padding_mask)`` -> every decoder layer's cross-attention ``keys`` and
  ``values`` (layers x B x heads x S x head_dim) and the key-padding ``mask_bias`` (B x 1 x 1 x S: 0 or -inf);
- ``decoder_step.pt2``: ``(tokens (R,), step (1,), inputs, keys, values, mask_bias)`` -> ``(log_probs (R x V),
  new_inputs)``, where ``inputs`` (layers x R x capacity x C) holds each layer's normalised token-mixing inputs at
  earlier steps (zeros beyond them; capacity <= max_target_positions may grow between steps) and ``new_inputs`` is
  that buffer with position ``step`` written.

The step reuses the decoder layers' fixed-shape ``step`` (the one that CUDA-graph decoding replays), so the math
is the plugin's own. Keys and values are per row (hypothesis): within a sentence they are equal, so beam search
only re-gathers them when finished sentences leave the batch, and one program serves every beam size.
``fairseq_resmlp.export_runtime`` loads the folder with torch alone and translates (greedy and beam search).

Command line: ``python -m fairseq_resmlp.export --path CKPT --data DATA_BIN --out DIR``.
"""

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from fairseq.utils import make_positions
from torch import Tensor, nn

EXPORT_FORMAT = "fairseq-resmlp-export"
EXPORT_VERSION = 1
FILES = {"encoder": "encoder.pt2", "decoder_init": "decoder_init.pt2", "decoder_step": "decoder_step.pt2"}


class ExportEncoder(nn.Module):
    """``src_tokens`` (B x S) -> ``encoder_out`` (S x B x C), ``padding_mask`` (B x S)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, src_tokens: Tensor) -> Tuple[Tensor, Tensor]:
        out = self.encoder(src_tokens)
        return out["encoder_out"][0], out["encoder_padding_mask"][0]


class ExportDecoderInit(nn.Module):
    """Per-layer cross-attention keys/values and the key-padding bias of an encoder output."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.layers = decoder.layers

    def forward(self, encoder_out: Tensor, padding_mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        keys: List[Tensor] = []
        values: List[Tensor] = []
        for layer in self.layers:
            k, v = layer.encoder_attn.keys_values(encoder_out)
            keys.append(k)
            values.append(v)
        bias = torch.zeros(padding_mask.shape, dtype=encoder_out.dtype, device=encoder_out.device)
        bias = bias.masked_fill(padding_mask, float("-inf"))
        return torch.stack(keys), torch.stack(values), bias.view(padding_mask.size(0), 1, 1, padding_mask.size(1))


class ExportDecoderStep(nn.Module):
    """One decoding step as a pure function of the decoding state (see the module docstring)."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        positions: Optional[Tensor] = None
        if decoder.embed_positions is not None:
            # Row t = the embedding fairseq's positional module gives step t, as in the fixed-shape decoding.
            probe = torch.full((1, decoder.max_target_positions), decoder.padding_idx + 1, dtype=torch.long)
            positions = decoder.embed_positions(probe)[0].detach().clone()
        self.register_buffer("positions", positions, persistent=False)

    def forward(
        self, tokens: Tensor, step: Tensor, inputs: Tensor, keys: Tensor, values: Tensor, mask_bias: Tensor
    ) -> Tuple[Tensor, Tensor]:
        decoder = self.decoder
        x = decoder.embed_scale * decoder.embed_tokens(tokens)
        if self.positions is not None:
            x = x + self.positions.index_select(0, step)
        # The layers write position `step` into their buffer in place: do it on a copy, so the step stays pure.
        inputs = inputs.clone()
        for i, layer in enumerate(decoder.layers):
            x, _ = layer.step(x, inputs[i], step, inputs.size(2), keys[i], values[i], mask_bias)
        logits = decoder.output_layer(decoder.layer_norm(x))
        return torch.log_softmax(logits.float(), dim=-1), inputs


class _UnfoldedLinear(nn.Linear):
    """An ``nn.Linear`` that ``norm_then_linear`` applies as it is, never folding the Affine norm into it."""


class _PositionTable(nn.Module):
    """fairseq's sinusoidal positional embeddings as a lookup in their precomputed table.

    fairseq's module reads the batch's shape into a tensor and grows its table on the host when a batch is longer;
    here the table already covers every position the model accepts.
    """

    def __init__(self, positional: nn.Module, max_positions: int) -> None:
        super().__init__()
        self.padding_idx = positional.padding_idx
        probe = torch.full((1, max_positions), self.padding_idx + 1, dtype=torch.long)
        positional(probe)  # grows fairseq's table to max_positions if needed
        self.register_buffer("table", positional.weights.detach().clone(), persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        return nn.functional.embedding(make_positions(tokens, self.padding_idx, onnx_trace=False), self.table)


def _exportable_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without the two size-dependent host branches that an exported program cannot keep.

    ``norm_then_linear`` folds the Affine norm into a linear layer only when the activations outnumber the weights,
    which would fix one side of that branch for all sizes: the copy's linear layers are never folded (the decoding
    step's own choice; equal to folding up to rounding). fairseq's sinusoidal positions become a table lookup.
    """
    model = copy.deepcopy(model)
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = _UnfoldedLinear
    encoder = model.encoder
    if encoder.embed_positions is not None:
        encoder.embed_positions = _PositionTable(encoder.embed_positions, encoder.max_source_positions)
    return model


def _describe(model: nn.Module) -> Dict[str, Any]:
    encoder, decoder = model.encoder, model.decoder
    attn = decoder.layers[0].encoder_attn
    src_dict, tgt_dict = encoder.dictionary, decoder.dictionary
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "files": FILES,
        "source_symbols": list(src_dict.symbols),
        "target_symbols": list(tgt_dict.symbols),
        "bos": tgt_dict.bos(),
        "pad": tgt_dict.pad(),
        "eos": tgt_dict.eos(),
        "unk": tgt_dict.unk(),
        "max_source_positions": encoder.max_source_positions,
        "max_target_positions": decoder.max_target_positions,
        "encoder_embed_dim": encoder.embed_tokens.embedding_dim,
        "decoder_embed_dim": decoder.embed_tokens.embedding_dim,
        "decoder_layers": len(decoder.layers),
        "decoder_attention_heads": attn.heads,
        "head_dim": attn.head_dim,
    }


def export_model(model: nn.Module, out_dir: str) -> Dict[str, Any]:
    """Write ``encoder.pt2``, ``decoder_init.pt2``, ``decoder_step.pt2`` and ``model.json`` of a float32 ResMLP
    model into ``out_dir``; returns the JSON's content."""
    from .quantize import is_int8

    if is_int8(model):
        raise ValueError("export_model needs the float32 model: export it before (not after) int8 quantization")
    if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError("export_model needs a float32 model on the CPU (call model.float().cpu() first)")
    model.eval()
    info = _describe(model)
    model = _exportable_copy(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Example sizes all different from each other and from the fixed sizes, so that no dynamic dimension is taken
    # for a constant; AUTO lets export infer each dimension's range (e.g. the source length <= the mixing matrix).
    auto = torch.export.Dim.AUTO
    batch, src_len = 3, min(5, info["max_source_positions"])
    capacity = min(7, info["max_target_positions"])
    src = torch.full((batch, src_len), info["pad"], dtype=torch.long)
    for row, n in enumerate((src_len, src_len - 1, 2)):
        src[row, src_len - n :] = 4 + row
        src[row, -1] = info["eos"]
    layers, heads, head_dim = info["decoder_layers"], info["decoder_attention_heads"], info["head_dim"]
    with torch.no_grad():
        encoder = ExportEncoder(model.encoder).eval()
        enc = torch.export.export(encoder, (src,), dynamic_shapes=({0: auto, 1: auto},))
        encoder_out, padding_mask = encoder(src)
        init = ExportDecoderInit(model.decoder).eval()
        dec_init = torch.export.export(
            init, (encoder_out, padding_mask), dynamic_shapes=({0: auto, 1: auto}, {0: auto, 1: auto})
        )
        keys, values, mask_bias = init(encoder_out, padding_mask)
        step_args = (
            torch.full((batch,), info["eos"], dtype=torch.long),
            torch.tensor([0]),
            torch.zeros(layers, batch, capacity, info["decoder_embed_dim"]),
            keys,
            values,
            mask_bias,
        )
        assert keys.shape == (layers, batch, heads, src_len, head_dim)
        dec_step = torch.export.export(
            ExportDecoderStep(model.decoder).eval(),
            step_args,
            dynamic_shapes=(
                {0: auto},
                None,
                {1: auto, 2: auto},
                {1: auto, 3: auto},
                {1: auto, 3: auto},
                {0: auto, 3: auto},
            ),
        )
    for name, program in (("encoder", enc), ("decoder_init", dec_init), ("decoder_step", dec_step)):
        torch.export.save(program, str(out / FILES[name]))
    (out / "model.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return info


# Command line ------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fairseq_resmlp.export",
        description="Export a ResMLP checkpoint with torch.export (run it with fairseq_resmlp.export_runtime).",
    )
    parser.add_argument("--path", required=True, help="the checkpoint file (.pt) written by fairseq-train")
    parser.add_argument("--data", required=True, help="the data-bin folder with the dictionaries it was trained on")
    parser.add_argument("--out", required=True, help="folder to write the exported programs and model.json to")
    parser.add_argument("--source-lang", default=None, help="source language (default: the checkpoint's)")
    parser.add_argument("--target-lang", default=None, help="target language (default: the checkpoint's)")
    return parser


def _load(parser: argparse.ArgumentParser, args: argparse.Namespace) -> nn.Module:
    path, data = Path(args.path), Path(args.data)
    if not path.is_file():
        parser.error(f"--path {path}: no such checkpoint file")
    if not data.is_dir():
        parser.error(f"--data {data}: no such data folder")
    if not list(data.glob("dict.*.txt")):
        parser.error(f"--data {data}: no dict.*.txt in it (the folder written by fairseq-preprocess)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 (any unreadable file is the user's error to fix, not a traceback)
        parser.error(f"--path {path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})")
    if not isinstance(state, dict) or "model" not in state:
        parser.error(f"--path {path}: not a fairseq checkpoint (no model weights in it)")
    # The architecture's name: in the config of dataclass-configured models, in the argparse args of older ones.
    model_cfg = (state.get("cfg") or {}).get("model")
    arch = model_cfg.get("_name") if model_cfg is not None else getattr(state.get("args"), "arch", None)
    from fairseq.models import ARCH_MODEL_REGISTRY

    import fairseq_resmlp  # noqa: F401  (registers the model and its architectures)

    if arch is None:
        parser.error(f"--path {path}: not a fairseq checkpoint (no model config in it)")
    model_class = ARCH_MODEL_REGISTRY.get(arch)
    if model_class is None or model_class is not fairseq_resmlp.ResMLPModel:
        parser.error(f"--path {path}: a {arch!r} checkpoint, not a ResMLP model (--arch resmlp_*)")
    task_cfg = (state.get("cfg") or {}).get("task") or vars(state.get("args") or argparse.Namespace())
    if not (args.source_lang or task_cfg.get("source_lang")) or not (args.target_lang or task_cfg.get("target_lang")):
        from fairseq.data.data_utils import infer_language_pair

        if infer_language_pair(str(data)) == (None, None):
            parser.error(
                f"--data {data}: cannot tell the source and target languages (no train.SRC-TGT.* files there, "
                "none in the checkpoint): pass --source-lang and --target-lang"
            )
    overrides: Dict[str, Any] = {}
    if args.source_lang:
        overrides["source_lang"] = args.source_lang
    if args.target_lang:
        overrides["target_lang"] = args.target_lang
    try:
        hub = fairseq_resmlp.ResMLPModel.from_pretrained(
            str(path.parent), checkpoint_file=path.name, data_name_or_path=str(data.resolve()), **overrides
        )
    except (fairseq_resmlp.ResMLPCheckpointError, FileNotFoundError) as e:
        parser.error(f"--path {path} with --data {data}: {e}")
    model = hub.models[0]
    model.eval()
    return model


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    model = _load(parser, args)
    info = export_model(model, args.out)
    print(
        f"exported {args.path} to {args.out}: {', '.join(info['files'].values())}, model.json "
        f"({len(info['source_symbols'])} source / {len(info['target_symbols'])} target symbols)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
