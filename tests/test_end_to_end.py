"""End to end through fairseq's own commands: SentencePiece -> fairseq-preprocess -> fairseq-train
-> fairseq-generate / fairseq-interactive / the hub interface, on a tiny synthetic corpus."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import sentencepiece as spm
from helpers import write_cipher_corpus

ROOT = Path(__file__).resolve().parent.parent
USER_DIR = str(ROOT / "fairseq_resmlp")
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run(cmd, cwd, check=True, stdin=None):
    """Run a fairseq command from this environment; return the completed process (text mode)."""
    exe = str(BIN / cmd[0]) if cmd[0].startswith("fairseq-") else cmd[0]
    proc = subprocess.run(
        [exe, *map(str, cmd[1:])], cwd=cwd, env=ENV, input=stdin, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def spm_encode(model: spm.SentencePieceProcessor, src: Path, dst: Path) -> None:
    lines = src.read_text(encoding="utf-8").splitlines()
    dst.write_text("".join(" ".join(model.encode(x, out_type=str)) + "\n" for x in lines), encoding="utf-8")


def prepare(folder: Path, vocab_size: int, seed: int = 0) -> dict:
    """Synthetic corpus -> joint SentencePiece -> fairseq-preprocess --joined-dictionary."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = write_cipher_corpus(folder, sizes={"train": 1000, "valid": 30, "test": 37}, seed=seed, vocab=16)
    spm.SentencePieceTrainer.train(
        input=f"{folder}/train.src,{folder}/train.tgt",
        model_prefix=str(folder / "spm"),
        vocab_size=vocab_size,
        character_coverage=1.0,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    for split in ("train", "valid", "test"):
        for lang in ("src", "tgt"):
            spm_encode(sp, folder / f"{split}.{lang}", folder / f"{split}.spm.{lang}")
    run(
        ["fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--joined-dictionary",
         "--trainpref", "train.spm", "--validpref", "valid.spm", "--testpref", "test.spm",
         "--destdir", "data-bin", "--workers", "1"],
        cwd=folder,
    )
    return corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A resmlp_tiny model trained for a few epochs on the cipher corpus."""
    folder = tmp_path_factory.mktemp("e2e")
    corpus = prepare(folder, vocab_size=48)
    run(
        ["fairseq-train", "data-bin", "--user-dir", USER_DIR, "--arch", "resmlp_tiny", "--share-all-embeddings",
         "--optimizer", "adam", "--lr", "0.005", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "20",
         "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", "1000",
         "--max-epoch", "10", "--save-dir", "ckpt", "--no-epoch-checkpoints", "--seed", "1",
         "--required-batch-size-multiple", "1", "--no-progress-bar", "--log-interval", "10"],
        cwd=folder,
    )
    return folder, corpus


def hypotheses(stdout: str, prefix: str = "D") -> dict:
    """{sentence id: text} of fairseq's D- (detokenized) or H- lines."""
    found = {}
    for line in stdout.splitlines():
        m = re.match(rf"^{prefix}-(\d+)\t[^\t]*\t(.*)$", line)
        if m:
            assert int(m.group(1)) not in found, f"duplicate hypothesis for sentence {m.group(1)}"
            found[int(m.group(1))] = m.group(2)
    return found


def generate(folder, *extra, data="data-bin", check=True):
    return run(
        ["fairseq-generate", data, "--user-dir", USER_DIR, "--path", "ckpt/checkpoint_last.pt",
         "--gen-subset", "test", "--beam", "4", "--batch-size", "16", "--required-batch-size-multiple", "1",
         "--bpe", "sentencepiece", "--sentencepiece-model", "spm.model", *extra],
        cwd=folder,
        check=check,
    )


def test_generate_translates_every_test_sentence(trained):
    folder, corpus = trained
    n = len(corpus["test"][0])
    assert n % 8 != 0
    out = hypotheses(generate(folder).stdout)
    assert sorted(out) == list(range(n))
    # The model has learnt something of the cipher (an untrained model scores 0; a few seconds of training
    # of a d=32 model give about 5), and the scoring sees one hypothesis per reference, in order.
    bleu = sacrebleu.corpus_bleu([out[i] for i in range(n)], [corpus["test"][1]]).score
    assert bleu >= 2.0, f"sacreBLEU {bleu:.1f}:\n{out}"


def test_interactive_translates_raw_text_and_reports_overlong_lines(trained):
    folder, corpus = trained
    src = corpus["test"][0][:4]
    overlong = " ".join(["zzzq"] * 150)  # far beyond resmlp_tiny's 128 positions
    lines = [src[0], src[1], overlong, src[2], src[3]]
    cmd = ["fairseq-interactive", "data-bin", "--user-dir", USER_DIR, "--path", "ckpt/checkpoint_last.pt",
           "--beam", "4", "--bpe", "sentencepiece", "--sentencepiece-model", "spm.model"]
    proc = run([*cmd, "--skip-invalid-size-inputs-valid-test"], cwd=folder, stdin="\n".join(lines) + "\n")
    out = hypotheses(proc.stdout)
    assert sorted(out) == [0, 1, 3, 4]
    assert [out[i] for i in (0, 1, 3, 4)] == generated_for(folder, src)
    assert "invalid sizes and will be skipped, max_positions=(128, 128)" in proc.stderr
    # Without the flag fairseq stops with an error that names the limit and the way out.
    proc = run(cmd, cwd=folder, stdin="\n".join(lines) + "\n", check=False)
    assert proc.returncode != 0
    assert "max_positions=(128, 128)" in proc.stderr and "--skip-invalid-size-inputs-valid-test" in proc.stderr


def generated_for(folder, sources):
    """Hub translations of ``sources`` (beam 4), the reference for the other entry points."""
    from fairseq_resmlp import ResMLPModel

    hub = ResMLPModel.from_pretrained(
        str(folder / "ckpt"), checkpoint_file="checkpoint_last.pt", data_name_or_path=str(folder / "data-bin"),
        bpe="sentencepiece", sentencepiece_model=str(folder / "spm.model"),
    )
    return hub.translate(sources, beam=4)


def test_hub_interface_matches_fairseq_generate(trained):
    folder, corpus = trained
    gen = hypotheses(generate(folder).stdout)
    src = corpus["test"][0][:10]
    assert generated_for(folder, src) == [gen[i] for i in range(10)]


def test_generate_on_overlong_test_sentence(tmp_path, trained):
    folder, corpus = trained
    long_data = tmp_path / "long"
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
    lines = corpus["test"][0][:5] + [" ".join(corpus["test"][0][5:30])]
    assert len(sp.encode(lines[-1])) > 128
    (tmp_path / "t.src").write_text("\n".join(lines) + "\n")
    (tmp_path / "t.tgt").write_text("\n".join(corpus["test"][1][:6]) + "\n")
    for lang in ("src", "tgt"):
        spm_encode(sp, tmp_path / f"t.{lang}", tmp_path / f"t.spm.{lang}")
    run(["fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--testpref", "t.spm",
         "--srcdict", folder / "data-bin" / "dict.src.txt", "--tgtdict", folder / "data-bin" / "dict.tgt.txt",
         "--destdir", long_data, "--workers", "1"], cwd=tmp_path)
    proc = generate(folder, data=long_data, check=False)
    assert proc.returncode != 0
    assert "max_positions=(128, 128)" in proc.stderr and "--skip-invalid-size-inputs-valid-test" in proc.stderr
    proc = generate(folder, "--skip-invalid-size-inputs-valid-test", data=long_data)
    assert sorted(hypotheses(proc.stdout)) == [0, 1, 2, 3, 4]
    assert "1 samples have invalid sizes and will be skipped" in proc.stderr


def test_checkpoint_with_another_dictionary_is_a_clear_error(tmp_path, trained):
    folder, _ = trained
    other = tmp_path / "other"
    prepare(other, vocab_size=40, seed=1)
    proc = run(
        ["fairseq-generate", other / "data-bin", "--user-dir", USER_DIR, "--path", folder / "ckpt/checkpoint_last.pt",
         "--gen-subset", "test", "--beam", "2", "--batch-size", "8"],
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "ResMLPCheckpointError" in last and "dictionary" in last and "dict.src.txt" in last, last


def test_pip_installed_package_works_as_user_dir(tmp_path, trained):
    folder, corpus = trained
    site = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", site, ROOT],
        cwd=tmp_path)
    installed = site / "fairseq_resmlp"
    probe = run([sys.executable, "-c",
                 "import argparse, sys; from fairseq import utils; "
                 f"utils.import_user_module(argparse.Namespace(user_dir={str(installed)!r})); "
                 "print(sys.modules['fairseq_resmlp'].__file__)"], cwd=tmp_path)
    assert probe.stdout.strip().startswith(str(installed))
    proc = run(
        ["fairseq-generate", folder / "data-bin", "--user-dir", installed, "--path", folder / "ckpt/checkpoint_last.pt",
         "--gen-subset", "test", "--beam", "2", "--batch-size", "8", "--required-batch-size-multiple", "1"],
        cwd=tmp_path,
    )
    assert len(hypotheses(proc.stdout, "H")) == len(corpus["test"][0])
