"""Model sizes: parameters of a registered architecture, built as fairseq-train builds it."""

from __future__ import annotations

import argparse

import torch


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct trainable parameters (a shared embedding counts once)."""
    seen = {id(p): p for p in model.parameters() if p.requires_grad}
    return sum(p.numel() for p in seen.values())


def architecture_parameters(arch: str, vocab: int, positions: int = 256, share_all_embeddings: bool = True) -> int:
    """Parameters of ``arch`` for a joint dictionary of ``vocab`` entries (specials included)."""
    from fairseq.data import Dictionary
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY

    import fairseq_resmlp  # noqa: F401  (registers the resmlp architectures)

    dictionary = Dictionary()
    for i in range(vocab - len(dictionary)):
        dictionary.add_symbol(f"w{i}")
    args = argparse.Namespace(
        max_source_positions=positions, max_target_positions=positions, share_all_embeddings=share_all_embeddings
    )
    ARCH_CONFIG_REGISTRY[arch](args)
    task = argparse.Namespace(source_dictionary=dictionary, target_dictionary=dictionary)
    return count_parameters(ARCH_MODEL_REGISTRY[arch].build_model(args, task))
