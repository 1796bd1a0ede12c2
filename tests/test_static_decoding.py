"""The fixed-shape decoding step (replayed as a CUDA graph on a GPU) gives exactly what the incremental path gives.

On the CPU the same fixed-shape step runs eagerly (mode "eager"): every buffer, bucket, reorder and finished-sentence
path is the one the GPU replays. The model is the trained fixture of tests/data/checkpoint_v1, whose beam search
finishes sentences at different steps, so the batch shrinks during generation.
"""

import json

import pytest
import torch
from fairseq import search
from fairseq.data import data_utils
from fairseq.sequence_generator import SequenceGenerator
from helpers import V1_CHECKPOINT_DIR, build_model, load_v1_hub, perturbed, random_tokens

from fairseq_resmlp.models import resmlp
from fairseq_resmlp.models.static_decoding import _pow2_at_least

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
    assert static._buffers is not buffers and static._buffers.src_len == 32
