"""The "tokenized BLEU" of the WMT14 tables (Vaswani et al. 2017, Ott et al. 2018, the ResMLP paper).

It is BLEU on Moses-tokenized text, and for German with hyphenated compounds split. The script the
Transformer's numbers come from (tensor2tensor's ``get_ende_bleu.sh``) runs, on detokenized hypotheses and
references::

    tokenizer.perl -l de                                  # Moses, escaping on (its default), no -a
    perl -ple 's{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g'      # compound split, as fairseq's compound_split_bleu.sh
    multi-bleu.perl

Here: sacremoses' ``MosesTokenizer(lang=TARGET)``, a line-for-line port of ``tokenizer.perl``, with its
defaults (``escape=True``, ``aggressive_dash_splits=False``). Escaping (``&`` -> ``&amp;``) renames tokens one to
one in hypotheses and references alike, so it does not change BLEU; it is kept because tokenizer.perl does it.
``-a`` (aggressive hyphen splitting, ``a-b`` -> ``a @-@ b``) is what fairseq's WMT14 *training data* was
tokenized with (``prepare-wmt14en2de.sh``); the scoring tokenization has no ``-a``: the compound split is
what splits hyphens.

sacreBLEU's ``13a`` is only Moses-like: it does not split apostrophes (French ``l'homme``), splits a hyphen after a
digit and handles Unicode punctuation differently; on newstest2014's French references 71% of the lines come out
differently. It stays available as a labelled alternative (``--tok-tokenizer 13a``/``intl``).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Sequence

# perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g'. Python's re.sub scans left to right without overlaps exactly as
# perl's /g does, so "a-b-c" becomes "a ##AT##-##AT## b-c" in both.
_COMPOUND = re.compile(r"(\S)-(\S)")

# The compound split is a convention of the German results (GNMT, ConvS2S, Transformer); En-Fr was scored
# without it.
COMPOUND_SPLIT_LANGS = frozenset({"de"})

TOKENIZERS = ("moses", "13a", "intl")


def compound_split(line: str) -> str:
    """Split hyphenated compounds the way the WMT14 papers' scoring scripts do."""
    return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


def tokenizer(name: str, lang: str) -> Callable[[str], str]:
    """A function from a detokenized line to its tokens joined by spaces."""
    if name == "moses":
        from sacremoses import MosesTokenizer

        moses = MosesTokenizer(lang=lang)
        # tokenizer.perl -l LANG: escaping on, no aggressive hyphen splitting (both sacremoses' defaults, given
        # here so that a change of default cannot change the metric).
        return lambda line: moses.tokenize(line, return_str=True, escape=True, aggressive_dash_splits=False)
    if name == "13a":
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

        return Tokenizer13a()
    if name == "intl":
        from sacrebleu.tokenizers.tokenizer_intl import TokenizerV14International

        return TokenizerV14International()
    raise ValueError(f"unknown tokenizer {name!r} (choose from {', '.join(TOKENIZERS)})")


def describe(name: str, lang: str) -> str:
    """The label of the metric, as the table and the JSON print it."""
    what = f"Moses tokenizer.perl -l {lang} via sacremoses" if name == "moses" else f"sacreBLEU {name}, Moses-like"
    split = ", compound split" if lang in COMPOUND_SPLIT_LANGS else ""
    return f"tokenized BLEU ({what}{split})"


def tokenize_for_bleu(lines: Sequence[str], lang: str, name: str = "moses") -> List[str]:
    """Lines as the papers' scoring saw them: tokenized, and for German compound-split."""
    tokenize = tokenizer(name, lang)
    split = lang in COMPOUND_SPLIT_LANGS
    return [compound_split(tokenize(line)) if split else tokenize(line) for line in lines]


def tokenized_bleu(
    hypotheses: Sequence[str], references: Sequence[str], lang: str, name: str = "moses"
) -> Dict[str, Any]:
    """The papers' tokenized BLEU of ``hypotheses`` against one reference each, labelled."""
    from sacrebleu.metrics import BLEU

    tok_hyps = tokenize_for_bleu(hypotheses, lang, name)
    tok_refs = tokenize_for_bleu(references, lang, name)
    # tokenize="none": the text is already tokenized; force=True silences sacreBLEU's warning about that.
    result = BLEU(tokenize="none", force=True).corpus_score(tok_hyps, [tok_refs])
    return {
        "score": result.score,
        "label": describe(name, lang),
        "tokenizer": name,
        "language": lang,
        "compound_split": lang in COMPOUND_SPLIT_LANGS,
        "detail": str(result),
        "note": "the metric of the WMT14 tables of the papers; not comparable with sacreBLEU",
    }
