"""Translate a prepared test set with a checkpoint (or the average of several) and score it.

    resmlp-evaluate runs/x/checkpoint_best.pt --data prepared/multi30k-en-de --split test
    resmlp-evaluate runs/x/checkpoint_3_9000.pt runs/x/checkpoint_3_10000.pt --data DIR   # averaged
    resmlp-evaluate CKPT --data-bin DIR/data-bin --spm-model DIR/spm.model --ref-raw DIR/raw/test.de
    resmlp-evaluate --generate-output gen.txt --spm-model M --ref-raw R   # score an existing run

Translation runs ``fairseq-generate`` with ``--user-dir fairseq_resmlp`` and ``--required-batch-size-multiple
1``: with fairseq's default of 8 it silently drops up to 7 sentences of the test set. The hypotheses are put
back in test-set order and SentencePiece-decoded here; scoring is refused (exit status 1) unless there is
exactly one hypothesis for every reference line.

Before anything is translated or scored it verifies that everything belongs together (the result JSON lists
what was verified under ``checks``): the checkpoint's recorded dictionaries and direction against the data-bin
and --source-lang/--target-lang, the SentencePiece model against the data's manifest.json (or, without one,
against the dictionary's symbols), and an existing --generate-output's hypotheses against the SentencePiece
model (pieces) or as fairseq's ``--post-process sentencepiece`` text.

Three scores, against the raw (untokenized, cased) reference text:

* sacreBLEU: detokenized, cased BLEU with sacreBLEU's default 13a tokenization, and its signature. This is
  the number to compare across papers and toolkits.
* chrF2 (sacreBLEU's chrF, with its signature).
* tokenized BLEU: the metric of the WMT14 tables of Vaswani et al. 2017, Ott et al. 2018 and the ResMLP paper.
  Hypotheses and references are tokenized with Moses' tokenizer.perl -l TARGET (sacremoses), for German
  hyphenated compounds are split (``a-b`` -> ``a ##AT##-##AT## b``), and BLEU is computed on those tokens
  (fairseq_resmlp_tools/tokenized_bleu.py says why). It is not comparable with sacreBLEU.

Outputs (default next to the first checkpoint, in ``eval/``, named by split, direction and checkpoint):
``NAME.json`` (scores, signatures, counts, the
command), ``NAME.hyp`` (the detokenized hypotheses, one per line, in test-set order) and
``NAME.generate.txt`` (fairseq-generate's raw output). Every file is written under a temporary name and
renamed, so an interrupted run leaves no half-written output; a re-run with the same inputs (by content,
checkpoints by size and time) and options prints the stored result instead of translating again (``--force``
recomputes). A result of other data or another direction at the output path is never replaced without
``--force``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fairseq_resmlp_tools._cli import ToolError, console_script
from fairseq_resmlp_tools._fs import atomic_path, make_temp_dir, sha256_file, write_json_atomic, write_text_atomic
from fairseq_resmlp_tools.eval_checks import (
    Verification,
    load_spm,
    output_form,
    restore_byte_pieces,
    verify_checkpoint,
    verify_pieces,
    verify_spm,
)
from fairseq_resmlp_tools.fairseq_io import (
    fairseq_command,
    format_command,
    load_checkpoint_checked,
    mmap_index_count,
    order_hypotheses,
    parse_generate_output,
    user_dir,
)
from fairseq_resmlp_tools.prepared_data import data_languages
from fairseq_resmlp_tools.tokenized_bleu import TOKENIZERS, tokenized_bleu

RESULT_FORMAT = 2

# --- scoring ---------------------------------------------------------------------------------------------


def score(
    hypotheses: Sequence[str], references: Sequence[str], target_lang: str, tok_tokenizer: str = "moses"
) -> Dict[str, Any]:
    """sacreBLEU, chrF and the papers' tokenized BLEU of ``hypotheses`` against one reference each."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ToolError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    bleu = BLEU()
    bleu_result = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf = CHRF()
    chrf_result = chrf.corpus_score(list(hypotheses), [list(references)])
    return {
        "sacrebleu": {
            "score": bleu_result.score,
            "signature": str(bleu.get_signature()),
            "detail": str(bleu_result),
            # As numbers too: a BLEU gap can be all length (resmlp-compare reports the ratio per configuration).
            "brevity_penalty": bleu_result.bp,
            "length_ratio": bleu_result.sys_len / bleu_result.ref_len if bleu_result.ref_len else 0.0,
        },
        "chrf": {
            "score": chrf_result.score,
            "signature": str(chrf.get_signature()),
        },
        "tokenized_bleu": tokenized_bleu(hypotheses, references, target_lang, tok_tokenizer),
    }


# --- hypotheses ------------------------------------------------------------------------------------------


def decode_pieces(hypotheses: Sequence[str], spm_model: Path) -> List[str]:
    """SentencePiece pieces (as fairseq prints them) back to text. sentencepiece's own decoder also undoes
    byte-fallback pieces (``<0xE2>`` ...), which fairseq's ``--bpe sentencepiece`` would leave in the text."""
    sp = load_spm(spm_model)
    return [sp.decode(h.split()) for h in hypotheses]


# --- inputs ----------------------------------------------------------------------------------------------


@dataclass
class EvalData:
    """Everything evaluation reads besides the checkpoints."""

    data_bin: Optional[Path]
    spm_model: Path
    references: Path
    source_lang: Optional[str]
    target_lang: Optional[str]
    split: str


# Suffixes of 2-3 letters that name a kind of file, not a language: "refs.txt" says nothing about the language.
_FILE_TYPE_SUFFIXES = frozenset(
    {"txt", "tok", "out", "hyp", "ref", "gen", "sgm", "xml", "bpe", "log", "csv", "tsv", "raw", "gz"}
)


def _languages_from_data_bin(data_bin: Path, split: str) -> Tuple[str, str]:
    pairs = sorted(
        {
            m.group(1, 2)
            for p in data_bin.glob(f"{split}.*-*.*.idx")
            if (m := re.match(rf"^{re.escape(split)}\.([^.-]+)-([^.-]+)\.", p.name))
        }
    )
    if len(pairs) != 1:
        found = ", ".join(f"{s}-{t}" for s, t in pairs) or "none"
        raise ToolError(
            f"cannot tell the language pair of {data_bin} for split {split} (found: {found}); "
            "give --source-lang and --target-lang"
        )
    return pairs[0]


def resolve_data(args: argparse.Namespace) -> EvalData:
    """Paths of the data-bin, SentencePiece model and reference text, from --data and/or explicit options."""
    data_bin = args.data_bin
    spm_model = args.spm_model
    src, tgt = args.source_lang, args.target_lang
    if args.data is not None:
        if not args.data.is_dir():
            raise ToolError(f"--data {args.data} is not a directory")
        # The data-bin serves both directions; the manifest names the pair as prepared.
        src, tgt = data_languages(args.data, src, tgt)
        data_bin = data_bin or args.data / "data-bin"
        spm_model = spm_model or args.data / "spm.model"
    if data_bin is None and args.generate_output is None:
        raise ToolError("give --data DIR (a data_prep output directory) or --data-bin DIR")
    if data_bin is not None and not data_bin.is_dir():
        raise ToolError(f"data-bin directory {data_bin} does not exist")
    if data_bin is not None and (src is None or tgt is None):
        # Complete the pair from the data-bin's file names; a language given that it does not hold is refused
        # (it would otherwise be replaced silently, and the references scored with another language's tokenizer).
        pair = _languages_from_data_bin(data_bin, args.split)
        for option, lang in (("--source-lang", src), ("--target-lang", tgt)):
            if lang is not None and lang not in pair:
                raise ToolError(f"{option} {lang}: {data_bin} holds {pair[0]}-{pair[1]} for split {args.split}")
        if src is None and tgt is None:
            src, tgt = pair
        elif src is None:
            src = pair[1] if tgt == pair[0] else pair[0]
        else:
            tgt = pair[1] if src == pair[0] else pair[0]
    if spm_model is None:
        raise ToolError("give --spm-model (the SentencePiece model the data was encoded with) or --data DIR")
    if not spm_model.is_file():
        raise ToolError(f"SentencePiece model {spm_model} does not exist")
    references = args.ref_raw
    if references is None:
        if args.data is None or tgt is None:
            raise ToolError("give --ref-raw (the untokenized reference text) or --data DIR")
        references = published_text(args.data, args.split, tgt)
    if not references.is_file():
        raise ToolError(f"reference file {references} does not exist")
    if tgt is None:
        # The tokenized BLEU's tokenizer is language specific: take the reference's suffix (raw/test.de) if it is one.
        suffix = references.suffix.lstrip(".")
        if not re.fullmatch(r"[a-z]{2,3}", suffix) or suffix in _FILE_TYPE_SUFFIXES:
            raise ToolError(f"give --target-lang: the language of {references} cannot be told from its name")
        tgt = suffix
    return EvalData(data_bin, spm_model, references, src, tgt, args.split)


def published_text(data: Path, split: str, lang: str) -> Path:
    """A split's text as published, to score against: data_prep writes it byte for byte under ref/ (raw/ is the
    normalised text the model saw); older outputs and the toy data have only raw/."""
    official = data / "ref" / f"{split}.{lang}"
    return official if official.is_file() else data / "raw" / f"{split}.{lang}"


def data_bin_size(data_bin: Path, split: str, src: str, tgt: str) -> Optional[int]:
    """Sentences in the binarized split (either direction's files); None for a non-mmap dataset format."""
    for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
        idx = data_bin / f"{split}.{pair}.{tgt}.idx"
        if idx.exists():
            try:
                return mmap_index_count(idx)
            except ToolError:  # another dataset implementation: fairseq-generate itself will read it
                return None
    raise ToolError(f"{data_bin} has no split {split!r} for {src}-{tgt} (looked for {split}.{src}-{tgt}.{tgt}.idx)")


def read_lines(path: Path) -> List[str]:
    """Lines of a UTF-8 text file without their newlines, split exactly as fairseq-preprocess splits them."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


# --- translation -----------------------------------------------------------------------------------------


def generate_command(checkpoint: Path, data: EvalData, args: argparse.Namespace) -> List[str]:
    cmd = [
        fairseq_command("fairseq-generate"),
        str(data.data_bin),
        "--user-dir",
        str(user_dir()),
        "--task",
        "translation",
        "--path",
        str(checkpoint),
        "--source-lang",
        str(data.source_lang),
        "--target-lang",
        str(data.target_lang),
        "--gen-subset",
        data.split,
        "--beam",
        str(args.beam),
        "--nbest",
        "1",
        "--lenpen",
        str(args.lenpen),
        # fairseq's default of 8 drops the last, incomplete batch: up to 7 test sentences never translated.
        "--required-batch-size-multiple",
        "1",
        "--seed",
        "1",
    ]
    if args.max_tokens:
        cmd += ["--max-tokens", str(args.max_tokens)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.cpu:
        cmd += ["--cpu"]
    if args.fp16:
        cmd += ["--fp16"]
    return cmd + list(args.generate_args)


def run_generate(cmd: Sequence[str], output: Path) -> None:
    """Run fairseq-generate, its stdout into ``output``; on failure report the end of its log."""
    print(format_command(cmd), file=sys.stderr)
    with open(output, "w", encoding="utf-8") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-12:])
        raise ToolError(f"fairseq-generate failed (exit status {proc.returncode}):\n{tail}")


# --- results ---------------------------------------------------------------------------------------------


def _file_identity(path: Path) -> Dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def data_identity(data: EvalData, generate_output: Optional[Path]) -> Dict[str, Any]:
    """What the scores are of, by content: direction, split, references, SentencePiece model, dictionaries."""
    files = [data.references, data.spm_model]
    if data.data_bin is not None:
        files += sorted(data.data_bin.glob("dict.*.txt"))
    if generate_output is not None:
        files.append(generate_output)
    return {
        "direction": f"{data.source_lang}-{data.target_lang}",
        "split": data.split,
        "sha256": {str(f): sha256_file(f) for f in files},
    }


def fingerprint(checkpoints: Sequence[Path], data: EvalData, identity: Dict[str, Any], args: argparse.Namespace) -> str:
    """Identity of everything the result depends on: a re-run with the same fingerprint reuses the result.

    Checkpoints (large) by path, size and time; the data by content (``identity``) and the binarized split by
    path, size and time."""
    files = list(checkpoints)
    if data.data_bin is not None:
        files += sorted(data.data_bin.glob(f"{data.split}.*"))
    key = {
        "format": RESULT_FORMAT,
        "files": [_file_identity(f) for f in files],
        "data": identity,
        "options": {k: getattr(args, k) for k in ("beam", "lenpen", "cpu", "fp16", "tok_tokenizer", "generate_args")},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def default_output(args: argparse.Namespace, data: EvalData) -> Path:
    """CKPT_DIR/eval/SPLIT_SRC-TGT_CKPT.json: one checkpoint's results in each direction and split side by side."""
    if args.generate_output is not None:
        return args.generate_output.with_suffix(".json")
    first = args.checkpoints[0]
    stem = first.stem if len(args.checkpoints) == 1 else f"avg{len(args.checkpoints)}_{args.checkpoints[-1].stem}"
    return first.parent / "eval" / f"{data.split}_{data.source_lang}-{data.target_lang}_{stem}.json"


def refuse_replacing_other_data(
    output: Path, previous: Optional[Dict[str, Any]], identity: Dict[str, Any], data: EvalData
) -> None:
    """A result at ``output`` of other data or another direction is not replaced silently."""
    if previous is None or previous.get("data") == identity:
        return
    if "data" not in previous:
        # An older result records no content: the same split, direction and reference file are taken as the same
        # evaluation (it is then recomputed with today's metrics).
        same = (previous.get("split"), previous.get("source_lang"), previous.get("target_lang")) == (
            data.split,
            data.source_lang,
            data.target_lang,
        )
        if same and previous.get("references") == str(data.references):
            return
        direction = f"{previous.get('source_lang')}->{previous.get('target_lang')}"
        what = f"{previous.get('split')} {direction} of {previous.get('references')}"
    else:
        old = previous["data"]
        what = f"{old.get('split')} {str(old.get('direction')).replace('-', '->')}, other data"
    raise ToolError(
        f"{output} holds the result of another evaluation ({what}); give another --output, or --force to replace it"
    )


def format_table(result: Dict[str, Any]) -> str:
    m = result["metrics"]
    what = result.get("model") or result.get("generate_output")
    lines = [
        f"{what}",
        f"{result['split']} {result['source_lang']}->{result['target_lang']}: "
        f"{result['counts']['hypotheses']} hypotheses for {result['counts']['references']} references (all translated)",
        "",
        f"{'metric':<44}{'score':>7}  signature / details",
        f"{'-' * 44}{'-' * 7}  {'-' * 40}",
        f"{'sacreBLEU (detokenized, cased)':<44}{m['sacrebleu']['score']:>7.2f}  {m['sacrebleu']['signature']}",
        f"{'chrF2':<44}{m['chrf']['score']:>7.2f}  {m['chrf']['signature']}",
        f"{'tokenized BLEU (papers)':<44}{m['tokenized_bleu']['score']:>7.2f}  "
        f"{m['tokenized_bleu']['label']}; not comparable with sacreBLEU",
        "",
        f"hypotheses: {result['files']['hypotheses']}",
        f"result:     {result['files']['result']}",
    ]
    return "\n".join(lines)


def load_result(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- verification ----------------------------------------------------------------------------------------


def verify_inputs(args: argparse.Namespace, data: EvalData) -> Verification:
    """Everything that must belong together, checked before translating: a ToolError names what does not."""
    checks = Verification()
    # A damaged checkpoint file first: one line naming it, whatever else is wrong.
    for checkpoint in args.checkpoints:
        load_checkpoint_checked(checkpoint)
    langs = [lang for lang in (data.source_lang, data.target_lang) if lang]
    verify_spm(data.spm_model, args.data, data.data_bin, langs, checks)
    if data.data_bin is not None and data.source_lang and data.target_lang:
        for checkpoint in args.checkpoints:
            verify_checkpoint(checkpoint, data.data_bin, data.source_lang, data.target_lang, checks)
    return checks


def detokenize(
    hypotheses: Sequence[str], lines: Sequence[str], spm_model: Path, where: str, checks: Verification
) -> List[str]:
    """The hypotheses as text: SentencePiece pieces decoded, or fairseq's post-processed text as it is."""
    if output_form(lines) == "text":
        checks.verified.append(
            f"{where}: H- lines are already detokenized text (fairseq --post-process sentencepiece): scored as "
            "written, byte-fallback pieces restored"
        )
        checks.not_verified.append(f"{where}: detokenized text cannot be checked against {spm_model}")
        return [restore_byte_pieces(h) for h in hypotheses]
    verify_pieces(lines, spm_model, where, checks)
    return decode_pieces(hypotheses, spm_model)


# --- main ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resmlp-evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoints", type=Path, nargs="*", help="checkpoint file(s); several are averaged first")
    g = p.add_argument_group("data")
    g.add_argument("--data", type=Path, help="a data_prep output directory (manifest.json, spm.model, raw/, data-bin/)")
    g.add_argument(
        "--split", default="test", help="the data-bin split to translate: test or valid (default %(default)s)"
    )
    g.add_argument("--data-bin", type=Path, help="fairseq data-bin directory (default DATA/data-bin)")
    g.add_argument("--spm-model", type=Path, help="SentencePiece model (default DATA/spm.model)")
    g.add_argument(
        "--ref-raw", type=Path, help="untokenized reference text, one line per sentence (default DATA/raw/SPLIT.TGT)"
    )
    g.add_argument("--src-raw", type=Path, help="untokenized source text, only checked for its line count")
    g.add_argument(
        "--source-lang", help="source language (default: from DATA/manifest.json or the data-bin file names)"
    )
    g.add_argument("--target-lang", help="target language (default: as --source-lang)")
    g = p.add_argument_group("generation")
    g.add_argument("--beam", type=int, default=4, help="beam size (default %(default)s, as in the ResMLP paper)")
    g.add_argument("--lenpen", type=float, default=1.0, help="length penalty (default %(default)s)")
    g.add_argument("--max-tokens", type=int, default=8000, help="tokens per batch (default %(default)s)")
    g.add_argument("--batch-size", type=int, help="sentences per batch (default: no limit besides --max-tokens)")
    g.add_argument("--cpu", action="store_true", help="translate on the CPU even if a GPU is present")
    g.add_argument("--fp16", action="store_true", help="translate in float16 (GPU)")
    g.add_argument(
        "--generate-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="everything after this is passed to fairseq-generate unchanged (put it last)",
    )
    g.add_argument(
        "--generate-output",
        type=Path,
        help="score this existing fairseq-generate output instead of translating (no checkpoint needed)",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--output", type=Path, help="result JSON (default CKPT_DIR/eval/SPLIT_CKPT.json); hypotheses next to it"
    )
    g.add_argument(
        "--tok-tokenizer",
        choices=TOKENIZERS,
        default="moses",
        help="tokenizer of the tokenized BLEU: moses = tokenizer.perl -l TARGET via sacremoses, as the papers "
        "(default); 13a/intl = sacreBLEU's Moses-like approximations, labelled as such",
    )
    g.add_argument(
        "--save-average", type=Path, help="keep the averaged checkpoint at this path (default: a temporary file)"
    )
    g.add_argument("--force", action="store_true", help="recompute even if an up-to-date result exists")
    return p


def evaluate(args: argparse.Namespace) -> Dict[str, Any]:
    """Translate (unless --generate-output), check the counts, score and write the outputs; the result dict."""
    if args.generate_output is None and not args.checkpoints:
        raise ToolError("give at least one checkpoint (or --generate-output FILE)")
    if args.generate_output is not None and args.checkpoints:
        raise ToolError("give either checkpoints or --generate-output, not both")
    for c in args.checkpoints:
        if not c.is_file():
            raise ToolError(f"checkpoint {c} does not exist")
    if args.generate_output is not None and not args.generate_output.is_file():
        raise ToolError(f"--generate-output {args.generate_output} does not exist")
    if args.beam < 1:
        raise ToolError("--beam must be at least 1")
    data = resolve_data(args)

    output = args.output or default_output(args, data)
    if output.suffix != ".json":
        raise ToolError(f"--output {output} should end in .json (the hypotheses are written next to it)")
    stem = output.with_suffix("")
    hyp_path = Path(f"{stem}.hyp")
    gen_path = Path(f"{stem}.generate.txt")
    identity = data_identity(data, args.generate_output)
    key = fingerprint(args.checkpoints, data, identity, args)
    previous = load_result(output)
    if not args.force and previous and previous.get("fingerprint") == key and hyp_path.exists():
        print(f"up to date: {output} (same checkpoints, data and options; --force recomputes)", file=sys.stderr)
        return previous
    if not args.force:
        refuse_replacing_other_data(output, previous, identity, data)

    references = read_lines(data.references)
    n = len(references)
    if args.src_raw is not None:
        n_src = len(read_lines(args.src_raw))
        if n_src != n:
            raise ToolError(f"--src-raw {args.src_raw} has {n_src} lines but the references {data.references} have {n}")
    if data.data_bin is not None:
        n_bin = data_bin_size(data.data_bin, data.split, str(data.source_lang), str(data.target_lang))
        if n_bin is not None and n_bin != n:
            raise ToolError(
                f"the references {data.references} have {n} lines but {data.data_bin} split {data.split} has {n_bin} "
                "sentences: they are not the same test set"
            )

    checks = verify_inputs(args, data)
    tmp = make_temp_dir(output.parent, output.stem)
    try:
        started = time.time()
        model = None
        if args.generate_output is not None:
            generate_text = args.generate_output.read_text(encoding="utf-8")
            where = str(args.generate_output)
            cmd = None
        else:
            if len(args.checkpoints) > 1:
                from fairseq_resmlp_tools.average import average_checkpoints, save_checkpoint

                checkpoint = args.save_average or tmp / "averaged.pt"
                print(f"averaging {len(args.checkpoints)} checkpoints -> {checkpoint}", file=sys.stderr)
                save_checkpoint(average_checkpoints(args.checkpoints), checkpoint)
                model = f"average of {len(args.checkpoints)}: " + ", ".join(str(c) for c in args.checkpoints)
            else:
                checkpoint = args.checkpoints[0]  # checked in verify_inputs
                model = str(checkpoint)
            cmd = generate_command(checkpoint, data, args)
            run_generate(cmd, tmp / "generate.txt")
            generate_text = (tmp / "generate.txt").read_text(encoding="utf-8")
            where = "fairseq-generate"
        lines = generate_text.split("\n")
        hypotheses = order_hypotheses(parse_generate_output(lines), n, where)
        detok = detokenize(hypotheses, lines, data.spm_model, where, checks)
        metrics = score(detok, references, str(data.target_lang), args.tok_tokenizer)
        result = {
            "format": RESULT_FORMAT,
            "model": model,
            "checkpoints": [str(c) for c in args.checkpoints],
            "generate_output": None if args.generate_output is None else str(args.generate_output),
            "split": data.split,
            "source_lang": data.source_lang,
            "target_lang": data.target_lang,
            "references": str(data.references),
            "spm_model": str(data.spm_model),
            "counts": {"references": n, "hypotheses": len(detok)},
            "generation": {
                "beam": args.beam,
                "lenpen": args.lenpen,
                "max_tokens": args.max_tokens,
                "batch_size": args.batch_size,
                "extra": list(args.generate_args),
            },
            "metrics": metrics,
            "checks": checks.as_dict(),
            "data": identity,
            "command": None if cmd is None else format_command(cmd),
            "seconds": round(time.time() - started, 1),
            "fingerprint": key,
            "files": {
                "result": str(output),
                "hypotheses": str(hyp_path),
                "generate_output": str(args.generate_output or gen_path),
            },
        }
        # The old JSON goes first and the new one comes last: a JSON on disk always describes the hypotheses
        # next to it, and an interrupted run leaves no JSON, so the next run recomputes.
        output.unlink(missing_ok=True)
        write_text_atomic(hyp_path, "".join(h + "\n" for h in detok))
        if args.generate_output is None:
            with atomic_path(gen_path) as t:
                shutil.copyfile(tmp / "generate.txt", t)
        write_json_atomic(output, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    result = evaluate(args)
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
