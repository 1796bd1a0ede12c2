"""Session 13: what the paper's block leaves out, from resmlp-compare's kept validation hypotheses.

Usage: python docs/measurements/omissions_s13.py REFERENCES NAME=HYPOTHESES [NAME=HYPOTHESES ...] --against NAME
(hypotheses at each configuration's chosen length penalty: runs/<config>-s<seed>/eval/valid_avg.lenpen<LP>.hyp).
Per run: the length ratio, the mean hypothesis - reference length in sacreBLEU's 13a tokens without runaway
hypotheses (resmlp-compare's definition: over twice the reference and 10+ tokens longer), how many sentences are 3+ tokens shorter / longer,
and how many contain an immediately repeated word or word pair. Then the reference tokens each run fails to produce
(clipped counts), and the tokens the other runs miss more often than the --against runs.
"""

import argparse
import collections
import statistics
from typing import Dict, List

from fairseq_resmlp_tools.recipes.compare import bleu_tokens, is_runaway


def tokens(path: str) -> List[List[str]]:
    try:
        with open(path, encoding="utf-8") as f:
            return bleu_tokens(f.readlines())
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: cannot read {path}: {e}") from None


def repeats(words: List[str]) -> bool:
    """A word or a pair of words said twice in a row ("nur nur", "am Strand am Strand")."""
    one = any(a == b and a.isalpha() for a, b in zip(words, words[1:]))
    two = any(words[i : i + 2] == words[i + 2 : i + 4] and words[i].isalpha() for i in range(len(words) - 3))
    return one or two


def missing(hyps: List[List[str]], refs: List[List[str]]) -> collections.Counter:
    """Reference tokens a hypothesis does not produce, clipped per sentence (BLEU's unigram view)."""
    out: collections.Counter = collections.Counter()
    for h, r in zip(hyps, refs):
        have = collections.Counter(h)
        for word, k in collections.Counter(r).items():
            out[word] += max(0, k - have[word])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("references")
    p.add_argument("runs", nargs="+", help="NAME=HYPOTHESES; runs of one configuration share a NAME prefix")
    p.add_argument("--against", required=True, help="the NAME prefix of the runs the others are compared with")
    args = p.parse_args()
    refs = tokens(args.references)
    if not any(spec.startswith(args.against) for spec in args.runs):
        raise SystemExit(f"error: --against {args.against}: no NAME=HYPOTHESES starts with it")
    runs: Dict[str, List[List[str]]] = {}
    for spec in args.runs:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise SystemExit(f"error: {spec!r}: expected NAME=HYPOTHESES")
        runs[name] = tokens(path)
        if len(runs[name]) != len(refs):
            raise SystemExit(f"error: {path} has {len(runs[name])} lines, {args.references} {len(refs)}")
    print("run | length ratio | mean length difference | 3+ shorter | 3+ longer | with a repeat")
    for name, hyps in runs.items():
        kept = [len(h) - len(r) for h, r in zip(hyps, refs) if not is_runaway(len(r), len(h))]
        ratio = sum(map(len, hyps)) / sum(map(len, refs))
        print(
            f"{name} | {ratio:.3f} | {statistics.fmean(kept):+.2f} | {sum(d <= -3 for d in kept)} | "
            f"{sum(d >= 3 for d in kept)} | {sum(map(repeats, hyps))}"
        )
    base: collections.Counter = collections.Counter()
    for name in (n for n in runs if n.startswith(args.against)):
        base += missing(runs[name], refs)
    print(f"reference tokens not produced, {args.against}: {sum(base.values())}")
    for group in sorted({n.rsplit("-", 1)[0] for n in runs if not n.startswith(args.against)}):
        miss: collections.Counter = collections.Counter()
        for name in (n for n in runs if n.rsplit("-", 1)[0] == group):
            miss += missing(runs[name], refs)
        more = sorted(((w, miss[w] - base[w]) for w in miss), key=lambda x: -x[1])[:15]
        print(
            f"{group}: {sum(miss.values())}; missed more often than {args.against}: "
            + ", ".join(f"{w} {k:+d}" for w, k in more)
        )


if __name__ == "__main__":
    main()
