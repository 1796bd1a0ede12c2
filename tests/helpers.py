"""Shared helpers for the tests: tiny dictionaries, models built the way fairseq builds them, the toy data-bin."""

import argparse
import os
import subprocess
from pathlib import Path
from typing import Callable, Optional

import torch
from fairseq.data import Dictionary
from fairseq.sequence_generator import SequenceGenerator

import fairseq_resmlp  # noqa: F401  (registers the model)
from fairseq_resmlp.models.resmlp import ResMLPModel, resmlp_tiny
from fairseq_resmlp_tools.fairseq_io import fairseq_command
from fairseq_resmlp_tools.toy_data import write_toy_corpus


class TinyTask:
    """The two attributes of a translation task that build_model reads."""

    def __init__(self, dictionary: Dictionary) -> None:
        self.source_dictionary = dictionary
        self.target_dictionary = dictionary


def make_dictionary(size: int = 40) -> Dictionary:
    d = Dictionary()
    for i in range(size):
        d.add_symbol(f"w{i}")
    return d


def build_model(
    arch: Callable[[argparse.Namespace], None] = resmlp_tiny,
    seed: int = 0,
    dictionary: Optional[Dictionary] = None,
    **overrides,
) -> ResMLPModel:
    """A ResMLP model in eval mode, with architecture defaults plus ``overrides`` (as on the command line)."""
    torch.manual_seed(seed)
    cfg = argparse.Namespace(**overrides)
    arch(cfg)
    model = ResMLPModel.build_model(cfg, TinyTask(dictionary or make_dictionary()))
    return model.eval()


def perturbed(model: ResMLPModel, scale: float = 0.05, seed: int = 2) -> ResMLPModel:
    """``model`` with every parameter moved off its initial value, as training moves it. Several parts start at a
    value that hides them (the Toeplitz part of ``full_plus_toeplitz`` at zero, ``--token-mixing-gate`` at exactly
    1): at initialisation a bug in such a path would not change a single output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) * scale)
    return model


def random_tokens(model: ResMLPModel, lengths, seed: int = 0, left_pad: bool = False) -> torch.Tensor:
    """A padded batch (B x T) of random non-special tokens ending in EOS, with the given lengths."""
    d = model.encoder.dictionary
    g = torch.Generator().manual_seed(seed)
    batch = torch.full((len(lengths), max(lengths)), d.pad(), dtype=torch.long)
    for i, n in enumerate(lengths):
        row = torch.randint(d.nspecial, len(d), (n,), generator=g)
        row[-1] = d.eos()
        if left_pad:
            batch[i, batch.size(1) - n :] = row
        else:
            batch[i, :n] = row
    return batch


def run_fairseq(cmd, cwd, env=None, check: bool = True, stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run a command (``fairseq-*`` names resolved in this environment); on failure show the end of its output."""
    exe = fairseq_command(cmd[0]) if str(cmd[0]).startswith("fairseq-") else cmd[0]
    env = env or {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [str(exe), *map(str, cmd[1:])], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def spm_encode(model, src: Path, dst: Path) -> None:
    """SentencePiece pieces of every line of ``src``, written to ``dst``."""
    lines = src.read_text(encoding="utf-8").splitlines()
    dst.write_text("".join(" ".join(model.encode(x, out_type=str)) + "\n" for x in lines), encoding="utf-8")


def prepare_toy_data_bin(folder: Path, vocab_size: int, seed: int = 0) -> dict:
    """The toy corpus (37 test lines: not a multiple of 8) -> joint SentencePiece -> fairseq-preprocess
    --joined-dictionary, in ``folder`` (``spm.model``, ``data-bin/``); returns {split: (sources, targets)}."""
    import sentencepiece as spm

    corpus = write_toy_corpus(folder, {"train": 1000, "valid": 30, "test": 37}, seed=seed)
    spm.SentencePieceTrainer.train(
        input=f"{folder}/train.src,{folder}/train.tgt",
        model_prefix=str(folder / "spm"),
        vocab_size=vocab_size,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    for split in ("train", "valid", "test"):
        for lang in ("src", "tgt"):
            spm_encode(sp, folder / f"{split}.{lang}", folder / f"{split}.spm.{lang}")
    run_fairseq(
        [
            "fairseq-preprocess",
            "--source-lang",
            "src",
            "--target-lang",
            "tgt",
            "--joined-dictionary",
            "--trainpref",
            "train.spm",
            "--validpref",
            "valid.spm",
            "--testpref",
            "test.spm",
            "--destdir",
            "data-bin",
            "--workers",
            "1",
        ],
        cwd=folder,
    )
    return corpus


# The checkpoint written by fairseq-resmlp 0.1.0 (state-dict version 1; tests/data/checkpoint_v1/README.md).
V1_CHECKPOINT_DIR = Path(__file__).resolve().parent / "data" / "checkpoint_v1"


def load_v1_hub(data_dir: Path, folder: Path = V1_CHECKPOINT_DIR, **overrides) -> "ResMLPModel":
    """The trained fixture through the hub interface, in eval mode (``data_dir`` holds its dictionaries)."""
    hub = ResMLPModel.from_pretrained(
        str(folder),
        checkpoint_file="checkpoint.pt",
        data_name_or_path=str(data_dir),
        source_lang="src",
        target_lang="tgt",
        **overrides,
    )
    return hub.eval()


def tiny_train_args(data, lr: str, user_dir=None) -> list:
    """The fairseq-train arguments every tiny training test shares: data, the plugin, resmlp_tiny with shared
    embeddings, Adam at ``lr`` (criterion, batch and stopping options are each test's own)."""
    from fairseq_resmlp_tools.fairseq_io import user_dir as plugin_dir

    return [
        str(data),
        "--user-dir",
        str(user_dir or plugin_dir()),
        "--arch",
        "resmlp_tiny",
        "--share-all-embeddings",
        "--optimizer",
        "adam",
        "--lr",
        lr,
    ]


def per_update_log_args(save, max_update: int) -> list:
    """fairseq-train options of the tests that compare logs update by update: small batches of every sentence
    (seed 3), a JSON record per update, on the CPU without data-loading workers."""
    return [
        "--max-tokens",
        "400",
        "--max-update",
        str(max_update),
        "--seed",
        "3",
        "--required-batch-size-multiple",
        "1",
        "--no-progress-bar",
        "--log-format",
        "json",
        "--log-interval",
        "1",
        "--save-dir",
        str(save),
        "--cpu",
        "--num-workers",
        "0",
    ]


def json_records(output: str, tags=("train_inner",)) -> list:
    """The JSON records of fairseq's log lines tagged ``| tag |`` (in order)."""
    import json

    return [
        json.loads(line[line.index("{") :]) for line in output.splitlines() if any(f"| {tag} |" in line for tag in tags)
    ]


# n-best lists of fairseq's own beam search, and their comparison with another search's (the exported runtime)
def fairseq_nbest(model, src, beam, **options):
    generator = SequenceGenerator([model], model.decoder.dictionary, beam_size=beam, **options)
    sample = {"net_input": {"src_tokens": src, "src_lengths": src.ne(model.encoder.padding_idx).sum(1)}}
    with torch.no_grad():
        return generator.generate([model], sample)


def assert_same_nbest(got, want):
    """Same hypotheses in the same order; scores and every token's score within 1e-4."""
    assert len(got) == len(want)
    for nbest_got, nbest_want in zip(got, want):
        assert [h["tokens"].tolist() for h in nbest_got] == [h["tokens"].tolist() for h in nbest_want]
        for h_got, h_want in zip(nbest_got, nbest_want):
            assert abs(float(h_got["score"]) - float(h_want["score"])) <= 1e-4
            assert h_got["positional_scores"].shape == h_want["positional_scores"].shape
            assert torch.allclose(h_got["positional_scores"], h_want["positional_scores"], atol=1e-4)


# Single layers (encoder or decoder) of width LAYER_DIM, built from a configuration as the model builds them.
LAYER_DIM = 8


def layer_cfg(**options) -> argparse.Namespace:
    """resmlp_tiny's options at width LAYER_DIM (channel MLP 12), no dropout, plus ``options``."""
    cfg = argparse.Namespace(
        dropout=0.0,
        encoder_embed_dim=LAYER_DIM,
        decoder_embed_dim=LAYER_DIM,
        encoder_ffn_embed_dim=12,
        decoder_ffn_embed_dim=12,
        **options,
    )
    resmlp_tiny(cfg)
    return cfg


def perturb_layer(layer: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Parameters moved off their initial values (LayerScale, norms, a gate that starts at exactly 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return layer


def run_layer(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An encoder layer on ``x`` (T x B x C, no padding), or a decoder layer on ``x`` and a fixed encoder output."""
    if hasattr(layer, "encoder_attn"):
        encoder_out = torch.randn(3, x.size(1), LAYER_DIM, generator=torch.Generator().manual_seed(2))
        return layer(x, encoder_out, None)[0]
    return layer(x, None)
