"""fairseq-interactive whose output lines up with its input: one record per input line, id = the line's number.

    resmlp-interactive DATA_BIN --path CKPT --source-lang en --target-lang de --beam 4 \\
        --bpe sentencepiece --sentencepiece-model spm.model --output-text output.de < input.en

Takes fairseq-interactive's command line (``--user-dir`` of the plugin is added when absent) and prints its
records (``S-``, ``W-``, ``C-``, ``H-``, ``D-``, ``P-``, ``A-``; scores in base 2, as fairseq prints them), with
the id of every record the 0-based number of its input line, whatever ``--buffer-size``. Translation is fairseq's
own: its task, generator, encoding and ``make_batches``, on the same buffers, so the hypotheses are
fairseq-interactive's. What differs:

* An input line longer than the model's ``max_source_positions`` (after encoding, end-of-sentence included) is
  never dropped silently. Without ``--skip-invalid-size-inputs-valid-test`` the tool stops before translating
  anything, naming the line. With it, the line gets ``S-<id>`` and ``E-<id>\\tskipped: N tokens >
  max_source_positions M`` instead of a translation, the skipped line numbers go to stderr and the exit status
  is 3, unless ``--allow-skipped`` (then 0). fairseq-interactive prints nothing at all for such a line, so
  ``grep ^D- | cut -f3`` shifts every later translation up by one line.
* ``--output-text FILE`` writes the detokenized best translation of every input line, one line each, in input
  order, atomically. It is refused (nothing written, exit status 3) if a line was skipped, unless
  ``--allow-skipped``: then a skipped line is an empty line and the count is reported.
* The whole input is read (and encoded) before anything is translated, so that an over-long line stops the run
  before any output; lines are split at ``\\n`` only (fairseq also splits at a lone ``\\r``) and stripped of
  surrounding white space, as fairseq strips them. An empty line is translated as fairseq translates it, from
  the end-of-sentence token alone: it gets its records like any other line.
* Log messages go to stderr (fairseq-interactive mixes them into stdout); a damaged checkpoint, dictionary or
  input file is one ``error: ...`` line, exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from fairseq_resmlp_tools._cli import ToolError, console_script
from fairseq_resmlp_tools._fs import check_writable, write_text_atomic
from fairseq_resmlp_tools.fairseq_io import load_checkpoint_checked, user_dir

# Exit status when input lines were skipped (over-long) and --allow-skipped was not given: 1 is an error, 2 a
# command-line error (argparse), so scripts can tell "translated, but not everything" apart from both.
EXIT_SKIPPED = 3


@dataclass
class Skipped:
    """An input line too long for the model."""

    line_id: int
    tokens: int
    limit: int


def with_user_dir(argv: Sequence[str]) -> List[str]:
    """The command line with ``--user-dir`` of the installed plugin added, unless the user gave one."""
    argv = list(argv)
    if any(a == "--user-dir" or a.startswith("--user-dir=") for a in argv):
        return argv
    return [*argv, "--user-dir", str(user_dir())]


def read_input(source: str) -> List[str]:
    """Every line of ``source`` (``-``: stdin), split at ``\\n`` only, decoded as UTF-8 and stripped as
    fairseq-interactive strips them; a ToolError naming the line for bytes that are not UTF-8."""
    if source == "-":
        data = sys.stdin.buffer.read()
        name = "standard input"
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise ToolError(f"cannot read --input {source}: {e.strerror or e}") from None
        name = source
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":  # the newline that ends the last line starts no new line
        raw.pop()
    lines = []
    for number, line in enumerate(raw, start=1):
        try:
            lines.append(line.decode("utf-8").strip())
        except UnicodeDecodeError as e:
            raise ToolError(f"{name}, line {number}: not UTF-8 ({e.reason} at byte {e.start})") from None
    return lines


def source_part(line: str, constraints: bool) -> str:
    """The sentence of an input line: with --constraints, the tab-separated constraints after it are not."""
    return line.split("\t")[0] if constraints else line


def source_limit(max_positions: Any) -> Optional[int]:
    """The longest source, in tokens, that the model and task accept (None: no limit)."""
    if isinstance(max_positions, (tuple, list)):
        max_positions = max_positions[0]
    return None if max_positions is None else int(max_positions)


def over_long(lengths: Sequence[int], limit: Optional[int]) -> List[Skipped]:
    """The lines whose encoded length exceeds ``limit``, as fairseq's size filter judges them."""
    if limit is None:
        return []
    return [Skipped(i, n, limit) for i, n in enumerate(lengths) if n > limit]


def build_parser() -> argparse.ArgumentParser:
    from fairseq import options

    parser = options.get_interactive_generation_parser()
    parser.prog = "resmlp-interactive"
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    group = parser.add_argument_group("resmlp-interactive")
    group.add_argument(
        "--output-text",
        metavar="FILE",
        help="write the detokenized best translation of every input line, one per line, in input order",
    )
    group.add_argument(
        "--allow-skipped",
        action="store_true",
        help="with --skip-invalid-size-inputs-valid-test: exit 0 although lines were skipped "
        f"(default: exit status {EXIT_SKIPPED}); --output-text gets an empty line for each",
    )
    return parser


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


class Translator:
    """fairseq-interactive's set-up (task, models, generator, tokenizer and BPE), each failure one line."""

    def __init__(self, cfg) -> None:
        import ast

        import numpy as np
        import torch
        from fairseq import checkpoint_utils, tasks, utils

        self.cfg = cfg
        if cfg.common.seed is not None and not cfg.generation.no_seed_provided:
            np.random.seed(cfg.common.seed)
            utils.set_torch_seed(cfg.common.seed)
        self.use_cuda = torch.cuda.is_available() and not cfg.common.cpu
        try:
            self.task = tasks.setup_task(cfg.task)
        except (OSError, ValueError, RuntimeError, KeyError, IndexError) as e:
            # Missing or malformed dictionaries: fairseq's messages do not always name the file.
            raise ToolError(f"cannot set up the task from {cfg.task.data}: {_one_line(e)}") from None
        paths = utils.split_paths(cfg.common_eval.path)
        if not cfg.checkpoint.checkpoint_suffix and cfg.checkpoint.checkpoint_shard_count == 1:
            for path in paths:  # (with a suffix or shards fairseq reads other file names: it checks those itself)
                load_checkpoint_checked(Path(path))
        try:
            self.models, _ = checkpoint_utils.load_model_ensemble(
                paths,
                arg_overrides=ast.literal_eval(cfg.common_eval.model_overrides),
                task=self.task,
                suffix=cfg.checkpoint.checkpoint_suffix,
                strict=(cfg.checkpoint.checkpoint_shard_count == 1),
                num_shards=cfg.checkpoint.checkpoint_shard_count,
            )
        except (ValueError, RuntimeError, KeyError, TypeError) as e:
            # A checkpoint for other dictionaries or options (ResMLPCheckpointError, a size mismatch ...).
            raise ToolError(
                f"cannot load {cfg.common_eval.path} with the data of {cfg.task.data}: {_one_line(e)}"
            ) from None
        self.src_dict = self.task.source_dictionary
        self.tgt_dict = self.task.target_dictionary
        for model in self.models:
            if cfg.common.fp16:
                model.half()
            if self.use_cuda and not cfg.distributed_training.pipeline_model_parallel:
                model.cuda()
            model.prepare_for_inference_(cfg)
        self.generator = self.task.build_generator(self.models, cfg.generation)
        self.tokenizer = self.task.build_tokenizer(cfg.tokenizer)
        self.bpe = self.task.build_bpe(cfg.bpe)
        self.align_dict = utils.load_align_dict(cfg.generation.replace_unk)
        self.max_positions = utils.resolve_max_positions(
            self.task.max_positions(), *[model.max_positions() for model in self.models]
        )

    def encode(self, x: str) -> str:
        if self.tokenizer is not None:
            x = self.tokenizer.encode(x)
        if self.bpe is not None:
            x = self.bpe.encode(x)
        return x

    def decode(self, x: str) -> str:
        if self.bpe is not None:
            x = self.bpe.decode(x)
        if self.tokenizer is not None:
            x = self.tokenizer.decode(x)
        return x

    def source_lengths(self, lines: Sequence[str]) -> List[int]:
        """Encoded length of every line's sentence, end-of-sentence included, as fairseq batches it."""
        constraints = bool(self.cfg.generation.constraints)
        _, lengths = self.task.get_interactive_tokens_and_lengths(
            [source_part(line, constraints) for line in lines], self.encode
        )
        return lengths

    def translate(self, lines: List[str]) -> Dict[int, tuple]:
        """{index in ``lines``: (source tokens, hypotheses, info)} for every line, through fairseq-interactive's
        own ``make_batches`` and ``inference_step``; a ToolError if fairseq left a line out."""
        from fairseq import utils
        from fairseq.token_generation_constraints import unpack_constraints
        from fairseq_cli.interactive import make_batches

        results: Dict[int, tuple] = {}
        for batch in make_batches(list(lines), self.cfg, self.task, self.max_positions, self.encode):
            src_tokens, src_lengths, constraints = batch.src_tokens, batch.src_lengths, batch.constraints
            if self.use_cuda:
                src_tokens, src_lengths = src_tokens.cuda(), src_lengths.cuda()
                constraints = None if constraints is None else constraints.cuda()
            sample = {"net_input": {"src_tokens": src_tokens, "src_lengths": src_lengths}}
            started = time.time()
            translations = self.task.inference_step(self.generator, self.models, sample, constraints=constraints)
            seconds = time.time() - started
            listed = [[] for _ in translations]
            if self.cfg.generation.constraints:
                listed = [unpack_constraints(c) for c in constraints]
            for i, (index, hypos) in enumerate(zip(batch.ids.tolist(), translations)):
                source = utils.strip_pad(src_tokens[i], self.tgt_dict.pad())
                results[index] = (source, hypos, {"constraints": listed[i], "time": seconds / len(translations)})
        missing = sorted(set(range(len(lines))) - set(results))
        if missing:  # the length check above should make this impossible: never print a shifted output
            raise ToolError(f"fairseq returned no translation for {len(missing)} line(s) of a buffer: {missing[:8]}")
        return results

    def print_records(self, line_id: int, source, hypos, info) -> str:
        """Print fairseq-interactive's records for one line; returns the detokenized best hypothesis."""
        from fairseq import utils
        from fairseq_cli.generate import get_symbols_to_strip_from_output

        cfg = self.cfg
        src_str = ""
        if self.src_dict is not None:
            src_str = self.src_dict.string(source, cfg.common_eval.post_process)
            print(f"S-{line_id}\t{src_str}")
            print("W-{}\t{:.3f}\tseconds".format(line_id, info["time"]))
            for constraint in info["constraints"]:
                print(f"C-{line_id}\t{self.tgt_dict.string(constraint, cfg.common_eval.post_process)}")
        best = None
        for hypo in hypos[: min(len(hypos), cfg.generation.nbest)]:
            _, hypo_str, alignment = utils.post_process_prediction(
                hypo_tokens=hypo["tokens"].int().cpu(),
                src_str=src_str,
                alignment=hypo["alignment"],
                align_dict=self.align_dict,
                tgt_dict=self.tgt_dict,
                remove_bpe=cfg.common_eval.post_process,
                extra_symbols_to_ignore=get_symbols_to_strip_from_output(self.generator),
            )
            detok = self.decode(hypo_str)
            score = hypo["score"] / math.log(2)  # base 2, as fairseq-interactive prints it
            print(f"H-{line_id}\t{score}\t{hypo_str}")
            print(f"D-{line_id}\t{score}\t{detok}")
            positional = (hypo["positional_scores"] / math.log(2)).tolist()
            print(f"P-{line_id}\t" + " ".join(f"{x:.4f}" for x in positional))
            if cfg.generation.print_alignment:
                print(f"A-{line_id}\t" + " ".join(f"{s}-{t}" for s, t in alignment))
            if best is None:
                best = detok
        return best if best is not None else ""

    def print_skipped(self, line_id: int, line: str, skipped: Skipped) -> None:
        tokens = self.src_dict.encode_line(
            self.encode(source_part(line, bool(self.cfg.generation.constraints))), add_if_not_exist=False
        )
        print(f"S-{line_id}\t{self.src_dict.string(tokens, self.cfg.common_eval.post_process)}")
        print(f"E-{line_id}\tskipped: {skipped.tokens} tokens > max_source_positions {skipped.limit}")


def _preview(ids: Sequence[int], k: int = 10) -> str:
    shown = ", ".join(map(str, ids[:k]))
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > k else "")


def run(args: argparse.Namespace) -> int:
    from fairseq import utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    output_text = None if args.output_text is None else Path(args.output_text)
    allow_skipped = args.allow_skipped
    with warnings.catch_warnings():  # hydra's deprecation notices, a screen of them on every run
        warnings.simplefilter("ignore")
        cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    if cfg.interactive.buffer_size < 1:
        cfg.interactive.buffer_size = 1
    if cfg.dataset.max_tokens is None and cfg.dataset.batch_size is None:
        cfg.dataset.batch_size = 1
    if cfg.generation.sampling and cfg.generation.nbest != cfg.generation.beam:
        raise ToolError("--sampling requires --nbest to be equal to --beam")
    if cfg.dataset.batch_size and cfg.dataset.batch_size > cfg.interactive.buffer_size:
        raise ToolError("--batch-size cannot be larger than --buffer-size")
    if output_text is not None:
        check_writable(output_text)  # before loading and translating anything

    lines = read_input(cfg.interactive.input)
    translator = Translator(cfg)
    limit = source_limit(translator.max_positions)
    skipped = {s.line_id: s for s in over_long(translator.source_lengths(lines), limit)}
    skip_allowed = cfg.dataset.skip_invalid_size_inputs_valid_test
    if skipped and not skip_allowed:
        first = next(iter(skipped.values()))
        more = (
            f" ({len(skipped)} over-long lines in all: {_preview([i + 1 for i in skipped])})"
            if len(skipped) > 1
            else ""
        )
        raise ToolError(
            f"input line {first.line_id + 1} (id {first.line_id}) has {first.tokens} tokens, more than the model's "
            f"max_source_positions {first.limit}{more}; nothing was translated. Shorten or split it, or give "
            "--skip-invalid-size-inputs-valid-test to translate the other lines"
        )

    texts: List[str] = []
    size = cfg.interactive.buffer_size
    for start in range(0, len(lines), size):
        ids = [i for i in range(start, min(start + size, len(lines))) if i not in skipped]
        results = translator.translate([lines[i] for i in ids]) if ids else {}
        by_id = {ids[k]: v for k, v in results.items()}
        for line_id in range(start, min(start + size, len(lines))):
            if line_id in skipped:
                translator.print_skipped(line_id, lines[line_id], skipped[line_id])
                texts.append("")
            else:
                texts.append(translator.print_records(line_id, *by_id[line_id]))
        sys.stdout.flush()

    if skipped:
        print(
            f"skipped {len(skipped)} of {len(lines)} input line(s), longer than max_source_positions {limit}: "
            f"line(s) {_preview([i + 1 for i in skipped])} (ids {_preview(list(skipped))})",
            file=sys.stderr,
        )
    if output_text is not None:
        if skipped and not allow_skipped:
            print(
                f"error: --output-text {output_text} not written: {len(skipped)} line(s) have no translation "
                "(--allow-skipped writes an empty line for each)",
                file=sys.stderr,
            )
            return EXIT_SKIPPED
        if any("\n" in t or "\r" in t for t in texts):  # one line per input line, whatever the model produced
            raise ToolError(f"a translation contains a line break; --output-text {output_text} not written")
        write_text_atomic(output_text, "".join(t + "\n" for t in texts))
        empty = f", {len(skipped)} of them empty (skipped)" if skipped else ""
        print(f"wrote {output_text}: {len(texts)} lines{empty}", file=sys.stderr)
    return EXIT_SKIPPED if skipped and not allow_skipped else 0


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    # fairseq-interactive's module logs to stdout; logging configured first keeps the records alone on stdout.
    warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true.*")  # CPU runs: noise
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        level=os.environ.get("LOGLEVEL", "INFO").upper(),
        stream=sys.stderr,
    )
    from fairseq import options

    parser = build_parser()
    args = options.parse_args_and_arch(parser, input_args=with_user_dir(sys.argv[1:] if argv is None else argv))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
