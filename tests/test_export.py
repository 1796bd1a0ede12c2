"""The torch.export export of the trained fixture (tests/data/checkpoint_v1) runs without fairseq and reproduces
the plugin's translations: greedy and beam search, every hypothesis, scores to 1e-4."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fairseq.sequence_generator import SequenceGenerator
from helpers import V1_CHECKPOINT_DIR, build_model, load_v1_hub, random_tokens

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


def test_export_with_positions_and_layernorm(tmp_path):
    """Sinusoidal positions and LayerNorm (resmlp_small's choices) export too; random weights, fairseq's search."""
    model = build_model(seed=3, positional_embeddings="sinusoidal", norm_type="layernorm")
    export_model(model, tmp_path)
    translator = ExportedTranslator(tmp_path)
    src = random_tokens(model, [7, 4, 9, 2], seed=1, left_pad=True)
    sources = [row[row.ne(model.encoder.padding_idx)] for row in src]
    for beam in (1, 4):
        generator = SequenceGenerator([model], model.decoder.dictionary, beam_size=beam, max_len_b=20)
        sample = {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(s) for s in sources])}}
        with torch.no_grad():
            want = generator.generate([model], sample)
        got = translator.translate(sources, beam=beam, max_len_b=20)
        for nbest_got, nbest_want in zip(got, want):
            assert [h["tokens"].tolist() for h in nbest_got] == [h["tokens"].tolist() for h in nbest_want]
            for h_got, h_want in zip(nbest_got, nbest_want):
                assert abs(float(h_got["score"]) - float(h_want["score"])) <= 1e-4
    with pytest.raises(ValueError, match="before \\(not after\\) int8"):
        export_model(quantize_int8(model), tmp_path / "int8")
