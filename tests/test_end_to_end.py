"""End to end through fairseq's own commands: SentencePiece -> fairseq-preprocess -> fairseq-train
-> fairseq-generate / fairseq-interactive / the hub interface, on a tiny synthetic corpus."""

import sys
from pathlib import Path

import pytest
import sacrebleu
import sentencepiece as spm
from helpers import prepare_toy_data_bin, run_fairseq, spm_encode, tiny_train_args

from fairseq_resmlp_tools.fairseq_io import parse_generate_output, user_dir
from fairseq_resmlp_tools.recipes.fairseq_args import label_smoothing

pytestmark = pytest.mark.slow  # trains a model through fairseq-train

ROOT = Path(__file__).resolve().parent.parent
USER_DIR = str(user_dir())
run = run_fairseq
prepare = prepare_toy_data_bin


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A resmlp_tiny model trained for a few epochs on the cipher corpus."""
    folder = tmp_path_factory.mktemp("e2e")
    corpus = prepare(folder, vocab_size=120)
    run(
        [
            "fairseq-train",
            *tiny_train_args("data-bin", "0.005", USER_DIR),
            "--lr-scheduler",
            "inverse_sqrt",
            "--warmup-updates",
            "20",
            *label_smoothing(0.1),
            "--max-tokens",
            "1000",
            "--max-epoch",
            "10",
            "--save-dir",
            "ckpt",
            "--no-epoch-checkpoints",
            "--seed",
            "1",
            "--required-batch-size-multiple",
            "1",
            "--no-progress-bar",
            "--log-interval",
            "10",
        ],
        cwd=folder,
    )
    return folder, corpus


def hypotheses(stdout: str, prefix: str = "D") -> dict:
    """{sentence id: text} of fairseq's D- (detokenized) or H- lines; each id at most once."""
    found = parse_generate_output(stdout.splitlines(), prefix)
    ids = [i for i, _ in found]
    assert len(ids) == len(set(ids)), f"duplicate hypotheses in {sorted(ids)}"
    return dict(found)


def generate(folder, *extra, data="data-bin", check=True):
    return run(
        [
            "fairseq-generate",
            data,
            "--user-dir",
            USER_DIR,
            "--path",
            "ckpt/checkpoint_last.pt",
            "--gen-subset",
            "test",
            "--beam",
            "4",
            "--batch-size",
            "16",
            "--required-batch-size-multiple",
            "1",
            "--bpe",
            "sentencepiece",
            "--sentencepiece-model",
            "spm.model",
            *extra,
        ],
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
    cmd = [
        "fairseq-interactive",
        "data-bin",
        "--user-dir",
        USER_DIR,
        "--path",
        "ckpt/checkpoint_last.pt",
        "--beam",
        "4",
        "--bpe",
        "sentencepiece",
        "--sentencepiece-model",
        "spm.model",
    ]
    proc = run([*cmd, "--skip-invalid-size-inputs-valid-test"], cwd=folder, stdin="\n".join(lines) + "\n")
    out = hypotheses(proc.stdout)
    assert sorted(out) == [0, 1, 3, 4]
    assert [out[i] for i in (0, 1, 3, 4)] == generated_for(folder, src)
    assert "invalid sizes and will be skipped, max_positions=(128, 128)" in proc.stderr
    # resmlp-interactive: the same records for the lines fairseq translates, and one for the skipped line.
    ours = run(
        [sys.executable, "-m", "fairseq_resmlp_tools.interactive", *cmd[1:], "--skip-invalid-size-inputs-valid-test"],
        cwd=folder,
        stdin="\n".join(lines) + "\n",
        check=False,
    )
    assert ours.returncode == 3 and "line(s) 3 (ids 2)" in ours.stderr, ours.stderr
    assert hypotheses(ours.stdout) == out and hypotheses(ours.stdout, "H") == hypotheses(proc.stdout, "H")
    skipped = [line for line in ours.stdout.splitlines() if line.startswith("E-")]
    assert len(skipped) == 1 and skipped[0].startswith("E-2\tskipped: ")
    assert skipped[0].endswith(" tokens > max_source_positions 128"), skipped
    # Without the flag fairseq stops with an error that names the limit and the way out.
    proc = run(cmd, cwd=folder, stdin="\n".join(lines) + "\n", check=False)
    assert proc.returncode != 0
    assert "max_positions=(128, 128)" in proc.stderr and "--skip-invalid-size-inputs-valid-test" in proc.stderr


def generated_for(folder, sources):
    """Hub translations of ``sources`` (beam 4), the reference for the other entry points."""
    from fairseq_resmlp import ResMLPModel

    hub = ResMLPModel.from_pretrained(
        str(folder / "ckpt"),
        checkpoint_file="checkpoint_last.pt",
        data_name_or_path=str(folder / "data-bin"),
        bpe="sentencepiece",
        sentencepiece_model=str(folder / "spm.model"),
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
    run(
        [
            "fairseq-preprocess",
            "--source-lang",
            "src",
            "--target-lang",
            "tgt",
            "--testpref",
            "t.spm",
            "--srcdict",
            folder / "data-bin" / "dict.src.txt",
            "--tgtdict",
            folder / "data-bin" / "dict.tgt.txt",
            "--destdir",
            long_data,
            "--workers",
            "1",
        ],
        cwd=tmp_path,
    )
    proc = generate(folder, data=long_data, check=False)
    assert proc.returncode != 0
    assert "max_positions=(128, 128)" in proc.stderr and "--skip-invalid-size-inputs-valid-test" in proc.stderr
    proc = generate(folder, "--skip-invalid-size-inputs-valid-test", data=long_data)
    assert sorted(hypotheses(proc.stdout)) == [0, 1, 2, 3, 4]
    assert "1 samples have invalid sizes and will be skipped" in proc.stderr


def test_checkpoint_with_another_dictionary_is_a_clear_error(tmp_path, trained):
    folder, _ = trained
    other = tmp_path / "other"
    prepare(other, vocab_size=100, seed=1)
    proc = run(
        [
            "fairseq-generate",
            other / "data-bin",
            "--user-dir",
            USER_DIR,
            "--path",
            folder / "ckpt/checkpoint_last.pt",
            "--gen-subset",
            "test",
            "--beam",
            "2",
            "--batch-size",
            "8",
        ],
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "ResMLPCheckpointError" in last and "dictionary" in last and "dict.src.txt" in last, last


def test_pip_installed_package_works_as_user_dir(tmp_path, trained):
    folder, corpus = trained
    site = tmp_path / "site"
    run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", site, ROOT],
        cwd=tmp_path,
    )
    installed = site / "fairseq_resmlp"
    probe = run(
        [
            sys.executable,
            "-c",
            "import argparse, sys; from fairseq import utils; "
            f"utils.import_user_module(argparse.Namespace(user_dir={str(installed)!r})); "
            "print(sys.modules['fairseq_resmlp'].__file__)",
        ],
        cwd=tmp_path,
    )
    assert probe.stdout.strip().startswith(str(installed))
    proc = run(
        [
            "fairseq-generate",
            folder / "data-bin",
            "--user-dir",
            installed,
            "--path",
            folder / "ckpt/checkpoint_last.pt",
            "--gen-subset",
            "test",
            "--beam",
            "2",
            "--batch-size",
            "8",
            "--required-batch-size-multiple",
            "1",
        ],
        cwd=tmp_path,
    )
    assert len(hypotheses(proc.stdout, "H")) == len(corpus["test"][0])
