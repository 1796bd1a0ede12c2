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
