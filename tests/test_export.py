"""The torch.export export of the trained fixture (tests/data/checkpoint_v1) runs without fairseq and reproduces
the plugin's translations: greedy and beam search, every hypothesis, scores to 1e-4. The command's loading and
errors, model.json and the default architecture are also tested in this process (where mutation testing sees
them: docs/testing.md)."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import V1_CHECKPOINT_DIR, assert_same_nbest, build_model, fairseq_nbest, load_v1_hub, random_tokens

from fairseq_resmlp import quantize_int8
from fairseq_resmlp.export import export_model
from fairseq_resmlp.export_runtime import ExportedTranslator

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = V1_CHECKPOINT_DIR
RUNTIME = ROOT / "fairseq_resmlp" / "export_runtime.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}


def export_cli(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "fairseq_resmlp.export", *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"export failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def data_dir(v1_data_dir):
    return v1_data_dir


@pytest.fixture(scope="module")
def hub(v1_data_dir):
    return load_v1_hub(v1_data_dir)


@pytest.fixture(scope="module")
def exported(data_dir, tmp_path_factory):
    """The fixture exported through the command line."""
    out = tmp_path_factory.mktemp("export")
    export_cli(
        "--path",
        FIXTURE / "checkpoint.pt",
        "--data",
        data_dir,
        "--out",
        out,
        "--source-lang",
        "src",
        "--target-lang",
        "tgt",
    )
    return out


def run_without_fairseq(export_dir: Path, sources, beams) -> dict:
    """Translate in a fresh interpreter that loads export_runtime.py by its path and never imports fairseq."""
    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        spec = importlib.util.spec_from_file_location("export_runtime", {str(RUNTIME)!r})
        runtime = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(runtime)
        translator = runtime.ExportedTranslator({str(export_dir)!r})
        sources = json.loads(sys.stdin.read())
        out = {{}}
        for beam in {list(beams)!r}:
            hypos = translator.translate([translator.encode(s) for s in sources], beam=beam)
            out[beam] = [[{{"tokens": h["tokens"].tolist(), "score": float(h["score"])}} for h in nbest]
                         for nbest in hypos]
        # Every sentence alone (batch 1) equals its translation in the batch.
        out["alone"] = [translator.translate([translator.encode(s)], beam=b)[0][0]["tokens"].tolist()
                        for b in (1, 4) for s in sources[:3]]
        assert not any(name == "fairseq" or name.startswith("fairseq.") for name in sys.modules), "fairseq imported"
        assert "fairseq_resmlp" not in sys.modules
        print(json.dumps(out))
        """
    )
    env = {key: value for key, value in ENV.items() if key != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(sources),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(export_dir),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_translates_as_fairseq(model, translator, src, beams, max_len_b):
    """The exported translator's n-best lists equal fairseq's SequenceGenerator's on the same model: same tokens,
    scores within 1e-4, for each beam size."""
    sources = [row[row.ne(model.encoder.padding_idx)] for row in src]
    for beam in beams:
        want = fairseq_nbest(model, src, beam, max_len_b=max_len_b)
        assert_same_nbest(translator.translate(sources, beam=beam, max_len_b=max_len_b), want)


def test_export_writes_programs_and_dictionary(exported, hub):
    info = json.loads((exported / "model.json").read_text())
    assert info["format"] == "fairseq-resmlp-export"
    assert info["target_symbols"] == hub.tgt_dict.symbols and info["source_symbols"] == hub.src_dict.symbols
    assert (info["pad"], info["eos"], info["unk"]) == (hub.tgt_dict.pad(), hub.tgt_dict.eos(), hub.tgt_dict.unk())
    assert info["max_target_positions"] == 24 and info["decoder_layers"] == 2
    for name in info["files"].values():
        torch.export.load(str(exported / name))


def test_export_reproduces_the_plugin_without_fairseq(exported, hub):
    expected = json.loads((FIXTURE / "expected.json").read_text())
    sources = expected["sources"] + ["dcpup", "btt " * 20 + "."]  # plus a one-word and a long source
    got = run_without_fairseq(exported, sources, beams=(1, 4, 5))
    for beam in (1, 4, 5):  # 12+2 sentences x beam 5 = 70 rows: more than any example size used at export
        want = hub.generate([hub.encode(s) for s in sources], beam=beam)
        for nbest_got, nbest_want in zip(got[str(beam)], want):
            assert [h["tokens"] for h in nbest_got] == [h["tokens"].tolist() for h in nbest_want]
            for h_got, h_want in zip(nbest_got, nbest_want):
                assert abs(h_got["score"] - float(h_want["score"])) <= 1e-4
    assert got["alone"] == [nbest[0]["tokens"] for b in ("1", "4") for nbest in got[b][:3]]


def test_export_runtime_command_line(exported, hub):
    expected = json.loads((FIXTURE / "expected.json").read_text())
    proc = subprocess.run(
        [sys.executable, str(RUNTIME), str(exported), "--beam", "4"],
        input="\n".join(expected["sources"][:3]) + "\n",
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert [line.split("\t")[2] for line in lines] == hub.translate(expected["sources"][:3], beam=4)


def cli_error(capsys, *args) -> str:
    """The one-line error of the export command (run in this process: no interpreter start-up per case)."""
    from fairseq_resmlp.export import main

    with pytest.raises(SystemExit) as stopped:
        main([str(a) for a in args])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_export_cli_errors(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    err = cli_error(capsys, "--path", tmp_path / "missing.pt", "--data", data_dir, "--out", out)
    assert "error: --path" in err and "no such checkpoint file" in err
    err = cli_error(capsys, "--path", FIXTURE / "checkpoint.pt", "--data", tmp_path / "nodata", "--out", out)
    assert "error: --data" in err and "no such data folder" in err
    err = cli_error(capsys, "--path", FIXTURE / "checkpoint.pt", "--data", data_dir, "--out", out)
    assert "pass --source-lang and --target-lang" in err
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    assert "not a readable PyTorch checkpoint" in cli_error(capsys, "--path", junk, "--data", data_dir, "--out", out)
    foreign = tmp_path / "foreign.pt"
    state = torch.load(FIXTURE / "checkpoint.pt", map_location="cpu", weights_only=False)
    state["cfg"]["model"]["_name"] = "transformer_iwslt_de_en"
    torch.save(state, foreign)
    assert "not a ResMLP model" in cli_error(capsys, "--path", foreign, "--data", data_dir, "--out", out)
    assert not out.exists()


def test_export_with_positions_and_layernorm(tmp_path, export_or_reuse):
    """Sinusoidal positions and LayerNorm (resmlp_small's choices) export too; random weights, fairseq's search."""
    model = build_model(seed=3, positional_embeddings="sinusoidal", norm_type="layernorm")
    export_or_reuse(model, tmp_path)
    translator = ExportedTranslator(tmp_path)
    src = random_tokens(model, [7, 4, 9, 2], seed=1, left_pad=True)
    assert_translates_as_fairseq(model, translator, src, beams=(1, 4), max_len_b=20)
    with pytest.raises(ValueError, match="before \\(not after\\) int8"):
        export_model(quantize_int8(model), tmp_path / "int8")


# The command's loading, in this process; the export itself replaced by a recorder (the tests above export).


def export_main(capsys, *args) -> str:
    """Run the command in this process; returns its summary line on stderr."""
    from fairseq_resmlp.export import main

    assert main([str(a) for a in args]) == 0
    return capsys.readouterr().err.strip().splitlines()[-1]


def assert_is_the_fixture(model, hub):
    assert not model.training
    assert model.encoder.dictionary.symbols == hub.src_dict.symbols
    assert model.decoder.dictionary.symbols == hub.tgt_dict.symbols
    got, want = model.state_dict(), hub.models[0].state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[key], want[key]) for key in got)


@pytest.mark.parametrize("languages", ["given", "inferred from the data", "recorded in the checkpoint"])
def test_export_command_loads_the_checkpoint(languages, tmp_path, data_dir, hub, export_calls, capsys):
    checkpoint, data, out = FIXTURE / "checkpoint.pt", data_dir, tmp_path / "out"
    options = ["--source-lang", "src", "--target-lang", "tgt"]
    if languages == "inferred from the data":
        data = tmp_path / "data"
        shutil.copytree(data_dir, data)
        (data / "train.src-tgt.src.idx").touch()  # the language pair of fairseq-preprocess's file names
        options = []
    elif languages == "recorded in the checkpoint":
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        state["cfg"]["task"].update(source_lang="src", target_lang="tgt")
        checkpoint = tmp_path / "recorded" / "checkpoint.pt"
        checkpoint.parent.mkdir()
        torch.save(state, checkpoint)
        options = []
    line = export_main(capsys, "--path", checkpoint, "--data", data, "--out", out, *options)
    [(model, out_dir)] = export_calls
    assert out_dir == str(out)
    assert_is_the_fixture(model, hub)
    assert line == (
        f"exported {checkpoint} to {out}: encoder.pt2, decoder_init.pt2, decoder_step.pt2, model.json "
        f"({len(hub.src_dict)} source / {len(hub.tgt_dict)} target symbols)"
    )


def test_export_cli_errors_name_each_cause(tmp_path, data_dir, capsys):
    out, checkpoint = tmp_path / "out", FIXTURE / "checkpoint.pt"
    prefix = "python -m fairseq_resmlp.export: error: "
    assert cli_error(capsys) == prefix + "the following arguments are required: --path, --data, --out"
    assert cli_error(capsys, "--path", checkpoint, "--data", data_dir) == (
        prefix + "the following arguments are required: --out"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_error(capsys, "--path", checkpoint, "--data", empty, "--out", out) == (
        f"{prefix}--data {empty}: no dict.*.txt in it (the folder written by fairseq-preprocess)"
    )
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(Exception) as unreadable:
        torch.load(junk, map_location="cpu", weights_only=False)
    assert cli_error(capsys, "--path", junk, "--data", data_dir, "--out", out) == (
        f"{prefix}--path {junk}: not a readable PyTorch checkpoint "
        f"({type(unreadable.value).__name__}: {unreadable.value})"
    )
    for state, message in (
        ({"cfg": {"model": {"_name": "resmlp_tiny"}}}, "not a fairseq checkpoint (no model weights in it)"),
        ({"model": {}}, "not a fairseq checkpoint (no model config in it)"),
        # A checkpoint of fairseq before dataclass configs: the architecture is in its argparse args.
        ({"model": {}, "args": argparse.Namespace()}, "not a fairseq checkpoint (no model config in it)"),
        (
            {"model": {}, "args": argparse.Namespace(arch="transformer_iwslt_de_en")},
            "a 'transformer_iwslt_de_en' checkpoint, not a ResMLP model (--arch resmlp_*)",
        ),
    ):
        path = tmp_path / "state.pt"
        torch.save(state, path)
        assert (
            cli_error(capsys, "--path", path, "--data", data_dir, "--out", out) == f"{prefix}--path {path}: {message}"
        )
    no_languages = (
        f"{prefix}--data {data_dir}: cannot tell the source and target languages (no train.SRC-TGT.* files there, "
        "none in the checkpoint): pass --source-lang and --target-lang"
    )
    assert cli_error(capsys, "--path", checkpoint, "--data", data_dir, "--out", out) == no_languages
    assert cli_error(capsys, "--path", checkpoint, "--data", data_dir, "--out", out, "--source-lang", "src") == (
        no_languages
    )
    small = tmp_path / "small"  # dictionaries that are not the model's
    small.mkdir()
    for name in ("dict.src.txt", "dict.tgt.txt"):
        (small / name).write_text("".join(f"w{i} 1\n" for i in range(5)))
    err = cli_error(
        capsys, "--path", checkpoint, "--data", small, "--out", out, "--source-lang", "src", "--target-lang", "tgt"
    )
    assert err.startswith(f"{prefix}--path {checkpoint} with --data {small}: the checkpoint was trained with a source ")
    assert not out.exists()


def test_export_default_architecture_and_model_json(tmp_path, export_or_reuse):
    """resmlp_tiny's defaults (Affine norms, no positions), exported in this process into a folder not made yet:
    model.json describes the model, and the programs translate as fairseq's search does, also in batches large
    enough that ``norm_then_linear`` would fold an Affine norm (60 rows; the exported copy never folds)."""
    model = build_model(seed=4)
    out = tmp_path / "new" / "export"
    info = export_or_reuse(model, out)
    symbols = model.decoder.dictionary.symbols
    assert info == {
        "format": "fairseq-resmlp-export",
        "version": 1,
        "files": {"encoder": "encoder.pt2", "decoder_init": "decoder_init.pt2", "decoder_step": "decoder_step.pt2"},
        "source_symbols": symbols,
        "target_symbols": symbols,
        "bos": 0,
        "pad": 1,
        "eos": 2,
        "unk": 3,
        "max_source_positions": 128,
        "max_target_positions": 128,
        "encoder_embed_dim": 32,
        "decoder_embed_dim": 32,
        "decoder_layers": 2,
        "decoder_attention_heads": 2,
        "head_dim": 16,
    }
    assert json.loads((out / "model.json").read_text(encoding="utf-8")) == info
    translator = ExportedTranslator(out)
    src = random_tokens(model, [9, 4, 7, 2, 8, 5, 9, 3, 6, 9, 1, 7], seed=2, left_pad=True)
    assert_translates_as_fairseq(model, translator, src, beams=(1, 5), max_len_b=12)


def test_export_refuses_models_it_cannot_export(tmp_path):
    model = build_model(seed=5)
    with pytest.raises(ValueError) as refused:
        export_model(model.double(), tmp_path / "float64")
    assert str(refused.value) == "export_model needs a float32 model on the CPU (call model.float().cpu() first)"
    with pytest.raises(ValueError) as refused:
        export_model(quantize_int8(build_model(seed=5)), tmp_path / "int8")
    assert str(refused.value) == (
        "export_model needs the float32 model: export it before (not after) int8 quantization"
    )
    assert not (tmp_path / "float64").exists() and not (tmp_path / "int8").exists()
