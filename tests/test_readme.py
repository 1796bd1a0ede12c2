"""README.md's architecture table matches the registered architectures: sizes, dropout and parameter counts."""

import argparse
import re
from pathlib import Path

import pytest
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY

import fairseq_resmlp  # noqa: F401  (registers the architectures)
from fairseq_resmlp_tools.model_size import architecture_parameters

README = Path(__file__).resolve().parent.parent / "README.md"


def architecture_table() -> dict:
    """{architecture: row cells} of the README table whose header starts with ``| architecture |``."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| architecture |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[re.match(r"`([^`]+)`", cells[0]).group(1)] = cells
    return rows


TABLE = architecture_table()


def test_every_registered_resmlp_architecture_is_in_the_table():
    registered = {name for name in ARCH_MODEL_REGISTRY if name.startswith("resmlp_")}
    assert registered <= set(TABLE), f"missing from README.md: {sorted(registered - set(TABLE))}"
    assert set(TABLE) <= set(ARCH_MODEL_REGISTRY), f"not registered: {sorted(set(TABLE) - set(ARCH_MODEL_REGISTRY))}"


@pytest.mark.parametrize("arch", sorted(TABLE))
def test_table_row_matches_the_architecture(arch):
    _, d, mlp, layers, heads, dropout, params = TABLE[arch]
    cfg = argparse.Namespace()
    ARCH_CONFIG_REGISTRY[arch](cfg)
    assert int(d) == cfg.encoder_embed_dim == cfg.decoder_embed_dim
    assert int(mlp) == cfg.encoder_ffn_embed_dim == cfg.decoder_ffn_embed_dim
    assert layers == f"{cfg.encoder_layers}+{cfg.decoder_layers}"
    assert int(heads) == cfg.decoder_attention_heads and float(dropout) == cfg.dropout
    # "48.7M / 36.4M": joint 32k / 8k dictionary, --share-all-embeddings, 256 positions, as the table says.
    shown = re.fullmatch(r"([\d.]+)M / ([\d.]+)M", params)
    assert shown, f"{arch}: parameters cell {params!r} is not 'N.NM / N.NM'"
    for text, vocab in zip(shown.groups(), (32000, 8000)):
        decimals = len(text.split(".")[1]) if "." in text else 0
        actual = architecture_parameters(arch, vocab, positions=256) / 1e6
        assert f"{actual:.{decimals}f}" == text, f"{arch} with a {vocab} dictionary: {actual:.3f}M, README says {text}M"
