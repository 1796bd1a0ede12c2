"""What resmlp-evaluate verifies before it scores: that the checkpoint, the dictionaries, the SentencePiece model,
the language direction and the hypotheses belong together.

Each check either passes and says what it verified (the result JSON lists it under ``verified``), says what it
could not verify (``not_verified``), or stops with a ToolError naming the file at fault.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fairseq_resmlp_tools._cli import ToolError
from fairseq_resmlp_tools._fs import sha256_file

# fairseq's Dictionary: the four specials every dict.txt-loaded dictionary starts with, and the filler symbols
# fairseq-preprocess adds to reach a multiple of 8 (neither is a SentencePiece piece).
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
_FILLER = re.compile(r"^madeupword\d+$")
_BYTE_PIECES = re.compile(r"(?:<0x[0-9A-Fa-f]{2}>)+")
_WORD_BOUNDARY = "\u2581"  # SentencePiece's "▁", which starts every word's first piece


@dataclass
class Verification:
    """What was checked, in words, for the result JSON."""

    verified: List[str] = field(default_factory=list)
    not_verified: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, List[str]]:
        return {"verified": self.verified, "not_verified": self.not_verified}


def load_spm(spm_model: Path):
    """The SentencePiece model at ``spm_model``; a missing or unreadable file is one ToolError naming it."""
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=str(spm_model))
    except (RuntimeError, OSError) as e:
        raise ToolError(f"--spm-model {spm_model}: not a readable SentencePiece model ({e})") from None


def dictionary_symbols(path: Path) -> List[str]:
    """The symbols of a fairseq dict.txt in order, without the specials (as fairseq's Dictionary reads them)."""
    symbols = []
    for line in path.read_text(encoding="utf-8").splitlines():
        symbol, _, flag = line.rstrip().rpartition(" ")
        if flag == "#fairseq:overwrite":
            symbol = symbol.rpartition(" ")[0]
        symbols.append(symbol)
    return symbols


# --- checkpoint <-> dictionaries and direction ------------------------------------------------------------


def verify_checkpoint(path: Path, data_bin: Path, src: str, tgt: str, check: Verification) -> None:
    """Compare what the checkpoint recorded when it was trained with the data-bin's dictionaries and the direction."""
    from fairseq_resmlp.models.data_record import RECORD_FIELDS, symbols_sha256
    from fairseq_resmlp_tools.average import load_checkpoint, model_options

    recorded = {name: model_options(load_checkpoint(path)).get(name) for name in RECORD_FIELDS}
    if not any(recorded.values()):
        check.not_verified.append(
            f"{path}: records no dictionaries or direction (trained before they were recorded): "
            "checked by dictionary size only, in fairseq-generate"
        )
        return
    direction = f"{src}-{tgt}"
    if recorded["direction"] and recorded["direction"] != direction:
        raise ToolError(
            f"{path} was trained {recorded['direction'].replace('-', '->')}, not {src}->{tgt}: "
            "give the --source-lang/--target-lang it was trained with"
        )
    for side, lang in (("source", src), ("target", tgt)):
        expected = recorded[f"{side}_dict_sha256"]
        if not expected:
            continue
        dict_file = data_bin / f"dict.{lang}.txt"
        if not dict_file.is_file():
            raise ToolError(f"{dict_file} does not exist (the {side} dictionary of {data_bin})")
        actual = symbols_sha256(list(_SPECIALS) + dictionary_symbols(dict_file))
        if actual != expected:
            raise ToolError(
                f"{dict_file} is not the {side} dictionary {path} was trained with (sha256 of its symbols "
                f"{actual[:12]}..., the checkpoint's {expected[:12]}...): evaluate with the data it was trained on"
            )
    check.verified.append(f"{path}: trained {direction} with the dictionaries of {data_bin} (sha256 of the symbols)")


# --- SentencePiece model <-> data -------------------------------------------------------------------------


def find_manifest(data: Optional[Path], data_bin: Optional[Path]) -> Optional[Path]:
    """data_prep's manifest.json of the data: DATA/manifest.json, or next to a data-bin it names."""
    if data is not None and (data / "manifest.json").is_file():
        return data / "manifest.json"
    if data_bin is not None:
        candidate = data_bin.parent / "manifest.json"
        if candidate.is_file() and _read_manifest(candidate).get("fairseq", {}).get("data_bin") == data_bin.name:
            return candidate
    return None


def _read_manifest(path: Path) -> Dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ToolError(f"{path} is not valid JSON: {e}") from None
    return manifest if isinstance(manifest, dict) else {}


def verify_spm(
    spm_model: Path, data: Optional[Path], data_bin: Optional[Path], langs: Sequence[str], check: Verification
) -> None:
    """The SentencePiece model and the data-bin's dictionaries are those the data was prepared with."""
    manifest_path = find_manifest(data, data_bin)
    manifest = _read_manifest(manifest_path) if manifest_path is not None else {}
    outputs = manifest.get("outputs", {})
    recorded_spm = outputs.get(manifest.get("spm", {}).get("model", "spm.model"), {})
    if manifest_path is not None and recorded_spm.get("sha256"):
        actual = sha256_file(spm_model)
        if actual != recorded_spm["sha256"]:
            raise ToolError(
                f"--spm-model {spm_model} is not the SentencePiece model {manifest_path.parent} was prepared with "
                f"(sha256 {actual[:12]}..., {manifest_path} records {recorded_spm['sha256'][:12]}...)"
            )
        check.verified.append(f"{spm_model}: the SentencePiece model of {manifest_path} (sha256)")
        if data_bin is not None:
            for lang in langs:
                dict_file = data_bin / f"dict.{lang}.txt"
                entry = outputs.get(f"{data_bin.name}/{dict_file.name}", {})
                if entry.get("sha256") and dict_file.is_file():
                    if sha256_file(dict_file) != entry["sha256"]:
                        raise ToolError(
                            f"{dict_file} changed after {manifest_path} was written (sha256 differs): "
                            "prepare the data again"
                        )
                    check.verified.append(f"{dict_file}: as {manifest_path} records it (sha256)")
        return
    if data_bin is None:
        return
    # No manifest (data prepared by hand): every dictionary symbol must be a piece of the model. A model trained
    # on other data or with other options, even of the same size, has other pieces.
    sp = load_spm(spm_model)
    pieces = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
    for lang in langs:
        dict_file = data_bin / f"dict.{lang}.txt"
        if not dict_file.is_file():
            continue
        symbols = [s for s in dictionary_symbols(dict_file) if not _FILLER.match(s)]
        foreign = [s for s in symbols if s not in pieces]
        if foreign:
            raise ToolError(
                f"{len(foreign)} of the {len(symbols)} symbols of {dict_file} are not pieces of --spm-model "
                f"{spm_model} (e.g. {', '.join(foreign[:5])}): the data was encoded with another SentencePiece model"
            )
        check.verified.append(f"{dict_file}: every symbol is a piece of {spm_model} (no manifest to compare)")
    check.not_verified.append(f"no data_prep manifest: {spm_model} not compared by checksum")


# --- fairseq-generate output ------------------------------------------------------------------------------


def output_form(lines: Sequence[str]) -> str:
    """``pieces`` (fairseq-generate's default: S-, T- and H- lines are SentencePiece pieces) or ``text`` (made with
    ``--post-process sentencepiece``: every line already detokenized). Decoding text as if it were pieces would
    glue its words together.

    Told by SentencePiece's word-boundary mark, which the post-processing turns into spaces: the pieces of every
    source sentence have it (its first piece starts a word); a hypothesis alone may not (an untrained model's).
    """
    return "pieces" if any(_WORD_BOUNDARY in text for _, text in sentence_lines(lines)) else "text"


def sentence_lines(lines: Sequence[str]) -> List[Tuple[str, str]]:
    """(``S-3``, text) for the source (S-), reference (T-) and hypothesis (H-, after its score) lines of
    fairseq-generate's output."""
    found = []
    for line in lines:
        tag, sep, rest = line.rstrip("\n").partition("\t")
        if not sep or not re.fullmatch(r"[STH]-\d+", tag):
            continue
        if tag.startswith("H"):
            rest = rest.partition("\t")[2]  # H-ID <tab> score <tab> text
        found.append((tag, rest))
    return found


def restore_byte_pieces(text: str) -> str:
    """Undo byte-fallback pieces (``<0xE2><0x80><0x9C>`` -> ``“``), which fairseq's ``--post-process
    sentencepiece`` leaves in the text and sentencepiece's own decoder restores."""
    return _BYTE_PIECES.sub(
        lambda m: bytes(int(b, 16) for b in re.findall(r"<0x(..)>", m.group())).decode("utf-8", "replace"), text
    )


def verify_pieces(lines: Sequence[str], spm_model: Path, where: str, check: Verification) -> None:
    """Every piece of the S-, T- and H- lines is a piece of the SentencePiece model (else the output came from
    data encoded with another one, and decoding it would silently produce other text)."""
    sp = load_spm(spm_model)
    known = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
    for tag, text in sentence_lines(lines):
        unknown = [p for p in text.split() if p not in known]
        if unknown:
            raise ToolError(
                f"{where}: {tag} has pieces that are not in --spm-model {spm_model} "
                f"({', '.join(unknown[:5])}): the output was made with another SentencePiece model"
            )
    check.verified.append(f"every piece of the S-/T-/H- lines is a piece of {spm_model}")
