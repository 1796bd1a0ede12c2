"""Beam search with a trained tiny model, whose sentences end at different steps (see fixtures_trained.py).

Finished sentences leave the batch and every cache is shrunk with them: hypotheses and scores must still equal
those of each sentence generated alone, and each score must equal the model's teacher-forced log-probability.
"""

from typing import List

import pytest
import torch
from fairseq.sequence_generator import SequenceGenerator
from fixtures_trained import collate

pytest_plugins = ["fixtures_trained"]

LENGTHS = [1, 9, 3, 5, 7, 10, 2, 4, 6, 8, 10, 5]  # words per sentence: 12 sentences ending at 11 different steps


def generate(trained, sources: List[torch.Tensor], beam: int, prefix=None):
    d = trained.dictionary
    gen = SequenceGenerator([trained.model], d, beam_size=beam, max_len_b=30, normalize_scores=False)
    src = collate(sources, d.pad(), left=True)
    sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(s) for s in sources])}}
    return gen.forward(sample, prefix_tokens=prefix)


@torch.no_grad()
def teacher_forced(trained, source: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    prev = torch.cat([torch.tensor([trained.dictionary.eos()]), tokens[:-1]]).unsqueeze(0)
    logits, _ = trained.model(source.unsqueeze(0), torch.tensor([len(source)]), prev)
    return logits.log_softmax(-1)[0].gather(1, tokens.unsqueeze(1)).squeeze(1)


def record_reorders(monkeypatch, model) -> List[int]:
    """Sizes of every new_order beam search hands to the decoder's caches."""
    sizes: List[int] = []
    original = model.decoder.reorder_incremental_state_scripting

    def recording(incremental_state, new_order):
        sizes.append(len(new_order))
        return original(incremental_state, new_order)

    monkeypatch.setattr(model.decoder, "reorder_incremental_state_scripting", recording)
    return sizes


def test_the_fixture_has_learnt_the_task(trained_tiny):
    assert trained_tiny.final_loss < 0.1
    sources = trained_tiny.sentences(LENGTHS, seed=1)
    hypos = generate(trained_tiny, sources, beam=1)
    correct = sum(torch.equal(h[0]["tokens"], trained_tiny.cipher(s)) for h, s in zip(hypos, sources))
    assert correct >= 10, correct


@pytest.mark.parametrize("beam", [4, 5])
@pytest.mark.parametrize("with_prefix", [False, True], ids=["no-prefix", "prefix"])
def test_shrinking_beam_search_equals_alone_and_teacher_forcing(trained_tiny, monkeypatch, beam, with_prefix):
    lengths = [max(n, 2) for n in LENGTHS] if with_prefix else LENGTHS
    sources = trained_tiny.sentences(lengths, seed=2 + beam)
    prefix = None
    if with_prefix:
        # The right first two words for even sentences, two wrong ones for odd sentences.
        prefix = torch.stack([trained_tiny.cipher(s)[:2] for s in sources])
        prefix[1::2] = prefix[1::2].flip(0).roll(1, dims=1)
    sizes = record_reorders(monkeypatch, trained_tiny.model)
    batched = generate(trained_tiny, sources, beam, prefix)
    monkeypatch.undo()

    ends = {len(h[0]["tokens"]) for h in batched}
    assert len(ends) >= 8, ends  # sentences really end at different steps
    assert sizes and sizes[0] == len(sources) * beam
    shrunk = [n for n in sizes if n < len(sources) * beam]
    assert len(set(shrunk)) >= 5, sizes  # the batch shrank, several times, as sentences finished

    for i, source in enumerate(sources):
        alone = generate(trained_tiny, [source], beam, None if prefix is None else prefix[i : i + 1])[0]
        assert len(alone) == len(batched[i]) == beam
        for a, b in zip(alone, batched[i]):
            assert torch.equal(a["tokens"], b["tokens"]), i
            assert abs(float(a["score"]) - float(b["score"])) <= 1e-4, i
        for h in batched[i]:
            if prefix is not None:
                assert torch.equal(h["tokens"][:2], prefix[i]), i
            rescored = teacher_forced(trained_tiny, source, h["tokens"])
            assert (h["positional_scores"] - rescored).abs().max() <= 1e-4, i
            assert abs(float(h["score"]) - float(rescored.sum())) <= 1e-3, i
