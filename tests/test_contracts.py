"""Contracts every ResMLP model must keep, for every registered architecture and every value of every option.

In the style of timm's tests/test_models.py (parametrised over ``list_models``): the variants are derived from
fairseq's architecture registry and from ``ResMLPConfig``'s fields, so an architecture or option added later is
covered without editing this file, and a new option that cannot be derived (a number, a free string) makes
``test_every_option_is_covered`` fail until it is given values or a reason here.

Everything goes through public interfaces only (the model's forward, the encoder and the decoder with an
incremental state, fairseq's reorder hooks, SequenceGenerator), never through parameter or submodule names,
so the tests keep working when the layers' internals are renamed or rewritten.
"""

import argparse
import dataclasses
import enum
import os
from typing import Dict, List, Tuple

import pytest
import torch
from fairseq import search
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
from fairseq.sequence_generator import SequenceGenerator
from helpers import build_model, make_dictionary, perturbed, random_tokens

from fairseq_resmlp import ResMLPCheckpointError, ResMLPConfig, ResMLPModel, count_parameters

TOL = 1e-5
DICTIONARY = make_dictionary(20)

# Widths, depths and matrix sizes are shrunk in every variant (the layers run the same code at any size);
# everything else (normalisation, positions, heads, dropout, inits) is each architecture's own.
TINY = dict(
    encoder_embed_dim=16,
    decoder_embed_dim=16,
    encoder_ffn_embed_dim=24,
    decoder_ffn_embed_dim=24,
    encoder_layers=2,
    decoder_layers=2,
    max_source_positions=24,
    max_target_positions=24,
)

# Options that are not choices or flags: the values tried besides the default, or why none are.
NUMERIC_VALUES = {
    "layerscale_init": [1.0],  # larger residual branches: padding or position bugs show up more
}
NOT_VARIED = {
    "_name": "fairseq's internal name of the dataclass, not a model option",
    "dropout": "inactive in eval mode (resmlp_small's 0.3 is built here); see test_dropout_*",
    "attention_dropout": "inactive in eval mode (resmlp_small's 0.1 is built here); see test_dropout_*",
    "activation_dropout": "inactive in eval mode (resmlp_small's 0.1 is built here); see test_dropout_*",
    "token_mixing_dropout": "inactive in eval mode; see test_dropout_* and test_modules' token-mixing dropout tests",
    "drop_path": "inactive in eval mode; see test_dropout_* and tests/test_drop_path.py",
    **{name: "a size: shrunk to TINY in every variant" for name in TINY},
    "decoder_attention_heads": "a size: each architecture's own value is kept (2, 4 and 8 heads)",
    **{
        name: "set by the model from its data, verified at load: tests/test_evaluate_bad_input.py"
        for name in ("source_dict_sha256", "target_dict_sha256", "direction")
    },
}


def resmlp_architectures() -> List[str]:
    """Every architecture registered for the resmlp model (``--arch resmlp`` included)."""
    return sorted(name for name, model in ARCH_MODEL_REGISTRY.items() if model is ResMLPModel)


def option_values() -> Dict[str, list]:
    """{option: values to try}: every choice of every ChoiceEnum field, both values of every flag."""
    values = {}
    for f in dataclasses.fields(ResMLPConfig):
        if isinstance(f.type, type) and issubclass(f.type, enum.Enum):
            values[f.name] = [choice.value for choice in f.type]
        elif f.type is bool:
            values[f.name] = [False, True]
        elif f.name in NUMERIC_VALUES:
            values[f.name] = [f.default, *NUMERIC_VALUES[f.name]]
    return values


def variants() -> List[Tuple[str, dict]]:
    """Each architecture as registered, then each option value on top of resmlp_tiny and of resmlp_small."""
    found = [(arch, {}) for arch in resmlp_architectures()]
    for base in ("resmlp_tiny", "resmlp_small"):
        for name, values in option_values().items():
            found += [(base, {name: value}) for value in values]
    return found


VARIANTS = variants()
IDS = [arch + "".join(f"-{k}={v}" for k, v in opts.items()) for arch, opts in VARIANTS]


@pytest.fixture(params=VARIANTS, ids=IDS)
def model(request) -> ResMLPModel:
    arch, options = request.param
    built = build_model(arch=ARCH_CONFIG_REGISTRY[arch], seed=1, dictionary=DICTIONARY, **{**TINY, **options})
    return perturbed(built)


def encode(model, tokens):
    return model.encoder(tokens, src_lengths=tokens.ne(model.encoder.padding_idx).sum(1))


def test_every_option_is_covered():
    fields = {f.name for f in dataclasses.fields(ResMLPConfig)}
    covered = set(option_values()) | set(NOT_VARIED)
    assert not fields - covered, f"ResMLPConfig fields neither tried nor listed with a reason: {fields - covered}"
    assert not set(NOT_VARIED) - fields, f"NOT_VARIED names options that no longer exist: {set(NOT_VARIED) - fields}"
    assert {"resmlp_small", "resmlp_mini", "resmlp_tiny", "resmlp_6", "resmlp_12"} <= set(resmlp_architectures())


def test_shapes(model):
    src = random_tokens(model, [7, 5, 3], left_pad=True)
    prev = random_tokens(model, [6, 4, 2], seed=1)
    enc = encode(model, src)
    assert enc["encoder_out"][0].shape == (7, 3, 16)
    assert torch.equal(enc["src_lengths"][0], torch.tensor([7, 5, 3]))  # passed on, as fairseq's encoders do
    assert enc["encoder_states"] == []  # only when asked (return_all_hiddens): beam search reorders every entry
    # The entries of fairseq's Transformer encoder output, so that fairseq's code that reads them works.
    assert set(enc) == {
        "encoder_out",
        "encoder_padding_mask",
        "encoder_embedding",
        "encoder_states",
        "src_tokens",
        "beam_group",
        "src_lengths",
    }
    # Padded positions are inert zeros (cross-attention never reads them, nor should anything else).
    assert torch.count_nonzero(enc["encoder_out"][0].transpose(0, 1)[src.eq(model.encoder.padding_idx)]) == 0
    no_lengths = model.encoder(src)
    assert no_lengths["src_lengths"] == [] and torch.equal(no_lengths["encoder_out"][0], enc["encoder_out"][0])
    reordered = model.encoder.reorder_encoder_out(no_lengths, torch.tensor([2, 0]))
    assert reordered["src_lengths"] == [] and reordered["encoder_out"][0].shape == (7, 2, 16)
    assert enc["encoder_padding_mask"][0].shape == (3, 7)
    logits, extra = model(src, src.ne(1).sum(1), prev)
    assert logits.shape == (3, 6, len(DICTIONARY))
    assert extra["attn"][0].shape == (3, 6, 7)
    assert model.max_positions() == (24, 24)
    assert torch.isfinite(logits).all()
    features, _ = model.decoder(prev, encoder_out=enc, features_only=True)
    assert features.shape == (3, 6, 16)
    assert torch.allclose(model.decoder.output_layer(features), logits, atol=1e-6)
    # The embeddings and every layer's output, time first, as fairseq's Transformer decoder returns them.
    assert [tuple(h.shape) for h in extra["inner_states"]] == [(6, 3, 16)] * 3


def test_decoder_is_causal_in_outputs_and_gradients(model):
    src = random_tokens(model, [6, 4], left_pad=True)
    prev = random_tokens(model, [9, 9], seed=1)
    t = 4
    changed = prev.clone()
    changed[:, t + 1 :] = random_tokens(model, [9 - t - 1] * 2, seed=2)
    assert not torch.equal(changed, prev)
    embedded = []  # the decoder's token embeddings (the last call: the encoder may share the module)
    hook = model.decoder.embed_tokens.register_forward_hook(lambda m, i, out: embedded.append(out))

    def run(p):
        model.zero_grad()
        embedded.clear()
        logits, _ = model(src, torch.tensor([6, 4]), p)
        embedded[-1].retain_grad()
        logits[:, : t + 1].log_softmax(-1).sum().backward()
        grads = {n: w.grad.clone() for n, w in model.named_parameters() if w.grad is not None}
        return logits.detach(), grads, embedded[-1].grad

    out_a, grads_a, emb_grad = run(prev)
    out_b, grads_b, _ = run(changed)
    hook.remove()
    assert torch.equal(out_a[:, : t + 1], out_b[:, : t + 1])
    assert not torch.allclose(out_a[:, t + 1 :], out_b[:, t + 1 :])
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6), name
    # Early outputs have exactly zero gradient with respect to later inputs, and some with respect to earlier.
    assert torch.count_nonzero(emb_grad[:, t + 1 :]) == 0
    assert bool((emb_grad[:, : t + 1].abs().sum(-1) > 0).all())


@pytest.mark.parametrize("beam_size", [None, 2], ids=["no-beam-size", "beam-size-2"])
def test_incremental_decoding_equals_full_decoding(model, beam_size):
    """Step by step as in generation; also after a beam search of another size ran on the model."""
    if beam_size:
        warm = random_tokens(model, [5, 3], seed=3, left_pad=True)
        expanded = model.encoder.reorder_encoder_out(encode(model, warm), torch.arange(2).repeat_interleave(beam_size))
        assert int(expanded["beam_group"][0]) == beam_size
        model.decoder(torch.full((2 * beam_size, 1), 2), encoder_out=expanded, incremental_state={})
    src = random_tokens(model, [9, 4, 7, 5], seed=7, left_pad=True)
    enc = encode(model, src)
    prev = random_tokens(model, [12, 12, 12, 12], seed=8)
    full, full_extra = model.decoder(prev, encoder_out=enc)
    state: Dict = {}
    for t in range(prev.size(1)):
        step, extra = model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
        assert step.shape == (4, 1, full.size(-1))
        assert (step[:, 0] - full[:, t]).abs().max() <= TOL, t
        assert (extra["attn"][0][:, 0] - full_extra["attn"][0][:, t]).abs().max() <= TOL, t


# Lengths of a batch: mixed, and one where the only padding is a single pad token (the first column's).
BATCH_LENGTHS = {"mixed": [5, 11, 8, 3], "one-pad": [6, 5, 6]}


@pytest.mark.parametrize("lengths", BATCH_LENGTHS.values(), ids=BATCH_LENGTHS.keys())
@pytest.mark.parametrize("left_pad", [True, False], ids=["left", "right"])
def test_encoder_output_is_batch_and_padding_invariant(model, left_pad, lengths):
    """Encoder output and every layer's state (return_all_hiddens), in the input's layout, as if alone."""
    batch = random_tokens(model, lengths, seed=3, left_pad=left_pad)
    out = model.encoder(batch, torch.tensor(lengths), return_all_hiddens=True)
    assert len(out["encoder_states"]) == 2  # one per layer
    assert torch.equal(out["encoder_padding_mask"][0], batch.eq(model.encoder.padding_idx))
    for i, n in enumerate(lengths):
        alone = random_tokens(model, lengths, seed=3)[i : i + 1, :n]
        ref = model.encoder(alone, torch.tensor([n]), return_all_hiddens=True)
        for key in ("encoder_out", "encoder_states"):
            for got, want in zip(out[key], ref[key]):
                got = got[-n:, i] if left_pad else got[:n, i]
                assert (got - want[:, 0]).abs().max() <= TOL, (key, i, left_pad)


@pytest.mark.parametrize(
    "src_lengths,tgt_lengths", [([4, 10, 7], [6, 3, 9]), ([5, 6, 6], [4, 4, 3])], ids=["mixed", "one-pad"]
)
def test_model_output_is_invariant_to_source_and_target_padding(model, src_lengths, tgt_lengths):
    ref = []
    for i in range(3):
        src = random_tokens(model, src_lengths, seed=5)[i : i + 1, : src_lengths[i]]
        prev = random_tokens(model, tgt_lengths, seed=6)[i : i + 1, : tgt_lengths[i]]
        logits, extra = model(src, torch.tensor([src_lengths[i]]), prev)
        ref.append((logits[0], extra["attn"][0][0]))
    for left_src in (True, False):
        for left_tgt in (True, False):
            src = random_tokens(model, src_lengths, seed=5, left_pad=left_src)
            prev = random_tokens(model, tgt_lengths, seed=6, left_pad=left_tgt)
            logits, extra = model(src, torch.tensor(src_lengths), prev)
            for i, n in enumerate(tgt_lengths):
                got = logits[i, -n:] if left_tgt else logits[i, :n]
                assert (got - ref[i][0]).abs().max() <= TOL, (i, left_src, left_tgt)
                # The attention weights (alignments) too, over the real source positions.
                attn = extra["attn"][0][i, -n:] if left_tgt else extra["attn"][0][i, :n]
                m = src_lengths[i]
                attn = attn[:, -m:] if left_src else attn[:, :m]
                assert (attn - ref[i][1]).abs().max() <= TOL, (i, left_src, left_tgt)


@pytest.mark.parametrize("beam", [1, 2])
def test_reorder_then_continue_equals_decoding_the_reordered_batch(model, beam):
    """Reorder the cache (and the encoder output) as beam search does, then go on: same as starting afresh.

    With beam 2 the batch is beam-structured (each sentence twice) and the model is told the beam size, as
    SequenceGenerator does; reorders stay within sentences, then a finished sentence leaves the batch.
    With beam 1 the orders are arbitrary (repeats, swaps, a shrinking batch).
    """
    unique = random_tokens(model, [6, 9], seed=9, left_pad=True)
    src = unique.repeat_interleave(2, dim=0)
    prev = random_tokens(model, [10, 10, 10, 10], seed=10)
    if beam > 1:
        # As SequenceGenerator does: encode each sentence once, expand it into its beam by reordering.
        enc = model.encoder.reorder_encoder_out(encode(model, unique), torch.arange(2).repeat_interleave(beam))
        assert int(enc["beam_group"][0]) == beam
        orders = [torch.tensor([1, 1, 3, 2]), torch.tensor([2, 3])]
    else:
        enc = encode(model, src)
        orders = [torch.tensor([3, 0, 0, 2]), torch.tensor([2, 0, 3]), torch.tensor([1])]
    state: Dict = {}
    history = prev[:, :3]
    for t in range(3):
        model.decoder(history[:, : t + 1], encoder_out=enc, incremental_state=state)
    # The reordered encoder output is the encoder output of the reordered batch, in every entry.
    full_enc = model.encoder(src, src.ne(1).sum(1), return_all_hiddens=True)
    for order in orders[:1]:
        reordered = model.encoder.reorder_encoder_out(full_enc, order)
        direct = model.encoder(src[order], src[order].ne(1).sum(1), return_all_hiddens=True)
        assert reordered.keys() == direct.keys()
        # beam_group records how the first reorder expanded the batch (a CPU scalar, not a per-row tensor).
        assert [int(g) for g in reordered["beam_group"]] == [1] and direct["beam_group"] == []
        for key in (k for k in direct if k != "beam_group"):
            assert len(reordered[key]) == len(direct[key]), key
            for a, b in zip(reordered[key], direct[key]):
                assert a.shape == b.shape and (a.float() - b.float()).abs().max() <= TOL, key
    rows = torch.arange(len(src))  # which source sentence each row of the batch now belongs to
    for k, order in enumerate(orders):
        model.decoder.reorder_incremental_state_scripting(state, order)
        enc = model.encoder.reorder_encoder_out(enc, order)
        rows, history = rows[order], history[order]
        # Go on with new tokens for two steps; compare with a from-scratch decoding of the reordered batch.
        new = prev[: len(order), 3 + 2 * k : 5 + 2 * k]
        full, _ = model.decoder(torch.cat([history, new], dim=1), encoder_out=encode(model, src[rows]))
        for j in range(new.size(1)):
            history = torch.cat([history, new[:, j : j + 1]], dim=1)
            step, _ = model.decoder(history, encoder_out=enc, incremental_state=state)
            assert (step[:, 0] - full[:, history.size(1) - 1]).abs().max() <= TOL, (k, j)


def generate(model, src, beam: int, seed: int = 0, sampling: bool = False, prefix=None):
    d = model.decoder.dictionary
    strategy = search.Sampling(d) if sampling else None
    gen = SequenceGenerator(
        [model], d, beam_size=beam, max_len_b=8, min_len=2, normalize_scores=False, search_strategy=strategy
    )
    torch.manual_seed(seed)
    sample = {"net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1)}}
    return gen.forward(sample, prefix_tokens=prefix)


@torch.no_grad()
def teacher_forced_scores(model, src_row, tokens):
    """Log-probabilities of ``tokens`` (ending in EOS) given one unpadded source sentence."""
    eos = model.decoder.dictionary.eos()
    prev = torch.cat([torch.tensor([eos]), tokens[:-1]]).unsqueeze(0)
    logits, _ = model(src_row.unsqueeze(0), torch.tensor([len(src_row)]), prev)
    return logits.log_softmax(-1)[0].gather(1, tokens.unsqueeze(1)).squeeze(1)


@pytest.mark.parametrize("beam", [1, 4])
def test_beam_search_is_the_same_alone_and_in_a_batch(model, beam):
    lengths = [5, 11, 3]
    src = random_tokens(model, lengths, seed=14, left_pad=True)
    batched = generate(model, src, beam)
    for i, n in enumerate(lengths):
        alone = generate(model, src[i : i + 1, -n:], beam)[0]
        assert len(alone) == len(batched[i]) == beam
        for a, b in zip(alone, batched[i]):
            assert torch.equal(a["tokens"], b["tokens"]), i
            assert abs(float(a["score"]) - float(b["score"])) <= 1e-4, i
        top = batched[i][0]
        rescored = teacher_forced_scores(model, src[i, -n:], top["tokens"])
        assert (top["positional_scores"] - rescored).abs().max() <= 1e-4, i


def test_sampling_scores_equal_teacher_forced_rescoring(model):
    """Sampled sentences end at different steps (the batch shrinks); every score is the model's own."""
    lengths = [5, 11, 3, 8]
    src = random_tokens(model, lengths, seed=15, left_pad=True)
    first = generate(model, src, beam=2, seed=3, sampling=True)
    again = generate(model, src, beam=2, seed=3, sampling=True)
    for i, n in enumerate(lengths):
        for h, h2 in zip(first[i], again[i]):
            assert torch.equal(h["tokens"], h2["tokens"])  # a fixed seed samples the same sentences
            rescored = teacher_forced_scores(model, src[i, -n:], h["tokens"])
            assert (h["positional_scores"] - rescored).abs().max() <= 1e-4, i


# Errors: every wrong use named in one line, with the option or file at fault.


def tiny(dictionary=DICTIONARY, **options) -> ResMLPModel:
    return build_model(arch=ARCH_CONFIG_REGISTRY["resmlp_tiny"], dictionary=dictionary, **{**TINY, **options})


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(norm_type="batchnorm"), "--norm-type must be .*'batchnorm'"),
        (dict(token_mixing_init="zeros"), "--token-mixing-init must be .*'zeros'"),
        (dict(decoder_attention_heads=3), "--decoder-embed-dim 16 .* --decoder-attention-heads 3"),
        (dict(share_all_embeddings=True, decoder_embed_dim=8), r"--encoder-embed-dim \(16\) .* \(8\)"),
        (dict(drop_path=1.0), r"^--drop-path must be in \[0, 1\), got 1.0$"),
        (dict(drop_path=-0.1), r"^--drop-path must be in \[0, 1\), got -0.1$"),
    ],
    ids=["norm", "init", "heads", "shared-dims", "drop-path-1", "drop-path-negative"],
)
def test_wrong_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        tiny(**options)


@pytest.mark.parametrize(
    "option", ["dropout", "attention_dropout", "activation_dropout", "token_mixing_dropout", "drop_path"]
)
@pytest.mark.parametrize(
    "value, message",
    [
        ("1", "must be in [0, 1), got 1"),
        ("-0.5", "must be in [0, 1), got -0.5"),
        ("x", "invalid parse_rate value: 'x'"),
    ],
)
def test_wrong_rates_are_fairseq_usage_errors(option, value, message, capsys):
    """On fairseq's command line a rate outside [0, 1) is a one-line usage error naming the option (exit status 2),
    not a traceback from building the model; a rate inside is parsed as a float."""
    from fairseq import options

    from fairseq_resmlp_tools.fairseq_io import user_dir

    flag = "--" + option.replace("_", "-")
    common = ["data-bin", "--user-dir", str(user_dir()), "--task", "translation", "--arch", "resmlp_tiny"]
    with pytest.raises(SystemExit) as exit_info:
        options.parse_args_and_arch(options.get_training_parser(), [*common, f"{flag}={value}"])
    assert exit_info.value.code == 2
    # argparse names the program (fairseq-train on the command line, the test runner here)
    assert capsys.readouterr().err.splitlines()[-1].endswith(f": error: argument {flag}: {message}")
    args = options.parse_args_and_arch(options.get_training_parser(), [*common, flag, "0.25"])
    assert getattr(args, option) == 0.25


def test_share_all_embeddings_needs_one_dictionary():
    class TwoDictionaries:
        source_dictionary, target_dictionary = DICTIONARY, make_dictionary(21)

    cfg = argparse.Namespace(**TINY, share_all_embeddings=True)
    ARCH_CONFIG_REGISTRY["resmlp_tiny"](cfg)
    with pytest.raises(ValueError, match="--joined-dictionary"):
        ResMLPModel.build_model(cfg, TwoDictionaries())


def test_overlong_inputs_are_clear_errors():
    model = tiny()
    # Exactly the maximum is fine, on both sides.
    full = model.decoder(random_tokens(model, [24], seed=2), encoder_out=encode(model, random_tokens(model, [24])))
    assert full[0].shape == (1, 24, len(DICTIONARY))
    with pytest.raises(ValueError, match="source of 25 tokens exceeds --max-source-positions 24"):
        encode(model, random_tokens(model, [25]))
    enc = encode(model, random_tokens(model, [5]))
    prev = random_tokens(model, [25], seed=1)
    with pytest.raises(ValueError, match="prefix of 25 tokens exceeds --max-target-positions 24"):
        model.decoder(prev, encoder_out=enc)
    state: Dict = {}
    for t in range(24):
        model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
    with pytest.raises(ValueError, match="exceeds --max-target-positions 24"):
        model.decoder(prev, encoder_out=enc, incremental_state=state)


class TaskWithFiles:
    """A task with a data directory, as fairseq's translation task has."""

    def __init__(self, dictionary) -> None:
        self.source_dictionary = self.target_dictionary = dictionary
        self.cfg = argparse.Namespace(
            data=os.pathsep.join(["/data/one", "/data/two"]), source_lang="de", target_lang="en"
        )


def test_a_checkpoint_that_does_not_fit_is_a_clear_error():
    trained = tiny(share_all_embeddings=True)
    cfg = argparse.Namespace(**TINY, share_all_embeddings=True)
    ARCH_CONFIG_REGISTRY["resmlp_tiny"](cfg)
    other = ResMLPModel.build_model(cfg, TaskWithFiles(make_dictionary(21)))
    where = "/data/one/dict"
    with pytest.raises(ResMLPCheckpointError, match=f"source dictionary of 24 symbols, but {where}.de.txt has 25"):
        other.load_state_dict(trained.state_dict())
    state = {k: v for k, v in trained.state_dict().items() if not k.startswith("encoder.")}
    with pytest.raises(ResMLPCheckpointError, match=f"target dictionary of 24 symbols, but {where}.en.txt has 25"):
        other.load_state_dict(state, strict=False)
    unnamed = tiny(share_all_embeddings=True, encoder_embed_dim=8, decoder_embed_dim=8)
    with pytest.raises(ResMLPCheckpointError, match="source dictionary of 25 symbols, but the task's dictionary has"):
        unnamed.load_state_dict(
            tiny(
                share_all_embeddings=True, encoder_embed_dim=8, decoder_embed_dim=8, dictionary=make_dictionary(21)
            ).state_dict()
        )
    wider = tiny(share_all_embeddings=True, encoder_ffn_embed_dim=40, decoder_ffn_embed_dim=40)
    message = r"has shape \(24, 16\) but this model has \(40, 16\): .* different model options"
    with pytest.raises(ResMLPCheckpointError, match=message):
        wider.load_state_dict(trained.state_dict())
    # A checkpoint that fits loads, and the model computes what the saved one did.
    same = tiny(share_all_embeddings=True)
    same.load_state_dict(trained.state_dict())
    src, prev = random_tokens(trained, [5, 3], left_pad=True), random_tokens(trained, [4, 4], seed=1)
    assert torch.equal(same(src, torch.tensor([5, 3]), prev)[0], trained(src, torch.tensor([5, 3]), prev)[0])
    assert ResMLPModel.hub_models() == {}


# Initial values, found by shape and value (never by name): what training starts from is part of the recipe.


def vectors_equal_to(model, value: float, dim: int = 16) -> int:
    return sum(1 for p in model.parameters() if p.shape == (dim,) and bool((p == value).all()))


@torch.no_grad()
@pytest.mark.parametrize("norm_type", ["affine", "layernorm"])
def test_initial_values(norm_type):
    model = tiny(
        dictionary=make_dictionary(400),
        layerscale_init=0.37,
        norm_type=norm_type,
        max_source_positions=40,
        max_target_positions=40,
    )
    # Embeddings and output projection as in fairseq's Transformer: N(0, d^-1/2), padding row zero.
    for emb in (model.encoder.embed_tokens, model.decoder.embed_tokens):
        pad = emb.padding_idx
        assert torch.count_nonzero(emb.weight[pad]) == 0
        real = torch.cat([emb.weight[:pad], emb.weight[pad + 1 :]])
        assert abs(float(real.std()) * 16**0.5 - 1) < 0.1 and abs(float(real.mean())) < 0.02
    projection = model.decoder.output_layer(torch.eye(16))  # = W^T
    assert abs(float(projection.std()) * 16**0.5 - 1) < 0.1
    assert not torch.equal(projection.t(), model.decoder.embed_tokens.weight)  # not shared unless asked
    # One LayerScale vector per residual branch (2 per encoder layer, 3 per decoder layer), all at the init value;
    # every pre-normalisation (and the two final ones) starts with unit scale.
    assert vectors_equal_to(model, 0.37) == 2 * 2 + 3 * 2
    assert vectors_equal_to(model, 1.0) == (2 * 2 + 1) + (3 * 2 + 1)
    assert vectors_equal_to(model, 0.0) >= (2 * 2 + 1) + (3 * 2 + 1)
    # Token mixing: nn.Linear's U(-1/sqrt(n), 1/sqrt(n)) on a 40 x 40 matrix, lower-triangular in the decoder.
    bound = 40**-0.5
    matrices = [p for p in model.parameters() if p.shape == (40, 40)]
    assert len(matrices) == 4
    assert sum(1 for w in matrices if torch.count_nonzero(w.triu(1)) == 0) == 2
    for w in matrices:
        values = w[w != 0]
        assert values.numel() >= 40 * 41 // 2 - 5
        assert float(values.abs().max()) <= bound and abs(float(values.std()) / (bound / 3**0.5) - 1) < 0.1
    biases = [p for p in model.parameters() if p.shape == (40,)]
    assert len(biases) == 4
    assert all(float(b.abs().max()) <= bound and float(b.min()) < 0 < float(b.max()) for b in biases)


@torch.no_grad()
def test_identity_token_mixing_starts_without_mixing():
    """With --token-mixing-init identity, an untrained encoder's output at a position depends on its token only."""
    model = tiny(token_mixing_init="identity")
    src = random_tokens(model, [8], seed=4)
    changed = src.clone()
    changed[0, :3] = random_tokens(model, [3], seed=5)[0]
    a, b = encode(model, src)["encoder_out"][0], encode(model, changed)["encoder_out"][0]
    assert torch.equal(a[3:], b[3:]) and not torch.allclose(a[:3], b[:3])
    prev = random_tokens(model, [6], seed=6)
    later = prev.clone()
    later[0, :2] = random_tokens(model, [2], seed=7)[0]
    enc = encode(model, src)
    x, y = model.decoder(prev, encoder_out=enc)[0], model.decoder(later, encoder_out=enc)[0]
    assert torch.equal(x[:, 2:], y[:, 2:]) and not torch.allclose(x[:, :2], y[:, :2])
    linear = tiny()  # the default mixes from the start
    assert not torch.allclose(encode(linear, src)["encoder_out"][0][3:], encode(linear, changed)["encoder_out"][0][3:])


def test_every_dropout_can_be_named_for_retain_dropout_modules():
    """fairseq's --retain-dropout-modules keeps dropout at inference in the modules it names by class name."""
    from fairseq.modules import FairseqDropout

    model = tiny(dropout=0.3, attention_dropout=0.1, activation_dropout=0.1)
    classes = {type(m).__name__ for m in model.modules()}
    dropouts = [m for m in model.modules() if isinstance(m, FairseqDropout)]
    assert dropouts and all(d.module_name in classes for d in dropouts), [d.module_name for d in dropouts]
    src, prev = random_tokens(model, [5]), random_tokens(model, [4], seed=1)
    assert torch.equal(model(src, torch.tensor([5]), prev)[0], model(src, torch.tensor([5]), prev)[0])
    model.make_generation_fast_(retain_dropout=True, retain_dropout_modules=sorted(classes))
    torch.manual_seed(0)
    assert not torch.equal(model(src, torch.tensor([5]), prev)[0], model(src, torch.tensor([5]), prev)[0])


def test_decoder_without_encoder_output():
    """The decoder alone (encoder_out=None, as a language model): no attention, still incremental == full."""
    model = tiny()
    prev = random_tokens(model, [7, 4], seed=3, left_pad=True)
    logits, extra = model.decoder(prev)
    assert logits.shape == (2, 7, len(DICTIONARY)) and extra["attn"] == [None]
    state: Dict = {}
    for t in range(7):
        step, extra = model.decoder(prev[:1, : t + 1], incremental_state=state)
        assert extra["attn"] == [None] and (step[0, 0] - logits[0, t]).abs().max() <= TOL


@torch.no_grad()
def test_encoder_sees_the_whole_sentence():
    """Encoder token mixing is not causal: the first position's output depends on the last token."""
    model = tiny()
    src = random_tokens(model, [9], seed=8)
    changed = src.clone()
    changed[0, -2] = 4 if src[0, -2] != 4 else 5  # the last word (before EOS)
    assert not torch.equal(src, changed)
    a, b = encode(model, src)["encoder_out"][0], encode(model, changed)["encoder_out"][0]
    assert not torch.allclose(a[0], b[0])


@pytest.mark.parametrize(
    "option", ["dropout", "attention_dropout", "activation_dropout", "token_mixing_dropout", "drop_path"]
)
def test_dropout_only_in_training(option):
    """Each dropout option alone makes training-mode outputs random; eval mode stays deterministic."""
    model = tiny(**{option: 0.3})
    src, prev = random_tokens(model, [6, 4], left_pad=True), random_tokens(model, [5, 5], seed=1)
    out = [model(src, torch.tensor([6, 4]), prev)[0] for _ in range(2)]
    assert torch.equal(out[0], out[1])
    model.train()
    out = [model(src, torch.tensor([6, 4]), prev)[0] for _ in range(2)]
    assert not torch.allclose(out[0], out[1])


def test_dropout_on_embeddings():
    """--dropout drops entries of the encoder's and the decoder's embeddings: exactly zero gradient there."""
    model = tiny(dropout=0.5, dictionary=make_dictionary(50)).train()
    embedded = []
    hook_enc = model.encoder.embed_tokens.register_forward_hook(lambda m, i, out: embedded.append(out))
    hook_dec = model.decoder.embed_tokens.register_forward_hook(lambda m, i, out: embedded.append(out))
    src, prev = random_tokens(model, [20, 20]), random_tokens(model, [20, 20], seed=1)
    torch.manual_seed(0)
    logits, _ = model(src, torch.tensor([20, 20]), prev)
    hook_enc.remove()
    hook_dec.remove()
    for e in embedded:
        e.retain_grad()
    logits.sum().backward()
    for e in embedded:
        dropped = float((e.grad == 0).float().mean())
        assert 0.35 < dropped < 0.65, dropped


@torch.no_grad()
@pytest.mark.parametrize("sharing", ["none", "share_decoder_input_output_embed", "share_all_embeddings"])
def test_embedding_sharing(sharing):
    """What is tied to what, seen through the embeddings and the output layer; and counted once."""
    options = {} if sharing == "none" else {sharing: True}
    model = tiny(**options)
    enc_emb, dec_emb = model.encoder.embed_tokens.weight, model.decoder.embed_tokens.weight
    output = model.decoder.output_layer(torch.eye(16)).t()  # the output projection's weight (V x d)
    assert (enc_emb is dec_emb) == (sharing == "share_all_embeddings")
    assert torch.equal(output, dec_emb) == (sharing != "none")
    separate = count_parameters(tiny())
    vocab_by_d = len(DICTIONARY) * 16
    expected = {
        "none": separate,
        "share_decoder_input_output_embed": separate - vocab_by_d,
        "share_all_embeddings": separate - 2 * vocab_by_d,
    }
    assert count_parameters(model) == expected[sharing]


@torch.no_grad()
@pytest.mark.parametrize("positions", ["none", "sinusoidal"])
def test_positions_only_when_asked(positions):
    """Without mixing (identity init), a repeated word gives the same output everywhere unless positions are added.

    Sinusoidal positions are fixed: they add no parameters.
    """
    model = tiny(token_mixing_init="identity", positional_embeddings=positions)
    word = random_tokens(model, [1], seed=9)[0, 0]
    repeated = torch.full((1, 6), int(word))
    repeated[0, -1] = model.encoder.dictionary.eos()
    enc = encode(model, repeated)
    out, _ = model.decoder(repeated, encoder_out=enc)
    for states in (enc["encoder_out"][0][:5, 0], out[0, :5]):
        same = all(torch.allclose(states[0], states[t], atol=1e-6) for t in range(1, 5))
        assert same == (positions == "none"), positions
    assert count_parameters(model) == count_parameters(tiny(token_mixing_init="identity"))


@torch.no_grad()
def test_embedding_scale():
    """Embeddings are scaled by sqrt(d) unless --no-scale-embedding: the same as scaling the weights instead."""
    scaled, unscaled = tiny(), tiny(no_scale_embedding=True)  # same seed: same weights
    for emb in (unscaled.encoder.embed_tokens, unscaled.decoder.embed_tokens):
        emb.weight.mul_(16**0.5)
    src, prev = random_tokens(scaled, [6, 3], left_pad=True), random_tokens(scaled, [5, 5], seed=1)
    a, b = scaled(src, torch.tensor([6, 3]), prev)[0], unscaled(src, torch.tensor([6, 3]), prev)[0]
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, tiny(no_scale_embedding=True)(src, torch.tensor([6, 3]), prev)[0])


def test_beam_size_set_but_rows_differ_inside_a_group():
    """[a, b, a] after a beam-3 search ran on the model: no state of that search is used (it once was)."""
    model = tiny()
    warm = random_tokens(model, [6], seed=3)
    expanded = model.encoder.reorder_encoder_out(encode(model, warm), torch.tensor([0, 0, 0]))
    model.decoder(torch.full((3, 1), 2), encoder_out=expanded, incremental_state={})
    a, b = random_tokens(model, [6, 6], seed=11)
    src = torch.stack([a, b, a])
    enc = encode(model, src)
    prev = random_tokens(model, [5, 5, 5], seed=12)
    full, _ = model.decoder(prev, encoder_out=enc)
    state: Dict = {}
    for t in range(prev.size(1)):
        step, _ = model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
        assert (step[:, 0] - full[:, t]).abs().max() <= TOL, t
