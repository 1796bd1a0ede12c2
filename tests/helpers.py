"""Shared helpers for the tests: tiny dictionaries, models built the way fairseq builds them."""

import argparse
from typing import Callable, Optional

import torch
from fairseq.data import Dictionary

import fairseq_resmlp  # noqa: F401  (registers the model)
from fairseq_resmlp.models.resmlp import ResMLPModel, resmlp_tiny


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
    arch: Callable[[argparse.Namespace], None] = resmlp_tiny, seed: int = 0, dictionary: Optional[Dictionary] = None, **overrides
) -> ResMLPModel:
    """A ResMLP model in eval mode, with architecture defaults plus ``overrides`` (as on the command line)."""
    torch.manual_seed(seed)
    cfg = argparse.Namespace(**overrides)
    arch(cfg)
    model = ResMLPModel.build_model(cfg, TinyTask(dictionary or make_dictionary()))
    return model.eval()


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


def write_cipher_corpus(folder, sizes=None, seed: int = 0, vocab: int = 24) -> dict:
    """A synthetic parallel corpus: target = source with every word replaced by its cipher word.

    Learnable in seconds by a tiny model, so end-to-end tests can check that translation works at all.
    Returns {split: (source_lines, target_lines)} and writes ``{split}.src`` / ``{split}.tgt``.
    """
    import random
    from pathlib import Path

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 7))) for _ in range(vocab * 3)})
    src_words = words[:vocab]
    cipher = dict(zip(src_words, words[vocab : 2 * vocab]))
    sizes = sizes or {"train": 400, "valid": 30, "test": 37}
    folder = Path(folder)
    corpus = {}
    for split, n in sizes.items():
        src, tgt = [], []
        for _ in range(n):
            sentence = [rng.choice(src_words) for _ in range(rng.randint(2, 9))]
            src.append(" ".join(sentence) + " .")
            tgt.append(" ".join(cipher[w] for w in sentence) + " .")
        (folder / f"{split}.src").write_text("\n".join(src) + "\n", encoding="utf-8")
        (folder / f"{split}.tgt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
        corpus[split] = (src, tgt)
    return corpus
