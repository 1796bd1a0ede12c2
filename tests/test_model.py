"""Unit tests of the ResMLP translation model: shapes, causality, padding and batch invariance,
incremental decoding, beam search, initial values, and parameter counts."""

import argparse
import logging

import pytest
import torch
from fairseq.models.transformer import TransformerModel
from fairseq.models.transformer.transformer_legacy import transformer_wmt_en_de
from fairseq.sequence_generator import SequenceGenerator
from helpers import TinyTask, build_model, make_dictionary, random_tokens

from fairseq_resmlp import count_parameters
from fairseq_resmlp.models.resmlp import resmlp_6, resmlp_12

TOL = 1e-5


def encode(model, tokens):
    lengths = tokens.ne(model.encoder.padding_idx).sum(1)
    return model.encoder(tokens, src_lengths=lengths)


def test_shapes():
    model = build_model()
    src = random_tokens(model, [7, 5, 3], left_pad=True)
    prev = random_tokens(model, [6, 4, 2], seed=1)
    enc = encode(model, src)
    assert enc["encoder_out"][0].shape == (7, 3, 32)
    assert enc["encoder_padding_mask"][0].shape == (3, 7)
    logits, extra = model(src, src.ne(1).sum(1), prev)
    assert logits.shape == (3, 6, len(model.decoder.dictionary))
    assert extra["attn"][0].shape == (3, 6, 7)
    assert model.max_positions() == (128, 128)


def test_decoder_is_causal_in_outputs_and_gradients():
    model = build_model()
    src = random_tokens(model, [6, 6])
    prev = random_tokens(model, [9, 9], seed=1)
    t = 4
    changed = prev.clone()
    changed[:, t + 1 :] = random_tokens(model, [9 - t - 1] * 2, seed=2)
    assert not torch.equal(changed, prev)

    def loss_and_grads(p):
        model.zero_grad()
        logits, _ = model(src, torch.tensor([6, 6]), p)
        loss = logits[:, : t + 1].log_softmax(-1).sum()
        loss.backward()
        return logits.detach(), {n: w.grad.clone() for n, w in model.named_parameters() if w.grad is not None}

    out_a, grads_a = loss_and_grads(prev)
    out_b, grads_b = loss_and_grads(changed)
    assert torch.equal(out_a[:, : t + 1], out_b[:, : t + 1])
    assert not torch.allclose(out_a[:, t + 1 :], out_b[:, t + 1 :])
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6), name
    # Gradient of early outputs w.r.t. later decoder inputs is exactly zero.
    emb = model.decoder.embed_tokens(prev).detach().requires_grad_(True)
    x = model.decoder.embed_scale * emb
    enc = encode(model, src)
    h = x.transpose(0, 1)
    for layer in model.decoder.layers:
        h, _ = layer(h, enc["encoder_out"][0], enc["encoder_padding_mask"][0])
    h[: t + 1].sum().backward()
    assert torch.count_nonzero(emb.grad[:, t + 1 :]) == 0
    assert torch.count_nonzero(emb.grad[:, : t + 1]) > 0


@pytest.mark.parametrize("left_pad", [True, False])
def test_encoder_output_is_batch_and_padding_invariant(left_pad):
    model = build_model()
    lengths = [5, 11, 8, 3]
    batch = random_tokens(model, lengths, seed=3, left_pad=left_pad)
    out = encode(model, batch)["encoder_out"][0]
    for i, n in enumerate(lengths):
        alone = random_tokens(model, lengths, seed=3)[i : i + 1, :n]
        ref = encode(model, alone)["encoder_out"][0][:, 0]
        got = out[-n:, i] if left_pad else out[:n, i]
        assert (got - ref).abs().max() <= TOL, (i, left_pad)


def test_model_output_is_invariant_to_source_and_target_padding():
    model = build_model()
    src_lengths, tgt_lengths = [4, 10, 7], [6, 3, 9]
    ref = []
    for i in range(3):
        src = random_tokens(model, src_lengths, seed=5)[i : i + 1, : src_lengths[i]]
        prev = random_tokens(model, tgt_lengths, seed=6)[i : i + 1, : tgt_lengths[i]]
        ref.append(model(src, torch.tensor([src_lengths[i]]), prev)[0][0])
    for left_src in (True, False):
        for left_tgt in (True, False):
            src = random_tokens(model, src_lengths, seed=5, left_pad=left_src)
            prev = random_tokens(model, tgt_lengths, seed=6, left_pad=left_tgt)
            logits, _ = model(src, torch.tensor(src_lengths), prev)
            for i, n in enumerate(tgt_lengths):
                got = logits[i, -n:] if left_tgt else logits[i, :n]
                assert (got - ref[i]).abs().max() <= TOL, (i, left_src, left_tgt)


def test_incremental_decoding_equals_full_decoding():
    model = build_model(positional_embeddings="sinusoidal")
    src = random_tokens(model, [9, 4, 7], seed=7, left_pad=True)
    enc = encode(model, src)
    prev = random_tokens(model, [12, 12, 12], seed=8)
    full, _ = model.decoder(prev, encoder_out=enc)
    state = {}
    for t in range(prev.size(1)):
        step, extra = model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
        assert step.shape == (3, 1, full.size(-1))
        assert (step[:, 0] - full[:, t]).abs().max() <= TOL, t
    # The cache holds exactly one input per step and layer: nothing of the prefix is recomputed.
    caches = [v for v in state.values() if "inputs" in v]
    assert len(caches) == len(model.decoder.layers)
    assert all(int(c["steps"]) == prev.size(1) and c["inputs"].shape[0] == 3 for c in caches)


def test_reordered_incremental_state_matches_reordered_full_decoding():
    model = build_model()
    # Two sentences with two beams each: beam search only ever reorders hypotheses of the same sentence
    # (fairseq's cross-attention relies on it and keeps its cached keys/values).
    src = random_tokens(model, [6, 9], seed=9, left_pad=True).repeat_interleave(2, dim=0)
    prev = random_tokens(model, [8, 8, 8, 8], seed=10)
    order = torch.tensor([1, 1, 3, 2])
    enc = encode(model, src)
    state = {}
    for t in range(4):
        model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
    model.decoder.reorder_incremental_state_scripting(state, order)
    enc_r = model.encoder.reorder_encoder_out(enc, order)
    assert enc_r is not enc and enc["encoder_out"][0].shape[1] == 4
    # Continue the reordered beams with new tokens; compare with full decoding of the reordered prefixes.
    cont = torch.cat([prev[order, :4], prev[:, 4:]], dim=1)
    full, _ = model.decoder(cont, encoder_out=enc_r)
    for t in range(4, 8):
        step, _ = model.decoder(cont[:, : t + 1], encoder_out=enc_r, incremental_state=state)
        assert (step[:, 0] - full[:, t]).abs().max() <= TOL, t


@pytest.mark.parametrize("beam", [1, 4])
def test_beam_search_scores_equal_teacher_forced_rescoring(beam):
    model = build_model(seed=11)
    d = model.decoder.dictionary
    src = random_tokens(model, [7, 12, 5, 9, 3], seed=12, left_pad=True)
    gen = SequenceGenerator([model], d, beam_size=beam, max_len_b=20, min_len=3, normalize_scores=False)
    hypos = gen.forward({"net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1)}})
    checked = 0
    for i, nbest in enumerate(hypos):
        assert len(nbest) == beam
        for h in nbest:
            tokens = h["tokens"].unsqueeze(0)
            prev = torch.cat([torch.tensor([[d.eos()]]), tokens[:, :-1]], dim=1)
            n = int(src[i].ne(d.pad()).sum())
            logits, _ = model(src[i : i + 1, -n:], torch.tensor([n]), prev)
            lprobs = logits.log_softmax(-1)[0].gather(1, tokens[0].unsqueeze(1)).squeeze(1)
            assert (h["positional_scores"] - lprobs).abs().max() <= 1e-4
            assert abs(float(h["score"]) - float(lprobs.sum())) <= 1e-3
            checked += 1
    assert checked == 5 * beam


def test_generation_is_the_same_alone_and_in_a_batch():
    model = build_model(seed=13)
    d = model.decoder.dictionary
    gen = SequenceGenerator([model], d, beam_size=4, max_len_b=15)
    lengths = [5, 14, 9]
    src = random_tokens(model, lengths, seed=14, left_pad=True)
    batched = gen.forward({"net_input": {"src_tokens": src, "src_lengths": torch.tensor(lengths)}})
    for i, n in enumerate(lengths):
        alone = gen.forward({"net_input": {"src_tokens": src[i : i + 1, -n:], "src_lengths": torch.tensor([n])}})
        assert torch.equal(alone[0][0]["tokens"], batched[i][0]["tokens"])
        assert abs(float(alone[0][0]["score"]) - float(batched[i][0]["score"])) <= 1e-4


def test_initial_values_and_options():
    model = build_model()
    layer = model.encoder.layers[0]
    assert torch.equal(layer.norm1.alpha, torch.ones(32))
    assert torch.equal(layer.norm1.beta, torch.zeros(32))
    assert torch.allclose(layer.ls1.scale, torch.full((32,), 0.2))
    assert torch.allclose(model.decoder.layers[1].ls3.scale, torch.full((32,), 0.2))
    dec_mix = model.decoder.layers[0].linear_tokens.weight
    assert torch.count_nonzero(dec_mix.triu(1)) == 0 and torch.count_nonzero(dec_mix.tril()) > 0

    other = build_model(layerscale_init=0.05, norm_type="layernorm", token_mixing_init="identity")
    assert torch.allclose(other.encoder.layers[0].ls1.scale, torch.full((32,), 0.05))
    assert isinstance(other.encoder.layers[0].norm1, torch.nn.LayerNorm)
    assert torch.equal(other.encoder.layers[0].linear_tokens.weight, torch.eye(128))


def test_overlong_input_is_a_clear_error():
    model = build_model()
    src = random_tokens(model, [130])
    with pytest.raises(ValueError, match="max-source-positions 128"):
        encode(model, src)


def test_share_all_embeddings_needs_joined_dictionary():
    class TwoDicts:
        source_dictionary = make_dictionary(30)
        target_dictionary = make_dictionary(31)

    from fairseq_resmlp.models.resmlp import ResMLPModel, resmlp_tiny

    cfg = argparse.Namespace(share_all_embeddings=True)
    resmlp_tiny(cfg)
    with pytest.raises(ValueError, match="joined-dictionary"):
        ResMLPModel.build_model(cfg, TwoDicts())
    shared = build_model(share_all_embeddings=True)
    assert shared.encoder.embed_tokens is shared.decoder.embed_tokens
    assert shared.decoder.output_projection.weight is shared.encoder.embed_tokens.weight


def expected_resmlp_parameters(d, ffn, enc_layers, dec_layers, positions, vocab, heads_dim=None):
    """Parameter count from the architecture's definition, counted independently of the code."""
    mlp = d * ffn + ffn + ffn * d + d
    norm = 2 * d
    mixing = positions * positions + positions
    enc_layer = norm + mixing + d + norm + mlp + d
    cross = 4 * (d * d + d)  # q, k, v, out projections with biases
    dec_layer = norm + mixing + d + norm + cross + d + norm + mlp + d
    return vocab * d + enc_layers * enc_layer + norm + dec_layers * dec_layer + norm


def test_parameter_counts_against_transformer_base(capsys):
    vocab = make_dictionary(32000 - 4)  # a joint 32k dictionary, as for WMT14
    rows = []
    for name, arch, layers in (("resmlp_6", resmlp_6, 6), ("resmlp_12", resmlp_12, 12)):
        model = build_model(arch=arch, dictionary=vocab, share_all_embeddings=True)
        n = count_parameters(model)
        assert n == expected_resmlp_parameters(512, 2048, layers, layers, 256, len(vocab))
        rows.append((name, n))
    targs = argparse.Namespace(share_all_embeddings=True)
    transformer_wmt_en_de(targs)
    transformer = TransformerModel.build_model(targs, TinyTask(vocab))
    rows.append(("transformer_wmt_en_de", count_parameters(transformer)))
    with capsys.disabled():
        print("\nparameters (joint 32k vocabulary, shared embeddings)")
        for name, n in rows:
            print(f"  {name:<24}{n / 1e6:8.2f}M  ({n / rows[-1][1]:.2f}x transformer base)")
    assert rows[0][1] < rows[-1][1]  # no self-attention projections: ResMLP-6 is smaller than Transformer base


def test_dictionary_record_hash_is_a_stable_format():
    """Checkpoints store this hash: it must stay the SHA-256 of the symbols joined by newlines, or checkpoints saved
    by one version stop loading in the next."""
    import hashlib

    from fairseq_resmlp.models.data_record import symbols_sha256

    assert symbols_sha256(["<s>", "<pad>", "</s>", "ein"]) == hashlib.sha256(b"<s>\n<pad>\n</s>\nein").hexdigest()


def test_dictionary_files_need_data_and_both_languages():
    from types import SimpleNamespace

    from fairseq_resmlp.models.data_record import dictionary_files

    def task(**cfg):
        return SimpleNamespace(cfg=SimpleNamespace(**cfg))

    assert dictionary_files(task(data="d1:d2", source_lang="en", target_lang="de")) == {
        "source": "d1/dict.en.txt",
        "target": "d1/dict.de.txt",
    }
    assert dictionary_files(task(data="d", source_lang="en", target_lang=None)) == {}
    assert dictionary_files(task(data="d", source_lang=None, target_lang="de")) == {}
    assert dictionary_files(task(data=None, source_lang="en", target_lang="de")) == {}


def _record_task(src="en", tgt="de", src_symbols=("<s>", "a"), tgt_symbols=("<s>", "b"), data="d"):
    from types import SimpleNamespace

    return SimpleNamespace(
        cfg=SimpleNamespace(data=data, source_lang=src, target_lang=tgt),
        source_dictionary=SimpleNamespace(symbols=list(src_symbols)),
        target_dictionary=SimpleNamespace(symbols=list(tgt_symbols)),
    )


def test_data_record_is_written_at_training_and_verified_at_load():
    """The model's data record (dictionary hashes, direction): recorded when the config has none, then a loaded
    checkpoint refuses another direction (checked first: a joint dictionary hashes the same both ways) or another
    dictionary, naming the file; matching data passes."""
    from types import SimpleNamespace

    from fairseq_resmlp.models.data_record import ResMLPCheckpointError, symbols_sha256, verify_or_record

    cfg = SimpleNamespace()
    verify_or_record(cfg, _record_task())
    assert cfg.direction == "en-de"
    assert cfg.source_dict_sha256 == symbols_sha256(["<s>", "a"])
    assert cfg.target_dict_sha256 == symbols_sha256(["<s>", "b"])
    verify_or_record(cfg, _record_task())  # the same data: accepted, unchanged
    assert cfg.direction == "en-de"
    joint = SimpleNamespace()
    verify_or_record(joint, _record_task(src_symbols=("x",), tgt_symbols=("x",)))
    with pytest.raises(ResMLPCheckpointError, match=r"trained en->de, but the task translates de->en"):
        verify_or_record(joint, _record_task(src="de", tgt="en", src_symbols=("x",), tgt_symbols=("x",)))
    with pytest.raises(ResMLPCheckpointError, match=r"another source dictionary than d/dict\.en\.txt"):
        verify_or_record(cfg, _record_task(src_symbols=("<s>", "c")))
    with pytest.raises(ResMLPCheckpointError, match=r"another target dictionary than d/dict\.de\.txt"):
        verify_or_record(cfg, _record_task(tgt_symbols=("<s>", "c")))
    # A task without languages records no direction and checks none.
    nolang = SimpleNamespace()
    verify_or_record(nolang, _record_task(src=None, tgt=None))
    assert getattr(nolang, "direction", None) is None and nolang.source_dict_sha256


def test_data_record_reaches_the_config_fairseq_saves():
    """fairseq builds the model from a merged copy of cfg.model (merge_with_parent), but saves the run's cfg.model:
    the record must be written into both, also when that one is a struct config without the fields."""
    from fairseq.dataclass.utils import merge_with_parent
    from omegaconf import OmegaConf

    from fairseq_resmlp.models.data_record import symbols_sha256, verify_or_record
    from fairseq_resmlp.models.resmlp_config import ResMLPConfig

    root = OmegaConf.create({"model": {"_name": "resmlp", "encoder_layers": 2}, "task": {"data": "d"}})
    OmegaConf.set_struct(root, True)
    merged = merge_with_parent(ResMLPConfig(), root.model)
    verify_or_record(merged, _record_task())
    expected = {
        "direction": "en-de",
        "source_dict_sha256": symbols_sha256(["<s>", "a"]),
        "target_dict_sha256": symbols_sha256(["<s>", "b"]),
    }
    for config in (merged, root.model):
        assert {name: config[name] for name in expected} == expected
    # A config of its own (no parent, as when a model is built from a bare ResMLPConfig) records in itself only.
    alone = OmegaConf.structured(ResMLPConfig())
    verify_or_record(alone, _record_task())
    assert alone.direction == "en-de" and alone.source_dict_sha256 == expected["source_dict_sha256"]


def test_data_record_logs_what_it_recorded_once(caplog):
    from types import SimpleNamespace

    from fairseq_resmlp.models.data_record import verify_or_record

    cfg = SimpleNamespace()
    with caplog.at_level(logging.INFO, logger="fairseq_resmlp.models.data_record"):
        verify_or_record(cfg, _record_task())
        verify_or_record(cfg, _record_task())  # nothing left to record: no second message
    messages = [r.getMessage() for r in caplog.records if r.name == "fairseq_resmlp.models.data_record"]
    assert messages == [
        "recorded in the model config (verified when a checkpoint is loaded): "
        f"{{'source_dict_sha256': '{cfg.source_dict_sha256}', 'target_dict_sha256': '{cfg.target_dict_sha256}', "
        "'direction': 'en-de'}"
    ]


def _task_with_padding_side(left_pad_target):
    """A translation task as fairseq builds it: dictionaries plus a cfg (None: a task without one)."""
    from types import SimpleNamespace

    task = TinyTask(make_dictionary())
    if left_pad_target is not None:
        task.cfg = SimpleNamespace(left_pad_target=left_pad_target, data=None, source_lang=None, target_lang=None)
    return task


@pytest.mark.parametrize("left_pad_target, expected", [(False, False), (True, True), (None, True)])
def test_decoder_follows_the_tasks_target_padding_side(left_pad_target, expected):
    # fairseq's translation task right-pads targets (left_pad_target False): the decoder then takes the direct path;
    # left-padded targets, or a task that does not say, get the path that aligns every row to the left first.
    from fairseq_resmlp.models.resmlp import ResMLPModel, resmlp_tiny

    cfg = argparse.Namespace()
    resmlp_tiny(cfg)
    model = ResMLPModel.build_model(cfg, _task_with_padding_side(left_pad_target))
    assert model.decoder.left_pad is expected


@pytest.mark.parametrize("positions", ["none", "sinusoidal"])
def test_right_padded_targets_give_the_same_outputs_on_both_decoder_paths(positions):
    # The same weights built for a right-padding task (fairseq's default) and for a task that does not say: on
    # right-padded previous tokens, teacher-forced outputs agree at every real position.
    from fairseq_resmlp.models.resmlp import ResMLPModel, resmlp_tiny

    models = []
    for side in (False, None):
        torch.manual_seed(0)
        cfg = argparse.Namespace(positional_embeddings=positions)
        resmlp_tiny(cfg)
        models.append(ResMLPModel.build_model(cfg, _task_with_padding_side(side)).eval())
    direct, aligned = models
    aligned.load_state_dict(direct.state_dict())
    src = random_tokens(direct, [6, 4, 3], left_pad=True)
    lengths = src.ne(direct.encoder.dictionary.pad()).sum(1)
    prev = random_tokens(direct, [5, 2, 4], seed=1)  # right-padded, as fairseq's collater makes them
    with torch.no_grad():
        out_direct = direct(src, lengths, prev)[0]
        out_aligned = aligned(src, lengths, prev)[0]
    real = prev.ne(direct.decoder.dictionary.pad())
    torch.testing.assert_close(out_direct[real], out_aligned[real], rtol=1e-5, atol=1e-5)


def test_model_refusals_name_the_option():
    from fairseq_resmlp.models.resmlp import ResMLPModel, resmlp_tiny

    cfg = argparse.Namespace(share_all_embeddings=True)
    resmlp_tiny(cfg)
    task = TinyTask(make_dictionary())
    task.target_dictionary = make_dictionary(41)
    with pytest.raises(ValueError) as e:
        ResMLPModel.build_model(cfg, task)
    assert str(e.value) == (
        "--share-all-embeddings needs one dictionary for source and target: "
        "binarize with `fairseq-preprocess --joined-dictionary`"
    )
    with pytest.raises(NotImplementedError) as e:
        ResMLPModel.build_embedding(cfg, make_dictionary(), 8, path="vectors.txt")
    assert str(e.value) == "pretrained embedding files are not supported by the ResMLP model"


def test_version_buffer_is_fairseqs_float_and_a_directly_built_model_names_the_tasks_dictionary():
    # fairseq stores a model's "version" as a float tensor; a model built without build_model (no dictionary files
    # known) still names the dictionary in its refusal of a checkpoint of another vocabulary size.
    from fairseq_resmlp.models.resmlp import ResMLPCheckpointError, ResMLPModel

    built = build_model()
    assert built.version.dtype == torch.float32 and built.state_dict()["version"].dtype == torch.float32
    direct = ResMLPModel(built.cfg, built.encoder, built.decoder)
    assert direct.version.dtype == torch.float32
    other = build_model(dictionary=make_dictionary(50)).state_dict()
    with pytest.raises(
        ResMLPCheckpointError, match="a source dictionary of 54 symbols, but the task's dictionary has 44"
    ):
        direct.load_state_dict(other)


def test_architecture_defaults_fill_options_given_as_none():
    # fairseq's argparse leaves options nobody gave as None: the architecture's defaults must fill them, and keep
    # every option that was given.
    from fairseq_resmlp.models.resmlp import resmlp_small

    cfg = argparse.Namespace(encoder_layers=None, dropout=None, token_mixing_matrix=None, decoder_layers=2)
    resmlp_small(cfg)
    assert (cfg.encoder_layers, cfg.dropout, cfg.token_mixing_matrix, cfg.decoder_layers) == (6, 0.3, "toeplitz", 2)


def test_the_deep_encoder_shallow_decoder_architecture_is_resmlp_small_with_12_and_2_layers():
    from fairseq_resmlp.models.resmlp import resmlp_small, resmlp_small_e12d2

    small, deep = argparse.Namespace(), argparse.Namespace()
    resmlp_small(small)
    resmlp_small_e12d2(deep)
    assert (deep.encoder_layers, deep.decoder_layers) == (12, 2)
    assert {k: v for k, v in vars(deep).items() if not k.endswith("_layers")} == {
        k: v for k, v in vars(small).items() if not k.endswith("_layers")
    }
    # Given depths win, as with every architecture.
    given = argparse.Namespace(encoder_layers=None, decoder_layers=4)
    resmlp_small_e12d2(given)
    assert (given.encoder_layers, given.decoder_layers) == (12, 4)
