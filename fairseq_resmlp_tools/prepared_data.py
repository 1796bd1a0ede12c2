"""What a data_prep output directory holds (manifest.json, spm.model, raw/, data-bin/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

from fairseq_resmlp_tools._cli import ToolError


def data_languages(
    data: Path, source_lang: Optional[str], target_lang: Optional[str]
) -> Tuple[Optional[str], Optional[str]]:
    """(source, target) for a data_prep output directory: as given, else completed from its manifest.json.

    The data-bin of ``data_prep`` serves both directions, so either language can be the source. A language
    that cannot be told (no manifest) comes back as None.
    """
    pair = [None, None]
    manifest = data / "manifest.json"
    if manifest.exists():
        try:
            langs = json.loads(manifest.read_text(encoding="utf-8")).get("languages", {})
        except ValueError as e:
            raise ToolError(f"{manifest} is not valid JSON: {e}") from None
        pair = [langs.get("src"), langs.get("tgt")]
    for option, lang in (("--source-lang", source_lang), ("--target-lang", target_lang)):
        if lang and all(pair) and lang not in pair:
            raise ToolError(f"{option} {lang}: {data} holds {pair[0]}-{pair[1]} (see its manifest.json)")
    src = source_lang or (pair[0] if target_lang in (None, pair[1]) else pair[1])
    tgt = target_lang or next((lang for lang in pair if lang and lang != src), None)
    return src, tgt
