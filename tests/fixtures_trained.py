"""A tiny ResMLP trained for a few seconds in-process, shared by every test of a session.

Untrained models never finish a sentence early in beam search, so the paths where finished sentences leave the
batch and the cache shrinks are never taken with them. This model has learnt a cipher task (target word i =
cipher of source word i, then EOS) with sentences of 1 to 10 words, so its beam search ends sentences at
different steps. Use it with ``pytest_plugins = ["fixtures_trained"]`` in a test module.
"""

from dataclasses import dataclass
from typing import List

import pytest
import torch
from fairseq.data import Dictionary
from helpers import build_model

from fairseq_resmlp import ResMLPModel

WORDS = 12  # source words; target words are their ciphers


@dataclass
class TrainedTiny:
    """The trained model, its (joined) dictionary and a sampler of fresh sentences of the task."""

    model: ResMLPModel
    dictionary: Dictionary
    final_loss: float

    def sentences(self, lengths: List[int], seed: int) -> List[torch.Tensor]:
        """Source sentences (words then EOS) with the given numbers of words."""
        g = torch.Generator().manual_seed(seed)
        eos = torch.tensor([self.dictionary.eos()])
        first = self.dictionary.nspecial
        return [torch.cat([torch.randint(first, first + WORDS, (n,), generator=g), eos]) for n in lengths]

    def cipher(self, source: torch.Tensor) -> torch.Tensor:
        """The correct translation of a source sentence (words then EOS)."""
        out = source.clone()
        out[:-1] += WORDS
        return out


def make_dictionary() -> Dictionary:
    d = Dictionary()
    for i in range(2 * WORDS):
        d.add_symbol(f"{'s' if i < WORDS else 't'}{i % WORDS}")
    return d


def collate(rows: List[torch.Tensor], pad: int, left: bool) -> torch.Tensor:
    batch = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        if left:
            batch[i, batch.size(1) - len(r) :] = r
        else:
            batch[i, : len(r)] = r
    return batch


def train_tiny(steps: int = 200, seed: int = 0) -> TrainedTiny:
    """Train resmlp_tiny (sinusoidal positions, no dropout) with Adam on fresh random batches of the cipher."""
    d = make_dictionary()
    model = build_model(seed=seed, dictionary=d, positional_embeddings="sinusoidal", share_all_embeddings=True)
    trained = TrainedTiny(model, d, float("nan"))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(seed)
    eos, pad = d.eos(), d.pad()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        lengths = torch.randint(1, 11, (32,), generator=g).tolist()
        src = trained.sentences(lengths, seed=seed * 100_000 + step)
        tgt = [trained.cipher(s) for s in src]
        src_tokens = collate(src, pad, left=True)  # as fairseq's translation task batches them
        target = collate(tgt, pad, left=False)
        prev = collate([torch.cat([torch.tensor([eos]), t[:-1]]) for t in tgt], pad, left=False)
        logits, _ = model(src_tokens, torch.tensor([len(s) for s in src]), prev)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, ignore_index=pad)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained.final_loss = float(loss.detach())
    model.eval()
    return trained


@pytest.fixture(scope="session")
def trained_tiny() -> TrainedTiny:
    """resmlp_tiny trained for a few seconds on the cipher task (once per test session)."""
    return train_tiny()
