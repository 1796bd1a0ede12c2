"""The fixed-shape decoding step (replayed as a CUDA graph on a GPU) gives exactly what the incremental path gives.

On the CPU the same fixed-shape step runs eagerly (mode "eager"): every buffer, bucket, reorder and finished-sentence
path is the one the GPU replays. The model is the trained fixture of tests/data/checkpoint_v1, whose beam search
finishes sentences at different steps, so the batch shrinks during generation.
"""

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fairseq import search
from fairseq.data import data_utils
from fairseq.sequence_generator import SequenceGenerator
from helpers import V1_CHECKPOINT_DIR, build_model, load_v1_hub, perturbed, random_tokens

from fairseq_resmlp.models import resmlp
from fairseq_resmlp.models.static_decoding import _Buffers, _pow2_at_least

FIXTURE = V1_CHECKPOINT_DIR
# On a GPU machine the same tests check the CUDA-graph replay ("auto"); on the CPU the fixed-shape step runs eagerly.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODE = "auto" if DEVICE == "cuda" else "eager"


@pytest.fixture(scope="module")
def hub(v1_data_dir):
    return load_v1_hub(v1_data_dir).to(DEVICE)


@pytest.fixture(scope="module")
def sample(hub):
    sources = json.loads((FIXTURE / "expected.json").read_text())["sources"]
    tokens = [hub.encode(s) for s in sources]
    src = data_utils.collate_tokens(tokens, hub.src_dict.pad(), left_pad=True)
    lengths = torch.tensor([len(t) for t in tokens])
    return {"net_input": {"src_tokens": src.to(DEVICE), "src_lengths": lengths.to(DEVICE)}}


def generate(hub, sample, mode, seed=0, prefix_tokens=None, **options):
    options = dict(options)
    model = hub.models[0]
    model.decoder.static_decoding.mode = mode
    if options.pop("sampling", False):
        options["search_strategy"] = search.Sampling(hub.tgt_dict, sampling_topk=options.pop("sampling_topk"))
    generator = SequenceGenerator([model], hub.tgt_dict, **options)
    torch.manual_seed(seed)
    with torch.no_grad():
        return generator.generate([model], sample, prefix_tokens=prefix_tokens)


def assert_same(a, b):
    assert len(a) == len(b)
    for hyps_a, hyps_b in zip(a, b):
        assert len(hyps_a) == len(hyps_b)
        for x, y in zip(hyps_a, hyps_b):
            assert x["tokens"].tolist() == y["tokens"].tolist()
            assert float(x["score"]) == float(y["score"]) or abs(float(x["score"]) - float(y["score"])) <= 1e-5
            assert torch.allclose(x["positional_scores"], y["positional_scores"], atol=1e-5)
            if x["attention"] is not None and x["attention"].numel():
                assert torch.allclose(x["attention"], y["attention"], atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"beam_size": 1},
        {"beam_size": 4},
        {"beam_size": 5, "max_len_b": 12},
        {"beam_size": 3, "sampling": True, "sampling_topk": 4},
        {"beam_size": 2, "match_source_len": True},
    ],
    ids=["beam1", "beam4", "beam5", "sampling", "match-source-len"],
)
def test_fixed_shape_step_equals_incremental_path(hub, sample, options):
    static = hub.models[0].decoder.static_decoding
    before = static.steps
    reference = generate(hub, sample, "off", **options)
    assert static.steps == before  # "off" really is the incremental path
    assert_same(generate(hub, sample, MODE, **options), reference)
    assert static.steps > before  # and the fixed-shape one


def test_with_prefix_tokens(hub, sample):
    prefix = torch.tensor([[hub.tgt_dict.index(w) for w in ("jya",)]] * 12, device=DEVICE)
    reference = generate(hub, sample, "off", beam_size=4, prefix_tokens=prefix)
    assert all(h[0]["tokens"][0] == prefix[0, 0] for h in reference)
    assert_same(generate(hub, sample, MODE, beam_size=4, prefix_tokens=prefix), reference)


def test_finished_sentences_leave_the_batch(hub, sample):
    """The fixture's sentences finish at different steps: the fixed-shape buffers follow a shrinking batch."""
    model = hub.models[0]
    seen = []
    original = model.decoder.reorder_incremental_state

    def spy(state, new_order):
        seen.append(new_order.numel())
        return original(state, new_order)

    model.decoder.reorder_incremental_state = spy
    try:
        out = generate(hub, sample, MODE, beam_size=4)
    finally:
        del model.decoder.reorder_incremental_state
    assert min(seen) < max(seen) == 48  # 12 sentences x beam 4, then fewer
    assert len({len(h[0]["tokens"]) for h in out}) > 2  # hypotheses of several lengths


def test_generation_does_not_depend_on_history(hub, sample):
    """Beam sizes, sampling, batch sizes and an interrupted generation before a call change nothing."""
    fresh = {mode: generate(hub, sample, mode, beam_size=1) for mode in ("off", MODE)}
    for mode in ("off", MODE):
        generate(hub, sample, mode, beam_size=4)
        generate(hub, sample, mode, beam_size=3, sampling=True, sampling_topk=3)
        small = {"net_input": {k: v[:5] for k, v in sample["net_input"].items()}}
        generate(hub, small, mode, beam_size=5)
        # An exception mid-generation (after a few steps) leaves nothing behind.
        model = hub.models[0]
        calls = {"n": 0}
        original = model.decoder.reorder_incremental_state

        def boom(state, new_order, calls=calls, original=original):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return original(state, new_order)

        model.decoder.reorder_incremental_state = boom
        with pytest.raises(KeyboardInterrupt):
            generate(hub, sample, mode, beam_size=4)
        del model.decoder.reorder_incremental_state
        assert_same(generate(hub, sample, mode, beam_size=1), fresh[mode])
    assert_same(fresh[MODE], fresh["off"])


def test_hub_translate_after_beam_search_is_unchanged(hub):
    """The reported bug: translate() with beam 4 and then beam 1 on a batch used to mix sentences' attention."""
    sources = json.loads((FIXTURE / "expected.json").read_text())["sources"]
    expected = json.loads((FIXTURE / "expected.json").read_text())["beam1_text"]
    hub.models[0].decoder.static_decoding.mode = MODE
    hub.translate(sources, beam=4)
    assert hub.translate(sources, beam=1) == expected


def test_interleaved_generations_are_refused(hub, sample):
    model = hub.models[0]
    model.decoder.static_decoding.mode = MODE
    enc = model.encoder(**sample["net_input"])
    prev = torch.full((12, 1), hub.tgt_dict.eos(), device=DEVICE)
    first, second = {}, {}
    with torch.no_grad():
        model.decoder(prev, encoder_out=enc, incremental_state=first)
        model.decoder(prev, encoder_out=enc, incremental_state=second)
        with pytest.raises(RuntimeError) as e:
            model.decoder(torch.cat([prev, prev], 1), encoder_out=enc, incremental_state=first)
        assert str(e.value) == (
            "two generations are interleaved on one ResMLP decoder, which share its fixed-shape decoding buffers: "
            "generate one at a time, or turn CUDA-graph decoding off (--no-cuda-graphs, e.g. fairseq-generate "
            "--model-overrides \"{'no_cuda_graphs': True}\")"
        )
        # rows that do not match the state (no reorder in between): named, not decoded against other rows
        with pytest.raises(RuntimeError) as e:
            model.decoder(torch.cat([prev, prev], 1)[:5], encoder_out=enc, incremental_state=second)
        assert str(e.value) == "decoder state holds 12 hypotheses but the step has 5"


def test_switch_off_from_the_model_options():
    assert build_model().decoder.static_decoding.mode == "auto"  # on by default (where CUDA applies)
    assert build_model(no_cuda_graphs=True).decoder.static_decoding.mode == "off"
    model = build_model()
    assert not model.decoder.static_decoding.applies(torch.zeros(2, 1, dtype=torch.long), None)


# Untrained models of other architectures: the fixture has no positions and two decoder layers. In float64 the
# fixed-shape step must equal the incremental path to ~1e-12: a buffer in another dtype (float32) shows.
VARIANTS = {
    "small-positions-1-layer": dict(arch="resmlp_small", decoder_layers=1, positional_embeddings="sinusoidal"),
    "small-full-matrix": dict(arch="resmlp_small", token_mixing_matrix="full_plus_toeplitz"),
    "tiny-affine": dict(arch="resmlp_tiny"),
    "small-gated": dict(arch="resmlp_small", token_mixing_gate="linear"),
}


def untrained(arch: str, **options):
    sizes = dict(encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_embed_dim=24, decoder_ffn_embed_dim=24)
    sizes.update(encoder_layers=1, max_source_positions=32, max_target_positions=32, decoder_attention_heads=2)
    # Perturbed: the gate and the Toeplitz part of full_plus_toeplitz start at values that would hide them.
    return perturbed(build_model(getattr(resmlp, arch), **{**sizes, **options})).double().to(DEVICE)


def random_sample(model, lengths, seed=0):
    src = random_tokens(model, lengths, seed=seed, left_pad=True).to(DEVICE)
    return {"net_input": {"src_tokens": src, "src_lengths": torch.tensor(lengths, device=DEVICE)}}


def generate_with(model, sample, mode, **options):
    model.decoder.static_decoding.mode = mode
    generator = SequenceGenerator([model], model.decoder.dictionary, max_len_b=10, **options)
    with torch.no_grad():
        return generator.generate([model], sample)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("beam", [1, 3])
def test_fixed_shape_step_of_other_architectures_in_float64(variant, beam):
    model = untrained(**VARIANTS[variant])
    sample = random_sample(model, [7, 3, 5])
    got, want = (generate_with(model, sample, mode, beam_size=beam) for mode in (MODE, "off"))
    assert model.decoder.static_decoding.steps > 0
    for hyps_got, hyps_want in zip(got, want):
        for x, y in zip(hyps_got, hyps_want):  # fairseq keeps scores in float32
            assert x["tokens"].tolist() == y["tokens"].tolist()
            torch.testing.assert_close(x["positional_scores"], y["positional_scores"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("padding", ["padded", "no-mask"])
def test_fixed_shape_steps_equal_incremental_steps_in_float64(variant, padding):
    """Step by step, without fairseq's generator (no beam group): 4 rows, each its own sentence; and an encoder
    output without a padding mask (fairseq's encoders may leave it empty)."""
    model = untrained(**VARIANTS[variant])
    lengths = [7, 3, 5, 2] if padding == "padded" else [5, 5, 5, 5]
    src = random_sample(model, lengths)["net_input"]
    # 20 steps: past the first length bucket (16), into the next
    prev = torch.randint(4, len(model.decoder.dictionary), (4, 20), generator=torch.Generator().manual_seed(5))
    outputs, extras = {}, {}
    with torch.no_grad():
        enc = model.encoder(src["src_tokens"], src_lengths=src["src_lengths"])
        if padding == "no-mask":
            enc = {**enc, "encoder_padding_mask": []}
        for mode in (MODE, "off"):
            model.decoder.static_decoding.mode = mode
            state: dict = {}
            steps = [
                model.decoder(prev[:, : t + 1].to(DEVICE), encoder_out=enc, incremental_state=state) for t in range(20)
            ]
            outputs[mode] = (torch.cat([s[0] for s in steps], 1), torch.cat([s[1]["attn"][0] for s in steps], 1))
            extras[mode] = sorted(steps[-1][1])
    assert outputs[MODE][0].dtype == torch.float64 and model.decoder.static_decoding.steps == 20
    assert extras[MODE] == extras["off"]  # the same entries as the incremental path returns
    for got_t, want_t in zip(outputs[MODE], outputs["off"]):
        torch.testing.assert_close(got_t, want_t, rtol=0, atol=1e-12)


def test_buffers_are_reused_by_generations_that_fit():
    assert [_pow2_at_least(n) for n in (0, 1, 2, 3, 5, 8, 9)] == [1, 1, 2, 4, 8, 8, 16]
    assert _pow2_at_least(3, 16) == 16 and _pow2_at_least(17, 16) == 32
    model = untrained("resmlp_tiny")
    static = model.decoder.static_decoding
    generate_with(model, random_sample(model, [7, 3, 5]), MODE, beam_size=2)
    buffers = static._buffers
    assert (buffers.rows, buffers.sentences, buffers.src_len) == (8, 4, 16)  # 3 sentences x beam 2, in buckets
    assert buffers.tokens.dtype == torch.long and buffers.mix[0].dtype == torch.float64
    generate_with(model, random_sample(model, [7, 3, 5], seed=1), MODE, beam_size=2)  # the same buckets
    generate_with(model, random_sample(model, [4, 2], seed=2), MODE, beam_size=2)  # smaller
    assert static._buffers is buffers
    generate_with(model, random_sample(model, [20, 3], seed=3), MODE, beam_size=2)  # a longer source
    grown = static._buffers
    assert grown is not buffers and (grown.rows, grown.sentences, grown.src_len) == (8, 4, 32)  # rows kept
    generate_with(model, random_sample(model, [7, 3, 5], seed=4), MODE, beam_size=2)  # fits the grown buffers
    assert static._buffers is grown


def steps_with_reorders(model, mode, enc, prev, reorders):
    """Decode ``prev`` (B x T) step by step in ``mode``; before step t, beam-search-reorder by ``reorders[t]``
    (every module, as fairseq's generator does). Returns the scores and attention of each step (B_t x 1 x ...)."""
    model.decoder.static_decoding.mode = mode
    state: dict = {}
    rows = torch.arange(prev.size(0), device=DEVICE)
    out = []
    for t in range(prev.size(1)):
        if t in reorders:
            order = torch.tensor(reorders[t], device=DEVICE)
            model.decoder.reorder_incremental_state_scripting(state, order)
            enc = model.encoder.reorder_encoder_out(enc, order)
            rows = rows[order]
        scores, extra = model.decoder(prev[rows, : t + 1], encoder_out=enc, incremental_state=state)
        out.append((scores, extra["attn"][0]))
    return out


@pytest.mark.parametrize("beam", [1, 2])
def test_fixed_shape_steps_follow_reorders_in_float64(beam):
    """Reorders as beam search makes them, step by step: hypotheses permuted within their sentences (and, one per
    sentence, across the batch), finished sentences dropped, every sentence's row set shrinking to the front."""
    model = untrained(**VARIANTS["small-positions-1-layer"])
    src = random_sample(model, [7, 3, 5])["net_input"]
    prev = torch.randint(4, len(model.decoder.dictionary), (3 * beam, 6), generator=torch.Generator().manual_seed(7))
    prev = prev.to(DEVICE)  # indexed by rows on the device
    if beam == 1:  # rows are sentences: any permutation, then sentence 1 finishes, then a shuffle of the rest
        expand, reorders = [0, 1, 2], {2: [2, 0, 1], 3: [2, 0], 5: [1, 0]}
    else:  # 2 hypotheses per sentence: swapped within sentences, then sentence 0 finishes and the others swap
        expand, reorders = [0, 0, 1, 1, 2, 2], {2: [1, 0, 2, 3, 5, 4], 3: [4, 5, 2, 3], 5: [1, 0, 2, 3]}
    with torch.no_grad():
        enc = model.encoder(src["src_tokens"], src_lengths=src["src_lengths"])
        enc = model.encoder.reorder_encoder_out(enc, torch.tensor(expand, device=DEVICE))  # records the group
        got, want = (steps_with_reorders(model, mode, enc, prev, reorders) for mode in (MODE, "off"))
    assert int(enc["beam_group"][0]) == beam
    for (scores, attn), (want_scores, want_attn) in zip(got, want):
        torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-12)
        torch.testing.assert_close(attn, want_attn, rtol=0, atol=1e-12)


def start_grouped_generation(model):
    """A decoder state after one step of a beam-2 generation of 3 sentences (6 hypotheses, grouped by sentence)."""
    src = random_sample(model, [7, 3, 5])["net_input"]
    prev = torch.full((6, 1), model.decoder.dictionary.eos(), device=DEVICE)
    model.decoder.static_decoding.mode = MODE
    enc = model.encoder(src["src_tokens"], src_lengths=src["src_lengths"])
    enc = model.encoder.reorder_encoder_out(enc, torch.tensor([0, 0, 1, 1, 2, 2], device=DEVICE))
    state: dict = {}
    model.decoder(prev, encoder_out=enc, incremental_state=state)
    return state


# Reorders that move a hypothesis into another sentence's group: checked on the device (no synchronisation per
# step), so on a GPU they end the process with a device-side assert, and a CPU raises at once.
CROSS_GROUP_REORDERS = {
    "moved-into-another-sentence": (0, 2, 1, 3, 4, 5),
    "moved-while-a-sentence-leaves": (0, 2, 4, 5),
    "whole-sentences-swapped": (2, 3, 0, 1, 4, 5),
}


def test_reorders_of_partial_groups_are_refused_by_name():
    model = untrained("resmlp_tiny")
    with torch.no_grad():
        state = start_grouped_generation(model)
        with pytest.raises(RuntimeError) as e:
            model.decoder.reorder_incremental_state(state, torch.tensor((0, 1, 2, 3, 4), device=DEVICE))
    assert str(e.value) == (
        "beam search reordered 5 hypotheses, not whole groups of 2: the per-sentence key/value buffers cannot follow"
    )


@pytest.mark.parametrize("order", list(CROSS_GROUP_REORDERS.values()), ids=list(CROSS_GROUP_REORDERS))
def test_reorders_across_sentence_groups_are_refused(order, tmp_path):
    if DEVICE == "cuda":  # a device-side assert ends the CUDA context: run it in a process of its own
        script = tmp_path / "reorder.py"
        script.write_text(
            "import sys, torch\n"
            f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "import test_static_decoding as t\n"
            "model = t.untrained('resmlp_tiny')\n"
            "with torch.no_grad():\n"
            "    state = t.start_grouped_generation(model)\n"
            f"    model.decoder.reorder_incremental_state(state, torch.tensor({order!r}, device='cuda'))\n"
            "    torch.cuda.synchronize()\n"
            "print('not refused')\n"
        )
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode != 0 and "not refused" not in done.stdout
        assert "device-side assert" in done.stderr, done.stderr[-2000:]
        return
    model = untrained("resmlp_tiny")
    with torch.no_grad():
        state = start_grouped_generation(model)
        with pytest.raises(RuntimeError):
            model.decoder.reorder_incremental_state(state, torch.tensor(order, device=DEVICE))


def test_a_step_past_the_mixing_matrix_is_refused():
    """The fixed-shape step checks the step itself (the incremental path checks the prefix length)."""
    model = untrained("resmlp_tiny")  # 32 target positions
    src = random_sample(model, [3])["net_input"]
    prev = torch.full((1, 33), model.decoder.dictionary.eos(), device=DEVICE)
    model.decoder.static_decoding.mode = MODE
    state: dict = {}
    with torch.no_grad():
        enc = model.encoder(src["src_tokens"], src_lengths=src["src_lengths"])
        for t in range(32):
            model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
        with pytest.raises(ValueError) as e:
            model.decoder(prev, encoder_out=enc, incremental_state=state)
    assert str(e.value) == "decoding step 32 is beyond the token-mixing matrix (32 positions)"


def test_a_beam_group_that_does_not_divide_the_rows_is_ignored():
    """A ``beam_group`` that does not fit the step's rows: each row is then its own sentence, as without one."""
    model = untrained(**VARIANTS["small-gated"])
    src = random_sample(model, [7, 3, 5])["net_input"]
    prev = torch.randint(4, len(model.decoder.dictionary), (3, 4), generator=torch.Generator().manual_seed(3))
    prev = prev.to(DEVICE)
    outputs = {}
    with torch.no_grad():
        enc = model.encoder(src["src_tokens"], src_lengths=src["src_lengths"])
        for mode, encoder_out in ((MODE, {**enc, "beam_group": [torch.tensor(2)]}), ("off", enc)):
            model.decoder.static_decoding.mode = mode
            state: dict = {}
            steps = [
                model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state) for t in range(4)
            ]
            outputs[mode] = [torch.cat([s[0] for s in steps], 1), torch.cat([s[1]["attn"][0] for s in steps], 1)]
    for got, want in zip(outputs[MODE], outputs["off"]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_buffers_are_made_on_the_device_and_in_the_dtype_asked():
    """On a GPU, a buffer (or the positions probe) left on the CPU fails at the first step; here the meta device
    stands in for the GPU. The model is float32, the buffers asked for float64: each must be in that dtype."""
    meta = torch.device("meta")
    for positions in ("sinusoidal", "learned"):
        decoder = build_model(positional_embeddings=positions).decoder.to(meta)
        inputs = []
        hooks = [m.register_forward_pre_hook(lambda _, args, seen=inputs: seen.extend(args)) for m in decoder.modules()]
        buffers = _Buffers(decoder, rows=4, sentences=2, src_len=16, device=meta, dtype=torch.float64)
        for hook in hooks:
            hook.remove()
        floats = [buffers.mask_bias, buffers.positions, *buffers.mix, *buffers.k, *buffers.v]
        assert len(inputs) > 0 and {t.device for t in [buffers.tokens, buffers.step, *floats, *inputs]} == {meta}
        assert {t.dtype for t in floats} == {torch.float64}


def test_steps_run_in_a_few_bucketed_shapes():
    """On a GPU each shape is one CUDA graph: rows are bucketed to group * 2^k, the prefix and the source lengths
    to powers of two of at least 16 (at most the matrix's positions and the buffers' source length)."""
    model = untrained("resmlp_tiny")  # 32 source and target positions
    static = model.decoder.static_decoding
    static.mode = MODE
    shapes = []
    run = static._run
    static._run = lambda buffers, *shape: shapes.append(shape) or run(buffers, *shape)
    with torch.no_grad():
        # a long source first: the buffers then hold 32 source positions, of which the next batch uses 16
        for lengths, steps in (([20, 3], 1), ([7, 3, 5], 20)):
            src = random_sample(model, lengths)["net_input"]
            enc = model.encoder(src["src_tokens"], src_lengths=src["src_lengths"])
            prev = torch.full((len(lengths), steps), model.decoder.dictionary.eos(), device=DEVICE)
            state: dict = {}
            for t in range(steps):
                model.decoder(prev[:, : t + 1], encoder_out=enc, incremental_state=state)
    del static._run
    # (rows, prefix length, source length, group)
    assert shapes == [(2, 16, 32, 1)] + [(4, 16, 16, 1)] * 16 + [(4, 32, 16, 1)] * 4


def test_fixed_shape_steps_and_reorders_stay_on_the_device():
    """The same on a whole generation's steps and reorders (within the beam groups, then a sentence leaving): a
    tensor made on the CPU among the meta ones fails as it would among CUDA ones."""
    meta = torch.device("meta")
    model = build_model(positional_embeddings="sinusoidal").to(meta)
    model.decoder.static_decoding.mode = "eager"  # CUDA graphs need a GPU
    prev = torch.full((6, 3), model.decoder.dictionary.eos(), device=meta)
    with torch.no_grad():
        enc = model.encoder(torch.full((3, 5), 5, device=meta), src_lengths=torch.tensor([5, 5, 5]))
        # beam 2, expanded as fairseq's first reorder does (which itself cannot run on meta tensors)
        enc = {k: [t.repeat_interleave(2, dim=int(k == "encoder_out")) for t in v] for k, v in enc.items()}
        enc["beam_group"] = [torch.tensor(2)]
        state: dict = {}
        out = [model.decoder(prev[:, :1], encoder_out=enc, incremental_state=state)[0]]
        for t, order in ((2, [1, 0, 2, 3, 5, 4]), (3, [4, 5, 0, 1])):
            model.decoder.reorder_incremental_state(state, torch.tensor(order, device=meta))
            out.append(model.decoder(prev[: len(order), :t], encoder_out=enc, incremental_state=state)[0])
    vocab = len(model.decoder.dictionary)
    assert [tuple(o.shape) for o in out] == [(6, 1, vocab), (6, 1, vocab), (4, 1, vocab)]
    assert {o.device for o in out} == {meta}
    assert model.decoder.static_decoding.steps == 3 and model.decoder.static_decoding.captures == 0  # no graphs


def test_fixed_shape_steps_are_for_inference_only():
    """Training (dropout) and gradients through the decoder (its buffers are written in place) take the
    incremental path."""
    model = untrained("resmlp_tiny")
    static = model.decoder.static_decoding
    static.mode = "eager"
    src = random_sample(model, [3, 2])["net_input"]
    prev = torch.full((2, 1), model.decoder.dictionary.eos(), device=DEVICE)
    enc = model.encoder(src["src_tokens"], src_lengths=src["src_lengths"])
    with torch.no_grad():
        assert static.applies(prev, enc)
        assert not static.applies(prev, None) and not static.applies(prev, {**enc, "encoder_out": []})
        static.mode = "auto"  # CUDA graphs where they can run: not on the CPU
        assert static.applies(prev, enc) == (DEVICE == "cuda")
        static.mode = "eager"
        model.train()
        assert not static.applies(prev, enc)
    model.eval()
    assert torch.is_grad_enabled() and not static.applies(prev, enc)
    model.decoder(prev, encoder_out=enc, incremental_state={})[0].sum().backward()
    assert static.steps == 0 and model.decoder.embed_tokens.weight.grad is not None


def test_non_finite_leftovers_of_an_earlier_generation_never_leak():
    """A generation that overflowed (half precision) leaves inf/NaN in the shared buffers: every later one must
    zero or mask whatever its buckets read (a source bucket of 16 here, then 32)."""
    model = untrained(**VARIANTS["small-positions-1-layer"])
    generate_with(model, random_sample(model, [20, 3, 5]), MODE, beam_size=2)
    buffers = model.decoder.static_decoding._buffers
    for lengths in ([7, 3], [19, 3]):
        for t in [*buffers.mix, *buffers.k, *buffers.v, buffers.mask_bias]:
            t.fill_(float("nan"))
        sample = random_sample(model, lengths, seed=1)
        got, want = (generate_with(model, sample, mode, beam_size=2) for mode in (MODE, "off"))
        assert model.decoder.static_decoding._buffers is buffers
        for hyps_got, hyps_want in zip(got, want):
            for x, y in zip(hyps_got, hyps_want):
                assert x["tokens"].tolist() == y["tokens"].tolist()
                torch.testing.assert_close(x["positional_scores"], y["positional_scores"], rtol=0, atol=1e-6)


# When graphs are captured and replayed (StaticDecoding._run) -----------------------------------------------------
# CI has no GPU, and on a GPU a wrong policy (never capturing, capturing every step, capturing one-off shapes,
# ignoring mode "eager") still decodes correctly, only slower or with more memory. So the policy is checked here on
# the CPU, with torch.cuda's graph API replaced by a recorder and the step's computation by a stub.


class _Stream:
    def __init__(self, recorder):
        self.recorder = recorder

    def wait_stream(self, other):
        self.recorder.events.append(("wait", self, other))


class _Graph:
    def __init__(self, recorder):
        self.recorder = recorder
        self.replays = 0

    def replay(self):
        self.replays += 1
        self.recorder.events.append(("replay", self))


class _GraphRecorder:
    """Stands in for torch.cuda.{Stream, current_stream, stream, CUDAGraph, graph}; logs what _run asks of them."""

    def __init__(self):
        self.events = []
        self.context = None  # "side" while on the side stream, "capture" while capturing
        self.current = self.Stream()
        self.graphs = []

    def Stream(self):
        return _Stream(self)

    def current_stream(self):
        return self.current

    def CUDAGraph(self):
        graph = _Graph(self)
        self.graphs.append(graph)
        return graph

    def stream(self, s):
        return self._within("side", ("stream", s))

    def graph(self, graph, pool=None):
        return self._within("capture", ("capture", graph, pool))

    @contextlib.contextmanager
    def _within(self, context, event):
        self.events.append(event)
        self.context = context
        try:
            yield
        finally:
            self.context = None


@pytest.fixture
def policy(monkeypatch):
    """A StaticDecoding whose step is a stub, buffers that claim a CUDA device, and the recorder."""
    from types import SimpleNamespace

    from fairseq_resmlp.models.static_decoding import StaticDecoding

    recorder = _GraphRecorder()
    for name in ("Stream", "current_stream", "stream", "CUDAGraph", "graph"):
        monkeypatch.setattr(torch.cuda, name, getattr(recorder, name))
    decoder = torch.nn.Module()
    static = StaticDecoding(decoder)
    computed = []

    def compute(buffers, rows, length, src_len, group):
        computed.append(((rows, length, src_len, group), recorder.context))
        return torch.full((1,), float(len(computed))), torch.full((1,), -float(len(computed)))

    static._compute = compute
    buffers = SimpleNamespace(device=torch.device("cuda"), graphs={}, seen={}, pool=object())
    return SimpleNamespace(static=static, decoder=decoder, buffers=buffers, recorder=recorder, computed=computed)


def test_a_bucket_is_computed_on_first_use_captured_on_the_second_and_replayed_after(policy):
    static, buffers, recorder, computed = policy.static, policy.buffers, policy.recorder, policy.computed
    key = (8, 16, 32, 4)
    first = static._run(buffers, *key)
    assert computed == [(key, None)]  # one-off shapes are not worth a graph
    assert first[0].item() == 1.0 and first[1].item() == -1.0
    assert static.captures == 0 and recorder.graphs == [] and buffers.graphs == {}

    second = static._run(buffers, *key)
    # Warm-up on a side stream that waits for the current one, then the capture into the buffers' shared pool.
    assert computed[1:] == [(key, "side"), (key, "capture")]
    (graph,) = recorder.graphs
    side = recorder.events[1][1]  # the stream the warm-up ran on
    assert recorder.events == [
        ("wait", side, recorder.current),
        ("stream", side),
        ("wait", recorder.current, side),
        ("capture", graph, buffers.pool),
        ("replay", graph),
    ]
    assert static.captures == 1 and graph.replays == 1
    assert buffers.graphs[key][0] is graph
    assert second[0].item() == 3.0 and second[1].item() == -3.0  # the captured step's outputs
    assert buffers.graphs[key][1] is second[0] and buffers.graphs[key][2] is second[1]

    for replays in (2, 3):
        again = static._run(buffers, *key)
        assert len(computed) == 3 and static.captures == 1 and recorder.graphs == [graph]
        assert graph.replays == replays
        assert again[0] is second[0] and again[1] is second[1]


def test_every_bucket_has_its_own_graph_and_counts(policy):
    static, buffers, recorder, computed = policy.static, policy.buffers, policy.recorder, policy.computed
    small, large = (4, 16, 16, 4), (8, 32, 16, 4)
    for key in (small, large, small, large, large):
        static._run(buffers, *key)
    assert buffers.seen == {small: 2, large: 2}
    assert static.captures == 2 and len(recorder.graphs) == 2
    assert buffers.graphs[small][0] is recorder.graphs[0] and buffers.graphs[large][0] is recorder.graphs[1]
    assert [g.replays for g in recorder.graphs] == [1, 2]
    assert [key for key, context in computed] == [small, large, small, small, large, large]


@pytest.mark.parametrize("mode, device", [("eager", "cuda"), ("auto", "cpu")])
def test_no_graph_in_mode_eager_or_off_the_gpu(policy, mode, device):
    static, buffers, recorder, computed = policy.static, policy.buffers, policy.recorder, policy.computed
    static.mode = mode
    buffers.device = torch.device(device)
    key = (4, 16, 16, 1)
    outputs = [static._run(buffers, *key)[0].item() for _ in range(3)]
    assert outputs == [1.0, 2.0, 3.0]
    assert computed == [(key, None)] * 3
    assert static.captures == 0 and recorder.graphs == [] and recorder.events == [] and buffers.seen == {}
