"""Cleaning rules: line normalisation (all splits) and pair filtering (training data only).

Normalisation never drops a line. The prepared text of every split (``raw/``: what the model reads)
gets all five rules:

* ``crlf``            a ``\\r`` before the line end (Windows line endings) is removed;
* ``control_fixed``   C1 control characters U+0080-U+009F are cp1252 punctuation decoded as
                      Latin-1 (U+0092 is really ’, U+0084 is „); they are mapped back to the
                      cp1252 character (the 5 code points cp1252 leaves undefined are removed);
* ``control_removed`` other control characters (C0 except tab/newline-like whitespace, DEL,
                      U+FEFF byte order marks) are removed;
* ``sp_space``        U+2581 (SentencePiece's reserved space marker, which decoding turns into a
                      space) becomes a space, so that decoding the pieces gives back the text;
* ``whitespace``      every run of Unicode whitespace (tabs, no-break spaces, U+2028, ...) becomes
                      one ASCII space, and leading/trailing whitespace is removed.

Valid and test text is written twice: normalised like training text (``raw/``, what the model reads),
and with only ``crlf`` and ``whitespace`` (``ref/``): exactly the cleaning sacreBLEU applies to the
WMT sgm files, so ``ref/test.*`` is byte for byte the reference sacreBLEU uses (``wmt14/full``) and
scores against it are comparable with published ones.

Training pairs are then dropped, each reason counted (see :data:`DROP_REASONS`).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Set, Tuple

from tqdm import tqdm

from data_prep.errors import DataPrepError
from data_prep.textio import ParallelSource, iter_text_pairs

# Flags returned by normalize_line, one bit per rule.
CRLF = 1
CONTROL_FIXED = 2
CONTROL_REMOVED = 4
WHITESPACE = 8
SP_SPACE = 16
NORMALISATIONS = {
    CRLF: "crlf",
    CONTROL_FIXED: "control_fixed",
    CONTROL_REMOVED: "control_removed",
    SP_SPACE: "sp_space",
    WHITESPACE: "whitespace",
}
SP_SPACE_MARKER = "\u2581"

# Why a training pair can be dropped, in the order the checks are applied.
DROP_REASONS = (
    "invalid_utf8",  # only with --drop-invalid-utf8; otherwise invalid UTF-8 is an error
    "heldout",  # line chosen for the held-out valid/test split (data_prep.parallel --valid-size)
    "heldout_overlap",  # same source or target sentence as a held-out pair (no train/test leak)
    "empty",  # a side is empty after normalisation
    "duplicate",  # exact repeat of an earlier pair (only with --dedup)
    "too_long",  # a side has more than --max-len SentencePiece tokens
    "length_ratio",  # longer side / shorter side > --len-ratio, in SentencePiece tokens
)


def _c1_table() -> Dict[int, Optional[str]]:
    table: Dict[int, Optional[str]] = {}
    for cp in range(0x80, 0xA0):
        try:
            table[cp] = bytes([cp]).decode("cp1252")
        except UnicodeDecodeError:
            table[cp] = None  # undefined in cp1252: nothing sensible to map it to
    return table


_C1_TABLE = _c1_table()
_C1_RE = re.compile("[\x80-\x9f]")
# \t \n \v \f \r are whitespace (handled by the whitespace rule); \x1c-\x1f count as whitespace for
# str.split() but are separators nobody means as spaces, so they are removed like other controls.
_CONTROL_RE = re.compile("[\x00-\x08\x0e-\x1f\x7f\ufeff]")


def normalize_line(line: str, repair_controls: bool = True) -> Tuple[str, int]:
    """Normalise one line (without its ``\\n``); returns the text and the rules that changed it.

    ``repair_controls=False`` (the sacreBLEU references) leaves control characters and U+2581 alone.
    """
    flags = 0
    if line.endswith("\r"):
        line = line[:-1]
        flags |= CRLF
    if line.isascii() and line.isprintable():
        # Fast path for the bulk of the data: only plain spaces can need fixing.
        if "  " in line or line.startswith(" ") or line.endswith(" "):
            line = " ".join(line.split())
            flags |= WHITESPACE
        return line, flags
    if repair_controls and _C1_RE.search(line):
        line = line.translate(_C1_TABLE)
        flags |= CONTROL_FIXED
    if repair_controls and _CONTROL_RE.search(line):
        line = _CONTROL_RE.sub("", line)
        flags |= CONTROL_REMOVED
    if repair_controls and SP_SPACE_MARKER in line:
        line = line.replace(SP_SPACE_MARKER, " ")
        flags |= SP_SPACE
    collapsed = " ".join(line.split())
    if collapsed != line:
        flags |= WHITESPACE
    return collapsed, flags


@dataclass
class NormalisationCounts:
    """How many lines each normalisation rule changed, per language."""

    counts: Dict[str, Counter] = field(default_factory=dict)

    def add(self, lang: str, flags: int) -> None:
        if flags:
            per_lang = self.counts.setdefault(lang, Counter())
            for bit, name in NORMALISATIONS.items():
                if flags & bit:
                    per_lang[name] += 1

    def as_dict(self, langs: Iterable[str]) -> Dict[str, Dict[str, int]]:
        return {
            lang: {name: int(self.counts.get(lang, Counter())[name]) for name in NORMALISATIONS.values()}
            for lang in langs
        }


def length_drop_reason(n_src: int, n_tgt: int, max_len: int, len_ratio: float) -> Optional[str]:
    """Why a pair of token counts fails the length rules, or None if it passes.

    Mirrors Moses' clean-corpus-n.perl as used by fairseq's WMT14 scripts (there on BPE tokens,
    here on SentencePiece tokens): both sides 1..max_len tokens, ratio at most ``len_ratio``.
    A ``max_len`` or ``len_ratio`` of 0 disables that rule.
    """
    if n_src == 0 or n_tgt == 0:
        return "empty"
    if max_len > 0 and (n_src > max_len or n_tgt > max_len):
        return "too_long"
    if len_ratio > 0 and max(n_src, n_tgt) > len_ratio * min(n_src, n_tgt):
        return "length_ratio"
    return None


def empty_drop_counts() -> Dict[str, int]:
    """A drop counter with every reason present, so that zero counts show in the manifest too."""
    return {reason: 0 for reason in DROP_REASONS}


def _bar(progress: bool, desc: str, total: Optional[int] = None, unit: str = "pairs") -> tqdm:
    return tqdm(
        total=total, desc=desc, unit=unit, unit_scale=True, disable=not progress, file=sys.stderr, mininterval=0.5
    )


# --- the stage functions applying these rules ------------------------------------------------


@dataclass
class HeldOut:
    """Training lines set aside for valid/test, and their text, to keep them out of train."""

    lines: Set[int]
    src_text: Set[str]
    tgt_text: Set[str]


def clean_train(
    sources: Sequence[ParallelSource],
    out_src: Path,
    out_tgt: Path,
    dedup: bool = False,
    drop_invalid_utf8: bool = False,
    heldout: Optional[HeldOut] = None,
    progress: bool = False,
    langs: Tuple[str, str] = ("src", "tgt"),
) -> Dict[str, Any]:
    """Normalise training pairs and drop empty (and optionally duplicate) ones; returns statistics.

    Line numbers in ``heldout.lines`` count from 0 over all sources in order; ``langs`` only
    names the sides in the statistics.
    """
    src_lang, tgt_lang = langs
    dropped = empty_drop_counts()
    norm = NormalisationCounts()
    per_corpus: Dict[str, Dict[str, int]] = {}
    seen: Set[bytes] = set()
    index = -1
    kept = 0
    bar = _bar(progress, "clean train")
    with (
        open(out_src, "w", encoding="utf-8", newline="\n") as fs,
        open(out_tgt, "w", encoding="utf-8", newline="\n") as ft,
    ):
        for source in sources:
            read_here = kept_here = 0
            for _, a, b in iter_text_pairs(source, drop_invalid_utf8):
                index += 1
                read_here += 1
                if read_here % 4096 == 0:
                    bar.update(4096)
                if a is None or b is None:
                    dropped["invalid_utf8"] += 1
                    continue
                if heldout is not None and index in heldout.lines:
                    dropped["heldout"] += 1
                    continue
                a, fa = normalize_line(a)
                b, fb = normalize_line(b)
                norm.add(src_lang, fa)
                norm.add(tgt_lang, fb)
                if heldout is not None and (a in heldout.src_text or b in heldout.tgt_text):
                    dropped["heldout_overlap"] += 1
                    continue
                if not a or not b:
                    dropped["empty"] += 1
                    continue
                if dedup:
                    # unlike the per-process salted hash(), this digest is the same in every run
                    key = blake2b(f"{a}\n{b}".encode(), digest_size=8).digest()
                    if key in seen:
                        dropped["duplicate"] += 1
                        continue
                    seen.add(key)
                fs.write(a + "\n")
                ft.write(b + "\n")
                kept_here += 1
            bar.update(read_here % 4096)
            kept += kept_here
            per_corpus[source.name] = {
                "files": [source.src.label, source.tgt.label],
                "read": read_here,
                "kept": kept_here,
            }
    bar.close()
    read = index + 1
    if kept == 0:
        files = ", ".join(f for s in sources for f in (s.src.label, s.tgt.label))
        why = ", ".join(f"{k} {v}" for k, v in dropped.items() if v) or "the files are empty"
        raise DataPrepError(f"no training pairs left in {files} ({read} read; dropped: {why})")
    return {
        "lines_in": read,
        "lines_out": kept,
        "dropped": {k: v for k, v in dropped.items() if k not in ("too_long", "length_ratio")},
        "normalised": norm.as_dict((src_lang, tgt_lang)),
        "corpora": per_corpus,
    }


def write_eval_split(
    pairs: Iterable[Tuple[str, str]],
    out: Tuple[Path, Path],
    ref: Tuple[Path, Path],
    langs: Tuple[str, str] = ("src", "tgt"),
    source: str = "the evaluation files",
) -> Dict[str, Any]:
    """Write a valid/test split, never filtered so that it stays complete; an empty split is an error.

    ``out`` gets the text normalised like training text (what the model reads), ``ref`` the text
    with only CRLF and whitespace normalised (sacreBLEU's references); ``source`` names the input.
    """
    src_lang, tgt_lang = langs
    norm = NormalisationCounts()
    n = empty = 0
    files = [open(p, "w", encoding="utf-8", newline="\n") for p in (*out, *ref)]
    try:
        for a, b in pairs:
            ra, _ = normalize_line(a, repair_controls=False)
            rb, _ = normalize_line(b, repair_controls=False)
            a, fa = normalize_line(a)
            b, fb = normalize_line(b)
            norm.add(src_lang, fa)
            norm.add(tgt_lang, fb)
            empty += not a or not b
            for f, line in zip(files, (a, b, ra, rb)):
                f.write(line + "\n")
            n += 1
    finally:
        for f in files:
            f.close()
    if n == 0:
        raise DataPrepError(f"{source}: no sentences; an evaluation split must not be empty")
    return {"lines": n, "empty_kept": empty, "normalised": norm.as_dict((src_lang, tgt_lang))}


def filter_lengths(
    text: Tuple[Path, Path],
    pieces: Tuple[Path, Path],
    out_text: Tuple[Path, Path],
    out_pieces: Tuple[Path, Path],
    max_len: int,
    len_ratio: float,
    progress: bool = False,
) -> Dict[str, Any]:
    """Apply the length rules (in SentencePiece tokens) to train; text and pieces stay aligned."""
    dropped = Counter()
    read = kept = 0
    tokens = [0, 0]
    files = [open(p, encoding="utf-8", newline="\n") for p in (*text, *pieces)]
    outs = [open(p, "w", encoding="utf-8", newline="\n") for p in (*out_text, *out_pieces)]
    bar = _bar(progress, "filter")
    try:
        for ts, tt, ps, pt in zip(*files):
            read += 1
            n_s = ps.count(" ") + 1 if ps != "\n" else 0
            n_t = pt.count(" ") + 1 if pt != "\n" else 0
            reason = length_drop_reason(n_s, n_t, max_len, len_ratio)
            if reason:
                dropped[reason] += 1
            else:
                for f, line in zip(outs, (ts, tt, ps, pt)):
                    f.write(line)
                kept += 1
                tokens[0] += n_s
                tokens[1] += n_t
            if read % 4096 == 0:
                bar.update(4096)
        bar.update(read % 4096)
        leftovers = [f.readline() for f in files]
        if any(leftovers):
            raise DataPrepError(f"{text[0]} and its SentencePiece encoding differ in length; re-run with --force")
    finally:
        bar.close()
        for f in files + outs:
            f.close()
    if kept == 0:
        why = ", ".join(f"{r} {n}" for r, n in sorted(dropped.items())) or f"{text[0]} is empty"
        raise DataPrepError(
            f"the length filter dropped all {read} training pairs ({why}); raise --max-len or --len-ratio "
            "(0 turns a rule off)"
        )
    return {
        "lines_in": read,
        "lines_out": kept,
        "dropped": {r: int(dropped[r]) for r in ("empty", "too_long", "length_ratio")},
        "tokens": {"src": tokens[0], "tgt": tokens[1]},
    }
