"""Reading the WMT test sets in their SGML (.sgm) release format.

The files are not well-formed XML (they contain bare ``&``, e.g. "Standard & Poor's"), so an XML
parser cannot read them; instead the ``<doc>`` and ``<seg>`` elements are scanned with a small,
strict tokenizer that reports malformed structure with a line number, and only real XML entities
(``&amp;`` ``&lt;`` ``&gt;`` ``&quot;`` ``&apos;`` and numeric references) are decoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Sequence

from data_prep.errors import DataPrepError

_TOKEN_RE = re.compile(
    r"<doc\b(?P<doc>[^>]*)>"
    r"|</doc\s*>"
    r"|<seg\b(?P<seg>[^>]*)>(?P<text>.*?)</seg\s*>"
    r"|(?P<open><seg\b)",  # a <seg> that the alternative above could not close
    re.S | re.I,
)
_ATTR_RE = re.compile(r"""([\w:-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")
_ENTITY_RE = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|amp|lt|gt|quot|apos);")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


@dataclass(frozen=True)
class Segment:
    """One ``<seg>`` of an sgm file: document id, segment id and text (entities decoded)."""

    doc: str
    seg: str
    text: str


def unescape(text: str) -> str:
    """Decode XML entities; anything else that starts with ``&`` is literal text."""

    def repl(match: "re.Match[str]") -> str:
        name = match.group(1)
        if name[0] != "#":
            return _NAMED[name]
        code = int(name[2:], 16) if name[1] in "xX" else int(name[1:])
        try:
            return chr(code)
        except (ValueError, OverflowError):
            return match.group(0)

    return _ENTITY_RE.sub(repl, text) if "&" in text else text


def _attrs(raw: str) -> dict:
    return {m.group(1).lower(): next(g for g in m.groups()[1:] if g is not None) for m in _ATTR_RE.finditer(raw)}


def parse_sgm(data: bytes, label: str) -> List[Segment]:
    """All segments of an sgm file, in file order; errors name ``label`` and the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataPrepError(f"{label}: line {line}: invalid UTF-8") from None

    def where(pos: int) -> str:
        return f"{label}: line {text.count(chr(10), 0, pos) + 1}"

    segments: List[Segment] = []
    seen = set()
    doc = None
    for m in _TOKEN_RE.finditer(text):
        if m.group("open") is not None:
            raise DataPrepError(f"{where(m.start())}: <seg> without a closing </seg>")
        if m.group("doc") is not None:
            if doc is not None:
                raise DataPrepError(f"{where(m.start())}: <doc> inside another <doc>")
            doc = _attrs(m.group("doc")).get("docid")
            if not doc:
                raise DataPrepError(f"{where(m.start())}: <doc> without a docid")
            continue
        if m.group("text") is None:  # </doc>
            if doc is None:
                raise DataPrepError(f"{where(m.start())}: </doc> without <doc>")
            doc = None
            continue
        body = m.group("text")
        if re.search(r"<seg\b", body, re.I):
            raise DataPrepError(f"{where(m.start())}: <seg> without a closing </seg>")
        if doc is None:
            raise DataPrepError(f"{where(m.start())}: <seg> outside a <doc>")
        seg_id = _attrs(m.group("seg")).get("id")
        if not seg_id:
            raise DataPrepError(f"{where(m.start())}: <seg> without an id")
        if (doc, seg_id) in seen:
            raise DataPrepError(f"{where(m.start())}: duplicate segment id {seg_id} in document {doc}")
        seen.add((doc, seg_id))
        segments.append(Segment(doc, seg_id, unescape(body)))
    if doc is not None:
        raise DataPrepError(f"{label}: the last <doc> is not closed (file truncated?)")
    if not segments:
        raise DataPrepError(f"{label}: no <seg> elements; not an sgm test set")
    return segments


def aligned_texts(src: Sequence[Segment], ref: Sequence[Segment], src_label: str, ref_label: str) -> List[tuple]:
    """Pair the segments of a source and a reference file, checking they have the same ids."""
    if len(src) != len(ref):
        raise DataPrepError(
            f"{src_label} has {len(src)} segments but {ref_label} has {len(ref)}; they must be parallel"
        )
    for i, (a, b) in enumerate(zip(src, ref), start=1):
        if (a.doc, a.seg) != (b.doc, b.seg):
            raise DataPrepError(
                f"segment {i}: {src_label} has doc {a.doc!r} seg {a.seg} but {ref_label} has "
                f"doc {b.doc!r} seg {b.seg}; the files are not parallel"
            )
    return [(a.text, b.text) for a, b in zip(src, ref)]
